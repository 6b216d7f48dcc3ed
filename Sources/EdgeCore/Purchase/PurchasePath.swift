// model: Sources/QuotaCore/Planning/QuotaProtocol.pml (purchase/takeAndForward -> EDGE_FORWARD, EDGE_CLAIM;
// answerWithoutStock -> BUYER_LOOKUP; forward -> EDGE_ANSWERED, settle, EDGE_TIMEOUT). Update both together.
import Atomics
import Logging
import NIOCore
import Proto
import ServiceLifecycle
import Wire

/// Where the survivors go: the inventory service. A protocol so that the purchase path is unit-tested behind its
/// real server handler on a test channel; the edge itself uses `InventoryForwarder`.
public protocol PurchaseForwarder: Sendable {
    func forward(_ request: PurchaseRequest, timeout: TimeAmount) -> EventLoopFuture<PurchaseResponse>
}

/// What a refill brought.
public enum RefillOutcome: Sendable, Equatable {
    /// Units were added to the ledger: take again.
    case granted
    /// The quota service says the database has nothing left to sell (the ledger is marked so).
    case soldOut
    /// Nothing now (the quota service unreachable, or every unit held elsewhere or in doubt): try again later.
    case unavailable
}

/// Asks the quota service for more units when this edge runs dry. One refill in flight per product: concurrent
/// callers share its outcome, delivered on `eventLoop`.
public protocol QuotaRefiller: Sendable {
    func requestMore(product: String, on eventLoop: any EventLoop) -> EventLoopFuture<RefillOutcome>
}

/// The edge's public call, decided on the connection's event loop: validate, refuse a budget too small to buy,
/// take over a unit this edge holds in doubt for the same purchase, else shed by lottery and take a unit from the
/// product's local counter; forward to the inventory, relay its outcome.
///
/// It runs on the event loop rather than in a task per call: almost every attempt in a flash sale ends at the
/// lottery or the counter, and a task hop per attempt would cost more than the decision itself
/// (`scripts/bench.sh sale` measures this path).
public final class PurchasePath: Sendable {
    public static let maxProductIDLength = 128

    public struct Configuration: Sendable {
        /// Used when a call names no deadline.
        public var defaultTimeout: TimeAmount = .seconds(5)
        /// Less budget than this left: refused DEADLINE_EXCEEDED before a unit is taken (it could only time out in
        /// flight and hold the unit in doubt).
        public var minimumBudget: TimeAmount = .milliseconds(50)
        /// Lookups on behalf of clients (shed retries, retries without stock) in flight at once; past it UNAVAILABLE.
        public var clientLookups = 1024
        var inDoubt = InDoubtTable.Limits()
        /// How often the resolver looks at the table while something is held.
        public var resolverTick: Duration = .milliseconds(50)

        public init() {}

        /// Purchases in flight or in doubt at most (each holds a unit); past it new ones are refused UNAVAILABLE.
        public var maxTracked: Int {
            get { inDoubt.capacity }
            set { inDoubt.capacity = max(1, newValue) }
        }

        /// Before the first lookup of an attempt in doubt; also the first backoff step between failed lookups.
        public var inDoubtSettleDelay: Duration {
            get { inDoubt.settle }
            set {
                inDoubt.settle = newValue
                inDoubt.backoff = Backoff(initial: newValue, max: max(newValue, .seconds(10)))
            }
        }
    }

    private let ledger: QuotaLedger
    private let shedder: LoadShedder
    private let forwarder: any PurchaseForwarder
    private let refiller: any QuotaRefiller
    private let edgeID: @Sendable () -> UInt32
    private let configuration: Configuration
    private let logger: Logger
    private let clientLookups = ManagedAtomic<Int>(0)
    let counters = EdgeCounters()
    /// A `Service`: run it in the edge's service group.
    let resolver: InDoubtResolver

    public init(
        ledger: QuotaLedger, shedder: LoadShedder, forwarder: any PurchaseForwarder, refiller: any QuotaRefiller,
        edgeID: @escaping @Sendable () -> UInt32, configuration: Configuration = .init(), logger: Logger
    ) {
        self.ledger = ledger
        self.shedder = shedder
        self.forwarder = forwarder
        self.refiller = refiller
        self.edgeID = edgeID
        self.configuration = configuration
        self.logger = logger
        self.resolver = InDoubtResolver(
            ledger: ledger, forwarder: forwarder, limits: configuration.inDoubt, lookupTimeout: configuration.defaultTimeout,
            tick: configuration.resolverTick, logger: logger)
    }

    /// The in-doubt resolver, to run in the edge's service group.
    public var inDoubtResolver: any Service { self.resolver }

    public func register(into router: inout RPCRouter) {
        self.registerPurchase(into: &router)
        self.registerStats(into: &router)
    }

    /// `edge.Purchase`: the one public method of an edge.
    public func registerPurchase(into router: inout RPCRouter) {
        router.register(EdgeRPC.Purchase.self, onEventLoop: { (request: PurchaseRequest, context, responder: RPCResponder<PurchaseResponse>) in
            self.purchase(request, context: context, responder: responder)
        })
    }

    /// `edge.Stats`: read-only counters (on the operator port when the edge has one).
    public func registerStats(into router: inout RPCRouter) {
        router.register(EdgeRPC.Stats.self) { (_: EdgeStatsRequest, _: ServerCallContext) async throws -> EdgeStatsResponse in
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

    /// One attempt on its way: the call it answers and the request as it goes to the inventory.
    private struct Attempt {
        var request: PurchaseRequest
        var context: ServerCallContext
        var responder: RPCResponder<PurchaseResponse>
        /// The timeout of its forward when the call has no deadline.
        var budget: TimeAmount
    }

    func purchase(_ request: PurchaseRequest, context: ServerCallContext, responder: RPCResponder<PurchaseResponse>) {
        self.counters.attempts.wrappingIncrement(ordering: .relaxed)
        if let problem = Self.validate(request) {
            return self.finish(.failure(problem), responder)
        }
        var outgoing = request
        outgoing.edgeId = self.edgeID()
        outgoing.lookupOnly = false
        let attempt = Attempt(
            request: outgoing, context: context, responder: responder,
            budget: context.deadline == nil ? self.configuration.defaultTimeout : .zero)
        // Before the lottery, only the client's budget: the fence matters to attempts that forward.
        guard self.clientBudget(attempt) >= self.configuration.minimumBudget else {
            return self.finish(.failure(Self.tooLate), responder)
        }
        // The same purchase held in doubt here: it already won the lottery once; it learns its first outcome with
        // the unit it holds.
        switch self.resolver.claim(request) {
        case .claimed(let generation):
            if let problem = self.budgetProblem(attempt) { return self.finish(.failure(problem), responder) }
            return self.forward(attempt, generation: generation, carriesInDoubtUnit: true)
        case .inFlight:
            return self.finish(.failure(Self.inFlight), responder)
        case .none:
            break
        }
        guard self.shedder.admit() else {
            // A retry may have an order made elsewhere: tell it that rather than SHED.
            return request.retry ? self.lookUp(attempt, otherwise: .success(PurchaseResponse(outcome: .shed))) : self.finish(.success(PurchaseResponse(outcome: .shed)), responder)
        }
        self.takeAndForward(attempt, refills: 0)
    }

    private static let inFlight = RPCError(.unavailable, "a purchase of this request id is in flight; retry")

    private func takeAndForward(_ attempt: Attempt, refills: Int) {
        let product = attempt.request.productId
        // Checked again after a refill: the wait may have used the budget up.
        if let problem = self.budgetProblem(attempt) { return self.finish(.failure(problem), attempt.responder) }
        if self.resolver.isFull {
            return self.finish(.failure(RPCError(.unavailable, "too many purchases in doubt; retry")), attempt.responder)
        }
        switch self.ledger.take(product) {
        case .taken:
            switch self.resolver.reserve(attempt.request) {
            case .reserved(let generation):
                self.forward(attempt, generation: generation, carriesInDoubtUnit: false)
            case .claimed(let generation):
                self.ledger.giveBack(product)
                self.forward(attempt, generation: generation, carriesInDoubtUnit: true)
            case .inFlight:
                self.ledger.giveBack(product)
                self.finish(.failure(Self.inFlight), attempt.responder)
            case .full:
                self.ledger.giveBack(product)
                self.finish(.failure(RPCError(.unavailable, "too many purchases in doubt; retry")), attempt.responder)
            }
        case .dry where refills < 2:
            // Stock may remain elsewhere: ask for more (one refill per product in flight), then try the counter again.
            let eventLoop = attempt.context.eventLoop
            self.refiller.requestMore(product: product, on: eventLoop).whenComplete { outcome in
                switch outcome {
                case .success(.granted): self.takeAndForward(attempt, refills: refills + 1)
                case .success(.soldOut): self.soldOut(attempt)
                case .success(.unavailable), .failure: self.finish(.failure(Self.dry), attempt.responder)
                }
            }
        case .dry:
            self.finish(.failure(Self.dry), attempt.responder)
        case .soldOut:
            self.soldOut(attempt)
        case .unavailable:
            // Cut off from ZooKeeper past its session's safe time (QuotaLedger.suspend): nothing taken; retry.
            self.finish(.failure(Self.cutOff), attempt.responder)
        case .unknownProduct:
            self.lookUpIfRetry(attempt, otherwise: .failure(RPCError(.notFound, "unknown product")))
        }
    }

    private static let cutOff = RPCError(.unavailable, "this edge is cut off from ZooKeeper; retry")

    /// No unit here, and none known sold out: another edge, or this one a moment later, may still sell.
    private static let dry = RPCError(.unavailable, "no stock on this edge right now; retry")

    private func soldOut(_ attempt: Attempt) {
        self.lookUpIfRetry(attempt, otherwise: .success(PurchaseResponse(outcome: .soldOut)))
    }

    private func lookUpIfRetry(_ attempt: Attempt, otherwise: Result<PurchaseResponse, RPCError>) {
        guard attempt.request.retry else { return self.finish(otherwise, attempt.responder) }
        self.lookUp(attempt, otherwise: otherwise)
    }

    /// No unit for this attempt, but a retry may have a first outcome at the inventory: look it up (definitive,
    /// buys nothing) and relay an order; otherwise answer `otherwise`.
    private func lookUp(_ attempt: Attempt, otherwise: Result<PurchaseResponse, RPCError>) {
        guard self.clientLookups.loadThenWrappingIncrement(ordering: .relaxed) < self.configuration.clientLookups else {
            self.clientLookups.wrappingDecrement(ordering: .relaxed)
            return self.finish(.failure(RPCError(.unavailable, "too many lookups in flight; retry")), attempt.responder)
        }
        var lookup = attempt.request
        lookup.lookupOnly = true
        // A lookup buys nothing: the client's budget alone bounds it.
        self.forwarder.forward(lookup, timeout: self.clientBudget(attempt)).hop(to: attempt.context.eventLoop).whenComplete { result in
            self.clientLookups.wrappingDecrement(ordering: .relaxed)
            switch result {
            case .success(let response) where response.outcome == .purchased || response.outcome == .alreadyPurchased:
                self.finish(.success(response), attempt.responder)
            case .success:
                self.finish(otherwise, attempt.responder)
            case .failure(let error):
                self.finish(.failure(RPCError.wrapping(error)), attempt.responder)
            }
        }
    }

    /// Forwards with the unit `generation` names in the in-doubt table, and settles that unit by the answer.
    private func forward(_ attempt: Attempt, generation: UInt64, carriesInDoubtUnit: Bool) {
        let request = attempt.request
        self.counters.forwarded.wrappingIncrement(ordering: .relaxed)
        self.forwarder.forward(request, timeout: self.forwardTimeout(attempt)).hop(to: attempt.context.eventLoop).whenComplete { result in
            let result = result.mapError(RPCError.wrapping)
            let fate = InDoubtTable.fate(ofForward: result, carriesInDoubtUnit: carriesInDoubtUnit, edgeID: request.edgeId)
            let settled = self.resolver.forwardEnded(request, generation: generation, fate: fate)
            if settled == .giveBack { self.ledger.giveBack(request.productId) }
            // A replayed SOLD_OUT is that request id's first outcome, not news about the stock.
            if case .success(let response) = result, response.outcome == .soldOut, !response.replayed {
                self.ledger.markSoldOut(request.productId)
            }
            self.finish(result, attempt.responder)
        }
    }

    /// What is left of the client's budget now (the forward or lookup must end before the client gives up).
    private func clientBudget(_ attempt: Attempt) -> TimeAmount {
        guard let deadline = attempt.context.deadline else { return attempt.budget }
        return deadline - .now()
    }

    /// A forward that may buy ends before the client gives up and before the edge's fence (`QuotaLedger.timeToFence`).
    private func forwardTimeout(_ attempt: Attempt) -> TimeAmount {
        guard let toFence = self.ledger.timeToFence() else { return self.clientBudget(attempt) }
        return min(self.clientBudget(attempt), toFence)
    }

    /// Enough time left to buy? Less, and the forward could only time out in flight with its unit in doubt. The
    /// client's budget gone: DEADLINE_EXCEEDED; the edge's fence too near: UNAVAILABLE, the client retries (here
    /// once ZooKeeper answers again, or at another edge).
    private func budgetProblem(_ attempt: Attempt) -> RPCError? {
        if self.clientBudget(attempt) < self.configuration.minimumBudget { return Self.tooLate }
        if let toFence = self.ledger.timeToFence(), toFence < self.configuration.minimumBudget { return Self.cutOff }
        return nil
    }

    private static let tooLate = RPCError(.deadlineExceeded, "too little time left to buy")

    private func finish(_ result: Result<PurchaseResponse, RPCError>, _ responder: RPCResponder<PurchaseResponse>) {
        self.count(result)
        responder.complete(result)
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
