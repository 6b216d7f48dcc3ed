// model: Sources/QuotaCore/Planning/QuotaProtocol.pml (round -> QS_GRANT, QS_RELEASE, QS_LIMIT_DONE; probe ->
// QS_PROBE; adjustStock -> OPERATOR). Update both together.
import Logging
import Proto
import QuotaContract
import Synchronization
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
    /// Registrations already logged as not taken (each is logged once, not every round); bounded.
    private let reported = Mutex<Set<String>>([])
    /// GrantMore calls this process answered (for its metrics: a standby's rising count shows the edges moved to it).
    let grantMoreAnswered = Atomic<UInt64>(0)

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

    /// Which absent allotments (no trusted registration) a round probes first.
    enum Probe: Sendable, Equatable {
        case none
        /// All of them: those that do not answer are retired (what they did not sell returns to the pool).
        case absent
        /// This edge's only, if absent: one that asks for units is alive, and may not have vouched for its session yet.
        case edge(String)

        func covers(_ name: String) -> Bool {
            switch self {
            case .none: false
            case .absent: true
            case .edge(let edge): edge == name
            }
        }
    }

    /// One round for `product`. Absent edges that `probe` covers are first asked, by id, to hand back everything
    /// they hold (see `probe(_:_:balance:)`).
    @discardableResult
    func round(_ product: String, _ trigger: QuotaBalance.Trigger, probe scope: Probe = .none) async throws -> Outcome {
        try await locks.withLock(product) {
            var releasesAsked = false
            var probed = false
            var dead: Set<String> = []
            for _ in 0..<Self.maxAttempts {
                guard let record = try await store.read(product) else { throw RPCError(.notFound, "unknown product") }
                var balance = try await self.picture(product, record.state)
                self.report(product, distrusted: balance.reconcile(product: product, dead: dead))

                if scope != .none && !probed {
                    probed = true
                    let absent = balance.allotments.filter { !$0.retired && !balance.isLive($0) && scope.covers($0.edge) }
                    if !absent.isEmpty {
                        dead = try await self.probe(product, absent, balance: balance)
                        continue
                    }
                }

                let plan = balance.plan(trigger, allowReleases: !releasesAsked)
                if !plan.releases.isEmpty {
                    releasesAsked = true
                    try await self.askForReleases(product, plan.releases)
                    continue
                }

                var after = balance
                after.allotments = plan.allotments
                let gone = after.pruneRetired()
                var state = record.state
                state.allotments = after.allotments
                state.maxEdgeId = after.maxEdgeID
                if state != record.state {
                    do {
                        try await store.write(product, state: state, version: record.version)
                    } catch let error as ZooKeeperError where error.code == .badVersion {
                        continue  // another quota service decided meanwhile: decide again on its record
                    }
                }
                if !gone.isEmpty {
                    logger.info("gone edges dropped from the record", metadata: ["product": "\(product)", "edges": "\(gone)"])
                    await store.removeQuotas(product, edges: gone)
                }
                try await store.publish(product, allotments: after.allotments)
                if !plan.grants.isEmpty {
                    logger.debug("granted", metadata: [
                        "product": "\(product)", "grants": "\(plan.grants)", "pool": "\(plan.pool)",
                    ])
                }
                return Outcome(balance: after, plan: plan)
            }
            throw RPCError(.aborted, "the product's record kept changing; try again")
        }
    }

    /// Logs, once per registration, what is not taken as an edge and why (the data are edge-written: a forgery, or
    /// an edge that came back too late).
    private func report(_ product: String, rejected: [String: String] = [:], distrusted: [String: QuotaBalance.Distrust] = [:]) {
        var fresh: [(String, String)] = []
        reported.withLock { reported in
            if reported.count > 10_000 { reported.removeAll() }
            for (name, why) in rejected where reported.insert(name + " " + why).inserted { fresh.append((name, why)) }
            for (name, why) in distrusted where reported.insert(name + " \(why)").inserted { fresh.append((name, "\(why)")) }
        }
        for (name, why) in fresh.sorted(by: { $0.0 < $1.0 }) {
            logger.warning("registration not trusted", metadata: ["product": "\(product)", "node": "\(name)", "reason": "\(why)"])
        }
    }

    /// The product as it stands: its record, the registered edges, and the database's stock and sales.
    func picture(_ product: String, _ state: ProductQuotaState) async throws -> QuotaBalance {
        async let stock = inventory.product(product)
        async let sold = inventory.soldCounts(product)
        let (registered, rejected) = try await store.registeredEdges()
        report(product, rejected: rejected)
        let (stockNow, soldNow) = try await (stock, sold)
        var byEdge: [UInt32: Int64] = [:]
        for edge in soldNow.edges { byEdge[edge.edgeId] = Units.sum([byEdge[edge.edgeId] ?? 0, edge.sold]) }
        return QuotaBalance(
            capacity: Self.capacity(stockNow), soldTotal: soldNow.sold, soldByEdge: byEdge,
            allotments: state.allotments, registered: registered, maxEdgeID: state.maxEdgeId)
    }

    /// Units the database will ever sell: its total stock, or the sale limit when that is lower, plus every unit a
    /// released hold gave back (sold counts keep a released order on the edge that made it: that edge used the unit,
    /// and it comes back to the pool, not to the edge).
    static func capacity(_ product: Product) -> Int64 {
        Units.sum([product.saleLimit > 0 ? min(product.totalStock, product.saleLimit) : product.totalStock, product.released])
    }

    /// Asks each edge for its surplus and records, per edge, its own total of units handed back: an absolute
    /// count, so recording it twice (or alongside the edge's own report) never counts a unit twice.
    private func askForReleases(_ product: String, _ releases: [ReleaseRequest]) async throws {
        let answers = await withTaskGroup(of: (String, EdgeReleaser.Answer).self) { group in
            for release in releases {
                group.addTask {
                    (release.edge, await self.releaser.release(
                        product: product, units: release.units, edgeID: release.edgeId, address: release.address))
                }
            }
            return await group.reduce(into: [String: EdgeReleaser.Answer]()) { $0[$1.0] = $1.1 }
        }
        try await record(product, answers, rebind: [:])
        logger.debug("asked edges for units", metadata: ["product": "\(product)", "answers": "\(answers)"])
    }

    /// Absent edges (units recorded, no trusted registration) are asked, by id, for everything they hold. Those that
    /// answer are alive (a session expiry: they register again), and a registration by the session an edge names
    /// in its answer is trusted from then on. Those that do not answer, or whose address now answers as another
    /// edge (FAILED_PRECONDITION), are gone: returned as dead, to be retired.
    private func probe(_ product: String, _ absent: [EdgeAllotment], balance: QuotaBalance) async throws -> Set<String> {
        var answers: [String: EdgeReleaser.Answer] = [:]
        var rebind: [String: Int64] = [:]
        for allotment in absent {
            let answer = await releaser.release(
                product: product, units: Int64.max, edgeID: allotment.edgeId, address: allotment.address)
            answers[allotment.edge] = answer
            if case .released(_, let session) = answer, session != 0, balance.registered[allotment.edge]?.session == session {
                rebind[allotment.edge] = session
            }
        }
        // A new edge's allotment is not in the record yet: it is written with the session it vouched for.
        try await record(product, answers, rebind: rebind, new: absent.filter { rebind[$0.edge] != nil })
        let dead = Set(answers.filter { $0.value == .unreachable || $0.value == .anotherEdge }.keys)
        if !dead.isEmpty { logger.info("edges gone: reclaiming their unsold units", metadata: ["product": "\(product)", "edges": "\(dead.sorted())"]) }
        if !rebind.isEmpty { logger.info("edges vouched for their registrations", metadata: ["product": "\(product)", "edges": "\(rebind.keys.sorted())"]) }
        return dead
    }

    private func record(
        _ product: String, _ answers: [String: EdgeReleaser.Answer], rebind: [String: Int64], new: [EdgeAllotment] = []
    ) async throws {
        var totals: [String: Int64] = [:]
        for (edge, answer) in answers { if case .released(let total, _) = answer { totals[edge] = Units.clamp(total) } }
        guard !totals.isEmpty || !rebind.isEmpty else { return }
        try await store.update(product) { state in
            var changed = false
            for i in state.allotments.indices where !state.allotments[i].retired {
                let name = state.allotments[i].edge
                // Never beyond what was granted: an answer cannot hand back units the edge never held.
                if let total = totals[name].map({ min($0, state.allotments[i].granted) }), total > state.allotments[i].reclaimed {
                    state.allotments[i].reclaimed = total
                    changed = true
                }
                if let session = rebind[name], session != state.allotments[i].session {
                    state.allotments[i].session = session
                    changed = true
                }
            }
            for allotment in new where allotment.edgeId > state.maxEdgeId && !state.allotments.contains(where: { $0.edge == allotment.edge }) {
                var added = allotment
                added.session = rebind[allotment.edge] ?? 0
                state.allotments.append(added)
                state.allotments.sort { $0.edgeId < $1.edgeId }
                state.maxEdgeId = allotment.edgeId
                changed = true
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
        let outcome = try await round(product, .fill([name]), probe: .edge(name))
        let granted = outcome.plan.allotments.first { $0.edge == name }?.granted ?? 0
        // Sold out only when the database has nothing left to sell; units held by other edges may still come back.
        let soldOut = outcome.plan.grants[name] == nil && outcome.balance.sellable == 0
        grantMoreAnswered.add(1, ordering: .relaxed)
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
            report(id, distrusted: balance.reconcile(product: id))
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
