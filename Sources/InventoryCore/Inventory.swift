import Logging
import Proto
import ServiceLifecycle
import Wire

/// The service's state: the catalog, the two databases and their purchase pools. As a `Service` it runs the
/// consumers until graceful shutdown, then lets them finish what is queued and in flight.
final class Inventory: Service, Sendable {
    let catalog: ProductCatalog
    let main: ProductDatabase
    let hot: ProductDatabase
    let mainPool: PurchasePool
    let hotPool: PurchasePool
    /// A name missing from `catalog` may be a product another replica created: reloaded from the database.
    let catalogRefresh: CatalogRefresher
    let logger: Logger

    init(catalog: ProductCatalog, main: ProductDatabase, hot: ProductDatabase, mainPool: PurchasePool,
         hotPool: PurchasePool, logger: Logger) {
        self.catalog = catalog
        self.main = main
        self.hot = hot
        self.mainPool = mainPool
        self.hotPool = hotPool
        self.catalogRefresh = CatalogRefresher(catalog: catalog, logger: logger) { [main] in
            try await main.catalog(includeHotCatalog: true).map(CatalogEntry.init(row:))
        }
        self.logger = logger
    }

    func pool(for role: DatabaseRole) -> PurchasePool {
        role == .hot ? hotPool : mainPool
    }

    func database(for role: DatabaseRole) -> ProductDatabase {
        role == .hot ? hot : main
    }

    func run() async throws {
        mainPool.start()
        // Otherwise HotDatabaseStartup starts it once the hot database is migrated; until then hot purchases are refused.
        if hot.isReady { hotPool.start() }
        await withTaskGroup(of: Void.self) { group in
            // Due holds are released in both databases (the hot one's expiry waits until it is ready).
            for (database, pool) in [(main, mainPool), (hot, hotPool)] {
                group.addTask { await HoldExpiry(database: database, pool: pool, logger: self.logger).run() }
            }
            // Listed before the server in the service group, so this returns only after the server has drained.
            try? await gracefulShutdown()
            group.cancelAll()
        }
        logger.info("inventory draining")
        async let mainStopped: Void = mainPool.stop()
        async let hotStopped: Void = hotPool.stop()
        _ = await (mainStopped, hotStopped)
    }

    /// The hot database was brought up after start-up: its products sell from now on.
    func hotDatabaseReady() {
        hotPool.start()
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
        guard catalog.entry(named: request.productId) == nil else {
            throw RPCError(.alreadyExists, "the product exists already")
        }
        let entry: CatalogEntry
        if request.hot {
            // The key comes from the main catalog's sequence; the stock goes to the hot database first, then the
            // catalog entry. A crash in between leaves a product the next creation of the same name adopts.
            let key = try await main.allocateProductKey()
            let made = try await hot.createProduct(
                key: key, name: request.productId, totalStock: request.totalStock, slotCount: slotCount, hot: true,
                database: .hot, saleLimit: request.saleLimit, holdSeconds: request.holdSeconds)
            guard try await main.addHotCatalogEntry(
                key: made.key, name: request.productId, slotCount: slotCount, saleLimit: request.saleLimit)
            else {
                throw RPCError(.alreadyExists, "the product exists already")
            }
            entry = CatalogEntry(key: made.key, name: request.productId, role: .hot)
        } else {
            let made = try await main.createProduct(
                key: nil, name: request.productId, totalStock: request.totalStock, slotCount: slotCount, hot: false,
                database: .main, saleLimit: request.saleLimit, holdSeconds: request.holdSeconds)
            guard made.created else { throw RPCError(.alreadyExists, "the product exists already") }
            entry = CatalogEntry(key: made.key, name: request.productId, role: .main)
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
        async let cold = main.products()
        async let hotOnes = hot.products()
        let all = try await cold + hotOnes
        // Only catalogued products (a hot one whose creation crashed midway is not); one made by another replica
        // since this one loaded its catalog is found by a reload.
        var listed: [Product] = []
        for product in all {
            if case .found = await catalogRefresh.resolve(product.productId) { listed.append(product) }
        }
        return listed
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
            async let cold = main.soldCounts(key: nil)
            async let hotOnes = hot.soldCounts(key: nil)
            return try await cold + hotOnes
        }
        let entry = try await entry(named: name)
        return try await database(for: entry.role).soldCounts(key: entry.key)
    }

    func audit(named name: String) async throws -> [ProductAudit] {
        if name.isEmpty {
            async let cold = main.audit(key: nil)
            async let hotOnes = hot.audit(key: nil)
            return try await cold + hotOnes
        }
        let entry = try await entry(named: name)
        return try await database(for: entry.role).audit(key: entry.key)
    }
}
