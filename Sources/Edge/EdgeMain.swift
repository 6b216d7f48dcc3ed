import Addressing
import ArgumentParser
import EdgeCore
import FoundationEssentials
import NIOCore
import NIOPosix
import QuotaContract
import ServiceKit
import ServiceLifecycle
import Wire
import ZooKeeperClient

/// The edge: the platform's public entry. Purchases only, plus the quota service's `edge.ReleaseQuota`
/// (service token). Stateless apart from its counters: start as many as you like, on any port.
///
/// Methods: `edge.Purchase` (public), `Ping` (public, health), `edge.Stats` and `edge.QuotaUsage` (read-only
/// counters), `edge.ReleaseQuota` (service token). The edge holds the service token (FLASHSALE_SERVICE_TOKEN[_FILE])
/// for its own calls too (`inventory.Purchase`, `quota.GrantMore`), and never the operator's. With `--operator-port`,
/// the public port serves `edge.Purchase` and `Ping` only; the other methods move to the operator port (by default
/// on 127.0.0.1), which is then the address the edge registers for the quota service.
@main
struct EdgeMain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "Edge", abstract: "The flash sale's public purchase entry.")

    @OptionGroup var server: ServerOptions
    @Option(help: "Serve everything but edge.Purchase and Ping on this port instead (0 picks a free one).") var operatorPort: Int?
    @Option(help: "Address the operator port listens on.") var operatorHost = "127.0.0.1"
    @OptionGroup var zooKeeper: ZooKeeperOptions
    @OptionGroup var upstream: InventoryUpstreamOptions
    @Option(help: "Connections to the InventoryService.") var inventoryConnections = 4
    @Option(help: """
        QuotaService address (host:port), or several (a leader and its standbys, comma-separated): a refill goes to \
        the one that last answered, and to the next once it cannot be reached.
        """)
    var quota: String
    @Option(help: "Attempts kept per million until config/shed is read.") var keepPerMillion: UInt32 = 1_000_000
    @Option(help: "Seed of the shedding lottery (random by default).") var shedSeed: UInt64?
    @Option(help: "Calls in flight per client connection before the edge stops reading it.") var maxCallsInFlight = 1024
    @Option(help: "Purchases with less budget left than this (milliseconds) are refused DEADLINE_EXCEEDED before they take a unit.")
    var minimumBudgetMs = 50
    @Option(help: "Purchases in flight or in doubt at most; past it new ones are refused UNAVAILABLE.") var maxInDoubt = 10_000
    @Option(help: "Event loop threads.") var threads = System.coreCount
    @OptionGroup var metrics: MetricsOptions

    func validate() throws {
        _ = try zooKeeper.required()
        guard !(HostPort.list(quota, defaultHost: "127.0.0.1") ?? []).isEmpty else {
            throw ValidationError("--quota takes host:port[,host:port...]")
        }
    }

    func run() async throws {
        let logger = ServiceRuntime.makeLogger(label: "edge", level: server.level)
        let environment = ProcessInfo.processInfo.environment
        await ParentLifeline.watch(environment: environment, logger: logger)
        let credentials = try ServiceRuntime.credentials(environment: environment, operator: false)
        // The edges' ZooKeeper identity (FLASHSALE_ZK_EDGE_SECRET or _FILE): read quotas, register, nothing more.
        let zooKeeperAccess = ZooKeeperAccess(edgeSecret: try Secret.read("FLASHSALE_ZK_EDGE_SECRET", environment: environment))
        if environment["FLASHSALE_ZK_QUOTA_SECRET"] != nil {
            logger.warning("FLASHSALE_ZK_QUOTA_SECRET is set for an edge: edges need only FLASHSALE_ZK_EDGE_SECRET; ignored")
        }
        metrics.bootstrap()
        let zooKeeperHosts = try zooKeeper.required()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let (inventories, directory) = upstream.replicas(
            template: RPCClientConfiguration(
                port: 0, connections: max(1, inventoryConnections), defaultTimeout: .seconds(5),
                token: credentials.serviceToken ?? ""),
            group: group, zooKeeper: zooKeeperHosts, root: zooKeeper.root, logger: logger)
        // The agent registers the address the server bound, and the server is made after the purchase path that
        // refills through the agent: the agent finds the server once it runs.
        let address = server.advertisedAddress()
        let edge = EdgeServiceParts(
            .init(
                zooKeeper: zooKeeperHosts, root: zooKeeper.root, quotaService: quota, keepPerMillion: keepPerMillion,
                shedSeed: shedSeed ?? UInt64.random(in: .min ... .max), minimumBudget: .milliseconds(Int64(minimumBudgetMs)),
                maxInDoubt: maxInDoubt, serviceToken: credentials.serviceToken, access: zooKeeperAccess),
            inventory: inventories, address: { try await address.resolve().description }, logger: logger)

        var router = RPCRouter(serviceName: "edge")
        var operatorRouter = RPCRouter(serviceName: "edge")
        edge.registerPurchase(into: &router)
        if operatorPort == nil { edge.registerOperatorMethods(into: &router) } else { edge.registerOperatorMethods(into: &operatorRouter) }
        var serverConfiguration = server.configuration(credentials: credentials, maxFrameSize: EdgeServiceParts.maxFrameSize)
        serverConfiguration.maxCallsInFlightPerConnection = maxCallsInFlight
        let server = RPCServer(configuration: serverConfiguration, router: router, group: group, logger: logger)
        let operatorServer = operatorPort.map { operatorPort in
            serverConfiguration.host = operatorHost
            serverConfiguration.port = operatorPort
            return RPCServer(configuration: serverConfiguration, router: operatorRouter, group: group, logger: logger)
        }
        address.serve(operatorServer ?? server)

        // Shut down in reverse order: the server drains its calls in flight first, then the resolver stops, then the
        // agent reports the final usage and removes the edge's node, then the directory (after the resolver's final
        // lookups); the metrics port (if any) goes last.
        let services = metrics.services(service: "edge", group: group, logger: logger) {
            edge.installMetrics(into: $0, server: server)
        } + (directory + edge.services + [server] + (operatorServer.map { [$0] } ?? [])).map {
            ServiceGroupConfiguration.ServiceConfiguration(service: $0)
        } + [.init(service: ReadyAnnouncer(service: "edge") {
            let id = try await edge.agent.registered()
            logger.info("edge registered", metadata: ["edge": "\(id)", "address": "\(edge.agent.address)"])
            return try await server.localAddress()
        })]
        try await ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        ).run()
        await inventories.shutdown()
        try await group.shutdownGracefully()
    }
}
