import ArgumentParser
import Foundation
import InventoryCore
import ServiceKit
import ServiceLifecycle
import Wire

/// `InventoryService`: the only process that talks to PostgreSQL. Migrates every database cluster, loads the catalog,
/// serves the inventory methods and prints `READY inventory HOST:PORT`; SIGTERM drains (in-flight batches commit
/// and are answered) before exit. Secrets come from the environment only: the service token
/// (FLASHSALE_SERVICE_TOKEN[_FILE]) that purchases and stock changes need; the inventory serves no operator method.
@main
struct InventoryServiceMain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "InventoryService",
        abstract: "Slot-split stock in PostgreSQL, purchases in batches of one stored-procedure call each.")

    @OptionGroup var server: ServerOptions

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

    @Option(help: ArgumentHelp("""
        A database cluster, NAME=DSN (repeatable): products placed on NAME (flashsale product create --cluster NAME, \
        or the least loaded) live there, with its own connections and consumers (--consumers). NAME is 1-32 lower-case \
        letters, digits and '-', starting with a letter; main and hot are --dsn and --hot-dsn.
        """, valueName: "name=dsn"))
    var database: [String] = []

    @Option(help: ArgumentHelp("""
        The owner's connection string of a cluster given with --database, NAME=DSN (repeatable; needed when the \
        migrations run as the owner).
        """, valueName: "name=dsn"))
    var migrateDatabase: [String] = []

    @Option(help: "Consumers (each with its own connection) of the main database's and each shard's purchase queues.")
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

    @Option(help: """
        ZooKeeper (host:port[,...]) of the Patroni cluster that serves the databases: every database connection goes \
        to the primary Patroni's leader key names, and leaves a server that is no longer it (an orphaned primary whose \
        Patroni died), rather than to the first writable host of the connection string. Needs \
        --patroni-leader-path or --patroni-cluster. Default: none (the connection strings alone decide). \
        scripts/pg-cluster.sh env prints both.
        """)
    var patroniZookeeper: String?

    @Option(help: """
        Patroni's leader key in that ZooKeeper, /NAMESPACE/SCOPE/leader ($FLASHSALE_PG_PATRONI_LEADER), of the main \
        cluster; the hot database follows it too unless --patroni-cluster names hot's own.
        """)
    var patroniLeaderPath: String?

    @Option(parsing: .singleValue, help: """
        NAME=LEADERPATH: database cluster NAME (hot, or a shard of --database) follows the Patroni cluster whose \
        leader key is LEADERPATH, in the same ZooKeeper. Repeatable, one per cluster.
        """)
    var patroniCluster: [String] = []

    @Flag(help: "Serve even if a serving role is a superuser, owns the tables or may write them (a developer's server).")
    var allowPrivilegedRole = false

    @Flag(help: "Serve even if a database's synchronous_commit does not flush each commit (a developer's server).")
    var allowAsynchronousCommit = false

    @OptionGroup var metrics: MetricsOptions
    // Registration as a replica (optional): edges and the quota service with --discover-inventories find it.
    @OptionGroup var zooKeeper: ZooKeeperOptions

    func validate() throws {
        guard (1...64).contains(consumers), (1...64).contains(hotConsumers) else {
            throw ValidationError("--consumers and --hot-consumers must be 1...64")
        }
        guard (1...10_000).contains(maxBatch) else { throw ValidationError("--max-batch must be 1...10000") }
        guard (1...10_000_000).contains(queueLimit) else { throw ValidationError("--queue-limit must be 1...10000000") }
        guard (2...600).contains(connectTimeout) else { throw ValidationError("--connect-timeout must be 2...600") }
        guard (100...600_000).contains(statementTimeoutMs) else {
            throw ValidationError("--statement-timeout-ms must be 100...600000")
        }
        guard (1...3600).contains(maxQueueWait) else { throw ValidationError("--max-queue-wait must be 1...3600") }
        guard (patroniZookeeper == nil) == (patroniLeaderPath == nil && patroniCluster.isEmpty) else {
            throw ValidationError("--patroni-zookeeper goes with --patroni-leader-path or --patroni-cluster")
        }
        do {
            _ = try PatroniLeaders(mainLeaderPath: patroniLeaderPath, clusters: patroniCluster)
        } catch let invalid as DatabaseFlags.Invalid {
            throw ValidationError(invalid.description)
        }
        do {
            _ = try databaseFlags.clusters(mainDefault: "", migrateDefault: "")
        } catch let invalid as DatabaseFlags.Invalid {
            throw ValidationError(invalid.description)
        }
    }

    /// Every database flag, resolved into clusters by `DatabaseFlags`.
    var databaseFlags: DatabaseFlags {
        DatabaseFlags(
            dsn: dsn, hotDSN: hotDsn, migrateDSN: migrateDsn, hotMigrateDSN: hotMigrateDsn, databases: database,
            migrateDatabases: migrateDatabase, consumers: consumers, hotConsumers: hotConsumers)
    }

    func run() async throws {
        let logger = ServiceRuntime.makeLogger(label: "inventory", level: server.level)
        let environment = ProcessInfo.processInfo.environment
        let credentials = try ServiceRuntime.credentials(environment: environment, operator: false)
        metrics.bootstrap()  // before the pools exist: their metric handles are made when they are

        // Before any connection: they go to the primary it names.
        var patroni = PatroniLeaders.Watches.none
        if let patroniZookeeper {
            let leaders = try PatroniLeaders(mainLeaderPath: patroniLeaderPath, clusters: patroniCluster)
            patroni = try await leaders.watch(
                zooKeeper: patroniZookeeper, timeout: .seconds(Int64(max(connectTimeout, 10))), logger: logger)
        }
        let defaults = InventoryServiceParts.defaultDSNs(environment: environment)
        let inventory = try await InventoryServiceParts.open(
            .init(
                clusters: try databaseFlags.clusters(mainDefault: defaults.serving, migrateDefault: defaults.migrate),
                maxBatch: maxBatch, queueLimit: queueLimit, connectTimeoutSeconds: connectTimeout,
                statementTimeoutMilliseconds: statementTimeoutMs, maxQueueWait: .seconds(Int64(maxQueueWait)),
                allowPrivilegedRole: allowPrivilegedRole, allowAsynchronousCommit: allowAsynchronousCommit,
                primaries: patroni.locators),
            logger: logger)

        var router = RPCRouter(serviceName: "inventory")
        inventory.register(into: &router)
        let server = RPCServer(configuration: server.configuration(credentials: credentials), router: router, logger: logger)
        let address = self.server.advertisedAddress()
        address.serve(server)

        // Shut down in reverse order: the registration goes, the server drains its calls, the consumers stop, then
        // the metrics port (if any) closes, and the Patroni watch last (the consumers draining still need the primary).
        let services = patroni.services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) }
            + metrics.services(service: "inventory", logger: logger) { inventory.installMetrics(into: $0, server: server) }
            + [
                .init(service: inventory.consumers, successTerminationBehavior: .gracefullyShutdownGroup,
                      failureTerminationBehavior: .gracefullyShutdownGroup),
                .init(service: inventory.catalogRefresh),
                // A server that cannot bind ends the process with its error (no READY line).
                .init(service: server, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .cancelGroup),
                .init(service: inventory.clusterStartup, successTerminationBehavior: .ignore),
                .init(service: ReadyAnnouncer(service: "inventory") { try await server.localAddress() }),
            ]
            + (try InventoryServiceParts.registration(
                zooKeeper: zooKeeper.zookeeper, root: zooKeeper.root, environment: environment, address: address, logger: logger
            )).map { .init(service: $0) }
        try await ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        ).run()
    }
}
