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

/// A shard of a platform: the cluster's name (the inventory's `--database NAME=DSN`) and its database.
public struct ShardDatabase: Sendable {
    public let cluster: String
    public let database: RunDatabase
}

/// The databases of a platform (main, and hot products'), named `<name>` and `<name>_hot`, and its shards if any:
/// clusters `shard-2`, `shard-3`, ... as databases `<name>_shard2`, ... on the same server (a cluster may be a
/// second database of the same server; in production each is a server or Patroni cluster of its own).
public struct RunDatabases: Sendable {
    public let main: RunDatabase
    public var hot: RunDatabase { main.hotCompanion }
    public let shards: [ShardDatabase]

    public init(main: RunDatabase, shards: Int = 0) {
        self.main = main
        self.shards = (0..<shards).map {
            ShardDatabase(cluster: "shard-\($0 + 2)", database: RunDatabase(name: "\(main.name)_shard\($0 + 2)", adminDSN: main.adminDSN))
        }
    }

    /// Creates `<prefix>_<random>`, its `_hot` companion and `shards` shards.
    public static func create(adminDSN: String, prefix: String, shards: Int = 0) async throws -> RunDatabases {
        try await create(adminDSN: adminDSN, name: RunDatabase.uniqueName(prefix: prefix), shards: shards)
    }

    public static func create(adminDSN: String, name: String, shards: Int = 0) async throws -> RunDatabases {
        let databases = RunDatabases(main: RunDatabase(name: name, adminDSN: adminDSN), shards: shards)
        do {
            for database in [databases.main, databases.hot] + databases.shards.map(\.database) { try await database.create() }
        } catch {
            await databases.drop()
            throw error
        }
        return databases
    }

    /// The shards as the platform's clusters (name, owner's DSN).
    public var shardClusters: [Platform.Cluster] { shards.map { Platform.Cluster(name: $0.cluster, dsn: $0.database.dsn) } }

    /// Every database's owner DSN: main, hot, then the shards.
    public var allDSNs: [String] { [main.dsn, hot.dsn] + shards.map(\.database.dsn) }

    /// Drops them all (what is not there is skipped).
    public func drop() async {
        try? await main.drop()
        try? await hot.drop()
        for shard in shards { try? await shard.database.drop() }
    }
}
