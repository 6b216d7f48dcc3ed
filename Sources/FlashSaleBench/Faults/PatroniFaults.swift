import Cluster
import Foundation
import PostgresClient
import Synchronization

/// The pg* cases: the case's databases live on a primary and a synchronous standby under Patroni (one cluster for
/// the suite, on its ZooKeeper, in its run folder), the inventory follows Patroni's leader
/// (`--patroni-zookeeper`, `--patroni-leader-path`), and the fault hits the cluster mid-sale. Each case starts from
/// both nodes running in sync: what the previous case killed is brought back first.
extension Fault {
    var needsPatroni: Bool {
        switch self {
        case .pgfailover, .pgrejoin, .pgorphan, .pgstandby: true
        default: false
        }
    }

    /// How long the case's sale is paced to last. Patroni promotes the standby about one ttl (4 s) after the
    /// primary is lost: the pg* sales go on well past it, so that purchases meet the promoted standby (and, in the
    /// orphan case, connections still on the orphan once it is no longer the leader).
    var pacedSeconds: Int64 { needsPatroni ? 15 : 6 }
}

/// The databases of the pg* case under way: where the failover's timings are read.
final class PatroniCaseDatabases: Sendable {
    let current = Mutex<RunDatabases?>(nil)
}

extension FaultServers {
    mutating func startPatroni() async throws {
        patroni = try await PatroniCluster.start(in: servers.folder, zooKeeper: zooKeeper)
    }

    private func cluster(_ fault: Fault) throws -> PatroniCluster {
        guard let patroni else { throw ClusterError.notFound("the Patroni cluster of case \(fault.rawValue)") }
        return patroni
    }

    /// The case's databases: on the Patroni cluster (restored to both nodes in sync first) for a pg* case.
    func createDatabases(prefix: String, for fault: Fault) async throws -> RunDatabases {
        guard fault.needsPatroni else { return try await createDatabases(prefix: prefix, shards: fault.shards) }
        let patroni = try cluster(fault)
        try await patroni.restore()
        let databases = try await RunDatabases.create(adminDSN: patroni.adminDSN, prefix: prefix, shards: fault.shards)
        patroniDatabases.current.withLock { $0 = databases }
        return databases
    }

    /// A pg* case's inventory follows Patroni's leader.
    func configuration(for fault: Fault, _ configuration: Platform.Configuration) -> Platform.Configuration {
        guard fault.needsPatroni, let patroni else { return configuration }
        var configuration = configuration
        configuration.patroni = patroni.following(shards: configuration.clusters.map(\.name))
        return configuration
    }

    func injectPatroniFault(_ fault: Fault, say: @Sendable (String) -> Void) async throws {
        let patroni = try cluster(fault)
        switch fault {
        case .pgfailover:
            let killed = try await patroni.failover()
            say("  \(fault.rawValue): \(await failoverTimes(since: killed))")
        case .pgrejoin:
            try await patroni.failover()
            say("  \(fault.rawValue): standby promoted; the old primary rejoins through pg_rewind")
            try await patroni.restore()
        case .pgorphan:
            // The orphan stays read-write and first in the multi-host DSN; the standby is promoted once the leader
            // key expires. Left so for a while mid-sale, then fenced (as a watchdog would), so that the suite's own
            // statements (dropping the case's databases) cannot wait on it; the next case's restore rejoins it.
            try await requirePlacement(product: "s2", on: "shard-2")
            let orphan = try await patroni.primaryNode()
            try await patroni.killPatroni()
            try await waitUntil(timeout: .seconds(30), what: "the standby to be promoted past the orphan") {
                let primary = try? await patroni.primaryNode()
                return primary != nil && primary != orphan
            }
            try await Task.sleep(for: .seconds(3))
            try await patroni.fence()
        case .pgstandby:
            // Non-strict synchronous mode: once Patroni empties synchronous_standby_names (about one ttl), the
            // primary acknowledges commits alone; they have one copy until the standby is back.
            try await patroni.killStandby()
            say("  \(fault.rawValue): standby killed; the primary goes on acknowledging alone (non-strict mode)")
        default:
            break
        }
    }

    /// The orphan case's shard product must live on its shard, or the case would not show the shard fenced.
    private func requirePlacement(product: String, on cluster: String) async throws {
        guard let databases = patroniDatabases.current.withLock({ $0 }) else {
            throw ClusterError.notFound("the databases of the case under way")
        }
        let connection = try await PostgresConnection.connect(databases.main.dsn)
        defer { connection.close() }
        let placed = try await connection.query("SELECT database FROM products WHERE name = $1", [product]).string(0, 0)
        guard placed == cluster else { throw ClusterError.notFound("\(product) on \(cluster) (it is on \(placed ?? "no cluster"))") }
    }

    /// `failover_s=X unavailable_s=X`, from the case's orders on the new primary: the kill to the first order made
    /// after it, and the gap between the last order made before it and that one (the longest pause in orders: the
    /// sale is paced, so no other comes near it). Orders' `created_at` is their transaction's start, on the same
    /// machine's clock as the kill.
    func failoverTimes(since killed: Date) async -> String {
        guard let databases = patroniDatabases.current.withLock({ $0 }) else { return "failover_s=n/a unavailable_s=n/a" }
        let settings = PostgresSettings(connectTimeoutSeconds: 2, queryTimeout: .seconds(5))
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let connection = try? await PostgresConnection.connect(databases.main.dsn, settings: settings) {
                let result = try? await connection.query(
                    """
                    SELECT extract(epoch FROM (SELECT min(created_at) FROM orders WHERE created_at > to_timestamp($1))),
                           extract(epoch FROM (SELECT max(created_at) FROM orders WHERE created_at <= to_timestamp($1)))
                    """, [String(killed.timeIntervalSince1970)])
                connection.close()
                if let result, let first = result.string(0, 0).flatMap(Double.init) {
                    let last = result.string(0, 1).flatMap(Double.init) ?? killed.timeIntervalSince1970
                    let kill = killed.timeIntervalSince1970
                    return String(format: "failover_s=%.2f unavailable_s=%.2f", first - kill, first - last)
                }
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return "failover_s=n/a unavailable_s=n/a"
    }
}
