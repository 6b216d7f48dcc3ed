import ArgumentParser
import Foundation
import Logging
import Metrics
import NIOCore
import NIOPosix
import PostgresClient
import ServiceLifecycle
import ServiceMetrics
import Wire

/// `InventoryService`: the only process that talks to PostgreSQL. Migrates both databases, loads the catalog,
/// serves the inventory methods and prints `READY inventory HOST:PORT`; SIGTERM drains (in-flight batches commit
/// and are answered) before exit. Secrets come from the environment only: the service token
/// (FLASHSALE_SERVICE_TOKEN[_FILE]) that purchases and stock changes need; the inventory serves no operator method.
@main
struct InventoryServiceMain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "InventoryService",
        abstract: "Slot-split stock in PostgreSQL, purchases in batches of one stored-procedure call each.")

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0 = any free port).")
    var port = 0

    @Option(help: """
        libpq connection string the main database (catalog and cold products) is served with: a login role in \
        flashsale_service. Default: $FLASHSALE_PG_SERVICE_DSN, else the local server of scripts/postgres.sh as \
        flashsale_app. Keep passwords out of it: libpq reads PGPASSWORD / PGPASSFILE.
        """)
    var dsn: String?

    @Option(help: "libpq connection string of the hot-item database (default: the main server, database <main>_hot).")
    var hotDsn: String?

    @Option(help: """
        libpq connection string the migrations run with (the schema's owner). Default: without --dsn, \
        $FLASHSALE_PG_DSN, else the local server as postgres; with --dsn, --dsn (which must then be allowed to \
        serve: --allow-privileged-role).
        """)
    var migrateDsn: String?

    @Option(help: "The hot-item database's owner connection string (default: --hot-dsn, or derived from --migrate-dsn).")
    var hotMigrateDsn: String?

    @Option(help: "Consumers (each with its own connection) of the main database's purchase queues.")
    var consumers = 2

    @Option(help: "Consumers (each with its own connection) of the hot database's purchase queues.")
    var hotConsumers = 3

    @Option(help: "Most purchases taken into one procedure call.")
    var maxBatch = 1000

    @Option(help: "Most purchases queued per product; past it a purchase gets RESOURCE_EXHAUSTED.")
    var queueLimit = 20_000

    @Option(help: "Seconds to establish a database connection, reconnects included (libpq connect_timeout; 2...600).")
    var connectTimeout = 5

    @Option(help: """
        Milliseconds a serving statement may run before the server cancels it (statement_timeout); the inventory \
        gives up on an answer 2 s later (a blackholed database). 100...600000.
        """)
    var statementTimeoutMs = 10_000

    @Option(help: "Seconds a purchase that came without a deadline may wait in a queue (1...3600).")
    var maxQueueWait = 30

    @Option(help: "trace|debug|info|notice|warning|error|critical")
    var logLevel = "info"

    @Flag(help: "Serve even if a serving role is a superuser, owns the tables or may write them (a developer's server).")
    var allowPrivilegedRole = false

    @Flag(help: "Serve even if a database's synchronous_commit does not flush each commit (a developer's server).")
    var allowAsynchronousCommit = false

    @OptionGroup var metrics: MetricsOptions

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0...65535") }
        guard (1...64).contains(consumers), (1...64).contains(hotConsumers) else {
            throw ValidationError("--consumers and --hot-consumers must be 1...64")
        }
        guard (1...10_000).contains(maxBatch) else { throw ValidationError("--max-batch must be 1...10000") }
        guard (1...10_000_000).contains(queueLimit) else { throw ValidationError("--queue-limit must be 1...10000000") }
        guard Logger.Level(name: logLevel) != nil else { throw ValidationError("unknown --log-level") }
        guard (2...600).contains(connectTimeout) else { throw ValidationError("--connect-timeout must be 2...600") }
        guard (100...600_000).contains(statementTimeoutMs) else {
            throw ValidationError("--statement-timeout-ms must be 100...600000")
        }
        guard (1...3600).contains(maxQueueWait) else { throw ValidationError("--max-queue-wait must be 1...3600") }
        if (migrateDsn != nil || dsn == nil) && hotDsn != nil && hotMigrateDsn == nil {
            throw ValidationError("with --migrate-dsn and --hot-dsn, give the hot database's owner as --hot-migrate-dsn too")
        }
    }

    func run() async throws {
        let logger = ServiceRuntime.makeLogger(label: "inventory", level: Logger.Level(name: logLevel) ?? .info)
        let credentials = try ServiceRuntime.credentials(environment: ProcessInfo.processInfo.environment, operator: false)
        // Before the pools exist: their metric handles are made when they are.
        if metrics.metricsPort != nil { ServiceMetrics.bootstrap() }

        let environment = ProcessInfo.processInfo.environment
        // Without --dsn: serve as the login role and migrate as the owner, as `scripts/postgres.sh env` prints them.
        let mainDSN = dsn ?? environment["FLASHSALE_PG_SERVICE_DSN"] ?? "host=127.0.0.1 port=15432 user=flashsale_app dbname=postgres"
        let mainMigrateDSN = migrateDsn
            ?? (dsn == nil ? environment["FLASHSALE_PG_DSN"] ?? "host=127.0.0.1 port=15432 user=postgres dbname=postgres" : nil)
        let (inventory, hotStartup) = try await Self.openInventory(
            mainDSN: mainDSN, hotDSN: hotDsn, migrateDSN: mainMigrateDSN, hotMigrateDSN: hotMigrateDsn, consumers: consumers,
            hotConsumers: hotConsumers, maxBatch: maxBatch, queueLimit: queueLimit,
            timeouts: DatabaseTimeouts(connectSeconds: connectTimeout, statementMilliseconds: statementTimeoutMs),
            maxQueueWait: .seconds(Int64(maxQueueWait)),
            allow: ServingCheck.Allowances(privilegedRole: allowPrivilegedRole, asynchronousCommit: allowAsynchronousCommit),
            logger: logger)

        var router = RPCRouter(serviceName: "inventory")
        InventoryAPI(inventory: inventory).register(into: &router)
        let server = RPCServer(
            configuration: RPCServerConfiguration(host: host, port: port, credentials: credentials),
            router: router, logger: logger)

        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let metricsPort = metrics.metricsPort {
            let hooks = ScrapeHooks()
            let queueDepth = [
                (inventory.mainPool, Gauge(label: MetricName.inventoryQueueDepth, dimensions: [("database", "main")])),
                (inventory.hotPool, Gauge(label: MetricName.inventoryQueueDepth, dimensions: [("database", "hot")])),
            ]
            let connections = Gauge(label: MetricName.connections, dimensions: [("service", "inventory")])
            hooks.add {
                for (pool, gauge) in queueDepth { gauge.record(pool.queuedCount) }
                connections.record(server.connectionCount)
            }
            services.append(.init(service: MetricsServer(
                service: "inventory", host: metrics.metricsHost, port: metricsPort, hooks: hooks, logger: logger)))
        }
        // Shut down in reverse order: the server drains its calls first, then the consumers stop, then the metrics
        // port (if any) closes.
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services + [
                    .init(service: inventory, successTerminationBehavior: .gracefullyShutdownGroup,
                          failureTerminationBehavior: .gracefullyShutdownGroup),
                    // A server that cannot bind ends the process with its error (no READY line).
                    .init(service: server, successTerminationBehavior: .gracefullyShutdownGroup,
                          failureTerminationBehavior: .cancelGroup),
                    // Returns once the hot database is up (at once when it was at start-up).
                    .init(service: hotStartup, successTerminationBehavior: .ignore),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        let announcer = Task {
            if let address = try? await server.localAddress() {
                ServiceRuntime.announceReady(service: "inventory", address: address)
            }
        }
        defer { announcer.cancel() }
        try await group.run()
    }

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
