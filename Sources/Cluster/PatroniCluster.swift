import Foundation

/// A PostgreSQL primary and synchronous standby under Patroni (`scripts/pg-cluster.sh`), in a folder of a run's own
/// on free ports, with a ZooKeeper the run gives as Patroni's store: the HA set-up of the fault cases, the failover
/// benchmark and their tests. Its faults are the script's (`failover`, `kill-patroni`, `kill-standby`).
public struct PatroniCluster: Sendable {
    /// The owner's multi-host DSN (`target_session_attrs=read-write`) of the `postgres` database.
    public let adminDSN: String
    /// The ZooKeeper path of Patroni's leader key.
    public let leaderPath: String
    public let zooKeeper: String
    private let environment: [String: String]

    private static var script: String { RepoPaths.scripts.appendingPathComponent("pg-cluster.sh").path }

    /// Starts (or finds running) the cluster in `folder`, and waits for a writable primary and its synchronous
    /// standby.
    public static func start(folder: String, zooKeeper: String) async throws -> PatroniCluster {
        let environment = ["FLASHSALE_PGC_BASE": folder, "FLASHSALE_ZK": zooKeeper]
        try await run(["start"], environment, timeout: .seconds(150))
        let env = try await run(["env"], environment, timeout: .seconds(30))
        guard let dsn = ServerScript.exported("FLASHSALE_PG_DSN", in: env),
              let leader = ServerScript.exported("FLASHSALE_PG_PATRONI_LEADER", in: env)
        else { throw ClusterError.commandFailed("pg-cluster.sh env:\n\(env)") }
        return PatroniCluster(adminDSN: dsn, leaderPath: leader, zooKeeper: zooKeeper, environment: environment)
    }

    /// A run's cluster lives in its folder's `pg-cluster`.
    public static func start(in folder: RunFolder, zooKeeper: String) async throws -> PatroniCluster {
        try await start(folder: folder.path("pg-cluster"), zooKeeper: zooKeeper)
    }

    /// Stops the cluster a killed run left in its folder, if any (`RunServers.start`'s clean-up).
    public static func stopAbandoned(in folder: RunFolder) async {
        let path = folder.path("pg-cluster")
        guard FileManager.default.fileExists(atPath: path) else { return }
        _ = try? await runCommand(script, ["stop"], environment: ["FLASHSALE_PGC_BASE": path], timeout: .seconds(90))
    }

    /// What makes the inventory's main cluster (with hot) follow this cluster's leader, and `shards` too (clusters of
    /// the inventory's `--database NAME=DSN` whose databases are on this Patroni cluster).
    public func following(shards: [String] = []) -> PatroniFollowing {
        PatroniFollowing(zooKeeper: zooKeeper, leaderPath: leaderPath, shards: shards)
    }

    /// Both nodes running again (a node that was killed rejoins as a standby through pg_rewind, an orphaned primary
    /// is demoted), with a synchronous standby.
    public func restore() async throws { try await Self.run(["start"], environment, timeout: .seconds(150)) }

    /// kill -9 of the primary's Patroni, postmaster and backends; returns, once the standby is promoted, when the
    /// kill was.
    @discardableResult
    public func failover() async throws -> Date {
        let output = try await Self.run(["failover"], environment, timeout: .seconds(60))
        // "failover: n1 killed at 1764600000.123456789, n2 primary after 4 s"
        let words = output.split { $0 == " " || $0 == "," || $0 == "\n" }
        let killed = words.firstIndex(of: "at").flatMap { words.dropFirst($0 + 1).first }.flatMap { Double($0) }
        return killed.map(Date.init(timeIntervalSince1970:)) ?? Date()
    }

    /// kill -9 of Patroni alone on the primary: its PostgreSQL lives on, read-write.
    public func killPatroni() async throws { try await Self.run(["kill-patroni"], environment, timeout: .seconds(30)) }

    /// kill -9 of the PostgreSQL of a node whose Patroni is dead (an orphan), as a watchdog would.
    public func fence() async throws { try await Self.run(["fence"], environment, timeout: .seconds(30)) }

    /// kill -9 of the standby's Patroni, postmaster and backends.
    public func killStandby() async throws { try await Self.run(["kill-standby"], environment, timeout: .seconds(30)) }

    /// The node Patroni's REST API names primary now (`n1`, `n2`); nil when none does (a node whose Patroni is
    /// dead shows as down, whatever its PostgreSQL does).
    public func primaryNode() async throws -> String? {
        let status = try await runCommand(Self.script, ["status"], environment: environment, timeout: .seconds(30))
        return status.output.split(separator: "\n").first { $0.hasSuffix(": primary") }
            .flatMap { $0.split(separator: " ").first.map(String.init) }
    }

    public func stop() async {
        _ = try? await runCommand(Self.script, ["stop"], environment: environment, timeout: .seconds(90))
    }

    @discardableResult
    private static func run(_ arguments: [String], _ environment: [String: String], timeout: Duration) async throws -> String {
        let result = try await runCommand(script, arguments, environment: environment, timeout: timeout)
        guard result.status == 0 else {
            throw ClusterError.commandFailed("pg-cluster.sh \(arguments.joined(separator: " ")) (\(result.status)):\n\(result.output)")
        }
        return result.output
    }
}
