import ArgumentParser
import InventoryCore
import Logging

/// The inventory's database flags: the clusters and their connection strings, the pools, the timeouts, Patroni's
/// leaders, and what a developer's server is allowed; checked at parse time, turned into the parts' settings.
struct DatabaseOptions: ParsableArguments {
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

    /// One watch per Patroni leader key the flags name (none without --patroni-zookeeper).
    func patroniWatches(logger: Logger) async throws -> PatroniLeaders.Watches {
        guard let patroniZookeeper else { return .none }
        let leaders = try PatroniLeaders(mainLeaderPath: patroniLeaderPath, clusters: patroniCluster)
        return try await leaders.watch(
            zooKeeper: patroniZookeeper, timeout: .seconds(Int64(max(connectTimeout, 10))), logger: logger)
    }

    /// The parts' settings; without --dsn, the environment's (or the local server's) connection strings.
    func settings(
        environment: [String: String], patroni: PatroniLeaders.Watches
    ) throws -> InventoryServiceParts.Settings {
        let defaults = InventoryServiceParts.defaultDSNs(environment: environment)
        return .init(
            clusters: try databaseFlags.clusters(mainDefault: defaults.serving, migrateDefault: defaults.migrate),
            maxBatch: maxBatch, queueLimit: queueLimit, connectTimeoutSeconds: connectTimeout,
            statementTimeoutMilliseconds: statementTimeoutMs, maxQueueWait: .seconds(Int64(maxQueueWait)),
            allowPrivilegedRole: allowPrivilegedRole, allowAsynchronousCommit: allowAsynchronousCommit,
            primaries: patroni.locators)
    }
}
