// model: Sources/QuotaService/Planning/QuotaProtocol.pml (purchase/takeAndForward -> EDGE_FORWARD, EDGE_CLAIM;
// answerWithoutStock -> BUYER_LOOKUP; forward -> EDGE_ANSWERED, settle, EDGE_TIMEOUT). Update both together.
import Atomics
import Logging
import NIOCore
import Proto
import Wire

/// Where the survivors go: the inventory service. A protocol so that the purchase path is unit-tested on an
/// EmbeddedChannel; the edge itself uses `InventoryForwarder`.
public protocol PurchaseForwarder: Sendable {
    func forward(_ request: PurchaseRequest, timeout: TimeAmount) -> EventLoopFuture<PurchaseResponse>
}

/// Asks the quota service for more units when this edge runs dry; true when units were added to the ledger.
public protocol QuotaRefiller: Sendable {
    func requestMore(product: String) async -> Bool
}

/// The edge's public call, decided on the connection's event loop: validate, shed by lottery, take a unit from
/// the product's local counter, forward the survivor to the inventory, relay its outcome.
///
/// It runs on the event loop rather than in a task per call: almost every attempt in a flash sale ends at the
/// lottery or the counter, and a task hop per attempt would cost more than the decision itself
/// (`scripts/bench.sh sale` measures this path).
public final class PurchasePath: Sendable {
    public static let maxProductIDLength = 128

    private let ledger: QuotaLedger
    private let shedder: LoadShedder
    private let forwarder: any PurchaseForwarder
    private let refiller: any QuotaRefiller
    private let edgeID: @Sendable () -> UInt32
    private let defaultTimeout: TimeAmount
    private let logger: Logger
    let counters = EdgeCounters()
    let resolver: InDoubtResolver

    public init(
        ledger: QuotaLedger, shedder: LoadShedder, forwarder: any PurchaseForwarder, refiller: any QuotaRefiller,
        edgeID: @escaping @Sendable () -> UInt32, defaultTimeout: TimeAmount = .seconds(5),
        inDoubtSettleDelay: Duration = .seconds(1), logger: Logger
    ) {
        self.ledger = ledger
        self.shedder = shedder
        self.forwarder = forwarder
        self.refiller = refiller
        self.edgeID = edgeID
        self.defaultTimeout = defaultTimeout
        self.logger = logger
        self.resolver = InDoubtResolver(ledger: ledger, forwarder: forwarder, settleDelay: inDoubtSettleDelay, logger: logger)
    }

    public func register(into router: inout RPCRouter) {
        self.registerPurchase(into: &router)
        self.registerStats(into: &router)
    }

    /// `edge.Purchase`: the one public method of an edge.
    public func registerPurchase(into router: inout RPCRouter) {
        router.register("edge.Purchase", onEventLoop: { (request: PurchaseRequest, context, responder: RPCResponder<PurchaseResponse>) in
            self.purchase(request, context: context, responder: responder)
        })
    }

    /// `edge.Stats`: read-only counters (on the operator port when the edge has one).
    public func registerStats(into router: inout RPCRouter) {
        router.register("edge.Stats") { (_: EdgeStatsRequest, _: ServerCallContext) async throws -> EdgeStatsResponse in
            self.stats()
        }
    }

    public func stats() -> EdgeStatsResponse {
        var stats = self.counters.snapshot()
        stats.edgeId = self.edgeID()
        stats.inDoubt = UInt64(self.resolver.pendingCount)
        stats.keepPerMillion = self.shedder.keepPerMillion
        return stats
    }

    func purchase(_ request: PurchaseRequest, context: ServerCallContext, responder: RPCResponder<PurchaseResponse>) {
        self.counters.attempts.wrappingIncrement(ordering: .relaxed)
        if let problem = Self.validate(request) {
            self.counters.errors.wrappingIncrement(ordering: .relaxed)
            return responder.fail(problem)
        }
        // An in-doubt retry must learn its first outcome, so it is never shed.
        if !request.retry && !self.shedder.admit() {
            self.counters.shed.wrappingIncrement(ordering: .relaxed)
            return responder.succeed(PurchaseResponse(outcome: .shed))
        }
        // A retry of an attempt this edge holds in doubt reuses that attempt's unit rather than taking another.
        if request.retry && self.resolver.claim(request.requestId) {
            return self.forward(request, context: context, responder: responder, carriesInDoubtUnit: true)
        }
        self.takeAndForward(request, context: context, responder: responder, refills: 0)
    }

    private func takeAndForward(
        _ request: PurchaseRequest, context: ServerCallContext, responder: RPCResponder<PurchaseResponse>, refills: Int
    ) {
        switch self.ledger.take(request.productId) {
        case .taken:
            self.forward(request, context: context, responder: responder, carriesInDoubtUnit: false)
        case .dry where refills < 2:
            // Stock may remain on other edges: ask for more, then try the counter again.
            let eventLoop = context.eventLoop
            Task {
                _ = await self.refiller.requestMore(product: request.productId)
                eventLoop.execute {
                    self.takeAndForward(request, context: context, responder: responder, refills: refills + 1)
                }
            }
        case .dry, .soldOut:
            self.answerWithoutStock(request, context: context, responder: responder, otherwise: .success(PurchaseResponse(outcome: .soldOut)))
        case .unknownProduct:
            self.answerWithoutStock(
                request, context: context, responder: responder,
                otherwise: .failure(RPCError(.notFound, "unknown product")))
        }
    }

    /// No unit for this attempt. A retry may still have a first outcome at the inventory: look it up, buy nothing.
    private func answerWithoutStock(
        _ request: PurchaseRequest, context: ServerCallContext, responder: RPCResponder<PurchaseResponse>,
        otherwise: Result<PurchaseResponse, RPCError>
    ) {
        guard request.retry else {
            self.count(otherwise)
            return responder.complete(otherwise)
        }
        var lookup = request
        lookup.lookupOnly = true
        lookup.edgeId = self.edgeID()
        self.forwarder.forward(lookup, timeout: self.timeout(context)).whenComplete { result in
            switch result {
            case .success(let response) where response.outcome == .purchased:
                self.count(.success(response))
                responder.succeed(response)
            case .success:
                self.count(otherwise)
                responder.complete(otherwise)
            case .failure(let error):
                let error = RPCError.wrapping(error)
                self.count(.failure(error))
                responder.fail(error)
            }
        }
    }

    /// `carriesInDoubtUnit`: the unit is the one an earlier forward of this request id left in doubt, so a replayed
    /// order made through this edge is that forward's order, and the unit stays used.
    private func forward(
        _ request: PurchaseRequest, context: ServerCallContext, responder: RPCResponder<PurchaseResponse>,
        carriesInDoubtUnit: Bool
    ) {
        var outgoing = request
        outgoing.edgeId = self.edgeID()
        outgoing.lookupOnly = false
        let forwarded = outgoing
        self.counters.forwarded.wrappingIncrement(ordering: .relaxed)
        self.forwarder.forward(forwarded, timeout: self.timeout(context)).whenComplete { result in
            switch result {
            case .success(let response):
                let madeHere = response.outcome == .purchased
                    && (!response.replayed || (carriesInDoubtUnit && response.edgeId == forwarded.edgeId))
                if !madeHere {
                    // No order of this edge's own came of the unit: it goes back on the counter.
                    self.ledger.giveBack(request.productId)
                    if response.outcome == .soldOut { self.ledger.markSoldOut(request.productId) }
                }
                self.count(.success(response))
                responder.succeed(response)
            case .failure(let error):
                let error = RPCError.wrapping(error)
                if Self.leavesOutcomeInDoubt(error) {
                    // The order may have committed. Keep the unit until the inventory says which.
                    self.resolver.resolveLater(forwarded)
                } else {
                    // Refused before it was queued (bad input, queue full, unknown product): nothing was bought.
                    self.ledger.giveBack(request.productId)
                }
                self.count(.failure(error))
                responder.fail(error)
            }
        }
    }

    private func timeout(_ context: ServerCallContext) -> TimeAmount {
        guard let deadline = context.deadline else { return self.defaultTimeout }
        return deadline - .now()
    }

    private func count(_ result: Result<PurchaseResponse, RPCError>) {
        switch result {
        case .success(let response):
            switch response.outcome {
            case .purchased: self.counters.purchased.wrappingIncrement(ordering: .relaxed)
            case .soldOut: self.counters.soldOut.wrappingIncrement(ordering: .relaxed)
            case .alreadyPurchased: self.counters.alreadyPurchased.wrappingIncrement(ordering: .relaxed)
            case .shed: self.counters.shed.wrappingIncrement(ordering: .relaxed)
            default: self.counters.errors.wrappingIncrement(ordering: .relaxed)
            }
        case .failure:
            self.counters.errors.wrappingIncrement(ordering: .relaxed)
        }
    }

    /// Errors after which the purchase may or may not have committed.
    static func leavesOutcomeInDoubt(_ error: RPCError) -> Bool {
        switch error.code {
        case .unavailable, .deadlineExceeded, .internal, .unknown, .cancelled, .aborted, .dataLoss: return true
        default: return false
        }
    }

    static func validate(_ request: PurchaseRequest) -> RPCError? {
        if request.requestId == 0 { return RPCError(.invalidArgument, "request_id is required") }
        if request.userId == 0 { return RPCError(.invalidArgument, "user_id is required") }
        if request.productId.isEmpty { return RPCError(.invalidArgument, "product_id is required") }
        if request.productId.utf8.count > maxProductIDLength { return RPCError(.invalidArgument, "product_id is too long") }
        if request.lookupOnly { return RPCError(.invalidArgument, "lookup_only is for the edge's own use") }
        return nil
    }
}

/// Outcome counts of one edge, for `edge.Stats` and the sale report.
final class EdgeCounters: Sendable {
    let attempts = ManagedAtomic<UInt64>(0)
    let shed = ManagedAtomic<UInt64>(0)
    let soldOut = ManagedAtomic<UInt64>(0)
    let purchased = ManagedAtomic<UInt64>(0)
    let alreadyPurchased = ManagedAtomic<UInt64>(0)
    let errors = ManagedAtomic<UInt64>(0)
    let forwarded = ManagedAtomic<UInt64>(0)

    func snapshot() -> EdgeStatsResponse {
        EdgeStatsResponse(
            attempts: attempts.load(ordering: .relaxed), shed: shed.load(ordering: .relaxed),
            soldOut: soldOut.load(ordering: .relaxed), purchased: purchased.load(ordering: .relaxed),
            alreadyPurchased: alreadyPurchased.load(ordering: .relaxed), errors: errors.load(ordering: .relaxed),
            forwarded: forwarded.load(ordering: .relaxed))
    }
}
