import Addressing
import ArgumentParser
import FlashSaleClient
import Foundation
import InventoryDiscovery
import Metrics
import NIOConcurrencyHelpers
import QuotaContract
import QuotaCore
import ServiceKit
import ServiceLifecycle
import ServiceMetrics
import Wire
import ZooKeeperClient

/// The quota service: owns the quota nodes in ZooKeeper, splits each product's stock over the live edges, rebalances
/// as edges come and go, and applies operator stock changes (database first, then quotas).
@main
struct QuotaServiceMain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "QuotaService", abstract: "The flash sale's quota service.")

    @OptionGroup var server: ServerOptions
    @Option(help: "ZooKeeper connection string: host:port[,host:port...].") var zookeeper = "127.0.0.1:12181"
    @Option(help: "Root node of the flash sale in ZooKeeper.") var root = QuotaLayout.defaultRoot
    @Option(help: "The inventory service, host:port, or its replicas (host:port,host:port...); empty with --discover-inventories.")
    var inventory = "127.0.0.1:7100"
    @Flag(help: "Also use the inventory replicas registered in ZooKeeper (<root>/inventories/), as they come and go.")
    var discoverInventories = false
    @Option(help: "ZooKeeper session timeout in milliseconds.") var sessionTimeoutMs = 6_000
    @OptionGroup var metrics: MetricsOptions

    func validate() throws {
        guard let inventories = HostPort.list(inventory) else {
            throw ValidationError("--inventory must be host:port[,host:port...]")
        }
        guard !inventories.isEmpty || discoverInventories else {
            throw ValidationError("name the inventory (--inventory host:port[,...]) or --discover-inventories")
        }
        guard root.hasPrefix("/") else { throw ValidationError("--root must start with /") }
    }

    func run() async throws {
        let logger = ServiceRuntime.makeLogger(label: "quota", level: server.level)
        // The operator's methods need the operator token; the edges' GrantMore, and this service's own calls (the
        // edges' ReleaseQuota, the inventory's CreateProduct and AdjustStock), the service token.
        let environment = ProcessInfo.processInfo.environment
        let credentials = try ServiceRuntime.credentials(environment: environment, operator: true)
        if credentials.operatorToken == nil { logger.warning("no operator token: operator methods are refused") }
        if metrics.metricsPort != nil { ServiceMetrics.bootstrap() }

        // Digest ACLs on every node it creates (FLASHSALE_ZK_QUOTA_SECRET and FLASHSALE_ZK_EDGE_SECRET, or _FILE).
        let access = ZooKeeperAccess(
            quotaSecret: try Secret.read("FLASHSALE_ZK_QUOTA_SECRET", environment: environment),
            edgeSecret: try Secret.read("FLASHSALE_ZK_EDGE_SECRET", environment: environment))
        try access.validateForQuotaService()
        if !access.quotaEnforces { logger.warning("no ZooKeeper secrets: quota nodes are open to every ZooKeeper client") }
        let address = NIOLockedValueBox("")  // host:port this process serves on, once bound
        let inventories = InventoryReplicas(
            listed: HostPort.list(inventory) ?? [],  // checked by validate()
            template: RPCClientConfiguration(port: 0, token: credentials.serviceToken ?? ""), logger: logger)
        let quota = try await QuotaServiceParts.start(
            zooKeeper: zookeeper, root: root, sessionTimeout: .milliseconds(sessionTimeoutMs), access: access,
            inventory: inventories, serviceToken: credentials.serviceToken ?? "",
            advertisedAddress: { address.withLockedValue { $0 } }, logger: logger)

        var router = RPCRouter(serviceName: "quota")
        quota.register(into: &router)
        let server = RPCServer(configuration: server.configuration(credentials: credentials), router: router, logger: logger)

        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if discoverInventories {
            services.append(.init(service: InventoryDirectory(zooKeeper: zookeeper, root: root, replicas: inventories, logger: logger)))
        }
        if let metricsPort = metrics.metricsPort {
            let hooks = ScrapeHooks()
            let connections = Gauge(label: MetricName.connections, dimensions: [("service", "quota")])
            let leader = Gauge(label: MetricName.quotaLeader)
            let grantMore = CounterMirror(label: MetricName.quotaGrantMore)
            let zooKeeper = ZooKeeperMetrics(service: "quota")
            hooks.add {
                connections.record(server.connectionCount)
                leader.record(quota.isLeader ? 1 : 0)
                grantMore.update(total: quota.grantMoreAnswered)
                zooKeeper.record(quota.zk.sessionState.name)
            }
            services.append(.init(service: MetricsServer(
                service: "quota", host: metrics.metricsHost, port: metricsPort, hooks: hooks, logger: logger)))
        }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services + [
                    .init(service: quota.background),
                    .init(service: server),
                    .init(service: ReadyAnnouncer(service: "quota") {
                        let bound = try await server.localAddress()
                        address.withLockedValue { $0 = "\(bound.ipAddress ?? "127.0.0.1"):\(bound.port ?? 0)" }
                        return bound
                    }),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
        await quota.shutdown()
        await inventories.shutdown()
    }
}
