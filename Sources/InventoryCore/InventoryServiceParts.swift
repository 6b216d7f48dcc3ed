import Logging
import NIOCore
import PostgresClient
import ServiceLifecycle
import Wire

/// The inventory service's logic, put together: both databases migrated and checked, the catalog loaded, the
/// purchase queues and their consumers. The executable adds the server and the group.
public struct InventoryServiceParts: Sendable {
    let inventory: Inventory
    let hotStartup: HotDatabaseStartup

    /// What the parts are made from (the executable's flags).
    public struct Settings: Sendable {
        public var mainDSN: String
        public var hotDSN: String?
        public var migrateDSN: String?
        public var hotMigrateDSN: String?
        public var consumers: Int
        public var hotConsumers: Int
        public var maxBatch: Int
        public var queueLimit: Int
        public var connectTimeoutSeconds: Int
        public var statementTimeoutMilliseconds: Int
        public var maxQueueWait: TimeAmount
        public var allowPrivilegedRole: Bool
        public var allowAsynchronousCommit: Bool
        /// Where the main cluster's primary is (Patroni's leader: `PatroniLeaderWatch`); the hot database must then
        /// be on the same cluster (its default server is). Nil: the connection strings alone decide.
        public var primary: PostgresPrimaryLocator?

        public init(
            mainDSN: String, hotDSN: String?, migrateDSN: String?, hotMigrateDSN: String?, consumers: Int, hotConsumers: Int,
            maxBatch: Int, queueLimit: Int, connectTimeoutSeconds: Int, statementTimeoutMilliseconds: Int,
            maxQueueWait: TimeAmount, allowPrivilegedRole: Bool, allowAsynchronousCommit: Bool,
            primary: PostgresPrimaryLocator? = nil
        ) {
            self.mainDSN = mainDSN
            self.hotDSN = hotDSN
            self.migrateDSN = migrateDSN
            self.hotMigrateDSN = hotMigrateDSN
            self.consumers = consumers
            self.hotConsumers = hotConsumers
            self.maxBatch = maxBatch
            self.queueLimit = queueLimit
            self.connectTimeoutSeconds = connectTimeoutSeconds
            self.statementTimeoutMilliseconds = statementTimeoutMilliseconds
            self.maxQueueWait = maxQueueWait
            self.allowPrivilegedRole = allowPrivilegedRole
            self.allowAsynchronousCommit = allowAsynchronousCommit
            self.primary = primary
        }
    }

    public static func open(_ settings: Settings, logger: Logger) async throws -> InventoryServiceParts {
        let (inventory, hotStartup) = try await openInventory(
            mainDSN: settings.mainDSN, hotDSN: settings.hotDSN, migrateDSN: settings.migrateDSN,
            hotMigrateDSN: settings.hotMigrateDSN, consumers: settings.consumers, hotConsumers: settings.hotConsumers,
            maxBatch: settings.maxBatch, queueLimit: settings.queueLimit,
            timeouts: DatabaseTimeouts(
                connectSeconds: settings.connectTimeoutSeconds, statementMilliseconds: settings.statementTimeoutMilliseconds,
                primary: settings.primary),
            maxQueueWait: settings.maxQueueWait,
            allow: ServingCheck.Allowances(
                privilegedRole: settings.allowPrivilegedRole, asynchronousCommit: settings.allowAsynchronousCommit),
            logger: logger)
        return InventoryServiceParts(inventory: inventory, hotStartup: hotStartup)
    }

    /// The inventory methods.
    public func register(into router: inout RPCRouter) {
        InventoryAPI(inventory: inventory).register(into: &router)
    }

    /// The purchase queues' consumers; on shutdown, in-flight batches commit and are answered.
    public var consumers: some Service { inventory }

    /// Reloads the catalog when a name misses (a product another replica created).
    public var catalogRefresh: some Service { inventory.catalogRefresh }

    /// Returns once the hot database is up (at once when it was at start-up).
    public var hotDatabase: some Service { hotStartup }

    /// Purchases waiting in the main (`hot: false`) or the hot database's queues.
    public func queuedCount(hot: Bool) -> Int { (hot ? inventory.hotPool : inventory.mainPool).queuedCount }

    /// Connects and migrates the main database (creating the hot one if needed), tries once to bring up the hot
    /// database, and loads the catalog. A hot database that cannot be reached does not stop the start: the returned
    /// `HotDatabaseStartup` keeps trying in the background, and hot products answer UNAVAILABLE until it succeeds.
    /// Blocking libpq work runs on each database's own thread, bounded by `timeouts`.
    static func openInventory(
        mainDSN: String, hotDSN: String?, migrateDSN: String? = nil, hotMigrateDSN: String? = nil, consumers: Int,
        hotConsumers: Int, maxBatch: Int, queueLimit: Int, timeouts: DatabaseTimeouts, maxQueueWait: TimeAmount,
        allow: ServingCheck.Allowances = .init(), logger: Logger
    ) async throws -> (Inventory, HotDatabaseStartup) {
        let main = ProductDatabase(role: .main, dsn: mainDSN, settings: timeouts.serving, ready: true, logger: logger)
        let threads = main.threadPool
        let mainAdmin = try await PostgresConnection.connect(mainDSN, settings: timeouts.serving, threadPool: threads, logger: logger)
        defer { mainAdmin.close() }
        // The owner migrates (and creates the hot database); the serving connections may be a restricted role.
        let mainOwner = try await PostgresConnection.connect(
            migrateDSN ?? mainDSN, settings: timeouts.owner, threadPool: threads, logger: logger)
        defer { mainOwner.close() }
        try await threads.runIfActive { try Migrator.migrate(mainOwner, logger: logger) }

        let resolvedHotDSN: String
        let resolvedHotMigrateDSN: String
        if let hotDSN {
            resolvedHotDSN = hotDSN
            resolvedHotMigrateDSN = hotMigrateDSN ?? hotDSN
        } else {
            let current = try await mainOwner.query("SELECT current_database()").string(0, 0) ?? "postgres"
            try await threads.runIfActive {
                try DatabaseSetup.ensureDatabase(
                    named: DatabaseSetup.hotDatabaseName(mainDatabase: current), using: mainOwner, logger: logger)
            }
            resolvedHotDSN = DatabaseSetup.defaultHotDSN(mainDSN: mainDSN, mainDatabase: current)
            resolvedHotMigrateDSN = hotMigrateDSN
                ?? DatabaseSetup.defaultHotDSN(mainDSN: migrateDSN ?? mainDSN, mainDatabase: current)
        }
        try await ServingCheck.require(mainAdmin, database: .main, allow: allow, logger: logger)

        let hot = try await openHotDatabase(
            dsn: resolvedHotDSN, migrateDSN: resolvedHotMigrateDSN, timeouts: timeouts, allow: allow, logger: logger)
        let catalog = ProductCatalog()
        for row in try await main.catalog(includeHotCatalog: true) {
            catalog.insert(CatalogEntry(key: row.key, name: row.name, role: row.hot ? .hot : .main))
        }
        logger.info("catalog loaded", metadata: ["products": "\(catalog.all.count)"])

        func poolConfiguration(_ role: DatabaseRole, _ dsn: String, _ consumers: Int) -> PurchasePool.Configuration {
            PurchasePool.Configuration(
                role: role, dsn: dsn, consumers: consumers, maxBatch: maxBatch, queueLimit: queueLimit,
                settings: timeouts.serving, maxQueueWait: maxQueueWait)
        }
        let inventory = Inventory(
            catalog: catalog, main: main, hot: hot,
            mainPool: PurchasePool(configuration: poolConfiguration(.main, mainDSN, consumers), logger: logger),
            hotPool: PurchasePool(configuration: {
                var hot = poolConfiguration(.hot, resolvedHotDSN, hotConsumers)
                hot.bindingDSN = mainDSN  // hot request ids are bound in the main database first
                return hot
            }(), logger: logger),
            logger: logger)
        let startup = HotDatabaseStartup(
            inventory: inventory, migrateDSN: resolvedHotMigrateDSN, settings: timeouts.owner,
            serving: timeouts.serving, allow: allow, logger: logger)
        return (inventory, startup)
    }

    /// The hot database, brought up now if it can be (one attempt, bounded by the connect timeout); otherwise not
    /// ready, for `HotDatabaseStartup` to bring up later.
    static func openHotDatabase(
        dsn: String, migrateDSN: String, timeouts: DatabaseTimeouts, allow: ServingCheck.Allowances, logger: Logger
    ) async throws -> ProductDatabase {
        let hot = ProductDatabase(role: .hot, dsn: dsn, settings: timeouts.serving, ready: false, logger: logger)
        do {
            try await HotDatabaseStartup.bringUp(
                hot, migrateDSN: migrateDSN, settings: timeouts.owner, serving: timeouts.serving, allow: allow,
                logger: logger)
        } catch let refused as ServingRefused {
            throw refused  // reachable but misconfigured: an operator must fix it, retrying will not
        } catch {
            logger.warning(
                "hot database unreachable at start: hot products answer UNAVAILABLE until it is back",
                metadata: ["error": "\(error)"])
        }
        return hot
    }
}
