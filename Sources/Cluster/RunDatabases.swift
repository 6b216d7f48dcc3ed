import PostgresClient

/// A database of one run's own (a test, a sale, a fault case) on a server reached as its owner through `adminDSN`:
/// created fresh, dropped afterwards.
public struct RunDatabase: Sendable {
    public let name: String
    /// Connection string for this database (as the owner).
    public let dsn: String
    /// Connection string for the `postgres` database (to create and drop).
    public let adminDSN: String

    public init(name: String, adminDSN: String) {
        self.name = name
        self.adminDSN = adminDSN
        self.dsn = PostgresDSN.with(database: name, adminDSN)
    }

    /// `<prefix>_<random>`, lower case letters, digits and `_` (a prefix makes logs readable).
    public static func uniqueName(prefix: String) -> String {
        let safe = prefix.lowercased().filter { $0.isLetter || $0.isNumber || $0 == "_" }
        return "\(safe.isEmpty ? "t" : safe)_\(String(UInt64.random(in: 0...UInt64.max), radix: 36))"
    }

    /// Creates database `<prefix>_<random>`.
    public static func create(adminDSN: String, prefix: String) async throws -> RunDatabase {
        let database = RunDatabase(name: uniqueName(prefix: prefix), adminDSN: adminDSN)
        try await database.create()
        return database
    }

    public func create() async throws {
        let connection = try await PostgresConnection.connect(adminDSN)
        defer { connection.close() }
        try await connection.exec("CREATE DATABASE \(name)")
    }

    /// Drops the database, disconnecting any session still using it.
    public func drop() async throws {
        let connection = try await PostgresConnection.connect(adminDSN)
        defer { connection.close() }
        try await connection.exec("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
    }

    /// The hot products' database that goes with this one: `<name>_hot`, the inventory's default when no
    /// `--hot-dsn` is given.
    public var hotCompanion: RunDatabase { RunDatabase(name: name + "_hot", adminDSN: adminDSN) }
}

/// The two databases of a platform (main, and hot products'), named `<name>` and `<name>_hot`.
public struct RunDatabases: Sendable {
    public let main: RunDatabase
    public var hot: RunDatabase { main.hotCompanion }

    public init(main: RunDatabase) { self.main = main }

    /// Creates `<prefix>_<random>` and its `_hot` companion.
    public static func create(adminDSN: String, prefix: String) async throws -> RunDatabases {
        try await create(adminDSN: adminDSN, name: RunDatabase.uniqueName(prefix: prefix))
    }

    public static func create(adminDSN: String, name: String) async throws -> RunDatabases {
        let databases = RunDatabases(main: RunDatabase(name: name, adminDSN: adminDSN))
        try await databases.main.create()
        do {
            try await databases.hot.create()
        } catch {
            try? await databases.main.drop()
            throw error
        }
        return databases
    }

    /// Drops both (what is not there is skipped).
    public func drop() async {
        try? await main.drop()
        try? await hot.drop()
    }
}
