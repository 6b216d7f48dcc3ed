import InventoryDiscovery
import Logging
import Metrics
import QuotaContract
import ServiceKit
import ServiceLifecycle
import ServiceMetrics
import Wire
import ZooKeeperClient

/// The quota service's logic, put together: a ZooKeeper session with the layout in place, the coordinator behind
/// the methods, and the supervisor (leader lock, rebalancing) to run. The executable adds the server and the group.
public struct QuotaServiceParts: Sendable {
    let coordinator: QuotaCoordinator
    let releaser: EdgeReleaser
    let supervisor: QuotaSupervisor
    /// The session, for the metrics (`zk.sessionState`).
    public let zk: ZooKeeperClient

    /// Connects to ZooKeeper (waiting for it: it may start after us), authenticates with `access` and creates the
    /// layout under `root`. `advertisedAddress` is where this process serves, once bound (the leader node names it).
    public static func start(
        zooKeeper: String, root: String, sessionTimeout: Duration, access: ZooKeeperAccess, inventory: InventoryReplicas,
        serviceToken: String, advertisedAddress: @escaping @Sendable () -> String, logger: Logger
    ) async throws -> QuotaServiceParts {
        let zk = try await connect(zooKeeper, sessionTimeout: sessionTimeout, logger: logger)
        try await access.authenticateQuotaService(zk)
        let store = QuotaStore(zk: zk, layout: QuotaLayout(root: root), logger: logger, access: access)
        try await store.ensureLayout()
        let releaser = EdgeReleaser(serviceToken: serviceToken, logger: logger)
        let coordinator = QuotaCoordinator(
            store: store,
            inventory: RemoteInventory(replicas: inventory),
            releaser: releaser, logger: logger)
        let supervisor = QuotaSupervisor(coordinator: coordinator, advertisedAddress: advertisedAddress, logger: logger)
        return QuotaServiceParts(coordinator: coordinator, releaser: releaser, supervisor: supervisor, zk: zk)
    }

    /// The quota methods.
    public func register(into router: inout RPCRouter) {
        QuotaAPI(coordinator: coordinator).register(into: &router)
    }

    /// Keeps the session, holds the leader lock when it can and rebalances as leader.
    public var background: some Service { supervisor }

    public var isLeader: Bool { supervisor.isLeader }

    /// GrantMore calls this process has answered.
    public var grantMoreAnswered: UInt64 { coordinator.grantMoreAnswered.load(ordering: .relaxed) }

    /// What a scrape of the metrics port shows: the server's connections, leadership, GrantMore calls answered and
    /// the ZooKeeper session.
    public func installMetrics(into hooks: ScrapeHooks, server: RPCServer) {
        let connections = Gauge(label: MetricName.connections, dimensions: [("service", "quota")])
        let leader = Gauge(label: MetricName.quotaLeader)
        let grantMore = CounterMirror(label: MetricName.quotaGrantMore)
        let zooKeeper = ZooKeeperMetrics(service: "quota")
        hooks.add {
            connections.record(server.connectionCount)
            leader.record(isLeader ? 1 : 0)
            grantMore.update(total: grantMoreAnswered)
            zooKeeper.record(zk.sessionState.name)
        }
    }

    /// Closes the clients of the edges, once the group has stopped.
    public func shutdown() async { await releaser.shutdown() }

    /// Waits for ZooKeeper (it may start after us), retrying with a short backoff.
    static func connect(_ hosts: String, sessionTimeout: Duration, logger: Logger) async throws -> ZooKeeperClient {
        var delays = Backoff(initial: .milliseconds(100), max: .seconds(2)).makeIterator()
        while true {
            do {
                return try await ZooKeeperClient.connect(
                    hosts: hosts, sessionTimeout: sessionTimeout, connectTimeout: .seconds(5), logger: logger)
            } catch {
                logger.warning("zookeeper unreachable; retrying", metadata: ["hosts": "\(hosts)", "error": "\(error)"])
                try await Task.sleep(for: delays.next())
            }
        }
    }
}
