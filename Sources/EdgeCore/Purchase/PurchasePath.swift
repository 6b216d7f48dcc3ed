// model: Sources/QuotaCore/Planning/QuotaProtocol.pml (purchase/takeAndForward -> EDGE_FORWARD, EDGE_CLAIM;
// answerWithoutStock -> BUYER_LOOKUP; forward -> EDGE_ANSWERED, settle, EDGE_TIMEOUT). Update both together.
import Logging
import NIOCore
import Proto
import ServiceLifecycle
import Synchronization
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
    /// The quota service answered nothing for now: every unit is on other edges or in flight, and a moment later
    /// may be sold or back in the pool.
    case nothingNow
    /// No answer: the quota service unreachable, failing or too slow (its call's deadline).
    case unavailable
}

/// Asks the quota service for more units when this edge runs dry. One refill in flight per product: concurrent
/// callers share its outcome, delivered on `eventLoop`.
public protocol QuotaRefiller: Sendable {
    func requestMore(product: String, on eventLoop: any EventLoop) -> EventLoopFuture<RefillOutcome>
}

/// The edge's public call, on the connection's event loop: validate, refuse a budget too small to buy, take over a
/// unit this edge holds in doubt for the same purchase, else shed by lottery and take a unit from the product's
/// local counter; forward to the inventory, relay its outcome. `PurchaseDecision` decides each step; this is its
/// driver (the table, the lottery, the ledger, the forwards, the answers and the counters).
///
/// It runs on the event loop rather than in a task per call: almost every attempt in a flash sale ends at the
/// lottery or the counter, and a task hop per attempt would cost more than the decision itself
/// (`scripts/bench.sh sale` measures this path).
public final class PurchasePath: Sendable {
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
    private let clientLookups = Atomic<Int>(0)
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

    public func stats() -> EdgeStatsResponse {
        var stats = self.counters.snapshot()
        stats.edgeId = self.edgeID()
        stats.inDoubt = UInt64(self.resolver.pendingCount)
        stats.keepPerMillion = self.shedder.keepPerMillion
        return stats
    }

    /// One attempt on its way: the call it answers, the request as it goes to the inventory, and its decision.
    private struct Attempt {
        var request: PurchaseRequest
        var context: ServerCallContext
        var responder: RPCResponder<PurchaseResponse>
        /// The timeout of its forward when the call has no deadline.
        var budget: TimeAmount
        var decision: PurchaseDecision
    }

    /// What the decision reads, read when it asks: the clock for the client's budget only when the call has a
    /// deadline, the fence (one atomic load and a clock read) only where the attempt may forward. `now` is the
    /// call's admission instant for the decision's first step (the budget check every attempt makes, in the same
    /// event-loop turn as the admission), so a shed or sold-out attempt reads the clock once, not twice; later
    /// steps read the clock.
    ///
    /// Made for every step of every attempt and used only within it, while the path (which holds both) is alive:
    /// `unowned(unsafe)` spares a retain and a release of each shared object per step, which `perf` of
    /// `flashsale-bench calls` showed among the largest costs of a shed attempt.
    private struct Readings: PurchaseReadings {
        let deadline: NIODeadline?
        let now: NIODeadline?
        let budget: TimeAmount
        unowned(unsafe) let ledger: QuotaLedger
        unowned(unsafe) let resolver: InDoubtResolver

        func clientBudget() -> TimeAmount {
            guard let deadline else { return budget }
            return deadline - (now ?? .now())
        }

        func timeToFence() -> TimeAmount? { ledger.timeToFence() }
        var inDoubtFull: Bool { resolver.isFull }
    }

    private func readings(_ attempt: Attempt, now: NIODeadline? = nil) -> Readings {
        Readings(deadline: attempt.context.deadline, now: now, budget: attempt.budget, ledger: ledger, resolver: resolver)
    }

    func purchase(_ request: PurchaseRequest, context: ServerCallContext, responder: RPCResponder<PurchaseResponse>) {
        self.counters.attempts.wrappingAdd(1, ordering: .relaxed)
        var outgoing = request
        outgoing.edgeId = self.edgeID()
        outgoing.lookupOnly = false
        var attempt = Attempt(
            request: outgoing, context: context, responder: responder,
            budget: context.deadline == nil ? self.configuration.defaultTimeout : .zero,
            decision: PurchaseDecision(retry: request.retry, minimumBudget: self.configuration.minimumBudget))
        let action = attempt.decision.start(request, self.readings(attempt, now: context.admittedAt))
        self.run(action, &attempt)
    }

    /// Carries out the decision's actions until one ends the attempt here or hands it to a callback (refill,
    /// forward, lookup), which feeds the decision again.
    private func run(_ first: PurchaseDecision.Action, _ attempt: inout Attempt) {
        var action = first
        while true {
            switch action {
            case .answer(let answer):
                return self.finish(answer.result, attempt.responder)
            case .claimInDoubt:
                action = attempt.decision.claimed(self.resolver.claim(attempt.request), self.readings(attempt))
            case .drawLottery:
                action = attempt.decision.drawn(admitted: self.shedder.admit(), self.readings(attempt))
            case .take:
                action = attempt.decision.took(self.ledger.take(attempt.request.productId), self.readings(attempt))
            case .reserve:
                action = attempt.decision.reserved(self.resolver.reserve(attempt.request), self.readings(attempt))
            case .refill:
                return self.refill(attempt)
            case .forward(let forward):
                if forward.givesBackTakenUnit { self.ledger.giveBack(attempt.request.productId) }
                return self.forward(attempt, forward)
            case .lookUp(let timeout, let otherwise):
                return self.lookUp(attempt, timeout: timeout, otherwise: otherwise)
            case .giveBackAndAnswer(let answer):
                self.ledger.giveBack(attempt.request.productId)
                return self.finish(answer.result, attempt.responder)
            case .holdInDoubtAndAnswer(let generation, let answer):
                self.resolver.forwardEnded(attempt.request, generation: generation, fate: .inDoubt)
                return self.finish(answer.result, attempt.responder)
            }
        }
    }

    private func refill(_ attempt: Attempt) {
        self.refiller.requestMore(product: attempt.request.productId, on: attempt.context.eventLoop).whenComplete { outcome in
            var attempt = attempt
            let action = attempt.decision.refilled((try? outcome.get()) ?? .unavailable, self.readings(attempt))
            self.run(action, &attempt)
        }
    }

    private func lookUp(_ attempt: Attempt, timeout: TimeAmount, otherwise: PurchaseDecision.Answer) {
        guard self.clientLookups.wrappingAdd(1, ordering: .relaxed).oldValue < self.configuration.clientLookups else {
            self.clientLookups.wrappingSubtract(1, ordering: .relaxed)
            return self.finish(PurchaseDecision.Answer.refused(.tooManyLookups).result, attempt.responder)
        }
        var lookup = attempt.request
        lookup.lookupOnly = true
        self.forwarder.forward(lookup, timeout: timeout).hop(to: attempt.context.eventLoop).whenComplete { result in
            self.clientLookups.wrappingSubtract(1, ordering: .relaxed)
            switch result {
            case .success(let response) where PurchaseDecision.relaysLookup(response):
                self.finish(.success(response), attempt.responder)
            case .success:
                self.finish(otherwise.result, attempt.responder)
            case .failure(let error):
                self.finish(.failure(RPCError.wrapping(error)), attempt.responder)
            }
        }
    }

    /// Forwards with the unit `forward.generation` names in the in-doubt table, and settles that unit by the answer.
    private func forward(_ attempt: Attempt, _ forward: PurchaseDecision.Forward) {
        let request = attempt.request
        self.counters.forwarded.wrappingAdd(1, ordering: .relaxed)
        self.forwarder.forward(request, timeout: forward.timeout).hop(to: attempt.context.eventLoop).whenComplete { result in
            let result = result.mapError(RPCError.wrapping)
            let fate = InDoubtTable.fate(ofForward: result, carriesInDoubtUnit: forward.carriesInDoubtUnit, edgeID: request.edgeId)
            self.resolver.forwardEnded(request, generation: forward.generation, fate: fate)
            if case .success(let response) = result, PurchaseDecision.marksSoldOut(response) {
                self.ledger.markSoldOut(request.productId)
            }
            self.finish(result, attempt.responder)
        }
    }

    private func finish(_ result: Result<PurchaseResponse, RPCError>, _ responder: RPCResponder<PurchaseResponse>) {
        self.count(result)
        responder.complete(result)
    }

    private func count(_ result: Result<PurchaseResponse, RPCError>) {
        switch result {
        case .success(let response):
            switch response.outcome {
            case .purchased: self.counters.purchased.wrappingAdd(1, ordering: .relaxed)
            case .soldOut: self.counters.soldOut.wrappingAdd(1, ordering: .relaxed)
            case .alreadyPurchased: self.counters.alreadyPurchased.wrappingAdd(1, ordering: .relaxed)
            case .shed: self.counters.shed.wrappingAdd(1, ordering: .relaxed)
            default: self.counters.errors.wrappingAdd(1, ordering: .relaxed)
            }
        case .failure:
            self.counters.errors.wrappingAdd(1, ordering: .relaxed)
        }
    }
}

/// Outcome counts of one edge, for `edge.Stats` and the sale report.
final class EdgeCounters: Sendable {
    let attempts = Atomic<UInt64>(0)
    let shed = Atomic<UInt64>(0)
    let soldOut = Atomic<UInt64>(0)
    let purchased = Atomic<UInt64>(0)
    let alreadyPurchased = Atomic<UInt64>(0)
    let errors = Atomic<UInt64>(0)
    let forwarded = Atomic<UInt64>(0)

    func snapshot() -> EdgeStatsResponse {
        EdgeStatsResponse(
            attempts: attempts.load(ordering: .relaxed), shed: shed.load(ordering: .relaxed),
            soldOut: soldOut.load(ordering: .relaxed), purchased: purchased.load(ordering: .relaxed),
            alreadyPurchased: alreadyPurchased.load(ordering: .relaxed), errors: errors.load(ordering: .relaxed),
            forwarded: forwarded.load(ordering: .relaxed))
    }
}
