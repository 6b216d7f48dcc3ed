import Logging
import PostgresClient

/// Which database cluster follows which Patroni cluster (`--patroni-leader-path` for main, `--patroni-cluster
/// NAME=LEADERPATH` for hot and the shards), parsed purely. Each cluster under Patroni must follow its own leader
/// key: a cluster reached through its multi-host connection string alone would keep using an orphaned primary.
public struct PatroniLeaders: Sendable, Equatable {
    /// Leader key path by cluster name (`main`, `hot`, `shard-2`, ...).
    public let leaderPaths: [String: String]

    public init(mainLeaderPath: String?, clusters: [String]) throws {
        var paths: [String: String] = [:]
        if let mainLeaderPath { paths[DatabaseRole.main.rawValue] = try Self.checked(mainLeaderPath) }
        for entry in clusters {
            guard let equals = entry.firstIndex(of: "="), let role = DatabaseRole(rawValue: String(entry[..<equals])) else {
                throw DatabaseFlags.Invalid("--patroni-cluster takes NAME=LEADERPATH with a cluster name (main, hot, shard-N), not \(entry)")
            }
            guard paths[role.rawValue] == nil else {
                throw DatabaseFlags.Invalid("cluster \(role) follows one Patroni cluster, given twice")
            }
            paths[role.rawValue] = try Self.checked(String(entry[entry.index(after: equals)...]))
        }
        leaderPaths = paths
    }

    private static func checked(_ path: String) throws -> String {
        guard PatroniLeader.memberPath(leaderPath: path, member: "m") != nil else {
            throw DatabaseFlags.Invalid("a Patroni leader key is /NAMESPACE/SCOPE/leader, not \(path)")
        }
        return path
    }

    /// The watches (one per leader key: clusters on one Patroni cluster share it) and each cluster's locator.
    public struct Watches: Sendable {
        public let services: [PatroniLeaderWatch]
        public let locators: [String: PostgresPrimaryLocator]

        /// None: every cluster goes by its connection string.
        public static let none = Watches(services: [], locators: [:])
    }

    /// Starts one watch per distinct leader key, each waiting (up to `timeout`) for its first primary.
    public func watch(zooKeeper: String, timeout: Duration, logger: Logger) async throws -> Watches {
        var byPath: [String: PatroniLeaderWatch] = [:]
        for path in Set(leaderPaths.values).sorted() {
            byPath[path] = try await PatroniLeaderWatch.start(zooKeeper: zooKeeper, leaderPath: path, timeout: timeout, logger: logger)
        }
        return Watches(
            services: byPath.keys.sorted().compactMap { byPath[$0] },
            locators: leaderPaths.compactMapValues { byPath[$0]?.locator })
    }
}
