import Cluster
import Foundation

/// PostgreSQL and ZooKeeper of the fault suite's own (`RunServers`: a run folder and free ports of its own, apart
/// from the servers the tests share): restarting them mid-sale disturbs nobody else, and suites of several
/// checkouts, or the suite beside `bench faults`, never meet. Plus the 3-node ensemble of the ensemble case.
struct FaultServers: Sendable {
    let servers: RunServers
    private let ensembleEnvironment: [String: String]
    /// The Patroni cluster of the pg* cases, when one runs (`PatroniFaults.swift`).
    var patroni: PatroniCluster?
    let patroniDatabases = PatroniCaseDatabases()

    var adminDSN: String { servers.adminDSN }
    var zooKeeper: String { servers.zooKeeper }

    static func start(patroni: Bool = false) async throws -> FaultServers {
        let servers = try await RunServers.start("faults") { old in
            _ = try? await runCommand(
                ensembleScript, ["stop"], environment: ["FLASHSALE_ZKE_BASE": old.path("zk-ensemble")], timeout: .seconds(60))
            await PatroniCluster.stopAbandoned(in: old)
        }
        var started = FaultServers(
            servers: servers,
            ensembleEnvironment: [
                "FLASHSALE_ZKE_PORT": "\(ensemblePort())", "FLASHSALE_ZKE_BASE": servers.folder.path("zk-ensemble"),
            ])
        if patroni { try await started.startPatroni() }
        return started
    }

    /// The ensemble takes base+1...3 for clients, +101...103 and +201...203 for its quorum: all free.
    private static func ensemblePort() -> Int {
        for _ in 0..<200 {
            let base = Int.random(in: 20000..<31700)
            let needed = (1...3).flatMap { [base + $0, base + 100 + $0, base + 200 + $0] }
            if needed.allSatisfy({ !LocalPorts.isListening($0) }) { return base }
        }
        return 13180
    }

    func stop() async {
        await patroni?.stop()
        await stopEnsemble()
        await servers.stop()
    }

    func createDatabases(prefix: String, shards: Int = 0) async throws -> RunDatabases {
        try await RunDatabases.create(adminDSN: adminDSN, prefix: prefix, shards: shards)
    }

    func restartPostgres() async throws { try await servers.restartPostgres() }

    func restartZooKeeper() async throws { try await servers.restartZooKeeper() }

    private static var ensembleScript: String { RepoPaths.scripts.appendingPathComponent("zk-ensemble.sh").path }
    private var ensembleScript: String { Self.ensembleScript }

    func startEnsemble() async throws -> String {
        let started = try await runCommand(ensembleScript, ["start"], environment: ensembleEnvironment, timeout: .seconds(60))
        guard started.status == 0 else { throw ClusterError.commandFailed("zk-ensemble.sh start:\n\(started.output)") }
        let env = try await runCommand(ensembleScript, ["env"], environment: ensembleEnvironment, timeout: .seconds(10))
        guard let hosts = ServerScript.exported("FLASHSALE_ZK", in: env.output) else {
            throw ClusterError.commandFailed("zk-ensemble.sh env:\n\(env.output)")
        }
        return hosts
    }

    func stopEnsembleLeader() async throws {
        let leader = try await runCommand(ensembleScript, ["leader"], environment: ensembleEnvironment, timeout: .seconds(10))
        let node = leader.output.split(separator: "\n").first.map(String.init) ?? "1"
        _ = try await runCommand(ensembleScript, ["stop-node", node], environment: ensembleEnvironment, timeout: .seconds(30))
    }

    func stopEnsemble() async {
        _ = try? await runCommand(ensembleScript, ["stop"], environment: ensembleEnvironment, timeout: .seconds(60))
    }
}
