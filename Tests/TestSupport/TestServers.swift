import Foundation

/// The real PostgreSQL and ZooKeeper for integration tests.
///
/// `FLASHSALE_PG_DSN` / `FLASHSALE_ZK` in the environment point tests at servers already running: `scripts/test.sh`
/// starts the run's own (`scripts/lib/run-servers.sh`) and exports them. Without them (a bare `swift test`), the
/// first test that needs one starts this process's own `RunServers` (a folder `.data/runs/swift-test-<pid>`, free
/// ports), so two checkouts or two runs never share a server or a fixed port. Those are stopped by
/// `stopStartedServers()`, or else within seconds of the process's end (`RunServers.stopWhenGone`).
public enum TestServers {
    /// libpq connection string of the `postgres` database.
    public static func postgresDSN() async throws -> String {
        if let given = given("FLASHSALE_PG_DSN") { return given }
        return try await registry.servers().adminDSN
    }

    /// ZooKeeper connection string, `127.0.0.1:PORT`.
    public static func zooKeeperHosts() async throws -> String {
        if let given = given("FLASHSALE_ZK") { return given }
        return try await registry.servers().zooKeeper
    }

    /// Stops the servers this process started (not ones it was given).
    public static func stopStartedServers() async {
        await registry.stop()
    }

    private static func given(_ key: String) -> String? {
        ProcessInfo.processInfo.environment[key].flatMap { $0.isEmpty ? nil : $0 }
    }

    private static let registry = Registry()

    private actor Registry {
        private var started: Task<RunServers, any Error>?

        /// Started once for every test of the process (concurrent callers wait on the same start).
        func servers() async throws -> RunServers {
            if let started { return try await started.value }
            let task = Task { try await RunServers.start("swift-test") }
            started = task
            return try await task.value
        }

        func stop() async {
            if let servers = try? await started?.value { await servers.stop() }
            started = nil
        }
    }
}

/// A database of its own for one test, dropped afterwards (on the test run's PostgreSQL).
public typealias TestDatabase = RunDatabase

extension RunDatabase {
    /// Creates `t_<random>` (a prefix makes logs readable: `t_inventory_<random>`).
    public static func create(prefix: String = "t") async throws -> RunDatabase {
        try await create(adminDSN: try await TestServers.postgresDSN(), prefix: prefix)
    }

    /// Runs `body` with a fresh database and drops it afterwards, also when `body` throws.
    public static func with<T: Sendable>(
        prefix: String = "t", _ body: (RunDatabase) async throws -> T
    ) async throws -> T {
        let db = try await create(prefix: prefix)
        do {
            let result = try await body(db)
            try await db.drop()
            return result
        } catch {
            try? await db.drop()
            throw error
        }
    }
}

extension RunDatabases {
    /// Creates `<prefix>_<random>` and `<prefix>_<random>_hot` on the test run's PostgreSQL.
    public static func create(prefix: String) async throws -> RunDatabases {
        try await create(adminDSN: try await TestServers.postgresDSN(), prefix: prefix)
    }
}

extension Platform {
    /// A platform on the test run's servers, with databases and a ZooKeeper root of its own (`configure` sets the
    /// rest); stopped and its databases dropped after `body`, also when `body` throws.
    public static func withTestPlatform<T: Sendable>(
        prefix: String, operatorToken: String, configure: (inout Configuration) -> Void = { _ in },
        _ body: (Platform, RunDatabases) async throws -> T
    ) async throws -> T {
        let databases = try await RunDatabases.create(prefix: prefix)
        var configuration = Configuration(
            databaseDSN: databases.main.dsn, hotDatabaseDSN: databases.hot.dsn,
            zooKeeperHosts: try await TestServers.zooKeeperHosts(), operatorToken: operatorToken)
        configuration.zooKeeperRoot = ZooKeeperRoot.unique("\(prefix)_test")
        configure(&configuration)
        let platform: Platform
        do {
            platform = try await Platform.start(configuration)
        } catch {
            await databases.drop()
            throw error
        }
        do {
            let result = try await body(platform, databases)
            await platform.stop()
            await databases.drop()
            return result
        } catch {
            await platform.stop()
            await databases.drop()
            throw error
        }
    }
}
