import Addressing
import Cluster
import Foundation
import ServiceKit
import ZooKeeperClient

/// The replicated set-ups' fault cases: kill -9 of one of two inventory replicas (`replica`), and kill -9 of the
/// leading one of two quota services (`quotaleader`).
extension Fault {
    /// The case's platform: two inventory replicas, or a quota leader and a standby; one of each otherwise.
    func shape(_ configuration: inout Platform.Configuration) {
        switch self {
        case .replica: configuration.inventories = 2
        case .quotaleader: configuration.quotaServices = 2
        default: break
        }
    }
}

extension FaultCase {
    /// The second replica dies with purchases in flight on it. The edges move off it at once (its calls fail
    /// UNAVAILABLE, and a replica that failed is skipped); the purchases it had are in doubt and are settled by
    /// lookups on the first replica, which sees the same database. It is not restarted: the sale ends on one.
    func killInventoryReplica(_ platform: Platform) async {
        await platform.inventories[1].process.kill9()
    }

    /// The leader dies and stays dead; the standby takes the leader lock once ZooKeeper expires the dead one's
    /// session, and rebalances from then on. The time from the kill to the standby's `leader` node is measured (and
    /// must stay under a generous bound). The edges know both services and refill through the standby, and this
    /// suite's client talks to the standby throughout.
    func killQuotaLeader(_ platform: Platform) async throws {
        let zooKeeper = try await ZooKeeperClient.connect(
            hosts: platform.configuration.zooKeeperHosts, sessionTimeout: .seconds(10), logger: logger)
        let leaderNode = platform.configuration.zooKeeperRoot + "/leader"
        let leader: @Sendable () async -> HostPort? = {
            guard let data = try? await zooKeeper.get(leaderNode).data else { return nil }
            return HostPort(String(decoding: data, as: UTF8.self))
        }
        let services = platform.quotaServices
        do {
            let before = try await leaderAddress(leader, timeout: .seconds(10))
            guard let index = services.firstIndex(where: { $0.port == before.port }), index < services.count - 1 else {
                throw ClusterError.commandFailed("the leader node names \(before), not the first of the platform's quota services")
            }
            await services[index].process.kill9()
            let killed = ContinuousClock.now
            try await waitUntil(timeout: Self.handoverBound, what: "the standby to take the leader lock") {
                guard let now = await leader() else { return false }
                return now.port != before.port
            }
            let handover = ContinuousClock.now - killed
            say("  \(fault.rawValue): standby leading \(handover.formatted(.units(allowed: [.seconds], fractionalPart: .show(length: 1)))) after the kill")
        } catch {
            await zooKeeper.close()
            throw error
        }
        await zooKeeper.close()
    }

    /// The quota services' session timeout (6 s by default) plus a standby's once-a-second retry, with room for a
    /// machine shared with builds.
    static let handoverBound: Duration = .seconds(20)

    private func leaderAddress(_ leader: @Sendable () async -> HostPort?, timeout: Duration) async throws -> HostPort {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let address = await leader() { return address }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ClusterError.commandFailed("no quota service holds the leader lock")
    }
}
