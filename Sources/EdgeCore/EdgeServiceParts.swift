import FlashSaleClient
import InventoryDiscovery
import Logging
import NIOCore
import QuotaContract
import ServiceKit
import ServiceLifecycle
import ServiceMetrics
import Wire
import ZooKeeperClient

/// The edge's logic, put together: the quota ledger and its agent (registration, quotas from ZooKeeper, refills),
/// the shedding lottery, the purchase path and its in-doubt resolver. The executable adds the servers and the group.
public struct EdgeServiceParts: Sendable {
    public let agent: EdgeQuotaAgent
    public let purchases: PurchasePath
    let ledger: QuotaLedger

    /// The edge's default frame limit (`--max-frame-size`): a purchase is a few hundred bytes, and a public client
    /// should not make an edge buffer the other services' 1 MiB per connection.
    public static let maxFrameSize = 64 * 1024

    /// What the parts are made from (the executable's flags).
    public struct Settings: Sendable {
        public var zooKeeper: String
        public var root: String
        public var quotaService: String
        public var keepPerMillion: UInt32
        public var shedSeed: UInt64
        public var minimumBudget: TimeAmount
        public var maxInDoubt: Int
        public var serviceToken: String?
        public var access: ZooKeeperAccess

        public init(
            zooKeeper: String, root: String, quotaService: String, keepPerMillion: UInt32, shedSeed: UInt64,
            minimumBudget: TimeAmount, maxInDoubt: Int, serviceToken: String?, access: ZooKeeperAccess
        ) {
            self.zooKeeper = zooKeeper
            self.root = root
            self.quotaService = quotaService
            self.keepPerMillion = keepPerMillion
            self.shedSeed = shedSeed
            self.minimumBudget = minimumBudget
            self.maxInDoubt = maxInDoubt
            self.serviceToken = serviceToken
            self.access = access
        }
    }

    /// `address` is what the edge registers for the quota service: it is asked once the agent runs, and may wait
    /// for the server to bind (port 0 picks one).
    public init(
        _ settings: Settings, inventory: InventoryReplicas, address: @escaping @Sendable () async throws -> String, logger: Logger
    ) {
        let ledger = QuotaLedger()
        let shedder = LoadShedder(keepPerMillion: settings.keepPerMillion, seed: settings.shedSeed)
        let agent = EdgeQuotaAgent(
            zooKeeper: settings.zooKeeper, root: settings.root, address: address, ledger: ledger, shedder: shedder,
            quotaService: settings.quotaService, serviceToken: settings.serviceToken, access: settings.access, logger: logger)
        var configuration = PurchasePath.Configuration()
        configuration.minimumBudget = settings.minimumBudget
        configuration.maxTracked = settings.maxInDoubt
        // Refills go through the agent, which answers UNAVAILABLE until the edge is registered (edge id 0).
        self.purchases = PurchasePath(
            ledger: ledger, shedder: shedder, forwarder: InventoryForwarder(replicas: inventory), refiller: agent,
            edgeID: { agent.edgeID }, configuration: configuration, logger: logger)
        self.agent = agent
        self.ledger = ledger
    }

    /// `edge.Purchase`, the one public method.
    public func registerPurchase(into router: inout RPCRouter) {
        EdgeAPI(purchases: purchases, ledger: ledger).register(into: &router, where: EdgeAPI.isPublic)
    }

    /// `edge.Stats`, `edge.ReleaseQuota` and `edge.QuotaUsage`: on the operator port when the edge has one.
    public func registerOperatorMethods(into router: inout RPCRouter) {
        EdgeAPI(purchases: purchases, ledger: ledger).register(into: &router, where: { !EdgeAPI.isPublic($0) })
    }

    /// The agent first, then the resolver: the group stops them in reverse order, so the agent reports the final
    /// usage and removes the edge's node last.
    public var services: [any Service] { [agent, purchases.inDoubtResolver] }

    public func installMetrics(into hooks: ScrapeHooks, server: RPCServer) {
        EdgeMetrics.install(
            into: hooks, purchases: purchases, ledger: ledger, server: server, zooKeeperState: { [agent] in agent.zooKeeperState })
    }
}
