// model: Sources/QuotaService/Planning/QuotaProtocol.pml (round -> QS_GRANT, QS_RELEASE, QS_LIMIT_DONE; probe ->
// QS_PROBE; adjustStock -> OPERATOR). Update both together.
import FlashSaleClient
import Logging
import Proto
import Wire
import ZooKeeperClient

/// The quota service's decisions, each a round per product: read the record (product node), who is registered and
/// what the database sold; plan with `QuotaBalance`; ask edges for units back if the plan says so (and record what
/// they answer); write the grants with a compare-and-set on the product node; publish them in the quota nodes.
/// A lost compare-and-set (another quota service wrote first) starts the round over from a fresh read.
final class QuotaCoordinator: Sendable {
    let store: QuotaStore
    let inventory: any InventoryGateway
    let releaser: EdgeReleaser
    let logger: Logger
    private let locks = ProductLocks()
    private static let maxAttempts = 16

    init(store: QuotaStore, inventory: any InventoryGateway, releaser: EdgeReleaser, logger: Logger) {
        self.store = store
        self.inventory = inventory
        self.releaser = releaser
        self.logger = logger
    }

    struct Outcome: Sendable {
        var balance: QuotaBalance
        var plan: QuotaBalance.Plan
    }

    /// One round for `product`. `probeAbsent`: edges that hold units but are no longer registered are asked to hand
    /// them all back; those that do not answer are retired (what they did not sell returns to the pool).
    @discardableResult
    func round(_ product: String, _ trigger: QuotaBalance.Trigger, probeAbsent: Bool = false) async throws -> Outcome {
        try await locks.withLock(product) {
            var releasesAsked = false
            var probed = false
            var dead: Set<String> = []
            for _ in 0..<Self.maxAttempts {
                guard let record = try await store.read(product) else { throw RPCError(.notFound, "unknown product") }
                var balance = try await self.picture(product, record.state)
                balance.reconcile(product: product, dead: dead)

                if probeAbsent && !probed {
                    probed = true
                    let absent = balance.allotments.filter { !$0.retired && !balance.isLive($0) }
                    if !absent.isEmpty {
                        dead = try await self.probe(product, absent)
                        continue
                    }
                }

                let plan = balance.plan(trigger, allowReleases: !releasesAsked)
                if !plan.releases.isEmpty {
                    releasesAsked = true
                    try await self.askForReleases(product, plan.releases)
                    continue
                }

                var state = record.state
                state.allotments = plan.allotments
                if state != record.state {
                    do {
                        try await store.write(product, state: state, version: record.version)
                    } catch let error as ZooKeeperError where error.code == .badVersion {
                        continue  // another quota service decided meanwhile: decide again on its record
                    }
                }
                try await store.publish(product, allotments: plan.allotments)
                if !plan.grants.isEmpty {
                    logger.debug("granted", metadata: [
                        "product": "\(product)", "grants": "\(plan.grants)", "pool": "\(plan.pool)",
                    ])
                }
                var after = balance
                after.allotments = plan.allotments
                return Outcome(balance: after, plan: plan)
            }
            throw RPCError(.aborted, "the product's record kept changing; try again")
        }
    }

    /// The product as it stands: its record, the registered edges, and the database's stock and sales.
    func picture(_ product: String, _ state: ProductQuotaState) async throws -> QuotaBalance {
        async let stock = inventory.product(product)
        async let sold = inventory.soldCounts(product)
        let registered = try await store.registeredEdges()
        let (stockNow, soldNow) = try await (stock, sold)
        var byEdge: [UInt32: Int64] = [:]
        for edge in soldNow.edges { byEdge[edge.edgeId, default: 0] += edge.sold }
        return QuotaBalance(
            capacity: Self.capacity(stockNow), soldTotal: soldNow.sold, soldByEdge: byEdge,
            allotments: state.allotments, registered: registered)
    }

    /// Units the database will ever sell: its total stock, or the sale limit when that is lower.
    static func capacity(_ product: Product) -> Int64 {
        product.saleLimit > 0 ? min(product.totalStock, product.saleLimit) : product.totalStock
    }

    /// Asks each edge for its surplus and records, per edge, its own total of units handed back: an absolute
    /// count, so recording it twice (or alongside the edge's own report) never counts a unit twice.
    private func askForReleases(_ product: String, _ releases: [ReleaseRequest]) async throws {
        let answers = await withTaskGroup(of: (String, EdgeReleaser.Answer).self) { group in
            for release in releases {
                group.addTask {
                    (release.edge, await self.releaser.release(product: product, units: release.units, address: release.address))
                }
            }
            return await group.reduce(into: [String: EdgeReleaser.Answer]()) { $0[$1.0] = $1.1 }
        }
        try await record(product, answers)
        logger.debug("asked edges for units", metadata: ["product": "\(product)", "answers": "\(answers)"])
    }

    /// Absent edges (units recorded, node gone) are asked for everything they hold. Those that answer are alive
    /// (a session expiry: they register again); those that do not are gone: returned as dead, to be retired.
    private func probe(_ product: String, _ absent: [EdgeAllotment]) async throws -> Set<String> {
        var answers: [String: EdgeReleaser.Answer] = [:]
        for allotment in absent {
            answers[allotment.edge] = await releaser.release(product: product, units: Int64.max, address: allotment.address)
        }
        try await record(product, answers)
        let dead = Set(answers.filter { $0.value == .unreachable }.keys)
        if !dead.isEmpty { logger.info("edges gone: reclaiming their unsold units", metadata: ["product": "\(product)", "edges": "\(dead.sorted())"]) }
        return dead
    }

    private func record(_ product: String, _ answers: [String: EdgeReleaser.Answer]) async throws {
        var totals: [String: Int64] = [:]
        for (edge, answer) in answers { if case .released(let total) = answer { totals[edge] = total } }
        guard !totals.isEmpty else { return }
        try await store.update(product) { state in
            var changed = false
            for i in state.allotments.indices {
                if let total = totals[state.allotments[i].edge], total > state.allotments[i].reclaimed {
                    state.allotments[i].reclaimed = total
                    changed = true
                }
            }
            return changed
        }
    }

    // MARK: - Operator changes

    /// The inventory first (the truth), then the product node, then the split over the live edges.
    func createProduct(_ request: CreateProductRequest) async throws -> Outcome {
        let product: Product
        do {
            product = try await inventory.createProduct(request)
        } catch let error as RPCError where error.code == .alreadyExists {
            // Created in the database by an earlier call that failed before its node was written: adopt it.
            guard try await store.read(request.productId) == nil else { throw error }
            product = try await inventory.product(request.productId)
        }
        var state = ProductQuotaState()
        Self.copyConfig(product, into: &state)
        if !(try await store.create(request.productId, state: state)) {
            throw RPCError(.alreadyExists, "the product exists already")
        }
        logger.info("product created", metadata: ["product": "\(request.productId)", "stock": "\(product.totalStock)"])
        return try await round(request.productId, .settle)
    }

    /// Raise or limit: the database first, then the product node's copy of the config, then the quotas.
    func adjustStock(_ request: AdjustStockRequest) async throws -> Outcome {
        let productID = request.productId
        guard try await store.read(productID) != nil else { throw RPCError(.notFound, "unknown product") }
        if case .saleLimit(let limit)? = request.change {
            // The inventory would lift a limit below the units sold up to what is sold; the operator asked for less
            // than is possible: refuse and change nothing. (A sale landing between this check and the change is
            // still bounded by the database: it never sells past the limit in force.)
            let current = try await inventory.product(productID)
            if limit < current.sold {
                throw RPCError(.failedPrecondition, "the limit is below the units sold already (\(current.sold))")
            }
        }
        let product = try await inventory.adjustStock(request)
        try await store.update(productID) { state in
            let before = state
            Self.copyConfig(product, into: &state)
            return state != before
        }
        logger.info("stock adjusted", metadata: [
            "product": "\(productID)", "total": "\(product.totalStock)", "limit": "\(product.saleLimit)",
        ])
        if case .raiseBy(let units)? = request.change { return try await round(productID, .spread(units)) }
        return try await round(productID, .settle)
    }

    private static func copyConfig(_ product: Product, into state: inout ProductQuotaState) {
        state.totalStock = product.totalStock
        state.hot = product.hot
        state.database = product.database
        state.saleLimit = product.saleLimit
    }

    // MARK: - Edges

    /// A dry edge asks for more: it is favoured in a round that may take surplus units back from the others.
    func grantMore(edgeID: UInt32, product: String) async throws -> GrantMoreResponse {
        let name = QuotaLayout.edgeName(id: edgeID)
        let outcome = try await round(product, .fill([name]))
        let granted = outcome.plan.allotments.first { $0.edge == name }?.granted ?? 0
        // Sold out only when the database has nothing left to sell; units held by other edges may still come back.
        let soldOut = outcome.plan.grants[name] == nil && outcome.balance.sellable == 0
        return GrantMoreResponse(granted: granted, soldOut: soldOut)
    }

    // MARK: - Status

    func status(_ productID: String) async throws -> QuotaStatusResponse {
        let ids = productID.isEmpty ? try await store.productIDs() : [productID]
        var response = QuotaStatusResponse()
        response.keepPerMillion = try await store.shed() ?? 0
        for id in ids {
            guard let record = try await store.read(id) else {
                if productID.isEmpty { continue }
                throw RPCError(.notFound, "unknown product")
            }
            var balance = try await picture(id, record.state)
            balance.reconcile(product: id)
            response.products.append(Self.quotas(id, balance))
        }
        return response
    }

    static func quotas(_ product: String, _ balance: QuotaBalance) -> ProductQuotas {
        ProductQuotas(
            productId: product, sellable: balance.sellable, grantedUnused: balance.outstandingTotal,
            edges: balance.allotments.filter { !$0.retired }.map { allotment in
                EdgeQuota(
                    edgeId: allotment.edgeId, address: allotment.address, granted: allotment.granted,
                    used: balance.registered[allotment.edge]?.used[product] ?? 0, released: allotment.reclaimed,
                    sold: balance.sold(allotment))
            })
    }
}
