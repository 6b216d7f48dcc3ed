import Cluster
import FlashSaleClient
import Foundation
import Logging
import PostgresClient
import Proto
import Wire

/// One fault injected mid-sale: a process or server fault, or a hostile client's load (`isHostile`).
enum Fault: String, CaseIterable, Sendable {
    case edge          // kill -9 an edge
    case inventory     // kill -9 the InventoryService, start it again
    case postgres      // restart PostgreSQL
    case zookeeper     // restart ZooKeeper
    case ensemble      // stop the leader of a 3-node ZooKeeper ensemble
    case deadlines     // 1 µs-deadline purchases: one request id repeated, and fresh ids
    case reuse         // request ids reused across users, products and the hot and main databases
    case keepzero      // retry: true floods while keep is 0
    case tokenless     // purchases straight to the inventory without a service token
    case poison        // registrations in ZooKeeper with extreme numbers, and under a dead edge's name
    case hotdown       // the hot database refuses connections while cold products sell
    case sameport      // an edge killed and a new one started on its port
    case partition     // an edge cut off from ZooKeeper (and the quota service) past its session timeout
    case replica       // kill -9 one of two inventory replicas
    case quotaleader   // kill -9 the leader of two quota services; the standby takes over
    case pgfailover    // PostgreSQL under Patroni: kill -9 of the primary's postmaster, the standby promoted
    case pgrejoin      // the same, and the old primary restarted mid-sale: it rejoins as the standby
    case pgorphan      // kill -9 of Patroni alone on the primary: its PostgreSQL (main, hot and a shard) lives on, orphaned
    case pgstandby     // the standby lost: the primary acknowledges alone (non-strict synchronous mode)
    case sharddown     // one shard cluster refuses connections while products on the others sell
    case holds         // a sale with a hold time and abandoned carts; kill -9 of the inventory mid-expiry

    var isHostile: Bool {
        switch self {
        case .edge, .inventory, .postgres, .zookeeper, .ensemble, .replica, .quotaleader, .holds: false
        case .pgfailover, .pgrejoin, .pgorphan, .pgstandby: false
        default: true
        }
    }

    /// What the case's sale sells: the reuse case needs two products of the main database and a hot one, the
    /// hot-database case a cold and a hot one.
    var products: [SaleProduct] {
        switch self {
        case .reuse: [SaleProduct(id: "f1"), SaleProduct(id: "f2"), SaleProduct(id: "h1", hot: true)]
        case .hotdown: [SaleProduct(id: "f1"), SaleProduct(id: "h1", hot: true)]
        case .sharddown: Fault.shardDownProducts
        // Least-loaded placement: f1 on main, s2 on shard-2 (checked as the fault lands).
        case .pgorphan: [SaleProduct(id: "f1"), SaleProduct(id: "s2")]
        default: [SaleProduct(id: "f1")]
        }
    }
}

/// What one case found: the table row of `flashsale-bench faults`.
struct FaultRow: Sendable {
    var fault: Fault
    var attempts = 0
    var orders: Int64 = 0
    var stock: Int64 = 0
    /// PURCHASED replies whose order the database does not hold (with that order id, for that buyer).
    var lost = 0
    /// A buyer holding two orders of a product, a request answered with two different orders, or a request id
    /// holding orders in two databases.
    var duplicated = 0
    /// Orders beyond the stock, plus negative slots.
    var oversold: Int64 = 0
    /// Stock still unsold after a final sweep of buyers: units the fault left unsellable.
    var stranded: Int64 = 0
    var auditClean = false
    /// The quota service's own records: granted unused <= sellable.
    var quotaInvariant = false
    /// Ground truth, sampled through the case: what live edges hold available <= the database's remaining.
    var groundTruth = GroundTruthMonitor.Summary()
    /// The hostile case's expectations not met, and what it saw; also a settle that timed out.
    var failures: [String] = []
    var notes: [String] = []
    var retries = 0
    var errors = 0
    var seconds = 0.0
    /// Attempts with an outcome when the fault began: fewer than `attempts`, or the case tested nothing.
    var completedAtFault = 0

    var groundTruthHeld: Bool { groundTruth.samples > 0 && groundTruth.violations.isEmpty }

    var passed: Bool {
        lost == 0 && duplicated == 0 && oversold == 0 && stranded == 0 && auditClean && quotaInvariant
            && groundTruthHeld && failures.isEmpty && completedAtFault < attempts
    }
}

/// Runs one case: a sale on 3 edges against private PostgreSQL and ZooKeeper, the fault (or the hostile load)
/// once a third of the stock is sold, clients retrying in-doubt requests with the same request id, then a sweep
/// that buys what is left, and the checks. The ground-truth invariant is sampled from the first grant to the end
/// of the sweep.
extension FaultCase {
    /// A case's crowd: mostly distinct buyers (200 per unit), retrying what is in doubt with the same request id, and
    /// paced to last about `pacedSeconds`, so that the fault lands while most of the sale is still to come.
    func pacedCrowd(
        edges: [ServiceEndpoint], products: [String], attempts: Int, stock: Int, seed: UInt64
    ) -> BuyerSwarm.Configuration {
        var configuration = BuyerSwarm.Configuration(
            edges: edges.map { ($0.host, $0.port) }, products: products, attempts: attempts,
            users: stock * 200, connections: connections, depth: depth, seed: seed)
        configuration.timeout = .seconds(3)
        configuration.maxRetries = 60
        let chains = Int64(connections * depth)
        configuration.pause = .nanoseconds(fault.pacedSeconds * 1_000_000_000 * chains / Int64(attempts))
        return configuration
    }
}

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
        var row = FaultRow(fault: fault)
        let zooKeeper = fault == .ensemble ? try await servers.startEnsemble() : servers.zooKeeper
        let databases = try await servers.createDatabases(prefix: "fault_\(fault.rawValue)", for: fault)
        let secrets = FaultSecrets()
        let root = ZooKeeperRoot.unique("fault_\(fault.rawValue)")
        var configuration = servers.configuration(
            for: fault, FaultPlatform.configuration(databases: databases, zooKeeper: zooKeeper, root: root, secrets: secrets))
        fault.shape(&configuration)
        var platform: Platform?
        var proxies: (zooKeeper: BlackholeProxy, edge: BlackholeProxy)?
        do {
            if fault == .partition {
                // Edge 3 reaches ZooKeeper, and the quota service reaches edge 3, through proxies it can cut.
                let twoEdges = try await FaultPlatform.start(configuration, edges: 2)
                platform = twoEdges
                let zooKeeperProxy = try await BlackholeProxy.start(forwardingToFirstOf: zooKeeper, mode: .bothWays)
                let port = LocalPorts.free()
                let edgeProxy = try await BlackholeProxy.start(port: port, mode: .bothWays)
                proxies = (zooKeeperProxy, edgeProxy)
                _ = try await FaultPlatform.addPartitionableEdge(
                    to: twoEdges, port: port, zooKeeperProxy: zooKeeperProxy, edgeProxy: edgeProxy)
            } else {
                platform = try await FaultPlatform.start(configuration, edges: 3)
            }
            try await sale(
                platform: platform!, databases: databases, root: root, secrets: secrets, proxies: proxies, row: &row)
        } catch {
            say("  \(fault.rawValue): \(error)")
            await platform?.stop()
            await stopProxies(proxies)
            await databases.drop()
            if fault == .ensemble { await servers.stopEnsemble() }
            throw error
        }
        await platform?.stop()
        await stopProxies(proxies)
        await databases.drop()
        if fault == .ensemble { await servers.stopEnsemble() }
        row.seconds = Double((ContinuousClock.now - started).components.seconds)
        return row
    }

    private func stopProxies(_ proxies: (zooKeeper: BlackholeProxy, edge: BlackholeProxy)?) async {
        await proxies?.zooKeeper.stop()
        await proxies?.edge.stop()
    }

    private func sale(
        platform: Platform, databases: RunDatabases, root: String, secrets: FaultSecrets,
        proxies: (zooKeeper: BlackholeProxy, edge: BlackholeProxy)?, row: inout FaultRow
    ) async throws {
        let quota = FaultPlatform.quotaClient(platform, secrets: secrets, logger: logger)
        let inventory = FaultPlatform.inventoryClient(platform, secrets: secrets, logger: logger)
        defer {
            Task {
                await quota.shutdown()
                await inventory.shutdown()
            }
        }
        if fault == .holds { return try await holdSale(platform: platform, databases: databases, secrets: secrets, quota: quota, inventory: inventory, row: &row) }
        let products = fault.products
        let perProduct = max(1, stock / Int64(products.count))
        row.stock = perProduct * Int64(products.count)
        try await SaleDriver.prepare(
            quota: quota, products: products.map { ($0.id, perProduct, $0.hot) }, keepPerMillion: 1_000_000, edges: [],
            logger: logger)

        let live = LiveEdges(platform.edges)
        let monitor = GroundTruthMonitor(
            products: products.map(\.id), live: live, inventory: inventory, secrets: secrets, logger: logger)
        let sampling = Task { await monitor.run() }
        defer { sampling.cancel() }

        // Most attempts are distinct buyers, so the stock sells while the fault happens. The partition case keeps
        // the crowd off edge 3, so that it still holds units when its session can expire: its own buyers probe it.
        let total = Int(row.stock)
        let crowded = fault == .partition ? Array(platform.edges.prefix(2)) : platform.edges
        let configuration = pacedCrowd(
            edges: crowded, products: products.map(\.id), attempts: total * 2, stock: total,
            seed: UInt64(fault.hashValue.magnitude))
        let swarm = BuyerSwarm(configuration: configuration, logger: logger)
        let sale = Task { try await swarm.run() }
        try await waitUntil(timeout: .seconds(60), what: "a third of the stock to sell") { swarm.completed >= total / 3 }
        // Counted as the fault begins: a restart's downtime is the fault, however long the restart takes.
        row.completedAtFault = swarm.completed
        var injection = HostileInjection()
        if fault.isHostile {
            say("  \(fault.rawValue): hostile load mid-sale")
            let context = CaseContext(
                platform: platform, servers: servers, databases: databases, root: root, secrets: secrets,
                products: products, live: live, inventory: inventory, quota: quota,
                swarmRequestIDBase: configuration.requestIDBase, proxies: proxies, logger: logger, say: say)
            injection = await hostile(HostileCases(context: context))
        } else {
            try await inject(platform: platform, live: live)
        }
        let result = try await sale.value

        // In-doubt attempts settle, a dead edge's quota comes back; then sweep up whatever is left.
        do {
            try await settle(live: live.all, quota: quota, secrets: secrets, timeout: .seconds(fault.isHostile ? 20 : 60))
        } catch {
            row.failures.append("settle: \(error)")
        }
        var sweepConfiguration = BuyerSwarm.Configuration(
            edges: live.all.map { ($0.host, $0.port) }, products: products.map(\.id), attempts: total * 2,
            users: total * 200, connections: 8, depth: 4, seed: 7_777)
        sweepConfiguration.requestIDBase = configuration.requestIDBase &+ 1 << 31
        let sweep = try await BuyerSwarm(configuration: sweepConfiguration, logger: logger).run()
        var findings = injection.findings
        findings.merge(await injection.afterSale())
        sampling.cancel()
        _ = await sampling.value
        row.groundTruth = monitor.result

        let audit = try await retryingUnavailable { try await inventory.audit() }
        row.attempts = result.attempts
        row.retries = result.retries + sweep.retries
        let retriesByCode = result.retriesByCode.merging(sweep.retriesByCode, uniquingKeysWith: +)
        if !retriesByCode.isEmpty {
            row.notes.append("retries by code: " + retriesByCode.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
        }
        row.errors = result.errors + sweep.errors
        row.auditClean = audit.clean
        for product in products {
            let line = audit.products.first { $0.productId == product.id }
            let orders = line?.orders ?? 0
            row.orders += orders
            row.oversold += max(0, orders - perProduct) + (line?.negativeSlots ?? 0)
            row.stranded += line?.remaining ?? perProduct
            if let line, line.remaining > 0 {
                row.notes.append(await whereStranded(product.id, remaining: line.remaining, live: live.all, inventory: inventory, secrets: secrets))
            }
        }
        var orderOfRequest: [UInt64: UInt64] = [:]
        var holders = Set<String>()
        var firstReplies: [BuyerSwarm.Purchase] = []
        for purchase in result.purchases + sweep.purchases {
            if let earlier = orderOfRequest[purchase.requestID] {
                if earlier != purchase.orderID { row.duplicated += 1 }
                continue
            }
            orderOfRequest[purchase.requestID] = purchase.orderID
            if !holders.insert("\(purchase.userID)/\(purchase.product)").inserted { row.duplicated += 1 }
            firstReplies.append(purchase)
        }
        row.lost += try await SaleDriver.purchasesWithoutOrder(firstReplies, inventory: inventory).count
        row.lost += findings.lost
        row.duplicated += findings.duplicated
        row.failures += findings.failures
        row.notes += findings.notes
        let status = try? await retryingUnavailable { try await quota.status() }
        row.quotaInvariant = status?.products.allSatisfy { $0.grantedUnused <= $0.sellable } ?? false
        if let status, !row.quotaInvariant { say("  \(fault.rawValue): quota status \(status)") }
        await injection.cleanup()
    }

    private func hostile(_ cases: HostileCases) async -> HostileInjection {
        switch fault {
        case .deadlines: return await cases.tinyDeadlines()
        case .reuse: return await cases.reusedIDs()
        case .keepzero: return await cases.retryFloodAtKeepZero()
        case .tokenless: return await cases.directPurchases()
        case .poison: return await cases.poisonedRegistration()
        case .hotdown: return await cases.hotDatabaseDown()
        case .sharddown: return await cases.shardDown()
        case .sameport: return await cases.edgeOnDeadPort()
        case .partition: return await cases.cutOffFromZooKeeper()
        case .edge, .inventory, .postgres, .zookeeper, .ensemble, .replica, .quotaleader, .holds: return HostileInjection()
        case .pgfailover, .pgrejoin, .pgorphan, .pgstandby: return HostileInjection()
        }
    }

    /// Where the units left after the sweep are, edge by edge: what each live edge still holds available, what it
    /// took (used) beyond the orders made through it (units taken with no order behind them: leaked, or in doubt),
    /// and what the database sold for edges that are not live (a dead edge's share not reclaimed).
    private func whereStranded(
        _ product: String, remaining: Int64, live: [ServiceEndpoint], inventory: InventoryClient, secrets: FaultSecrets
    ) async -> String {
        let sold = (try? await inventory.soldCounts(productId: product).first?.edges) ?? []
        var parts: [String] = []
        for edge in live {
            let client = FaultPlatform.operatorClient(edge, secrets: secrets, logger: logger)
            let stats = try? await client.stats()
            let usage = (try? await client.rpc.call(
                EdgeRPC.QuotaUsage.self, QuotaStatusRequest(productId: product)))?
                .usage.first { $0.productId == product }
            await client.shutdown()
            guard let stats, let usage else {
                parts.append("edge on port \(edge.port) unreadable")
                continue
            }
            let made = sold.first { $0.edgeId == stats.edgeId }?.sold ?? 0
            parts.append("edge \(stats.edgeId): available \(usage.granted - usage.used - usage.released), used \(usage.used) "
                + "for \(made) orders (\(usage.used - made) without one, \(stats.inDoubt) in doubt)")
        }
        return "\(product): \(remaining) stranded; " + parts.joined(separator: "; ")
    }

    private func inject(platform: Platform, live: LiveEdges) async throws {
        say("  \(fault.rawValue): injecting the fault mid-sale")
        switch fault {
        case .edge:
            live.remove(port: platform.edges[2].port)
            await platform.edges[2].process.kill9()
        case .inventory:
            try await platform.crashAndRestartInventory()
        case .postgres:
            try await servers.restartPostgres()
        case .zookeeper:
            try await servers.restartZooKeeper()
        case .ensemble:
            try await servers.stopEnsembleLeader()
        case .replica: await killInventoryReplica(platform)
        case .quotaleader: try await killQuotaLeader(platform)
        case .pgfailover, .pgrejoin, .pgorphan, .pgstandby:
            try await servers.injectPatroniFault(fault, say: say)
        default:
            break
        }
    }

    /// Waits until no live edge holds an attempt in doubt and the quota service lists no allotment but live edges'
    /// (a dead edge's share reclaimed). A live edge may be missing from the list: one whose session ended while cut
    /// off is retired for good.
    func settle(live: [ServiceEndpoint], quota: QuotaClient, secrets: FaultSecrets, timeout: Duration) async throws {
        let clients = live.map { FaultPlatform.operatorClient($0, secrets: secrets, logger: logger) }
        defer { Task { for client in clients { await client.shutdown() } } }
        try await waitUntil(timeout: timeout, what: "in-doubt attempts to settle and dead edges to be retired") {
            var liveIDs = Set<UInt32>()
            for client in clients {
                guard let stats = try? await client.stats(), stats.inDoubt == 0 else { return false }
                liveIDs.insert(stats.edgeId)
            }
            guard let products = try? await quota.status().products, !products.isEmpty else { return false }
            return products.allSatisfy { Set($0.edges.map(\.edgeId)).isSubset(of: liveIDs) }
        }
    }
}
