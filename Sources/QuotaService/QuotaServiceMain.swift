import ArgumentParser
import Foundation
import QuotaContract
import QuotaCore
import ServiceKit
import ServiceLifecycle
import Wire
import ZooKeeperClient

/// The quota service: owns the quota nodes in ZooKeeper, splits each product's stock over the live edges, rebalances
/// as edges come and go, and applies operator stock changes (database first, then quotas).
@main
struct QuotaServiceMain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "QuotaService", abstract: "The flash sale's quota service.")

    @OptionGroup var server: ServerOptions
    @OptionGroup var zooKeeper: ZooKeeperOptions
    @OptionGroup var upstream: InventoryUpstreamOptions
    @Option(help: "ZooKeeper session timeout in milliseconds.") var sessionTimeoutMs = 6_000
    @OptionGroup var metrics: MetricsOptions

    func validate() throws {
        _ = try zooKeeper.required()
    }

    func run() async throws {
        let logger = ServiceRuntime.makeLogger(label: "quota", level: server.level)
        // The operator's methods need the operator token; the edges' GrantMore, and this service's own calls (the
        // edges' ReleaseQuota, the inventory's CreateProduct and AdjustStock), the service token.
        let environment = ProcessInfo.processInfo.environment
        await ParentLifeline.watch(environment: environment, logger: logger)
        let credentials = try ServiceRuntime.credentials(environment: environment, operator: true)
        if credentials.operatorToken == nil { logger.warning("no operator token: operator methods are refused") }
        metrics.bootstrap()

        // Digest ACLs on every node it creates (FLASHSALE_ZK_QUOTA_SECRET and FLASHSALE_ZK_EDGE_SECRET, or _FILE).
        let access = ZooKeeperAccess(
            quotaSecret: try Secret.read("FLASHSALE_ZK_QUOTA_SECRET", environment: environment),
            edgeSecret: try Secret.read("FLASHSALE_ZK_EDGE_SECRET", environment: environment))
        try access.validateForQuotaService()
        if !access.quotaEnforces { logger.warning("no ZooKeeper secrets: quota nodes are open to every ZooKeeper client") }
        let zooKeeperHosts = try zooKeeper.required()
        let (inventories, directory) = upstream.replicas(
            template: RPCClientConfiguration(port: 0, token: credentials.serviceToken ?? ""),
            zooKeeper: zooKeeperHosts, root: zooKeeper.root, logger: logger)
        // The leader node names this address: none until the server has bound.
        let address = server.advertisedAddress()
        let quota = try await QuotaServiceParts.start(
            zooKeeper: zooKeeperHosts, root: zooKeeper.root, sessionTimeout: .milliseconds(sessionTimeoutMs), access: access,
            inventory: inventories, serviceToken: credentials.serviceToken ?? "",
            advertisedAddress: { address.resolved?.description ?? "" }, logger: logger)

        var router = RPCRouter(serviceName: "quota")
        quota.register(into: &router)
        let server = RPCServer(configuration: server.configuration(credentials: credentials), router: router, logger: logger)
        address.serve(server)

        let services = metrics.services(service: "quota", logger: logger) { quota.installMetrics(into: $0, server: server) }
            + directory.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) }
            + [
                .init(service: quota.background),
                .init(service: server),
                .init(service: ReadyAnnouncer(service: "quota") {
                    _ = try await address.resolve()
                    return try await server.localAddress()
                }),
            ]
        try await ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        ).run()
        await quota.shutdown()
        await inventories.shutdown()
    }
}
