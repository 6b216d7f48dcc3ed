import Foundation
import PostgresClient

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

/// A database of its own for one test, dropped afterwards.
public struct TestDatabase: Sendable {
    public let name: String
    /// Connection string for this database.
    public let dsn: String
    /// Connection string for the `postgres` database (to create and drop).
    public let adminDSN: String

    /// Creates `t_<random>` (a prefix makes logs readable: `t_inventory_<random>`).
    public static func create(prefix: String = "t") async throws -> TestDatabase {
        let admin = try await TestServers.postgresDSN()
        let suffix = String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let safePrefix = prefix.lowercased().filter { $0.isLetter || $0.isNumber || $0 == "_" }
        let name = "\(safePrefix.isEmpty ? "t" : safePrefix)_\(suffix)"
        let conn = try await PostgresConnection.connect(admin)
        defer { conn.close() }
        try await conn.exec("CREATE DATABASE \(name)")
        return TestDatabase(name: name, dsn: dsn(admin, database: name), adminDSN: admin)
    }

    /// Drops the database, disconnecting any session still using it.
    public func drop() async throws {
        let conn = try await PostgresConnection.connect(adminDSN)
        defer { conn.close() }
        try await conn.exec("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
    }

    /// Runs `body` with a fresh database and drops it afterwards, also when `body` throws.
    public static func with<T: Sendable>(
        prefix: String = "t", _ body: (TestDatabase) async throws -> T
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

    /// The same connection string aimed at `database` (URI or key=value form).
    public static func dsn(_ base: String, database: String) -> String {
        if base.hasPrefix("postgres://") || base.hasPrefix("postgresql://"), var parts = URLComponents(string: base) {
            parts.path = "/" + database
            return parts.string ?? base
        }
        // In key=value form a later keyword wins.
        return base + " dbname=\(database)"
    }
}
