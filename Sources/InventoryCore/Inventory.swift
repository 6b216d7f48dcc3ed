import Logging
import Proto
import ServiceLifecycle
import Synchronization
import Wire

/// One database cluster of the inventory: its admin statements and its purchase pool.
struct ClusterParts: Sendable {
    let database: ProductDatabase
    let pool: PurchasePool
    var role: DatabaseRole { database.role }
}

/// The service's state: the catalog, the database clusters (`main`, `hot`, shards) and their purchase pools. As a
/// `Service` it runs the consumers until graceful shutdown, then lets them finish what is queued and in flight.
final class Inventory: Service, Sendable {
    let catalog: ProductCatalog
    /// The clusters this inventory was given, `main` first.
    let clusters: [ClusterParts]
    private let byRole: [DatabaseRole: ClusterParts]
    /// Clusters the catalog names but this inventory was not given: their products are refused (UNAVAILABLE, as a
    /// cluster that is down; another replica given the cluster serves them), and the log says which flag is missing.
    private let absent = Mutex<[DatabaseRole: ClusterParts]>([:])
    /// A name missing from `catalog` may be a product another replica created: reloaded from the database.
    let catalogRefresh: CatalogRefresher
    let logger: Logger

    init(catalog: ProductCatalog, clusters: [ClusterParts], logger: Logger) {
        precondition(clusters.first?.role == .main, "the main cluster comes first")
        self.catalog = catalog
        self.clusters = clusters
        self.byRole = Dictionary(clusters.map { ($0.role, $0) }) { first, _ in first }
        let main = clusters[0].database
        self.catalogRefresh = CatalogRefresher(catalog: catalog, logger: logger) {
            try await main.catalog().map(CatalogEntry.init(row:))
        }
        self.logger = logger
    }

    var main: ProductDatabase { clusters[0].database }

    func parts(for role: DatabaseRole) -> ClusterParts {
        if let parts = byRole[role] { return parts }
        return absent.withLock { absent in
            if let parts = absent[role] { return parts }
            logger.warning("a product lives on a cluster this inventory was not given", metadata: ["database": "\(role)"])
            // Never started: the pool refuses every purchase, the database every statement.
            let parts = ClusterParts(
                database: .absent(role, logger: logger),
                pool: PurchasePool(
                    configuration: .init(role: role, dsn: "", consumers: 1, maxBatch: 1, queueLimit: 1), logger: logger))
            absent[role] = parts
            return parts
        }
    }

    func pool(for role: DatabaseRole) -> PurchasePool { parts(for: role).pool }

    func database(for role: DatabaseRole) -> ProductDatabase { parts(for: role).database }

    func run() async throws {
        // The others start when `ClusterStartup` has brought them up; until then their purchases are refused.
        for cluster in clusters where cluster.database.isReady { cluster.pool.start() }
        await withTaskGroup(of: Void.self) { group in
            // Due holds are released on every cluster (each one's expiry waits until it is ready).
            for cluster in clusters {
                group.addTask { await HoldExpiry(database: cluster.database, pool: cluster.pool, logger: self.logger).run() }
            }
            // Listed before the server in the service group, so this returns only after the server has drained.
            try? await gracefulShutdown()
            group.cancelAll()
        }
        logger.info("inventory draining")
        await withTaskGroup(of: Void.self) { group in
            for cluster in clusters { group.addTask { await cluster.pool.stop() } }
        }
    }

    /// A cluster was brought up after start-up: its products sell from now on.
    func clusterReady(_ role: DatabaseRole) {
        byRole[role]?.pool.start()
    }

    /// `body` on every cluster at once, keeping the rows (named by `name`) of products catalogued on that cluster:
    /// one whose creation crashed midway, or a leftover of a creation that lost a race to another cluster, is not
    /// (one made by another replica since this one loaded its catalog is found by a reload). The results in the
    /// clusters' order; fails when any cluster fails (the error names it).
    private func everyCluster<T: Sendable>(
        _ name: @escaping @Sendable (T) -> String, _ body: @escaping @Sendable (ProductDatabase) async throws -> [T]
    ) async throws -> [T] {
        let all = try await withThrowingTaskGroup(of: (Int, [T]).self) { group in
            for (index, cluster) in clusters.enumerated() {
                group.addTask { (index, try await body(cluster.database)) }
            }
            var results = [[T]](repeating: [], count: clusters.count)
            for try await (index, rows) in group { results[index] = rows }
            return results
        }
        var kept: [T] = []
        for (cluster, rows) in zip(clusters, all) {
            for row in rows {
                if case .found(let entry) = await catalogRefresh.resolve(name(row)), entry.role == cluster.role { kept.append(row) }
            }
        }
        return kept
    }

    // MARK: - Operator and read methods

    private func entry(named name: String) async throws -> CatalogEntry {
        switch await catalogRefresh.resolve(name) {
        case .found(let entry): return entry
        case .unknown: throw RPCError(.notFound, "unknown product")
        case .unavailable: throw RPCError(.unavailable, "the catalog cannot be read; retry")
        }
    }

    func createProduct(_ request: CreateProductRequest, slotCount: Int) async throws -> Product {
        // Another replica may have made it since this one loaded its catalog: a reload says.
        switch await catalogRefresh.resolve(request.productId) {
        case .found: throw RPCError(.alreadyExists, "the product exists already")
        case .unavailable: throw RPCError(.unavailable, "the catalog cannot be read; retry")
        case .unknown: break
        }
        let load = ClusterPlacement.needsLoad(requested: request.cluster, hot: request.hot)
            ? try await main.productsPerCluster() : [:]
        let placement = ClusterPlacement(candidates: clusters.map {
            .init(role: $0.role, ready: $0.database.isReady, products: load[$0.role] ?? 0)
        })
        let cluster: DatabaseRole
        switch placement.decide(requested: request.cluster, hot: request.hot) {
        case .place(let role): cluster = role
        case .refuse(let code, let message): throw RPCError(code, message)
        }
        let entry: CatalogEntry
        if cluster == .main {
            let made = try await main.createProduct(
                key: nil, name: request.productId, totalStock: request.totalStock, slotCount: slotCount, hot: false,
                database: .main, saleLimit: request.saleLimit, holdSeconds: request.holdSeconds)
            guard made.created else { throw RPCError(.alreadyExists, "the product exists already") }
            entry = CatalogEntry(key: made.key, name: request.productId, role: .main)
        } else {
            // The key comes from the main catalog's sequence; the stock goes to its cluster first, then the catalog
            // entry. A crash in between leaves a product the next creation of the same name there adopts.
            let key = try await main.allocateProductKey()
            let made = try await database(for: cluster).createProduct(
                key: key, name: request.productId, totalStock: request.totalStock, slotCount: slotCount,
                hot: cluster == .hot, database: cluster, saleLimit: request.saleLimit, holdSeconds: request.holdSeconds)
            guard try await main.addCatalogEntry(
                key: made.key, name: request.productId, slotCount: slotCount, saleLimit: request.saleLimit, cluster: cluster)
            else {
                throw RPCError(.alreadyExists, "the product exists already")
            }
            entry = CatalogEntry(key: made.key, name: request.productId, role: cluster)
        }
        catalog.insert(entry)
        logger.info("product created", metadata: [
            "product": "\(request.productId)", "key": "\(entry.key)", "stock": "\(request.totalStock)",
            "database": "\(entry.role.rawValue)",
        ])
        return try await product(named: request.productId)
    }

    func product(named name: String) async throws -> Product {
        let entry = try await entry(named: name)
        guard let product = try await database(for: entry.role).product(key: entry.key) else {
            throw RPCError(.notFound, "unknown product")
        }
        return product
    }

    func products() async throws -> [Product] {
        try await everyCluster(\.productId) { try await $0.products() }
    }

    func adjustStock(named name: String, _ change: ProductDatabase.StockChange, changeId: Int64?) async throws -> Product {
        let entry = try await entry(named: name)
        let outcome: ProductDatabase.StockChangeOutcome?
        do {
            outcome = try await database(for: entry.role).adjustStock(key: entry.key, change, changeId: changeId)
        } catch {
            // The change may have committed before the error (a lost reply): forget what memory knows of its sale.
            pool(for: entry.role).stockChanged(product: entry.key)
            throw error
        }
        pool(for: entry.role).stockChanged(product: entry.key)
        switch outcome {
        case nil: throw RPCError(.notFound, "unknown product")
        case .applied?: logger.info("stock adjusted", metadata: ["product": "\(name)", "change": "\(change)"])
        case .appliedBefore?: logger.info("stock change retried", metadata: ["product": "\(name)", "change": "\(change)"])
        case .changeIdReused?: throw RPCError(.failedPrecondition, "change id reused with another change")
        }
        return try await product(named: name)
    }

    func soldCounts(named name: String) async throws -> [ProductSold] {
        if name.isEmpty {
            return try await everyCluster(\.productId) { try await $0.soldCounts(key: nil) }
        }
        let entry = try await entry(named: name)
        return try await database(for: entry.role).soldCounts(key: entry.key)
    }

    func audit(named name: String) async throws -> [ProductAudit] {
        if name.isEmpty {
            return try await everyCluster(\.productId) { try await $0.audit(key: nil) }
        }
        let entry = try await entry(named: name)
        return try await database(for: entry.role).audit(key: entry.key)
    }
}
