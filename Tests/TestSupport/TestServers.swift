import Foundation

/// The real PostgreSQL and ZooKeeper for integration tests, started through `scripts/` when needed.
///
/// `FLASHSALE_PG_DSN` / `FLASHSALE_ZK` in the environment point tests at servers that are already
/// running (nothing is started then). Otherwise the scripts start the checkout's servers, or reuse
/// them when running; the servers are left running for the next test run (the scripts' `stop`
/// ends them), and `stopStartedServers()` stops only what this process started.
public enum TestServers {
    /// libpq connection string of the `postgres` database.
    public static func postgresDSN() async throws -> String {
        try await registry.postgres()
    }

    /// ZooKeeper connection string, `127.0.0.1:PORT`.
    public static func zooKeeperHosts() async throws -> String {
        try await registry.zooKeeper()
    }

    /// Stops the servers this process started (not ones that were already running).
    public static func stopStartedServers() async {
        await registry.stopStarted()
    }

    private static let registry = Registry()

    private actor Registry {
        private var pg: Task<String, any Error>?
        private var zk: Task<String, any Error>?
        private var started: [ServerScript] = []

        func postgres() async throws -> String {
            if let pg { return try await pg.value }
            let task = Task { try await self.ensure(.postgres, envOverride: "FLASHSALE_PG_DSN") }
            pg = task
            return try await task.value
        }

        func zooKeeper() async throws -> String {
            if let zk { return try await zk.value }
            let task = Task { try await self.ensure(.zookeeper, envOverride: "FLASHSALE_ZK") }
            zk = task
            return try await task.value
        }

        func stopStarted() async {
            for server in started { await server.stop() }
            started.removeAll()
            pg = nil
            zk = nil
        }

        private func ensure(_ server: ServerScript, envOverride: String) async throws -> String {
            if let given = ProcessInfo.processInfo.environment[envOverride], !given.isEmpty { return given }
            let (connection, startedHere) = try await server.ensureRunning()
            if startedHere { started.append(server) }
            return connection
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
