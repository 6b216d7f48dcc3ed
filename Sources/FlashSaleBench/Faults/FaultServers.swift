import Cluster
import Foundation
import PostgresClient

/// PostgreSQL and ZooKeeper of the fault suite's own, on ports and folders apart from the ones the tests share:
/// restarting them mid-sale disturbs nobody else.
struct FaultServers: Sendable {
    static let postgresEnvironment = [
        "FLASHSALE_PG_PORT": "16432", "FLASHSALE_PG_BASE": RepoPaths.root.appendingPathComponent(".data/faults/postgres").path,
    ]
    static let zooKeeperEnvironment = [
        "FLASHSALE_ZK_PORT": "14181", "FLASHSALE_ZK_BASE": RepoPaths.root.appendingPathComponent(".data/faults/zookeeper").path,
    ]

    let adminDSN: String
    let zooKeeper: String

    static func start() async throws -> FaultServers {
        let (dsn, _) = try await ServerScript.postgres.ensureRunning(environment: postgresEnvironment)
        let (zooKeeper, _) = try await ServerScript.zookeeper.ensureRunning(environment: zooKeeperEnvironment)
        return FaultServers(adminDSN: dsn, zooKeeper: zooKeeper)
    }

    func stop() async {
        await ServerScript.zookeeper.stop(environment: Self.zooKeeperEnvironment)
        await ServerScript.postgres.stop(environment: Self.postgresEnvironment)
        await stopEnsemble()
    }

    func createDatabases(prefix: String) async throws -> (main: String, hot: String) {
        let name = "\(prefix)_\(UInt32.random(in: 0...UInt32.max))"
        let connection = try await PostgresConnection.connect(adminDSN)
        defer { connection.close() }
        try await connection.exec("CREATE DATABASE \(name)")
        try await connection.exec("CREATE DATABASE \(name)_hot")
        return (adminDSN + " dbname=\(name)", adminDSN + " dbname=\(name)_hot")
    }

    func dropDatabases(_ databases: (main: String, hot: String)) async {
        guard let connection = try? await PostgresConnection.connect(adminDSN) else { return }
        defer { connection.close() }
        for dsn in [databases.main, databases.hot] {
            guard let name = dsn.split(separator: "=").last else { continue }
            _ = try? await connection.exec("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
        }
    }

    func restartPostgres() async throws {
        await ServerScript.postgres.stop(environment: Self.postgresEnvironment)
        try await Task.sleep(for: .milliseconds(300))
        _ = try await ServerScript.postgres.ensureRunning(environment: Self.postgresEnvironment)
    }

    func restartZooKeeper() async throws {
        await ServerScript.zookeeper.stop(environment: Self.zooKeeperEnvironment)
        try await Task.sleep(for: .seconds(1))
        _ = try await ServerScript.zookeeper.ensureRunning(environment: Self.zooKeeperEnvironment)
    }

    private var ensembleScript: String { RepoPaths.scripts.appendingPathComponent("zk-ensemble.sh").path }

    func startEnsemble() async throws -> String {
        let started = try await runCommand(ensembleScript, ["start"], timeout: .seconds(60))
        guard started.status == 0 else { throw ClusterError.commandFailed("zk-ensemble.sh start:\n\(started.output)") }
        let env = try await runCommand(ensembleScript, ["env"], timeout: .seconds(10))
        guard let hosts = ServerScript.exported("FLASHSALE_ZK", in: env.output) else {
            throw ClusterError.commandFailed("zk-ensemble.sh env:\n\(env.output)")
        }
        return hosts
    }

    func stopEnsembleLeader() async throws {
        let leader = try await runCommand(ensembleScript, ["leader"], timeout: .seconds(10))
        let node = leader.output.split(separator: "\n").first.map(String.init) ?? "1"
        _ = try await runCommand(ensembleScript, ["stop-node", node], timeout: .seconds(30))
    }

    func stopEnsemble() async {
        _ = try? await runCommand(ensembleScript, ["stop"], timeout: .seconds(60))
    }
}
