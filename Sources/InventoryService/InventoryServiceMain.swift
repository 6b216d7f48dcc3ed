import Addressing
import ArgumentParser
import Foundation
import Logging
import Metrics
import InventoryCore
import InventoryDiscovery
import ServiceKit
import ServiceLifecycle
import ServiceMetrics
import Wire
import ZooKeeperClient

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
    @Option(help: "ZooKeeper connection string: register this replica under <root>/inventories/ (none: no registration).")
    var zookeeper: String?
    @Option(help: "The flash sale's root node in ZooKeeper.") var root = "/flashsale"
    @Option(help: "Address registered for the edges and the quota service (host:port); defaults to the bound address.")
    var advertise: String?

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
        guard root.hasPrefix("/") else { throw ValidationError("--root must start with /") }
        guard advertise.map({ HostPort($0) != nil }) ?? true else { throw ValidationError("--advertise must be host:port") }
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
        // Before the pools exist: their metric handles are made when they are.
        if metrics.metricsPort != nil { ServiceMetrics.bootstrap() }

        // Before any connection: they go to the primary it names.
        var patroni = PatroniLeaders.Watches.none
        if let patroniZookeeper {
            let leaders = try PatroniLeaders(mainLeaderPath: patroniLeaderPath, clusters: patroniCluster)
            patroni = try await leaders.watch(
                zooKeeper: patroniZookeeper, timeout: .seconds(Int64(max(connectTimeout, 10))), logger: logger)
        }
        // Without --dsn: serve as the login role and migrate as the owner, as `scripts/postgres.sh env` prints them.
        let clusters = try databaseFlags.clusters(
            mainDefault: environment["FLASHSALE_PG_SERVICE_DSN"] ?? "host=127.0.0.1 port=15432 user=flashsale_app dbname=postgres",
            migrateDefault: environment["FLASHSALE_PG_DSN"] ?? "host=127.0.0.1 port=15432 user=postgres dbname=postgres")
        let inventory = try await InventoryServiceParts.open(
            .init(
                clusters: clusters, maxBatch: maxBatch, queueLimit: queueLimit, connectTimeoutSeconds: connectTimeout, statementTimeoutMilliseconds: statementTimeoutMs,
                maxQueueWait: .seconds(Int64(maxQueueWait)), allowPrivilegedRole: allowPrivilegedRole,
                allowAsynchronousCommit: allowAsynchronousCommit, primaries: patroni.locators),
            logger: logger)

        var router = RPCRouter(serviceName: "inventory")
        inventory.register(into: &router)
        let server = RPCServer(configuration: server.configuration(credentials: credentials), router: router, logger: logger)

        // Shut down last: the consumers draining their batches still need the primary.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        for watch in patroni.services { services.append(.init(service: watch)) }
        if let metricsPort = metrics.metricsPort {
            let hooks = ScrapeHooks()
            let depths = inventory.clusterNames.map {
                ($0, Gauge(label: MetricName.inventoryQueueDepth, dimensions: [("database", $0)]))
            }
            let connections = Gauge(label: MetricName.connections, dimensions: [("service", "inventory")])
            hooks.add {
                for (name, depth) in depths { depth.record(inventory.queuedCount(cluster: name)) }
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
                    .init(service: inventory.consumers, successTerminationBehavior: .gracefullyShutdownGroup,
                          failureTerminationBehavior: .gracefullyShutdownGroup),
                    .init(service: inventory.catalogRefresh),
                    // A server that cannot bind ends the process with its error (no READY line).
                    .init(service: server, successTerminationBehavior: .gracefullyShutdownGroup,
                          failureTerminationBehavior: .cancelGroup),
                    .init(service: inventory.clusterStartup, successTerminationBehavior: .ignore),
                    .init(service: ReadyAnnouncer(service: "inventory") { try await server.localAddress() }),
                ] + (try registration(server: server, environment: environment, logger: logger)),
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
    }

    /// After the server, so that the group stops it first: the node goes, callers move off, then the server drains.
    func registration(
        server: RPCServer, environment: [String: String], logger: Logger
    ) throws -> [ServiceGroupConfiguration.ServiceConfiguration] {
        guard let zookeeper else { return [] }
        // The services' ZooKeeper identity (FLASHSALE_ZK_EDGE_SECRET or _FILE), as an edge registers with.
        let access = ZooKeeperAccess(edgeSecret: try Secret.read("FLASHSALE_ZK_EDGE_SECRET", environment: environment))
        let advertise = self.advertise.flatMap { HostPort($0) }
        let registrar = InventoryRegistrar(zooKeeper: zookeeper, root: root, access: access, address: {
            if let advertise { return advertise }
            let bound = try await server.localAddress()
            return HostPort(host: bound.ipAddress ?? "127.0.0.1", port: bound.port ?? 0)
        }, logger: logger)
        return [.init(service: registrar)]
    }
}
