import Foundation
import PostgresClient
/// The command lines of the three services, written once: every starter (the platform, the tests, the benchmarks,
/// `flashsale sale`) builds its argument list from these. The flag names are the services' own.
public protocol ServiceArguments: Sendable {
    /// The executable of this package that takes these arguments.
    static var product: String { get }
    var list: [String] { get }
}

/// `InventoryService`: the databases it serves (and the owner's DSNs it migrates with, when they differ).
public struct InventoryArguments: ServiceArguments {
    public static let product = "InventoryService"
    /// 0: a free one (the READY line says which).
    public var port = 0
    public var dsn: String
    public var hotDSN: String?
    public var migrateDSN: String?
    public var hotMigrateDSN: String?
    /// More clusters (`--database NAME=DSN`, and `--migrate-database NAME=DSN` when `migrateDSN` is set).
    public var clusters: [(name: String, dsn: String, migrateDSN: String?)] = []
    /// The purchase pools' sizes (`--hot-consumers`, `--max-batch`, `--queue-limit`); nil: the service's default.
    public var hotConsumers: Int?
    public var maxBatch: Int?
    public var queueLimit: Int?
    /// Follow Patroni's leader instead of the DSNs' hosts alone.
    public var patroni: PatroniFollowing?
    public var logLevel = "info"
    /// More flags, after the ones above (`--metrics-port 0`, ...).
    public var extra: [String] = []

    public init(dsn: String, hotDSN: String? = nil, migrateDSN: String? = nil, hotMigrateDSN: String? = nil) {
        self.dsn = dsn
        self.hotDSN = hotDSN
        self.migrateDSN = migrateDSN
        self.hotMigrateDSN = hotMigrateDSN
    }

    /// Least privilege, as every launch path runs it: serving as the login role `role`, migrating as the owner
    /// (the DSNs given). A nil `hot` leaves the hot database to the service's default (`<main>_hot`).
    /// `clusters`: the shards' owner DSNs, served as `role` too.
    public static func serving(
        as role: String, main: String, hot: String?, clusters: [(name: String, dsn: String)] = []
    ) -> InventoryArguments {
        var arguments = InventoryArguments(
            dsn: PostgresDSN.with(user: role, main), hotDSN: hot.map { PostgresDSN.with(user: role, $0) },
            migrateDSN: main, hotMigrateDSN: hot)
        arguments.clusters = clusters.map { ($0.name, PostgresDSN.with(user: role, $0.dsn), $0.dsn) }
        return arguments
    }

    public var list: [String] {
        var list = ["--port", "\(port)", "--dsn", dsn]
        if let hotDSN { list += ["--hot-dsn", hotDSN] }
        if let migrateDSN { list += ["--migrate-dsn", migrateDSN] }
        if let hotMigrateDSN { list += ["--hot-migrate-dsn", hotMigrateDSN] }
        for cluster in clusters {
            list += ["--database", "\(cluster.name)=\(cluster.dsn)"]
            if let owner = cluster.migrateDSN { list += ["--migrate-database", "\(cluster.name)=\(owner)"] }
        }
        if let hotConsumers { list += ["--hot-consumers", "\(hotConsumers)"] }
        if let maxBatch { list += ["--max-batch", "\(maxBatch)"] }
        if let queueLimit { list += ["--queue-limit", "\(queueLimit)"] }
        if let patroni { list += patroni.list }
        return list + ["--log-level", logLevel] + extra
    }
}

/// The inventory's clusters on one Patroni cluster follow its leader key: main (and hot) through
/// `--patroni-leader-path`, each shard named here through `--patroni-cluster NAME=LEADERPATH`.
public struct PatroniFollowing: Sendable {
    public var zooKeeper: String
    public var leaderPath: String
    public var shards: [String]

    public init(zooKeeper: String, leaderPath: String, shards: [String] = []) {
        self.zooKeeper = zooKeeper
        self.leaderPath = leaderPath
        self.shards = shards
    }

    public var list: [String] {
        ["--patroni-zookeeper", zooKeeper, "--patroni-leader-path", leaderPath]
            + shards.flatMap { ["--patroni-cluster", "\($0)=\(leaderPath)"] }
    }
}

/// `QuotaService`: its ZooKeeper root and the inventory it plans against.
public struct QuotaArguments: ServiceArguments {
    public static let product = "QuotaService"
    public var port = 0
    public var zooKeeper: String
    public var root: String
    public var inventory: String
    public var logLevel = "info"
    public var extra: [String] = []

    public init(zooKeeper: String, root: String, inventory: String) {
        self.zooKeeper = zooKeeper
        self.root = root
        self.inventory = inventory
    }

    public var list: [String] {
        ["--port", "\(port)", "--zookeeper", zooKeeper, "--root", root, "--inventory", inventory, "--log-level", logLevel]
            + extra
    }
}

/// `Edge`: its ZooKeeper root, the inventory it forwards to and the quota service it asks for more.
public struct EdgeArguments: ServiceArguments {
    public static let product = "Edge"
    public var port = 0
    public var zooKeeper: String
    public var root: String
    public var inventory: String
    public var quota: String
    public var logLevel = "info"
    /// The address it registers (a proxy in front of it), instead of where it listens.
    public var advertise: String?
    /// Event loop threads; nil: the edge's own default (one per core).
    public var threads: Int?
    public var extra: [String] = []

    public init(zooKeeper: String, root: String, inventory: String, quota: String) {
        self.zooKeeper = zooKeeper
        self.root = root
        self.inventory = inventory
        self.quota = quota
    }

    /// An edge that never buys (benchmarks of its connections or its watches): the inventory and quota addresses
    /// are placeholders nobody dials.
    public static func standalone(zooKeeper: String, root: String) -> EdgeArguments {
        EdgeArguments(zooKeeper: zooKeeper, root: root, inventory: "127.0.0.1:1", quota: "127.0.0.1:1")
    }

    public var list: [String] {
        ["--port", "\(port)", "--zookeeper", zooKeeper, "--root", root, "--inventory", inventory, "--quota", quota,
         "--log-level", logLevel] + (advertise.map { ["--advertise", $0] } ?? []) + (threads.map { ["--threads", "\($0)"] } ?? [])
            + extra
    }
}

extension ServiceEndpoint {
    /// Starts a service and waits for its READY line: the one way a service process is started. `executable`
    /// overrides the build's own (`RepoPaths.executable`).
    public static func start(
        _ arguments: some ServiceArguments, environment: [String: String], name: String, executable: URL? = nil,
        timeout: Duration = .seconds(30)
    ) async throws -> ServiceEndpoint {
        let process = try ManagedProcess.start(
            try executable ?? RepoPaths.executable(type(of: arguments).product), arguments: arguments.list,
            environment: environment, name: name, lifeline: true)
        do {
            let (host, port) = try await process.waitForReady(timeout: timeout)
            return ServiceEndpoint(name: name, host: host, port: port, process: process)
        } catch {
            await process.kill9()
            throw error
        }
    }
}
