import Addressing
import Cluster
import FlashSaleClient
import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresClient
import Proto
import QuotaContract
import ServiceKit
import Synchronization
import TestSupport
import Wire
import ZooKeeperClient

/// A platform for the operator's tests: its own databases and ZooKeeper root, every service with a metrics port,
/// typed clients, the `flashsale` tool as a process, and Prometheus scrapes.
struct OperatedPlatform: Sendable {
    static let token = "ops-test-token"

    let platform: Platform
    let main: TestDatabase
    let hot: TestDatabase
    let quota: QuotaClient
    let inventory: InventoryClient
    /// One session for the test's own reads (polling with a session per read would load ZooKeeper for nothing).
    let zooKeeper: ZooKeeperClient
    let logger: Logger

    var zooKeeperHosts: String { platform.configuration.zooKeeperHosts }
    var root: String { platform.configuration.zooKeeperRoot }

    static func with(
        edges: Int, metrics: Bool = false, logLevel: String = "warning", _ body: (OperatedPlatform) async throws -> Void
    ) async throws {
        let logger = Logger(label: "ops-test")
        try await Platform.withTestPlatform(prefix: "ops", operatorToken: token) { configuration in
            configuration.edges = edges
            configuration.logLevel = logLevel
            if metrics {
                for service in [\Platform.Configuration.inventoryArguments, \.quotaArguments, \.edgeArguments] {
                    configuration[keyPath: service] += ["--metrics-port", "0"]
                }
            }
        } _: { platform, databases in
            let zooKeeper = try await ZooKeeperClient.connect(
                hosts: platform.configuration.zooKeeperHosts, connectTimeout: .seconds(10), logger: logger)
            let running = OperatedPlatform(
                platform: platform, main: databases.main, hot: databases.hot,
                quota: platform.quotaClient(logger: logger), inventory: platform.inventoryClient(logger: logger),
                zooKeeper: zooKeeper,
                logger: logger)
            do {
                try await body(running)
            } catch {
                await running.shutdown()
                throw error
            }
            await running.shutdown()
        }
    }

    /// The test's clients (the platform itself is stopped by `withTestPlatform`).
    private func shutdown() async {
        await quota.shutdown()
        await inventory.shutdown()
        await zooKeeper.close()
    }

    // MARK: - The flashsale tool

    /// Runs `flashsale ARGS --quota ... --inventory ...` (the platform's addresses appended where `connect`);
    /// `token` nil runs it without any operator token.
    func flashsale(_ arguments: [String], token: String? = OperatedPlatform.token, connect: Bool = true) async throws -> CommandResult {
        var environment = ["FLASHSALE_OPERATOR_TOKEN": token ?? "", "FLASHSALE_OPERATOR_TOKEN_FILE": ""]
        environment["FLASHSALE_QUOTA"] = ""
        environment["FLASHSALE_INVENTORY"] = ""
        let addresses = connect ? ["--quota", platform.quota.address, "--inventory", platform.inventory.address] : []
        return try await runCommand(
            try RepoPaths.executable("flashsale").path, arguments + addresses, environment: environment, timeout: .seconds(60))
    }

    /// Creates the products and waits until the live edges hold all their stock and the lottery's ratio.
    func prepare(products: [String], stock: Int64, keepPerMillion: UInt32 = 1_000_000, edges expected: Int) async throws {
        try await SaleDriver.prepare(
            quota: quota, products: products.map { ($0, stock, false) }, keepPerMillion: keepPerMillion,
            edges: platform.edges.filter(\.process.isRunning), edgeCount: expected, logger: logger)
    }

    /// Edges registered under the root in ZooKeeper now (their node names).
    func registeredEdges() async throws -> [String] {
        try await zooKeeper.children(QuotaLayout(root: root).edges)
    }

    /// The order id of each request id that has an order, read from the main database directly (works with the
    /// inventory service stopped).
    func ordersInDatabase(_ requestIDs: [UInt64], hot: Bool = false) async throws -> [UInt64: UInt64] {
        let connection = try await PostgresConnection.connect(hot ? self.hot.dsn : main.dsn)
        defer { connection.close() }
        var orders: [UInt64: UInt64] = [:]
        for chunk in stride(from: 0, to: requestIDs.count, by: 5_000) {
            let ids = "{" + requestIDs[chunk..<min(chunk + 5_000, requestIDs.count)].map(String.init).joined(separator: ",") + "}"
            let result = try await connection.query("SELECT request_id, order_id FROM orders WHERE request_id = ANY($1::bigint[])", [ids])
            for row in 0..<result.count {
                if let request = result.int64(row, 0), let order = result.int64(row, 1) { orders[UInt64(request)] = UInt64(order) }
            }
        }
        return orders
    }

    /// Request ids of every order in the main database.
    func orderRequestIDs() async throws -> Set<UInt64> {
        let connection = try await PostgresConnection.connect(main.dsn)
        defer { connection.close() }
        let result = try await connection.query("SELECT request_id FROM orders")
        return Set((0..<result.count).compactMap { result.int64($0, 0).map(UInt64.init) })
    }

    /// Orders and the sum of slot remaining in the main database.
    func databaseCounts(hot: Bool = false) async throws -> (orders: Int64, remaining: Int64, negativeSlots: Int64) {
        let connection = try await PostgresConnection.connect(hot ? self.hot.dsn : main.dsn)
        defer { connection.close() }
        let result = try await connection.query(
            "SELECT (SELECT count(*) FROM orders), (SELECT coalesce(sum(remaining), 0) FROM stock_slot), (SELECT count(*) FROM stock_slot WHERE remaining < 0)")
        return (result.int64(0, 0) ?? -1, result.int64(0, 1) ?? -1, result.int64(0, 2) ?? -1)
    }
}

// MARK: - Metrics

extension ServiceEndpoint {
    /// Where the service serves its metrics: its `METRICS <service> host:port` line (`AnnouncedLine`).
    func metricsAddress() async throws -> (host: String, port: Int) {
        try await process.waitForLine(containing: AnnouncedLine.Kind.metrics.marker, timeout: .seconds(10))
        guard let metrics = AnnouncedLine.first(.metrics, in: process.log()) else {
            throw ClusterError.commandFailed("\(name) printed no METRICS address")
        }
        return (metrics.address.host, metrics.address.port)
    }
}

/// One scrape of a Prometheus endpoint: every sample by its series (`name{labels}`).
struct MetricsSample: Sendable {
    var series: [String: Double] = [:]
    var text = ""

    /// Sum over every series of `name` whose labels include each of `labels` (`key="value"`).
    func sum(_ name: String, _ labels: String...) -> Double {
        series.reduce(0) { total, entry in
            let key = entry.key
            guard key == name || key.hasPrefix(name + "{") else { return total }
            return labels.allSatisfy { key.contains($0) } ? total + entry.value : total
        }
    }

    func has(_ name: String) -> Bool {
        series.keys.contains { $0 == name || $0.hasPrefix(name + "{") }
    }

    /// `GET /metrics` over HTTP/1.0 (the server closes when done).
    static func scrape(_ address: (host: String, port: Int)) async throws -> MetricsSample {
        let response = try await HTTP.get(address, "/metrics")
        guard response.status == 200 else {
            throw ClusterError.commandFailed("scrape of \(address.host):\(address.port) answered \(response.status): \(response.body.prefix(200))")
        }
        var sample = MetricsSample(text: response.body)
        for line in sample.text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            sample.series[String(line[..<space])] = value
        }
        return sample
    }
}
