import Cluster
import FlashSaleClient
import Foundation
import Logging
import PostgresClient
import Proto
import Wire

/// One fault injected mid-sale.
enum Fault: String, CaseIterable, Sendable {
    case edge          // kill -9 an edge
    case inventory     // kill -9 the InventoryService, start it again
    case postgres      // restart PostgreSQL
    case zookeeper     // restart ZooKeeper
    case ensemble      // stop the leader of a 3-node ZooKeeper ensemble
}

/// What one case found: the table row of `flashsale-bench faults`.
struct FaultRow: Sendable {
    var fault: Fault
    var attempts = 0
    var orders: Int64 = 0
    var stock: Int64 = 0
    /// PURCHASED replies whose order the database does not hold (with that order id).
    var lost = 0
    /// A buyer holding two orders of the product, or a request answered with two different orders.
    var duplicated = 0
    /// Orders beyond the stock, plus negative slots.
    var oversold: Int64 = 0
    /// Stock still unsold after a final sweep of buyers: units the fault left unsellable.
    var stranded: Int64 = 0
    var auditClean = false
    var quotaInvariant = false
    var retries = 0
    var errors = 0
    var seconds = 0.0
    /// Attempts with an outcome when the fault began: fewer than `attempts`, or the case tested nothing.
    var completedAtFault = 0

    var passed: Bool {
        lost == 0 && duplicated == 0 && oversold == 0 && stranded == 0 && auditClean && quotaInvariant
            && completedAtFault < attempts
    }
}

/// Runs one case: a sale on 3 edges against private PostgreSQL and ZooKeeper, the fault once a third of the
/// stock is sold, clients retrying in-doubt requests with the same request id, then a sweep that buys what is
/// left, and the checks.
struct FaultCase {
    let fault: Fault
    let servers: FaultServers
    let stock: Int64
    let connections: Int
    let depth: Int
    let logger: Logger
    let say: @Sendable (String) -> Void

    func run() async throws -> FaultRow {
        let started = ContinuousClock.now
        var row = FaultRow(fault: fault, stock: stock)
        let zooKeeper = fault == .ensemble ? try await servers.startEnsemble() : servers.zooKeeper
        let databases = try await servers.createDatabases(prefix: "fault_\(fault.rawValue)")
        let token = "fault-token-\(UInt64.random(in: 0...UInt64.max))"
        var configuration = Platform.Configuration(
            databaseDSN: databases.main, hotDatabaseDSN: databases.hot, zooKeeperHosts: zooKeeper, operatorToken: token)
        configuration.zooKeeperRoot = "/fault_\(fault.rawValue)_\(UInt32.random(in: 0...UInt32.max))"
        configuration.edges = 3
        configuration.logLevel = "error"
        let platform = try await Platform.start(configuration)
        let quota = QuotaClient(host: platform.quota.host, port: platform.quota.port, token: token, logger: logger)
        let inventory = InventoryClient(rpc: RPCClient(
            configuration: RPCClientConfiguration(
                host: platform.inventory.host, port: platform.inventory.port, connections: 2, maxBackoff: .milliseconds(200),
                token: platform.configuration.serviceToken),
            logger: logger))
        defer {
            Task {
                await quota.shutdown()
                await inventory.shutdown()
            }
        }
        do {
            try await sale(platform: platform, quota: quota, inventory: inventory, row: &row)
        } catch {
            say("  \(fault.rawValue): \(error)")
            await platform.stop()
            await servers.dropDatabases(databases)
            if fault == .ensemble { await servers.stopEnsemble() }
            throw error
        }
        await platform.stop()
        await servers.dropDatabases(databases)
        if fault == .ensemble { await servers.stopEnsemble() }
        row.seconds = Double((ContinuousClock.now - started).components.seconds)
        return row
    }

    private func sale(platform: Platform, quota: QuotaClient, inventory: InventoryClient, row: inout FaultRow) async throws {
        let product = "f1"
        try await quota.setShed(keepPerMillion: 1_000_000)
        _ = try await quota.createProduct(CreateProductRequest(productId: product, totalStock: stock))
        try await waitUntil(timeout: .seconds(30), what: "the quotas of every edge") {
            try await quota.status().products.first?.edges.reduce(0) { $0 + $1.granted } == stock
        }

        // Most attempts are distinct buyers, so the stock sells while the fault happens.
        var configuration = BuyerSwarm.Configuration(
            edges: platform.edges.map { ($0.host, $0.port) }, products: [product], attempts: Int(stock) * 2,
            users: Int(stock) * 200, connections: connections, depth: depth, seed: UInt64(fault.hashValue.magnitude))
        configuration.timeout = .seconds(3)
        configuration.maxRetries = 60
        // Paced to last about six seconds, so that the fault lands while most of the sale is still to come.
        let chains = Int64(connections * depth)
        configuration.pause = .nanoseconds(6_000_000_000 * chains / Int64(configuration.attempts))
        let swarm = BuyerSwarm(configuration: configuration, logger: logger)
        let sale = Task { try await swarm.run() }
        try await waitUntil(timeout: .seconds(60), what: "a third of the stock to sell") { swarm.completed >= Int(stock) / 3 }
        // Counted as the fault begins: a restart's downtime is the fault, however long the restart takes.
        row.completedAtFault = swarm.completed
        try await inject(platform: platform)
        let result = try await sale.value

        // In-doubt attempts settle, a dead edge's quota comes back; then sweep up whatever is left.
        let live = fault == .edge ? Array(platform.edges.prefix(2)) : platform.edges
        try await settle(platform: platform, live: live, quota: quota)
        var sweepConfiguration = BuyerSwarm.Configuration(
            edges: live.map { ($0.host, $0.port) }, products: [product], attempts: Int(stock) * 2,
            users: Int(stock) * 200, connections: 8, depth: 4, seed: 7_777)
        sweepConfiguration.requestIDBase = configuration.requestIDBase &+ 1 << 31
        let sweep = try await BuyerSwarm(configuration: sweepConfiguration, logger: logger).run()

        let audit = try await retryingUnavailable { try await inventory.audit() }
        let line = audit.products.first { $0.productId == product }
        row.attempts = result.attempts
        row.retries = result.retries + sweep.retries
        row.errors = result.errors + sweep.errors
        row.orders = line?.orders ?? 0
        row.auditClean = audit.clean
        row.oversold = max(0, row.orders - stock) + (line?.negativeSlots ?? 0)
        row.stranded = line?.remaining ?? stock
        let purchases = result.purchases + sweep.purchases
        var orderOfRequest: [UInt64: UInt64] = [:]
        var holders = Set<UInt64>()
        for purchase in purchases {
            if let earlier = orderOfRequest[purchase.requestID] {
                if earlier != purchase.orderID { row.duplicated += 1 }
                continue
            }
            orderOfRequest[purchase.requestID] = purchase.orderID
            if !holders.insert(purchase.userID).inserted { row.duplicated += 1 }
            let lookup = try await retryingUnavailable {
                try await inventory.purchase(PurchaseRequest(
                    requestId: purchase.requestID, userId: purchase.userID, productId: product, lookupOnly: true))
            }
            if lookup.outcome != .purchased || lookup.orderId != purchase.orderID { row.lost += 1 }
        }
        let status = try await retryingUnavailable { try await quota.status() }
        row.quotaInvariant = status.products.allSatisfy { $0.grantedUnused <= $0.sellable }
        if !row.quotaInvariant { say("  \(fault.rawValue): quota status \(status)") }
    }

    /// UNAVAILABLE means "try again" (a service reconnecting after the fault): as any careful client does.
    private func retryingUnavailable<T: Sendable>(_ call: @Sendable () async throws -> T) async throws -> T {
        for _ in 0..<40 {
            do {
                return try await call()
            } catch let error as RPCError where error.code == .unavailable {
                try await Task.sleep(for: .milliseconds(250))
            }
        }
        return try await call()
    }

    private func inject(platform: Platform) async throws {
        say("  \(fault.rawValue): injecting the fault mid-sale")
        switch fault {
        case .edge:
            await platform.edges[2].process.kill9()
        case .inventory:
            try await platform.crashAndRestartInventory()
        case .postgres:
            try await servers.restartPostgres()
        case .zookeeper:
            try await servers.restartZooKeeper()
        case .ensemble:
            try await servers.stopEnsembleLeader()
        }
    }

    /// Waits until no live edge holds an attempt in doubt and (after an edge died) the quota service has
    /// reclaimed the dead edge's share.
    private func settle(platform: Platform, live: [ServiceEndpoint], quota: QuotaClient) async throws {
        let clients = live.map { EdgeClient(host: $0.host, port: $0.port, logger: logger) }
        defer { Task { for client in clients { await client.shutdown() } } }
        try await waitUntil(timeout: .seconds(60), what: "in-doubt attempts to settle") {
            for client in clients where (try? await client.stats().inDoubt) != 0 { return false }
            guard let product = try? await quota.status().products.first else { return false }
            return product.edges.count == live.count
        }
    }
}
