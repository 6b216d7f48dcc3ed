import Cluster
import Foundation
import PostgresClient

/// PostgreSQL and ZooKeeper of the fault suite's own, on ports and folders apart from the ones the tests share:
/// restarting them mid-sale disturbs nobody else. The ports are free ones picked once per run (a restart keeps
/// them), so that suites of several checkouts on one machine never meet.
struct FaultServers: Sendable {
    private static let ports: (postgres: Int, zooKeeper: Int, ensemble: Int) = {
        let postgres = LocalPorts.free()
        var zooKeeper = LocalPorts.free()
        while zooKeeper == postgres { zooKeeper = LocalPorts.free() }
        // The ensemble takes base+1...3 for clients, +101...103 and +201...203 for its quorum: all free.
        var ensemble = 0
        for _ in 0..<200 {
            let base = Int.random(in: 20000..<31700)
            let needed = (1...3).flatMap { [base + $0, base + 100 + $0, base + 200 + $0] }
            if !needed.contains(postgres), !needed.contains(zooKeeper), needed.allSatisfy({ !LocalPorts.isListening($0) }) {
                ensemble = base
                break
            }
        }
        return (postgres, zooKeeper, ensemble == 0 ? 13180 : ensemble)
    }()

    static let postgresEnvironment = [
        "FLASHSALE_PG_PORT": "\(ports.postgres)",
        "FLASHSALE_PG_BASE": RepoPaths.root.appendingPathComponent(".data/faults/postgres").path,
    ]
    static let zooKeeperEnvironment = [
        "FLASHSALE_ZK_PORT": "\(ports.zooKeeper)",
        "FLASHSALE_ZK_BASE": RepoPaths.root.appendingPathComponent(".data/faults/zookeeper").path,
    ]
    static let ensembleEnvironment = ["FLASHSALE_ZKE_PORT": "\(ports.ensemble)"]

    let adminDSN: String
    let zooKeeper: String

    static func start() async throws -> FaultServers {
        // A run that died leaves its servers up on the ports it picked; restarted on this run's ports they would
        // move under their clients. Start from nothing.
        await ServerScript.zookeeper.stop(environment: zooKeeperEnvironment)
        await ServerScript.postgres.stop(environment: postgresEnvironment)
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
        let started = try await runCommand(ensembleScript, ["start"], environment: Self.ensembleEnvironment, timeout: .seconds(60))
        guard started.status == 0 else { throw ClusterError.commandFailed("zk-ensemble.sh start:\n\(started.output)") }
        let env = try await runCommand(ensembleScript, ["env"], environment: Self.ensembleEnvironment, timeout: .seconds(10))
        guard let hosts = ServerScript.exported("FLASHSALE_ZK", in: env.output) else {
            throw ClusterError.commandFailed("zk-ensemble.sh env:\n\(env.output)")
        }
        return hosts
    }

    func stopEnsembleLeader() async throws {
        let leader = try await runCommand(ensembleScript, ["leader"], environment: Self.ensembleEnvironment, timeout: .seconds(10))
        let node = leader.output.split(separator: "\n").first.map(String.init) ?? "1"
        _ = try await runCommand(ensembleScript, ["stop-node", node], environment: Self.ensembleEnvironment, timeout: .seconds(30))
    }

    func stopEnsemble() async {
        _ = try? await runCommand(ensembleScript, ["stop"], environment: Self.ensembleEnvironment, timeout: .seconds(60))
    }
}
