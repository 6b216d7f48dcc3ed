import InventoryDiscovery
import Logging
import Metrics
import NIOCore
import PostgresClient
import QuotaContract
import ServiceKit
import ServiceLifecycle
import ServiceMetrics
import Wire
import ZooKeeperClient

/// The inventory service's logic, put together: every database cluster migrated and checked, the catalog loaded,
/// the purchase queues and their consumers. The executable adds the server and the group.
public struct InventoryServiceParts: Sendable {
    let inventory: Inventory
    let startup: ClusterStartup

    /// What the parts are made from (the executable's flags).
    public struct Settings: Sendable {
        /// `main` first (`DatabaseFlags.clusters`), then `hot`, then the shards.
        public var clusters: [ClusterSettings]
        public var maxBatch: Int
        public var queueLimit: Int
        public var connectTimeoutSeconds: Int
        public var statementTimeoutMilliseconds: Int
        public var maxQueueWait: TimeAmount
        public var allowPrivilegedRole: Bool
        public var allowAsynchronousCommit: Bool
        /// Where each cluster's primary is, by cluster name (Patroni's leader: `PatroniLeaders`); hot follows main's
        /// unless it has its own. A cluster without one is reached through its connection string alone.
        public var primaries: [String: PostgresPrimaryLocator]

        public init(
            clusters: [ClusterSettings], maxBatch: Int, queueLimit: Int, connectTimeoutSeconds: Int,
            statementTimeoutMilliseconds: Int, maxQueueWait: TimeAmount, allowPrivilegedRole: Bool,
            allowAsynchronousCommit: Bool, primaries: [String: PostgresPrimaryLocator] = [:]
        ) {
            self.clusters = clusters
            self.maxBatch = maxBatch
            self.queueLimit = queueLimit
            self.connectTimeoutSeconds = connectTimeoutSeconds
            self.statementTimeoutMilliseconds = statementTimeoutMilliseconds
            self.maxQueueWait = maxQueueWait
            self.allowPrivilegedRole = allowPrivilegedRole
            self.allowAsynchronousCommit = allowAsynchronousCommit
            self.primaries = primaries
        }
    }

    public static func open(_ settings: Settings, logger: Logger) async throws -> InventoryServiceParts {
        let (inventory, startup) = try await openInventory(
            clusters: settings.clusters, maxBatch: settings.maxBatch, queueLimit: settings.queueLimit,
            timeouts: DatabaseTimeouts(
                connectSeconds: settings.connectTimeoutSeconds, statementMilliseconds: settings.statementTimeoutMilliseconds),
            primaries: settings.primaries,
            maxQueueWait: settings.maxQueueWait,
            allow: ServingCheck.Allowances(
                privilegedRole: settings.allowPrivilegedRole, asynchronousCommit: settings.allowAsynchronousCommit),
            logger: logger)
        return InventoryServiceParts(inventory: inventory, startup: startup)
    }

    /// The inventory methods.
    public func register(into router: inout RPCRouter) {
        InventoryAPI(inventory: inventory).register(into: &router)
    }

    /// The purchase queues' consumers; on shutdown, in-flight batches commit and are answered.
    public var consumers: some Service { inventory }

    /// Reloads the catalog when a name misses (a product another replica created).
    public var catalogRefresh: some Service { inventory.catalogRefresh }

    /// Returns once every cluster is up (at once when they all were at start-up).
    public var clusterStartup: some Service { startup }

    /// The clusters' names, `main` first (the queue depth gauge's labels).
    public var clusterNames: [String] { inventory.clusters.map(\.role.rawValue) }

    /// Purchases waiting in the queues of the cluster `name`.
    public func queuedCount(cluster name: String) -> Int {
        inventory.clusters.first { $0.role.rawValue == name }?.pool.queuedCount ?? 0
    }

    /// The main database's connection strings without `--dsn`: serve as the login role and migrate as the owner, on
    /// the local server of `scripts/postgres.sh` (as its `env` prints them), unless the environment names others.
    public static func defaultDSNs(environment: [String: String]) -> (serving: String, migrate: String) {
        (environment["FLASHSALE_PG_SERVICE_DSN"] ?? "host=127.0.0.1 port=15432 user=flashsale_app dbname=postgres",
         environment["FLASHSALE_PG_DSN"] ?? "host=127.0.0.1 port=15432 user=postgres dbname=postgres")
    }

    /// What a scrape of the metrics port shows besides the pools' own metrics: each cluster's queue depth and the
    /// server's connections.
    public func installMetrics(into hooks: ScrapeHooks, server: RPCServer) {
        let depths = clusterNames.map { ($0, Gauge(label: MetricName.inventoryQueueDepth, dimensions: [("database", $0)])) }
        let connections = Gauge(label: MetricName.connections, dimensions: [("service", "inventory")])
        hooks.add {
            for (name, depth) in depths { depth.record(queuedCount(cluster: name)) }
            connections.record(server.connectionCount)
        }
    }

    /// This replica's registration under `<root>/inventories/` (edges and quota services with
    /// `--discover-inventories` find it there) when given a ZooKeeper, else none. It presents the services' ZooKeeper
    /// identity (FLASHSALE_ZK_EDGE_SECRET or _FILE), as an edge registers with. List it after the server, so that
    /// the group stops it first: the node goes, callers move off, then the server drains.
    public static func registration(
        zooKeeper: String?, root: String, environment: [String: String], address: AdvertisedAddress, logger: Logger
    ) throws -> [any Service] {
        guard let zooKeeper else { return [] }
        let access = ZooKeeperAccess(edgeSecret: try Secret.read("FLASHSALE_ZK_EDGE_SECRET", environment: environment))
        return [InventoryRegistrar(zooKeeper: zooKeeper, root: root, access: access, address: { try await address.resolve() }, logger: logger)]
    }

    /// Connects and migrates the main database (creating the default hot one if needed), tries once to bring up each
    /// other cluster (all at once), and loads the catalog. A cluster that cannot be reached does not stop the start:
    /// the returned `ClusterStartup` keeps trying in the background, and its products answer UNAVAILABLE until it
    /// succeeds. Blocking libpq work runs on each cluster's own thread, bounded by `timeouts`.
    static func openInventory(
        clusters settings: [ClusterSettings], maxBatch: Int, queueLimit: Int, timeouts: DatabaseTimeouts,
        primaries: [String: PostgresPrimaryLocator] = [:], maxQueueWait: TimeAmount, allow: ServingCheck.Allowances = .init(), logger: Logger
    ) async throws -> (Inventory, ClusterStartup) {
        // Each cluster goes to the primary its Patroni leader names, if it has one (hot: main's, unless its own).
        func bounds(_ role: DatabaseRole) -> DatabaseTimeouts {
            var bounds = timeouts
            bounds.primary = primaries[role.rawValue] ?? (role == .hot ? primaries[DatabaseRole.main.rawValue] : nil)
            return bounds
        }
        var roles: [DatabaseRole] = []
        for cluster in settings {
            guard let role = DatabaseRole(rawValue: cluster.name), !roles.contains(role) else {
                throw DatabaseFlags.Invalid("cluster name \(cluster.name) is invalid or given twice")
            }
            roles.append(role)
        }
        guard roles.first == .main, let mainSettings = settings.first, let mainDSN = mainSettings.dsn else {
            throw DatabaseFlags.Invalid("the main cluster comes first, with a connection string")
        }
        let migrateDSN = mainSettings.migrateDSN
        let main = ProductDatabase(role: .main, dsn: mainDSN, settings: bounds(.main).serving, ready: true, logger: logger)
        let threads = main.threadPool
        let mainAdmin = try await PostgresConnection.connect(mainDSN, settings: bounds(.main).serving, threadPool: threads, logger: logger)
        defer { mainAdmin.close() }
        // The owner migrates (and creates the hot database); the serving connections may be a restricted role.
        let mainOwner = try await PostgresConnection.connect(
            migrateDSN ?? mainDSN, settings: bounds(.main).owner, threadPool: threads, logger: logger)
        defer { mainOwner.close() }
        try await threads.runIfActive {
            try Migrator.migrate(mainOwner, logger: logger)
            try ClusterStartup.claim(.main, on: mainOwner)
        }

        // Each other cluster's serving and owner connection strings; the hot one defaults to `<main>_hot`.
        var others: [(role: DatabaseRole, dsn: String, migrateDSN: String, consumers: Int)] = []
        for (role, cluster) in zip(roles, settings).dropFirst() {
            if let dsn = cluster.dsn {
                others.append((role, dsn, cluster.migrateDSN ?? dsn, cluster.consumers))
                continue
            }
            guard role == .hot else { throw DatabaseFlags.Invalid("cluster \(role) has no connection string") }
            let current = try await mainOwner.query("SELECT current_database()").string(0, 0) ?? "postgres"
            try await threads.runIfActive {
                try DatabaseSetup.ensureDatabase(
                    named: DatabaseSetup.hotDatabaseName(mainDatabase: current), using: mainOwner, logger: logger)
            }
            others.append((
                role, DatabaseSetup.defaultHotDSN(mainDSN: mainDSN, mainDatabase: current),
                cluster.migrateDSN ?? DatabaseSetup.defaultHotDSN(mainDSN: migrateDSN ?? mainDSN, mainDatabase: current),
                cluster.consumers))
        }
        try await ServingCheck.require(mainAdmin, database: .main, allow: allow, logger: logger)

        // Tried all at once: a cluster that is down costs one connect timeout, not one per cluster.
        let databases = try await withThrowingTaskGroup(of: (Int, ProductDatabase).self) { group in
            for (index, cluster) in others.enumerated() {
                group.addTask {
                    (index, try await openCluster(
                        cluster.role, dsn: cluster.dsn, migrateDSN: cluster.migrateDSN, timeouts: bounds(cluster.role), allow: allow,
                        logger: logger))
                }
            }
            var opened = [ProductDatabase?](repeating: nil, count: others.count)
            for try await (index, database) in group { opened[index] = database }
            return opened.compactMap { $0 }
        }

        let catalog = ProductCatalog()
        for row in try await main.catalog() {
            catalog.insert(CatalogEntry(row: row))
        }
        let missing = Set(catalog.all.map(\.role)).subtracting(roles)
        if !missing.isEmpty {
            logger.warning(
                "products live on clusters this inventory was not given: they answer UNAVAILABLE (add --database NAME=DSN)",
                metadata: ["databases": "\(missing.map(\.rawValue).sorted().joined(separator: ","))"])
        }
        logger.info("catalog loaded", metadata: ["products": "\(catalog.all.count)"])

        func pool(_ role: DatabaseRole, _ dsn: String, _ consumers: Int) -> PurchasePool {
            var configuration = PurchasePool.Configuration(
                role: role, dsn: dsn, consumers: consumers, maxBatch: maxBatch, queueLimit: queueLimit,
                settings: bounds(role).serving, maxQueueWait: maxQueueWait)
            // Every other cluster's request ids are bound in the main database first.
            if role != .main { configuration.bindingDSN = mainDSN }
            return PurchasePool(configuration: configuration, logger: logger)
        }
        let parts = [ClusterParts(database: main, pool: pool(.main, mainDSN, mainSettings.consumers))]
            + zip(others, databases).map { ClusterParts(database: $1, pool: pool($0.role, $0.dsn, $0.consumers)) }
        let inventory = Inventory(catalog: catalog, clusters: parts, logger: logger)
        let startup = ClusterStartup(
            inventory: inventory,
            pending: others.map {
                .init(role: $0.role, migrateDSN: $0.migrateDSN, owner: bounds($0.role).owner, serving: bounds($0.role).serving)
            },
            allow: allow, logger: logger)
        return (inventory, startup)
    }

    /// A cluster other than main, brought up now if it can be (one attempt, bounded by the connect timeout);
    /// otherwise not ready, for `ClusterStartup` to bring up later.
    static func openCluster(
        _ role: DatabaseRole, dsn: String, migrateDSN: String, timeouts: DatabaseTimeouts, allow: ServingCheck.Allowances,
        logger: Logger
    ) async throws -> ProductDatabase {
        let database = ProductDatabase(role: role, dsn: dsn, settings: timeouts.serving, ready: false, logger: logger)
        do {
            try await ClusterStartup.bringUp(
                database, migrateDSN: migrateDSN, settings: timeouts.owner, serving: timeouts.serving, allow: allow,
                logger: logger)
        } catch let refused as ServingRefused {
            throw refused  // reachable but misconfigured: an operator must fix it, retrying will not
        } catch {
            logger.warning(
                "cluster unreachable at start: its products answer UNAVAILABLE until it is back",
                metadata: ["database": "\(role.rawValue)", "error": "\(error)"])
        }
        return database
    }
}
