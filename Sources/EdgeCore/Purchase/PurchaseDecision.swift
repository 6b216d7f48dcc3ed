// model: Sources/QuotaCore/Planning/QuotaProtocol.pml (purchase/takeAndForward -> EDGE_FORWARD, EDGE_CLAIM;
// answerWithoutStock -> BUYER_LOOKUP). Update both together.
import NIOCore
import Proto
import Wire

/// What the decision reads, when it needs it and only then (a shed attempt reads no clock, an attempt that is not
/// held in doubt never reads the fence before the lottery).
protocol PurchaseReadings {
    /// What is left of the client's budget now (the default timeout when the call named no deadline).
    func clientBudget() -> TimeAmount
    /// How long a forward may still run before the edge's fence (`QuotaLedger.timeToFence`); nil: no fence yet.
    func timeToFence() -> TimeAmount?
    /// The in-doubt table is at its cap (`InDoubtResolver.isFull`): a new forward could not be tracked.
    var inDoubtFull: Bool { get }
}

/// One attempt at `edge.Purchase`, decided without I/O: each input (the request and the client's budget, whether
/// the purchase is held in doubt here, the lottery's draw, the ledger's take, the in-doubt reservation, a refill's
/// outcome) returns the next `Action`, which `PurchasePath` carries out and feeds back, as postgres-nio's
/// `ConnectionStateMachine` and its channel handler. Tests are plain function calls (`PurchaseDecisionTests`).
///
/// It runs on the event loop for every attempt of a flash sale, so it costs no more than the code it replaced: a
/// small value on the stack (no allocation per attempt), concrete types only (the readings are a generic parameter,
/// specialized, never an existential box), and the answers it refuses with are static strings.
struct PurchaseDecision {
    /// Dry counters an attempt asks to refill at most before it answers UNAVAILABLE.
    static let maxRefills = 2
    /// Refills answered nothing for now an attempt asks again after (each waits for the ask that follows the
    /// hold-off, `RefillSharing`), budget allowing, before it answers UNAVAILABLE. Near sell-out the last units are in
    /// flight or on other edges; a moment later they are sold or back in the pool, and the attempt hears SOLD_OUT or
    /// buys (the fault suite's probes saw UNAVAILABLE there). A refill that got no answer is not asked again: that
    /// would only wait out another deadline of an unreachable or hung quota service.
    static let maxAsksAgain = 2

    /// Why an attempt is answered with an error; each says once which status it becomes.
    enum Refusal: Error, RPCErrorConvertible, Equatable, CaseIterable {
        case missingRequestID, missingUserID, missingProductID, productIDTooLong, lookupOnlyFromClient
        /// Not a product id by `ProductRules` (no product can have it: the quota service would not create it).
        case productIDNotANodeName
        /// Less of the client's budget left than a purchase needs: it could only time out in flight, in doubt.
        case tooLate
        /// The edge's fence too near (or the ledger suspended): cut off from ZooKeeper; retry here later or elsewhere.
        case cutOff
        /// A forward of this purchase is on its way.
        case inFlight
        case tooManyInDoubt
        /// No unit here and none known sold out: another edge, or this one a moment later, may still sell.
        case dry
        case unknownProduct
        /// Lookups on behalf of clients at their cap (`PurchasePath.Configuration.clientLookups`).
        case tooManyLookups

        var rpcErrorCode: RPCError.Code {
            switch self {
            case .missingRequestID, .missingUserID, .missingProductID, .productIDTooLong, .productIDNotANodeName,
                .lookupOnlyFromClient:
                .invalidArgument
            case .tooLate: .deadlineExceeded
            case .cutOff, .inFlight, .tooManyInDoubt, .dry, .tooManyLookups: .unavailable
            case .unknownProduct: .notFound
            }
        }

        var rpcErrorMessage: String {
            switch self {
            case .missingRequestID: "request_id is required"
            case .missingUserID: "user_id is required"
            case .missingProductID: "product_id is required"
            case .productIDTooLong: "product_id is too long"
            case .productIDNotANodeName: ProductRules.IDProblem.notANodeName.description
            case .lookupOnlyFromClient: "lookup_only is for the edge's own use"
            case .tooLate: "too little time left to buy"
            case .cutOff: "this edge is cut off from ZooKeeper; retry"
            case .inFlight: "a purchase of this request id is in flight; retry"
            case .tooManyInDoubt: "too many purchases in doubt; retry"
            case .dry: "no stock on this edge right now; retry"
            case .unknownProduct: "unknown product"
            case .tooManyLookups: "too many lookups in flight; retry"
            }
        }

        /// As sent: no cause, a static message (no allocation).
        var rpcError: RPCError { RPCError(rpcErrorCode, rpcErrorMessage) }
    }

    /// An answer the edge gives without the inventory.
    enum Answer: Equatable {
        /// SHED or SOLD_OUT.
        case outcome(PurchaseOutcome)
        case refused(Refusal)

        var result: Result<PurchaseResponse, RPCError> {
            switch self {
            case .outcome(let outcome): .success(PurchaseResponse(outcome: outcome))
            case .refused(let refusal): .failure(refusal.rpcError)
            }
        }
    }

    /// A forward to the inventory, with the unit `generation` names in the in-doubt table.
    struct Forward: Equatable {
        var generation: UInt64
        /// The unit is one an earlier forward of the same purchase left in doubt (`InDoubtTable.fate(ofForward:)`).
        var carriesInDoubtUnit: Bool
        /// Before the client gives up and before the edge's fence.
        var timeout: TimeAmount
        /// The unit this attempt took goes back on the counter first: it forwards with the one held in doubt.
        var givesBackTakenUnit: Bool
    }

    enum Action: Equatable {
        /// Answer now; the attempt is over.
        case answer(Answer)
        /// Ask the in-doubt table whether this purchase is held here (`InDoubtResolver.claim`), then `claimed`.
        case claimInDoubt
        /// Draw the lottery (`LoadShedder.admit`), then `drawn`.
        case drawLottery
        /// Take a unit of the product (`QuotaLedger.take`), then `took`.
        case take
        /// Track the unit just taken in the in-doubt table (`InDoubtResolver.reserve`), then `reserved`.
        case reserve
        /// Ask the quota service for more (`QuotaRefiller.requestMore`), then `refilled`.
        case refill
        /// Forward; its answer settles the unit (`InDoubtTable.fate(ofForward:)`) and is relayed. The attempt is over.
        case forward(Forward)
        /// No unit for this attempt, but as a retry it may have a first outcome at the inventory: look it up
        /// (definitive, buys nothing) within `timeout`, relay an order (`relaysLookup`), else answer `otherwise`.
        case lookUp(timeout: TimeAmount, otherwise: Answer)
        /// Give the unit just taken back, then answer.
        case giveBackAndAnswer(Answer)
        /// The claimed unit was not forwarded: it is held in doubt again (`InDoubtResolver.forwardEnded` with
        /// `.inDoubt`, its first forward's outcome still unknown), then answer.
        case holdInDoubtAndAnswer(generation: UInt64, Answer)
    }

    private enum State: Equatable {
        case initial, claiming, drawing, taking, reserving, refilling, done
    }

    private var state = State.initial
    private var refills = 0
    private var asksAgain = 0
    private let retry: Bool
    private let minimumBudget: TimeAmount

    /// - Parameters:
    ///   - retry: the request's `retry` flag (a retry without a unit here is looked up rather than refused).
    ///   - minimumBudget: less budget than this left, an attempt is refused before it takes a unit.
    init(retry: Bool, minimumBudget: TimeAmount) {
        self.retry = retry
        self.minimumBudget = minimumBudget
    }

    // MARK: - Inputs

    /// The call arrived: validate it; before the lottery only the client's budget counts (the fence matters to
    /// attempts that forward).
    mutating func start(_ request: PurchaseRequest, _ readings: some PurchaseReadings) -> Action {
        precondition(state == .initial, "start: \(state)")
        if let problem = Self.validate(request) { return finish(.answer(.refused(problem))) }
        guard readings.clientBudget() >= minimumBudget else { return finish(.answer(.refused(.tooLate))) }
        state = .claiming
        return .claimInDoubt
    }

    /// The same purchase held in doubt here already won the lottery once: it learns its first outcome with the unit
    /// it holds. The budget and the fence are read once, for both the check and the forward's timeout.
    mutating func claimed(_ claim: InDoubtTable.Claim, _ readings: some PurchaseReadings) -> Action {
        precondition(state == .claiming, "claimed: \(state)")
        switch claim {
        case .claimed(let generation):
            let budget = readings.clientBudget()
            let toFence = readings.timeToFence()
            if let problem = budgetProblem(budget: budget, toFence: toFence) {
                return finish(.holdInDoubtAndAnswer(generation: generation, .refused(problem)))
            }
            return finish(.forward(Forward(
                generation: generation, carriesInDoubtUnit: true, timeout: Self.forwardTimeout(budget: budget, toFence: toFence),
                givesBackTakenUnit: false)))
        case .inFlight:
            return finish(.answer(.refused(.inFlight)))
        case .none:
            state = .drawing
            return .drawLottery
        }
    }

    /// The lottery's draw. Shed: a retry may have an order made elsewhere, so it is told that rather than SHED.
    mutating func drawn(admitted: Bool, _ readings: some PurchaseReadings) -> Action {
        precondition(state == .drawing, "drawn: \(state)")
        guard admitted else { return withoutUnit(.outcome(.shed), readings) }
        return beforeTake(readings)
    }

    /// What the ledger said.
    mutating func took(_ take: QuotaLedger.Take, _ readings: some PurchaseReadings) -> Action {
        precondition(state == .taking, "took: \(state)")
        switch take {
        case .taken:
            state = .reserving
            return .reserve
        case .dry where refills < Self.maxRefills:
            // Stock may remain elsewhere: ask for more (one refill per product in flight), then take again.
            state = .refilling
            return .refill
        case .dry:
            return finish(.answer(.refused(.dry)))
        case .soldOut:
            return withoutUnit(.outcome(.soldOut), readings)
        case .unavailable:
            // Cut off from ZooKeeper past its session's safe time (QuotaLedger.suspend): nothing taken.
            return finish(.answer(.refused(.cutOff)))
        case .unknownProduct:
            return withoutUnit(.refused(.unknownProduct), readings)
        }
    }

    /// The unit just taken, tracked (or not) in the in-doubt table. Every path either forwards with it or gives it back.
    mutating func reserved(_ reserve: InDoubtTable.Reserve, _ readings: some PurchaseReadings) -> Action {
        precondition(state == .reserving, "reserved: \(state)")
        switch reserve {
        case .reserved(let generation):
            return finish(.forward(forward(generation: generation, carriesInDoubtUnit: false, givesBack: false, readings)))
        case .claimed(let generation):
            // Went in doubt meanwhile: the held unit is this purchase's; the new one goes back.
            return finish(.forward(forward(generation: generation, carriesInDoubtUnit: true, givesBack: true, readings)))
        case .inFlight:
            return finish(.giveBackAndAnswer(.refused(.inFlight)))
        case .full:
            return finish(.giveBackAndAnswer(.refused(.tooManyInDoubt)))
        }
    }

    /// A refill's outcome (a failed call is `.unavailable`). Granted: the budget is checked again (the wait may
    /// have used it up), then the counter is tried again. Nothing for now: asked again while the budget outlasts a
    /// hold-off.
    mutating func refilled(_ outcome: RefillOutcome, _ readings: some PurchaseReadings) -> Action {
        precondition(state == .refilling, "refilled: \(state)")
        switch outcome {
        case .granted:
            refills += 1
            return beforeTake(readings)
        case .soldOut:
            return withoutUnit(.outcome(.soldOut), readings)
        case .nothingNow where asksAgain < Self.maxAsksAgain
            && readings.clientBudget() >= minimumBudget + RefillSharing.holdOff:
            asksAgain += 1
            return .refill
        case .nothingNow, .unavailable:
            return finish(.answer(.refused(.dry)))
        }
    }

    // MARK: - Rules

    static func validate(_ request: PurchaseRequest) -> Refusal? {
        if request.requestId == 0 { return .missingRequestID }
        if request.userId == 0 { return .missingUserID }
        switch ProductRules.idProblem(request.productId) {
        case .empty?: return .missingProductID
        case .tooLong?: return .productIDTooLong
        case .notANodeName?: return .productIDNotANodeName
        case nil: break
        }
        if request.lookupOnly { return .lookupOnlyFromClient }
        return nil
    }

    /// A lookup's answer is relayed when it names an order; anything else answers as the attempt would have.
    static func relaysLookup(_ response: PurchaseResponse) -> Bool {
        response.outcome == .purchased || response.outcome == .alreadyPurchased
    }

    /// A forward's SOLD_OUT is news about the stock unless replayed (then it is that request id's first outcome).
    static func marksSoldOut(_ response: PurchaseResponse) -> Bool {
        response.outcome == .soldOut && !response.replayed
    }

    /// A forward that may buy ends before the client gives up and before the edge's fence.
    static func forwardTimeout(budget: TimeAmount, toFence: TimeAmount?) -> TimeAmount {
        guard let toFence else { return budget }
        return min(budget, toFence)
    }

    // MARK: - Steps

    /// Enough time left to buy? Less, and the forward could only time out in flight with its unit in doubt.
    private func budgetProblem(budget: TimeAmount, toFence: TimeAmount?) -> Refusal? {
        if budget < minimumBudget { return .tooLate }
        if let toFence, toFence < minimumBudget { return .cutOff }
        return nil
    }

    /// Before every take (the first, and after each refill): the budget, the fence, then room to track the unit.
    private mutating func beforeTake(_ readings: some PurchaseReadings) -> Action {
        if let problem = budgetProblem(budget: readings.clientBudget(), toFence: readings.timeToFence()) {
            return finish(.answer(.refused(problem)))
        }
        if readings.inDoubtFull { return finish(.answer(.refused(.tooManyInDoubt))) }
        state = .taking
        return .take
    }

    /// No unit for this attempt: a retry is looked up (the client's budget alone bounds a lookup: it buys nothing).
    private mutating func withoutUnit(_ otherwise: Answer, _ readings: some PurchaseReadings) -> Action {
        guard retry else { return finish(.answer(otherwise)) }
        return finish(.lookUp(timeout: readings.clientBudget(), otherwise: otherwise))
    }

    private func forward(
        generation: UInt64, carriesInDoubtUnit: Bool, givesBack: Bool, _ readings: some PurchaseReadings
    ) -> Forward {
        let toFence = readings.timeToFence()
        return Forward(
            generation: generation, carriesInDoubtUnit: carriesInDoubtUnit,
            timeout: Self.forwardTimeout(budget: readings.clientBudget(), toFence: toFence), givesBackTakenUnit: givesBack)
    }

    private mutating func finish(_ action: Action) -> Action {
        state = .done
        return action
    }
}
