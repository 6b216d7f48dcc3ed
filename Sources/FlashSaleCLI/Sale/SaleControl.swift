import Cluster
import FlashSaleClient
import Logging
import NIOCore
import Proto
import Wire

/// The sale's operator side: prepares the sale (`SaleDriver`), and afterwards gathers the figures and the audit
/// for the report.
struct SaleControl: Sendable {
    let platform: Platform
    let quota: QuotaClient
    let inventory: InventoryClient
    let edges: [EdgeClient]
    let logger: Logger

    init(platform: Platform, logger: Logger) {
        self.platform = platform
        self.logger = logger
        self.quota = platform.quotaClient(logger: logger)
        // The report's lookups are `inventory.Purchase` calls (a lookup closes a request id): the service token's work.
        self.inventory = platform.inventoryClient(connections: 2, logger: logger)
        self.edges = platform.edges.map { EdgeClient(host: $0.host, port: $0.port, logger: logger) }
    }

    func shutdown() async {
        await quota.shutdown()
        await inventory.shutdown()
        for edge in edges { await edge.shutdown() }
    }

    func prepare(products: [String], stock: Int64, hot: Set<String>, keepPerMillion: UInt32, holdSeconds: UInt32 = 0) async throws {
        try await SaleDriver.prepare(
            quota: quota, products: products.map { ($0, stock, hot.contains($0)) }, keepPerMillion: keepPerMillion,
            edges: platform.edges, edgeCount: platform.edges.count, holdSeconds: holdSeconds, logger: logger)
    }

    /// `holds`: the sale's databases, payer and waves when it ran with `--hold`.
    func report(
        result: BuyerSwarm.Result, products: [String], stock: Int64, configuration: SaleCommand,
        holds: (dsns: [String], payer: HoldPayer.Tally, waves: Int)? = nil
    ) async throws -> SaleReport {
        let audit = try await inventory.audit()
        var holdFigures: (figures: HoldFigures, released: Set<UInt64>)?
        if let holds {
            holdFigures = try await HoldFigures.gather(
                dsns: holds.dsns, products: products, stock: stock, holdSeconds: configuration.hold,
                payShare: configuration.payShare, waves: holds.waves, payer: holds.payer, audit: audit)
        }
        let catalog = try await inventory.listProducts()
        // Every PURCHASED reply must have its order.
        let withoutOrder = try await SaleDriver.purchasesWithoutOrder(result.purchases, inventory: inventory).count
        let replies = Dictionary(grouping: result.purchases, by: \.product).mapValues(\.count)
        let lines = products.map { product -> SaleReport.ProductLine in
            let line = audit.products.first { $0.productId == product }
            return SaleReport.ProductLine(
                product: product, database: catalog.first { $0.productId == product }?.database ?? "?",
                totalStock: line?.totalStock ?? 0, orders: line?.orders ?? 0, remaining: line?.remaining ?? 0,
                purchasedReplies: replies[product] ?? 0, auditClean: line?.clean ?? false, released: line?.released ?? 0)
        }
        var edgeLines: [SaleReport.EdgeLine] = []
        // An edge killed on purpose (`--kill-edge-at`) has no counters to report.
        for (edge, endpoint) in zip(edges, platform.edges) where endpoint.process.isRunning {
            let stats = try await edge.stats()
            edgeLines.append(.init(
                edgeID: stats.edgeId, address: endpoint.address, attempts: stats.attempts, shed: stats.shed,
                soldOut: stats.soldOut, purchased: stats.purchased, alreadyPurchased: stats.alreadyPurchased,
                errors: stats.errors, forwarded: stats.forwarded))
        }
        let hot = configuration.hot.split(separator: ",").map(String.init)
        return SaleReport(
            result: result,
            configuration: .init(
                products: configuration.products, stock: stock, attempts: configuration.attempts, users: configuration.users,
                connections: configuration.connections, depth: configuration.depth, keep: configuration.keep,
                edges: configuration.edges, hot: hot),
            products: lines, edges: edgeLines, purchasedRepliesWithoutOrder: withoutOrder,
            auditClean: audit.clean && lines.allSatisfy(\.auditClean), holds: holdFigures?.figures,
            released: holdFigures?.released ?? [])
    }
}
