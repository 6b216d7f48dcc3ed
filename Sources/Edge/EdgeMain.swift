import ArgumentParser
import Atomics
import Foundation
import Logging
import NIOCore
import NIOPosix
import FlashSaleClient
import ServiceLifecycle
import ServiceMetrics
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

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on; 0 picks a free one (printed on the READY line).") var port = 0
    @Option(help: "Address other services reach this edge at (host:port); defaults to the bound address (the operator port's, if any).")
    var advertise: String?
    @Option(help: "Serve everything but edge.Purchase and Ping on this port instead (0 picks a free one).") var operatorPort: Int?
    @Option(help: "Address the operator port listens on.") var operatorHost = "127.0.0.1"
    @Option(help: "ZooKeeper connection string (host:port[,host:port...]).") var zookeeper: String
    @Option(help: "The flash sale's root node in ZooKeeper.") var root = "/flashsale"
    @Option(help: "InventoryService address (host:port).") var inventory: String
    @Option(help: "Connections to the InventoryService.") var inventoryConnections = 4
    @Option(help: "QuotaService address (host:port).") var quota: String
    @Option(help: "Attempts kept per million until config/shed is read.") var keepPerMillion: UInt32 = 1_000_000
    @Option(help: "Seed of the shedding lottery (random by default).") var shedSeed: UInt64?
    @Option(help: "Calls in flight per client connection before the edge stops reading it.") var maxCallsInFlight = 1024
    @Option(help: "Purchases with less budget left than this (milliseconds) are refused DEADLINE_EXCEEDED before they take a unit.")
    var minimumBudgetMs = 50
    @Option(help: "Purchases in flight or in doubt at most; past it new ones are refused UNAVAILABLE.") var maxInDoubt = 10_000
    @Option(help: "Seconds after which a client connection with nothing read and nothing in flight is closed (0: never).")
    var idleTimeout: Double = 300
    @Option(help: "Seconds a client connection may hold part of a frame before it is closed (slow clients; 0: never).")
    var frameTimeout: Double = 10
    @Option(help: "Largest frame accepted, in bytes.") var maxFrameSize = 64 * 1024
    @Option(help: "Event loop threads.") var threads = System.coreCount
    @Option(help: "trace|debug|info|notice|warning|error|critical") var logLevel = "info"
    @OptionGroup var metrics: MetricsOptions

    func run() async throws {
        guard let level = Logger.Level(name: logLevel) else { throw ValidationError("unknown log level \(logLevel)") }
        guard let inventoryAddress = HostPort(inventory), HostPort(quota) != nil else {
            throw ValidationError("--inventory and --quota take host:port")
        }
        let logger = ServiceRuntime.makeLogger(label: "edge", level: level)
        let credentials = try ServiceRuntime.credentials(environment: ProcessInfo.processInfo.environment, operator: false)
        let serviceToken = credentials.serviceToken
        // The edges' ZooKeeper identity (FLASHSALE_ZK_EDGE_SECRET or _FILE): read quotas, register, nothing more.
        let zooKeeperAccess = ZooKeeperAccess(
            edgeSecret: try ZooKeeperAccess.fromEnvironment(ProcessInfo.processInfo.environment).edgeSecret)
        if ProcessInfo.processInfo.environment["FLASHSALE_ZK_QUOTA_SECRET"] != nil {
            logger.warning("FLASHSALE_ZK_QUOTA_SECRET is set for an edge: edges need only FLASHSALE_ZK_EDGE_SECRET; ignored")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)

        let ledger = QuotaLedger()
        let shedder = LoadShedder(keepPerMillion: keepPerMillion, seed: shedSeed ?? UInt64.random(in: .min ... .max))
        let inventoryClient = RPCClient(
            configuration: RPCClientConfiguration(
                host: inventoryAddress.host, port: inventoryAddress.port, connections: max(1, inventoryConnections),
                defaultTimeout: .seconds(5), token: serviceToken ?? ""),
            group: group, logger: logger)
        // The agent needs the address the server bound (port 0 picks one), so it is created once the server
        // listens; the purchase path reaches it through this late binding.
        let agent = LateAgent()
        var purchaseConfiguration = PurchasePath.Configuration()
        purchaseConfiguration.minimumBudget = .milliseconds(Int64(minimumBudgetMs))
        purchaseConfiguration.maxTracked = maxInDoubt
        let purchases = PurchasePath(
            ledger: ledger, shedder: shedder, forwarder: InventoryForwarder(client: InventoryClient(rpc: inventoryClient)), refiller: agent,
            edgeID: { agent.edgeID }, configuration: purchaseConfiguration, logger: logger)

        var router = RPCRouter(serviceName: "edge")
        var operatorRouter = RPCRouter(serviceName: "edge")
        purchases.registerPurchase(into: &router)
        if operatorPort == nil {
            purchases.registerStats(into: &router)
            EdgeQuotaAgent.registerMethods(into: &router, ledger: ledger)
        } else {
            purchases.registerStats(into: &operatorRouter)
            EdgeQuotaAgent.registerMethods(into: &operatorRouter, ledger: ledger)
        }
        var serverConfiguration = RPCServerConfiguration(
            host: host, port: port, maxFrameSize: maxFrameSize, maxCallsInFlightPerConnection: maxCallsInFlight,
            idleTimeout: ServiceRuntime.timeout(seconds: idleTimeout), frameTimeout: ServiceRuntime.timeout(seconds: frameTimeout),
            credentials: credentials)
        let server = RPCServer(configuration: serverConfiguration, router: router, group: group, logger: logger)
        let operatorServer = operatorPort.map { operatorPort in
            serverConfiguration.host = operatorHost
            serverConfiguration.port = operatorPort
            return RPCServer(configuration: serverConfiguration, router: operatorRouter, group: group, logger: logger)
        }

        let advertise = self.advertise
        let zookeeper = self.zookeeper
        let root = self.root
        let quota = self.quota
        let agentRunner = ClosureService {
            let bound = try await server.localAddress()
            let reachedAt = try await operatorServer?.localAddress() ?? bound
            let address = advertise ?? "\(reachedAt.ipAddress ?? "127.0.0.1"):\(reachedAt.port ?? 0)"
            let quotaAgent = EdgeQuotaAgent(
                zooKeeper: zookeeper, root: root, address: address, ledger: ledger, shedder: shedder,
                quotaService: quota, serviceToken: serviceToken, access: zooKeeperAccess, logger: logger)
            agent.set(quotaAgent)
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await quotaAgent.run() }
                tasks.addTask {
                    let id = try await quotaAgent.registered()
                    logger.info("edge registered", metadata: ["edge": "\(id)", "address": "\(address)"])
                    ServiceRuntime.announceReady(service: "edge", address: bound)
                }
                try await tasks.waitForAll()
            }
        }
        // The resolver stops after the server has answered its calls in flight (reverse order).
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: agentRunner), .init(service: purchases.inDoubtResolver), .init(service: server),
        ]
        if let operatorServer { services.append(.init(service: operatorServer)) }
        if let metricsPort = metrics.metricsPort {
            let hooks = ScrapeHooks()
            ServiceMetrics.bootstrap()
            EdgeMetrics.install(
                into: hooks, purchases: purchases, ledger: ledger, server: server, zooKeeperState: { agent.zooKeeperState })
            let metricsServer = MetricsServer(
                service: "edge", host: metrics.metricsHost, port: metricsPort, hooks: hooks, group: group, logger: logger)
            services.insert(.init(service: metricsServer), at: 0)
        }
        // Shut down in reverse order: the server drains its calls in flight first, then the agent reports the
        // final usage and removes the edge's node; the metrics port (if any) goes last.
        let serviceGroup = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await serviceGroup.run()
        await inventoryClient.shutdown()
        try await group.shutdownGracefully()
    }
}

/// `host:port`.
struct HostPort {
    let host: String
    let port: Int

    init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        self.host = String(text[..<colon])
        self.port = port
    }
}

/// The quota agent, once it exists: refills and the edge id go through here. Set once and read lock-free:
/// every purchase reads the edge id.
final class LateAgent: QuotaRefiller, Sendable {
    private let agent = ManagedAtomicLazyReference<EdgeQuotaAgent>()

    func set(_ agent: EdgeQuotaAgent) { _ = self.agent.storeIfNilThenLoad(agent) }

    var edgeID: UInt32 { agent.load()?.edgeID ?? 0 }

    var zooKeeperState: ZooKeeperSessionState? { agent.load()?.zooKeeperState }

    func requestMore(product: String, on eventLoop: any EventLoop) -> EventLoopFuture<RefillOutcome> {
        guard let agent = agent.load() else { return eventLoop.makeSucceededFuture(.unavailable) }
        return agent.requestMore(product: product, on: eventLoop)
    }
}

/// A `Service` made of a closure.
struct ClosureService: Service {
    let body: @Sendable () async throws -> Void
    init(_ body: @escaping @Sendable () async throws -> Void) { self.body = body }
    func run() async throws { try await body() }
}
