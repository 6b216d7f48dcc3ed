import FlashSaleClient
import Foundation
import Logging
import Proto
import QuotaContract
import Synchronization
import TestSupport
import Testing
import Wire
import ZooKeeperClient

/// One quota test's platform, a thin test facade over `Platform`: the real InventoryService (two fresh databases), one
/// or two QuotaService processes and Edge processes, under a ZooKeeper root of its own, with open ZooKeeper nodes
/// (the test reads them); plus each edge's id, buyers, a monitor of the invariant, and the final checks.
final class QuotaCluster: Sendable {
    static let token = "quota-test-operator-token"
    /// The services' own token (the edges' purchases, the quota service's stock changes), and the test's inventory client's.
    static let serviceToken = "quota-test-service-token"
    let platform: Platform
    var zkHosts: String { platform.configuration.zooKeeperHosts }
    var root: String { platform.configuration.zooKeeperRoot }
    let layout: QuotaLayout
    let zk: ZooKeeperClient
    var inventoryEndpoint: ServiceEndpoint { platform.inventory }
    let inventory: InventoryClient
    var quotaEndpoints: [ServiceEndpoint] { platform.quotaServices }
    let monitor: InvariantMonitor
    private let logger: Logger
    private let edgeList = Mutex<[(endpoint: ServiceEndpoint, id: UInt32)]>([])
    private let ids = Atomic<UInt64>(UInt64.random(in: 1...0xFFFF) << 40)

    var edges: [ServiceEndpoint] { edgeList.withLock { $0.map(\.endpoint) } }
    var edgeIDs: [UInt32] { edgeList.withLock { $0.map(\.id) } }
    var runningEdges: [ServiceEndpoint] { edges.filter { $0.process.isRunning } }

    private init(platform: Platform, zk: ZooKeeperClient, logger: Logger) {
        self.platform = platform
        self.layout = QuotaLayout(root: platform.configuration.zooKeeperRoot)
        self.zk = zk
        self.inventory = InventoryClient(port: platform.inventory.port, token: Self.serviceToken, logger: logger)
        self.logger = logger
        self.monitor = InvariantMonitor()
    }

    /// Starts everything, runs `body`, and stops everything (also when `body` throws).
    static func with(
        edges: Int, quotaServices: Int = 1, zooKeeper: String? = nil, _ body: (QuotaCluster) async throws -> Void
    ) async throws {
        let logger = Logger(label: "quota-test")
        try await Platform.withTestPlatform(prefix: "t_quota", operatorToken: token) { configuration in
            if let zooKeeper { configuration.zooKeeperHosts = zooKeeper }
            configuration.zooKeeperSecrets = nil
            configuration.serviceToken = serviceToken
            configuration.quotaServices = quotaServices
            // The edges come one at a time below, each with its id.
            configuration.edges = 0
            configuration.logLevel = "debug"
            configuration.inventoryArguments = ["--log-level", "info"]
        } _: { platform, _ in
            let zk = try await ZooKeeperClient.connect(hosts: platform.configuration.zooKeeperHosts, logger: logger)
            let cluster = QuotaCluster(platform: platform, zk: zk, logger: logger)
            do {
                for _ in 0..<edges { try await cluster.addEdge() }
                cluster.monitor.start(cluster)
                try await body(cluster)
            } catch {
                await cluster.stop()
                throw error
            }
            await cluster.stop()
        }
    }

    /// What the platform does not stop: the monitor, the test's clients and ZooKeeper nodes. Edges first, as the
    /// platform would.
    private func stop() async {
        await monitor.stop()
        await platform.stop()
        await inventory.shutdown()
        try? await zk.deleteTree(root)
        await zk.close()
    }

    /// Starts an edge talking to quota service `quotaService`; returns once it is registered (its READY line).
    /// `port` 0 picks a free one; `zooKeeper` overrides the cluster's and `advertise` the address the quota service
    /// calls (proxies the test can cut).
    @discardableResult
    func addEdge(quotaService: Int = 0, port: Int = 0, zooKeeper: String? = nil, advertise: String? = nil) async throws -> ServiceEndpoint {
        let quota = quotaEndpoints[quotaService].address
        let edge = try await platform.addEdge { arguments in
            arguments.quota = quota
            arguments.port = port
            if let zooKeeper { arguments.zooKeeper = zooKeeper }
            arguments.advertise = advertise
        }
        // Its id: the registration node that names its address.
        let deadline = ContinuousClock.now + .seconds(10)
        var id: UInt32 = 0
        while id == 0 {
            for (name, registration) in try await registrations() where registration.address == (advertise ?? edge.address) {
                id = QuotaLayout.edgeID(name: name) ?? 0
            }
            if id == 0 {
                guard ContinuousClock.now < deadline else { throw ClusterError.timeout("edge \(edge.address) in ZooKeeper") }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        let found = id
        edgeList.withLock { $0.append((edge, found)) }
        return edge
    }

    // MARK: - Clients

    func quota(_ index: Int = 0) -> QuotaClient {
        QuotaClient(port: quotaEndpoints[index].port, token: Self.token, logger: logger)
    }

    /// A client of quota service `index` with `token`: `serviceToken` for what the edges call (`quota.GrantMore`).
    func quota(_ index: Int = 0, token: String) -> QuotaClient {
        QuotaClient(port: quotaEndpoints[index].port, token: token, logger: logger)
    }

    func edgeClient(_ edge: ServiceEndpoint) -> EdgeClient {
        EdgeClient(host: edge.host, port: edge.port, timeout: .seconds(5), logger: logger)
    }

    func createProduct(_ product: String, stock: Int64, through index: Int = 0) async throws {
        let client = quota(index)
        defer { Task { await client.shutdown() } }
        _ = try await client.createProduct(CreateProductRequest(productId: product, totalStock: stock))
    }

    func status(_ product: String) async throws -> ProductQuotas {
        let client = quota()
        defer { Task { await client.shutdown() } }
        return try #require(try await client.status(productId: product).products.first)
    }

    func edgeStats() async throws -> [EdgeStatsResponse] {
        var stats: [EdgeStatsResponse] = []
        for edge in runningEdges {
            let client = edgeClient(edge)
            stats.append(try await client.stats())
            await client.shutdown()
        }
        return stats
    }

    /// What the edge's ledger holds for `product` now (`edge.QuotaUsage`, from the edge itself).
    func usage(_ edge: ServiceEndpoint, _ product: String) async throws -> ProductUsage? {
        let client = edgeClient(edge)
        defer { Task { await client.shutdown() } }
        let registration = try await client.rpc.call(
            EdgeRPC.QuotaUsage.self, QuotaStatusRequest(productId: product))
        return registration.usage.first { $0.productId == product }
    }

    func soldCount(_ product: String) async throws -> Int64 {
        try await inventory.soldCounts(productId: product).first?.sold ?? 0
    }

    // MARK: - ZooKeeper

    func record(_ product: String) async throws -> ProductQuotaState? {
        do {
            return try ProductQuotaState(decoding: try await zk.get(layout.product(product)).data)
        } catch let error as ZooKeeperError where error.code == .noNode {
            return nil
        }
    }

    func registrations() async throws -> [String: EdgeRegistration] {
        var result: [String: EdgeRegistration] = [:]
        for name in (try? await zk.children(layout.edges)) ?? [] {
            guard let data = try? await zk.get(layout.edge(name)).data else { continue }
            result[name] = try? EdgeRegistration(decoding: data)
        }
        return result
    }

    /// What each registered edge reports to have applied for `product` (by node name).
    func appliedGrants(_ product: String) async throws -> [String: Int64] {
        var result: [String: Int64] = [:]
        for (name, registration) in try await registrations() {
            result[name] = registration.usage.first { $0.productId == product }?.granted ?? 0
        }
        return result
    }

    func published(_ product: String, edge: String) async throws -> Int64 {
        do {
            return try QuotaGrant(decoding: try await zk.get(layout.quota(product, edge: edge)).data).granted
        } catch let error as ZooKeeperError where error.code == .noNode {
            return 0
        }
    }

    // MARK: - Waiting

    func waitUntil(
        _ what: String, timeout: Duration = .seconds(15), _ condition: @Sendable () async throws -> Bool
    ) async throws {
        try await TestSupport.waitUntil(timeout: timeout, what: what) {
            (try? await condition()) ?? false
        }
    }

    /// Until the live edges hold `expected` (granted minus released, in edge id order) and have applied it.
    func waitForGrants(_ product: String, _ expected: [Int64]) async throws {
        try await waitUntil("grants \(expected)") {
            let status = try await self.status(product)
            return status.edges.sorted { $0.edgeId < $1.edgeId }.map { $0.granted - $0.released } == expected
        }
        try await waitForEdgesToApply(product)
    }

    /// Until every live edge reports having applied what is published for it, and that matches the record.
    func waitForEdgesToApply(_ product: String) async throws {
        try await waitUntil("edges to apply their grants") {
            guard let record = try await self.record(product) else { return false }
            let applied = try await self.appliedGrants(product)
            for allotment in record.allotments where !allotment.retired {
                guard let edgeApplied = applied[allotment.edge] else { continue }  // not registered (gone)
                let published = try await self.published(product, edge: allotment.edge)
                if published != allotment.granted || edgeApplied != published { return false }
            }
            return true
        }
    }

    func waitForSold(_ product: String, atLeast units: Int64, timeout: Duration = .seconds(30)) async throws {
        try await waitUntil("\(units) sold", timeout: timeout) { try await self.soldCount(product) >= units }
    }

    // MARK: - Buying

    func nextIDs() -> (request: UInt64, user: UInt64) {
        let id = ids.add(1, ordering: .relaxed).newValue
        return (id, id)
    }

    /// Buys until `count` purchases succeeded through `edges` (round robin), or attempts run out. Returns purchases.
    func buy(_ product: String, through edges: [ServiceEndpoint], count: Int) async throws -> Int {
        let clients = edges.map(edgeClient)
        defer { for client in clients { Task { await client.shutdown() } } }
        var purchased = 0
        var attempts = 0
        while purchased < count && attempts < count * 5 {
            attempts += 1
            let (request, user) = nextIDs()
            if try await clients[attempts % clients.count].purchase(requestID: request, userID: user, product: product).outcome == .purchased {
                purchased += 1
            }
        }
        return purchased
    }

    /// Buyers through the running edges until the database counts `until` sold (or it stops moving); the final count.
    func sell(_ product: String, until total: Int64, through edges: [ServiceEndpoint]? = nil) async throws -> Int64 {
        let sale = startSale(product, through: edges)
        var last = try await soldCount(product)
        var lastMove = ContinuousClock.now
        while last < total && ContinuousClock.now - lastMove < .seconds(8) {
            try await Task.sleep(for: .milliseconds(50))
            let now = try await soldCount(product)
            if now != last { lastMove = .now }
            last = now
        }
        try await Task.sleep(for: .milliseconds(200))  // buyers keep trying: nothing more may sell
        let outcome = await sale.stop()
        #expect(outcome.errors == 0, "purchase errors: \(outcome.errorsByCode)")
        return try await soldCount(product)
    }

    /// Four buyers, each one attempt at a time, each attempt a new buyer, through the running edges of `edges` (all
    /// of the cluster's by default, as they come and go); retried with the same request id when its outcome does not
    /// arrive.
    func startSale(_ product: String, through edges: [ServiceEndpoint]? = nil) -> Sale {
        // A block of request ids of the cluster's own, apart from `nextIDs()`'s.
        let base = ids.add(1 << 32, ordering: .relaxed).newValue
        let crowd = BuyerSwarm.Following(
            product: product, workers: 4, perSecond: 4_000, requestIDBase: base,
            edges: { (edges ?? self.edges).filter(\.process.isRunning).map { ($0.host, $0.port) } }, logger: logger)
        return Sale(crowd: crowd, running: Task { await crowd.run() })
    }

    // MARK: - Final checks

    /// After a test: nothing granted beyond sellable, grants published as recorded and applied by the live edges,
    /// exactly the expected orders, and a clean database audit.
    func checkInvariants(expectOrders: [String: Int64], sourceLocation: SourceLocation = #_sourceLocation) async throws {
        for (product, orders) in expectOrders {
            let status = try await self.status(product)
            #expect(status.grantedUnused <= status.sellable, "granted beyond sellable: \(status)", sourceLocation: sourceLocation)
            #expect(try await soldCount(product) == orders, "orders of \(product)", sourceLocation: sourceLocation)
            try await waitForEdgesToApply(product)
            let record = try #require(try await record(product))
            let stock = try await inventory.getStock(productId: product)
            #expect(record.totalStock == stock.totalStock, sourceLocation: sourceLocation)
            #expect(stock.sold <= stock.totalStock, sourceLocation: sourceLocation)
        }
        let audit = try await inventory.audit()
        #expect(audit.clean, "audit: \(audit)", sourceLocation: sourceLocation)
        let violations = monitor.violations
        #expect(violations.isEmpty, "over-grants seen during the test: \(violations.prefix(5))", sourceLocation: sourceLocation)
    }
}

/// A running sale's buyers.
struct Sale: Sendable {
    let crowd: BuyerSwarm.Following
    let running: Task<BuyerSwarm.Result, Never>

    /// Stops the buyers; their tally.
    func stop() async -> BuyerSwarm.Result {
        crowd.stop()
        return await running.value
    }
}

/// Samples the quota service's status every 50 ms during a test: outstanding units must never exceed sellable ones.
final class InvariantMonitor: Sendable {
    private let state = Mutex((violations: [String](), pausedUntil: ContinuousClock.now, paused: false, task: Task<Void, Never>?.none))

    var violations: [String] { state.withLock { $0.violations } }

    /// A lowered limit is applied to the database first, then units come back from the edges: allow that window.
    func allowOverGrant(for duration: Duration) { state.withLock { $0.pausedUntil = .now + duration } }
    func pause() { state.withLock { $0.paused = true } }
    func resume() { state.withLock { $0.paused = false } }

    func start(_ cluster: QuotaCluster) {
        let task = Task {
            let client = cluster.quota()
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(50))
                let skip = state.withLock { $0.paused || ContinuousClock.now < $0.pausedUntil }
                guard !skip, let status = try? await client.status() else { continue }
                let still = state.withLock { !$0.paused && ContinuousClock.now >= $0.pausedUntil }
                for product in status.products where still && product.grantedUnused > product.sellable {
                    state.withLock { $0.violations.append("\(product.productId): outstanding \(product.grantedUnused) > sellable \(product.sellable)") }
                }
            }
            await client.shutdown()
        }
        state.withLock { $0.task = task }
    }

    func stop() async {
        let task = state.withLock { $0.task }
        task?.cancel()
        await task?.value
    }
}

/// A ZooKeeper of the test's own (own port, own data folder), so that restarting it disturbs no other test.
struct PrivateZooKeeper: Sendable {
    let port: Int
    let base: String
    var hosts: String { "127.0.0.1:\(port)" }
    private var environment: [String: String] { ["FLASHSALE_ZK_PORT": "\(port)", "FLASHSALE_ZK_BASE": base] }
    private var script: String { RepoPaths.scripts.appendingPathComponent("zookeeper.sh").path }

    static func start() async throws -> PrivateZooKeeper {
        let zk = PrivateZooKeeper(
            port: LocalPorts.free(), base: RepoPaths.root.appendingPathComponent(".data/test-zk-\(UInt32.random(in: 0...UInt32.max))").path)
        try await zk.restart()
        return zk
    }

    func restart() async throws {
        let result = try await runCommand(script, ["start"], environment: environment, timeout: .seconds(60))
        guard result.status == 0 else { throw ClusterError.commandFailed("private zookeeper start: \(result.output)") }
    }

    func stop() async throws {
        _ = try await runCommand(script, ["stop"], environment: environment, timeout: .seconds(60))
    }

    func destroy() async {
        try? await stop()
        try? FileManager.default.removeItem(atPath: base)
    }
}
