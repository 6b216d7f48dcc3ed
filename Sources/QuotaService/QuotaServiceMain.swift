import ArgumentParser
import FlashSaleClient
import Foundation
import Logging
import Metrics
import NIOCore
import ServiceLifecycle
import ServiceMetrics
import Synchronization
import Wire
import ZooKeeperClient

/// The quota service: owns the quota nodes in ZooKeeper, splits each product's stock over the live edges, rebalances
/// as edges come and go, and applies operator stock changes (database first, then quotas).
@main
struct QuotaServiceMain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "QuotaService", abstract: "The flash sale's quota service.")

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on (0 picks a free one; the READY line tells which).") var port = 0
    @Option(help: "ZooKeeper connection string: host:port[,host:port...].") var zookeeper = "127.0.0.1:12181"
    @Option(help: "Root node of the flash sale in ZooKeeper.") var root = QuotaLayout.defaultRoot
    @Option(help: "The inventory service, host:port.") var inventory = "127.0.0.1:7100"
    @Option(help: "ZooKeeper session timeout in milliseconds.") var sessionTimeoutMs = 6_000
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel = "info"
    @OptionGroup var metrics: MetricsOptions

    func run() async throws {
        guard let level = Logger.Level(name: logLevel) else { throw ValidationError("unknown log level \(logLevel)") }
        guard let (inventoryHost, inventoryPort) = HostPort.parse(inventory) else {
            throw ValidationError("--inventory must be host:port")
        }
        guard root.hasPrefix("/") else { throw ValidationError("--root must start with /") }
        let logger = ServiceRuntime.makeLogger(label: "quota", level: level)
        // The operator's methods need the operator token; the edges' GrantMore, and this service's own calls (the
        // edges' ReleaseQuota, the inventory's CreateProduct and AdjustStock), the service token.
        let credentials = try ServiceRuntime.credentials(environment: ProcessInfo.processInfo.environment, operator: true)
        if credentials.operatorToken == nil { logger.warning("no operator token: operator methods are refused") }
        let serviceToken = credentials.serviceToken ?? ""
        if metrics.metricsPort != nil { ServiceMetrics.bootstrap() }

        // Digest ACLs on every node it creates (FLASHSALE_ZK_QUOTA_SECRET and FLASHSALE_ZK_EDGE_SECRET, or _FILE).
        let access = try ZooKeeperAccess.fromEnvironment(ProcessInfo.processInfo.environment)
        try access.validateForQuotaService()
        if !access.quotaEnforces { logger.warning("no ZooKeeper secrets: quota nodes are open to every ZooKeeper client") }
        let zk = try await Self.connect(zookeeper, sessionTimeout: .milliseconds(sessionTimeoutMs), logger: logger)
        try await access.authenticateQuotaService(zk)
        let store = QuotaStore(zk: zk, layout: QuotaLayout(root: root), logger: logger, access: access)
        try await store.ensureLayout()
        let releaser = EdgeReleaser(serviceToken: serviceToken, logger: logger)
        let coordinator = QuotaCoordinator(
            store: store,
            inventory: RemoteInventory(host: inventoryHost, port: inventoryPort, token: serviceToken, logger: logger),
            releaser: releaser, logger: logger)

        var router = RPCRouter(serviceName: "quota")
        QuotaAPI(coordinator: coordinator).register(into: &router)
        let server = RPCServer(
            configuration: RPCServerConfiguration(host: host, port: port, credentials: credentials), router: router, logger: logger)
        let address = AdvertisedAddress()
        let supervisor = QuotaSupervisor(coordinator: coordinator, advertisedAddress: { address.value }, logger: logger)

        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let metricsPort = metrics.metricsPort {
            let hooks = ScrapeHooks()
            let connections = Gauge(label: MetricName.connections, dimensions: [("service", "quota")])
            let leader = Gauge(label: MetricName.quotaLeader)
            let zooKeeper = ZooKeeperMetrics(service: "quota")
            hooks.add {
                connections.record(server.connectionCount)
                leader.record(supervisor.isLeader ? 1 : 0)
                zooKeeper.record(zk.sessionState)
            }
            services.append(.init(service: MetricsServer(
                service: "quota", host: metrics.metricsHost, port: metricsPort, hooks: hooks, logger: logger)))
        }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services + [
                    .init(service: supervisor),
                    .init(service: server),
                    .init(service: ReadyAnnouncer(server: server, address: address)),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
        await releaser.shutdown()
    }

    /// Waits for ZooKeeper (it may start after us), retrying with a short backoff.
    static func connect(_ hosts: String, sessionTimeout: Duration, logger: Logger) async throws -> ZooKeeperClient {
        var delay = Duration.milliseconds(100)
        while true {
            do {
                return try await ZooKeeperClient.connect(
                    hosts: hosts, sessionTimeout: sessionTimeout, connectTimeout: .seconds(5), logger: logger)
            } catch {
                logger.warning("zookeeper unreachable; retrying", metadata: ["hosts": "\(hosts)", "error": "\(error)"])
                try await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(2))
            }
        }
    }
}

/// Prints the READY line once the server listens, then waits for shutdown.
struct ReadyAnnouncer: Service {
    let server: RPCServer
    let address: AdvertisedAddress

    func run() async throws {
        let bound = try await server.localAddress()
        address.value = "\(bound.ipAddress ?? "127.0.0.1"):\(bound.port ?? 0)"
        ServiceRuntime.announceReady(service: "quota", address: bound)
        try? await gracefulShutdown()
    }
}

/// host:port this process serves on, once bound (the leader node names it).
final class AdvertisedAddress: Sendable {
    private let storage = Mutex("")
    var value: String {
        get { storage.withLock { $0 } }
        set { storage.withLock { $0 = newValue } }
    }
}
