import Logging
import NIOCore
import NIOEmbedded
import Proto
import ServiceLifecycle
import Synchronization
import Testing
@testable import Wire

@testable import EdgeCore

/// Answers forwarded purchases from a script, and records them. Thread-safe: the resolver's loop forwards too.
final class ScriptedInventory: PurchaseForwarder, Sendable {
    typealias Answer = @Sendable (PurchaseRequest) -> Result<PurchaseResponse, RPCError>

    private struct State {
        var received: [PurchaseRequest] = []
        /// The timeout each forward was given, in order.
        var timeouts: [TimeAmount] = []
        var answer: Answer = { _ in .success(PurchaseResponse(outcome: .purchased, orderId: 1)) }
        /// Requests it keeps unanswered (a stall), with their promises.
        var hold: @Sendable (PurchaseRequest) -> Bool = { _ in false }
        var held: [(request: PurchaseRequest, promise: EventLoopPromise<PurchaseResponse>)] = []
    }

    let eventLoop: any EventLoop
    private let state = Mutex(State())

    init(eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    var received: [PurchaseRequest] { state.withLock { $0.received } }
    var timeouts: [TimeAmount] { state.withLock { $0.timeouts } }
    var lookups: Int { received.filter(\.lookupOnly).count }
    var purchases: Int { received.filter { !$0.lookupOnly }.count }
    var heldRequests: [PurchaseRequest] { state.withLock { $0.held.map(\.request) } }

    var answer: Answer {
        get { state.withLock { $0.answer } }
        set { state.withLock { $0.answer = newValue } }
    }

    func hold(_ which: @escaping @Sendable (PurchaseRequest) -> Bool) {
        state.withLock { $0.hold = which }
    }

    /// Answers every held request with `result` (and holds no more).
    func release(_ result: Result<PurchaseResponse, RPCError>) {
        let held = state.withLock { state in
            defer {
                state.held = []
                state.hold = { _ in false }
            }
            return state.held
        }
        for (_, promise) in held { promise.completeWith(result.mapError { $0 as any Error }) }
    }

    func forward(_ request: PurchaseRequest, timeout: TimeAmount) -> EventLoopFuture<PurchaseResponse> {
        let promise = eventLoop.makePromise(of: PurchaseResponse.self)
        let result = state.withLock { state -> Result<PurchaseResponse, RPCError>? in
            state.received.append(request)
            state.timeouts.append(timeout)
            if state.hold(request) {
                state.held.append((request, promise))
                return nil
            }
            return state.answer(request)
        }
        if let result { promise.completeWith(result.mapError { $0 as any Error }) }
        return promise.futureResult
    }
}

/// The quota service as the purchase path sees it: the `first` answers in turn, then `units` more per refill, or
/// `otherwise` when none.
final class Refill: QuotaRefiller {
    let ledger: QuotaLedger
    let units: Int64
    let otherwise: RefillOutcome
    private let script: Mutex<(first: [RefillOutcome], asked: Int)>

    init(ledger: QuotaLedger, units: Int64, otherwise: RefillOutcome, first: [RefillOutcome] = []) {
        self.ledger = ledger
        self.units = units
        self.otherwise = otherwise
        self.script = Mutex((first, 0))
    }

    /// Refills asked for so far.
    var asked: Int { script.withLock { $0.asked } }

    func requestMore(product: String, on eventLoop: any EventLoop) -> EventLoopFuture<RefillOutcome> {
        let scripted = script.withLock { script -> RefillOutcome? in
            script.asked += 1
            return script.first.isEmpty ? nil : script.first.removeFirst()
        }
        if let scripted, scripted != .granted {
            if scripted == .soldOut { ledger.markSoldOut(product) }
            return eventLoop.makeSucceededFuture(scripted)
        }
        if units > 0 {
            let granted = ledger.usage(of: product)?.granted ?? 0
            ledger.applyGrant(product, granted: granted + units)
            return eventLoop.makeSucceededFuture(.granted)
        }
        if otherwise == .soldOut { ledger.markSoldOut(product) }
        return eventLoop.makeSucceededFuture(otherwise)
    }
}

/// One edge's purchase path behind its real RPC server handler on an `NIOAsyncTestingChannel` (thread-safe, so
/// the resolver's loop may forward from its own task), with its in-doubt resolver running for the harness's life.
final class Harness: @unchecked Sendable {
    // `nextCall` and `answers` are only touched by the test's task.
    let channel: NIOAsyncTestingChannel
    let ledger: QuotaLedger
    let shedder: LoadShedder
    let inventory: ScriptedInventory
    let refill: Refill
    let path: PurchasePath
    private var nextCall: UInt64 = 1
    private var answers: [UInt64: Result<PurchaseResponse, RPCError>] = [:]
    private var inbox = ByteBuffer()

    private init(
        keepPerMillion: UInt32, refillUnits: Int64, otherwise: RefillOutcome, refillsFirst: [RefillOutcome],
        configure: (inout PurchasePath.Configuration) -> Void
    ) async throws {
        let loop = NIOAsyncTestingEventLoop()
        ledger = QuotaLedger()
        shedder = LoadShedder(keepPerMillion: keepPerMillion, seed: 42)
        inventory = ScriptedInventory(eventLoop: loop)
        var configuration = PurchasePath.Configuration()
        configuration.inDoubtSettleDelay = .milliseconds(1)
        configuration.resolverTick = .milliseconds(1)
        configure(&configuration)
        refill = Refill(ledger: ledger, units: refillUnits, otherwise: otherwise, first: refillsFirst)
        let path = PurchasePath(
            ledger: ledger, shedder: shedder, forwarder: inventory, refiller: refill, edgeID: { 7 },
            configuration: configuration, logger: Logger(label: "test"))
        self.path = path
        var router = RPCRouter(serviceName: "edge")
        EdgeAPI(purchases: path, ledger: ledger).register(into: &router)
        let routes = router
        channel = try await NIOAsyncTestingChannel(loop: loop) { channel in
            try RPCServer.addConnectionHandlers(
                to: channel, router: routes, configuration: RPCServerConfiguration(), logger: Logger(label: "test"))
        }
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).get()
    }

    /// A harness for `body`, its resolver running meanwhile; every held forward is failed at the end.
    static func with(
        keepPerMillion: UInt32 = LoadShedder.million, refillUnits: Int64 = 0, otherwise: RefillOutcome = .unavailable,
        refillsFirst: [RefillOutcome] = [], configure: (inout PurchasePath.Configuration) -> Void = { _ in },
        _ body: (Harness) async throws -> Void
    ) async throws {
        let harness = try await Harness(
            keepPerMillion: keepPerMillion, refillUnits: refillUnits, otherwise: otherwise, refillsFirst: refillsFirst,
            configure: configure)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await harness.path.resolver.run() }
            do {
                try await body(harness)
            } catch {
                harness.inventory.release(.failure(RPCError(.unavailable, "test over")))
                throw error
            }
            harness.inventory.release(.failure(RPCError(.unavailable, "test over")))
            group.cancelAll()
        }
    }

    /// Sends one purchase without waiting for its answer; `timeoutUs` is the client's deadline (0: none).
    func send(_ request: PurchaseRequest, timeoutUs: Int64 = 0) async throws -> UInt64 {
        let callID = nextCall
        nextCall += 1
        var frame = ByteBuffer()
        Framing.writeFrame(into: &frame) {
            WireRequest(callId: callID, method: EdgeRPC.Purchase.name, timeoutUs: timeoutUs, payload: request.serializedBuffer())
                .serialize(into: &$0)
        }
        try await channel.writeInbound(frame)
        return callID
    }

    /// Waits for the answer to call `callID` (answers may come in any order, several in one write).
    func answer(_ callID: UInt64) async throws -> Result<PurchaseResponse, RPCError> {
        while answers[callID] == nil {
            var bytes = try await channel.waitForOutboundWrite(as: ByteBuffer.self)
            inbox.writeBuffer(&bytes)
            while let length = inbox.getInteger(at: inbox.readerIndex, as: UInt32.self),
                  inbox.readableBytes >= 4 + Int(length) {
                inbox.moveReaderIndex(forwardBy: 4)
                let response = try WireResponse(decoding: inbox.readSlice(length: Int(length))!)
                answers[response.callId] = response.status == .ok
                    ? .success(try PurchaseResponse(decoding: response.payload))
                    : .failure(RPCError(RPCError.Code(rawValue: response.status.rawValue), response.message))
            }
        }
        return answers.removeValue(forKey: callID)!
    }

    func purchase(_ request: PurchaseRequest, timeoutUs: Int64 = 0) async throws -> Result<PurchaseResponse, RPCError> {
        try await answer(try await send(request, timeoutUs: timeoutUs))
    }

    var available: Int64? { ledger.usage(of: "tv")?.available }

    /// Until `condition` holds (bounded: a test that waits in vain fails, it does not hang).
    func eventually(_ what: String, _ condition: () -> Bool) async throws {
        for _ in 0..<5_000 where !condition() { try await Task.sleep(for: .milliseconds(1)) }
        #expect(condition(), "\(what)")
    }
}

func buy(_ request: UInt64, user: UInt64? = nil, product: String = "tv", retry: Bool = false) -> PurchaseRequest {
    PurchaseRequest(requestId: request, userId: user ?? request, productId: product, retry: retry)
}

extension Result where Success == PurchaseResponse, Failure == RPCError {
    /// `get()` with untyped throws (typed throws do not pass through `#expect`).
    var response: PurchaseResponse {
        get throws { try self.get() }
    }
}

func code(_ result: Result<PurchaseResponse, RPCError>) -> RPCError.Code? {
    if case .failure(let error) = result { return error.code }
    return nil
}

@Suite(.timeLimit(.minutes(1))) struct PurchasePathTests {
    @Test func badInputIsInvalidArgument() async throws {
        try await Harness.with { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 10)
            for request in [
                PurchaseRequest(requestId: 0, userId: 1, productId: "tv"),
                PurchaseRequest(requestId: 1, userId: 0, productId: "tv"),
                PurchaseRequest(requestId: 1, userId: 1, productId: ""),
                PurchaseRequest(requestId: 1, userId: 1, productId: String(repeating: "x", count: 500)),
                PurchaseRequest(requestId: 1, userId: 1, productId: "tv", lookupOnly: true),
            ] {
                #expect(code(try await harness.purchase(request)) == .invalidArgument)
            }
            #expect(harness.inventory.received.isEmpty)
            #expect(harness.available == 10)
        }
    }

    @Test func unknownProductIsNotFound() async throws {
        try await Harness.with { (harness: Harness) async throws in
            #expect(code(try await harness.purchase(buy(1, product: "nope"))) == .notFound)
        }
    }

    @Test func forwardsOnlyWhatTheQuotaCoversThenSoldOut() async throws {
        try await Harness.with(otherwise: .soldOut) { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 3)
            var outcomes: [PurchaseOutcome] = []
            for id in 1...10 { outcomes.append(try await harness.purchase(buy(UInt64(id))).response.outcome) }
            #expect(outcomes.filter { $0 == .purchased }.count == 3)
            #expect(outcomes.filter { $0 == .soldOut }.count == 7)
            #expect(harness.inventory.received.count == 3)
            #expect(harness.inventory.received.allSatisfy { $0.edgeId == 7 && !$0.lookupOnly })
        }
    }

    @Test func unitsComeBackWhenTheInventoryBuysNothing() async throws {
        try await Harness.with { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 1)
            harness.inventory.answer = { _ in .success(PurchaseResponse(outcome: .alreadyPurchased, orderId: 9)) }
            #expect(try await harness.purchase(buy(1)).response == PurchaseResponse(outcome: .alreadyPurchased, orderId: 9))
            harness.inventory.answer = { _ in .success(PurchaseResponse(outcome: .purchased, orderId: 5, replayed: true)) }
            #expect(try await harness.purchase(buy(2)).response.orderId == 5)
            harness.inventory.answer = { _ in .failure(RPCError(.failedPrecondition, "request id reused with another product or user")) }
            #expect(code(try await harness.purchase(buy(3))) == .failedPrecondition, "relayed as is")
            #expect(harness.available == 1, "no call kept the unit")
            #expect(harness.path.resolver.pendingCount == 0)
        }
    }

    @Test func aReplayedSoldOutDoesNotMarkTheProductSoldOut() async throws {
        try await Harness.with { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 2)
            // A request id the inventory closed earlier: its first outcome, not news about the stock.
            harness.inventory.answer = { _ in .success(PurchaseResponse(outcome: .soldOut, replayed: true)) }
            #expect(try await harness.purchase(buy(1)).response.outcome == .soldOut)
            #expect(harness.ledger.take("tv") == .taken, "the counter still sells")
        }
    }

    @Test func inDoubtAttemptKeepsItsUnitUntilResolved() async throws {
        try await Harness.with { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 1)
            // Lookups too fail until the inventory is back.
            harness.inventory.answer = { _ in .failure(RPCError(.unavailable, "inventory down")) }
            #expect(code(try await harness.purchase(buy(1))) == .unavailable)
            #expect(harness.available == 0)
            #expect(harness.path.resolver.pendingCount == 1)
            try await harness.eventually("a lookup was tried") { harness.inventory.lookups >= 1 }
            #expect(harness.available == 0, "kept while the inventory cannot say")
            // The inventory comes back and has no order for it: the unit returns.
            harness.inventory.answer = { $0.lookupOnly ? .success(PurchaseResponse(outcome: .soldOut)) : .success(PurchaseResponse(outcome: .purchased, orderId: 3)) }
            try await harness.eventually("resolved") { harness.path.resolver.pendingCount == 0 }
            #expect(harness.available == 1)
        }
    }

    @Test func retryOfAnInDoubtAttemptReusesItsUnit() async throws {
        try await Harness.with(configure: { $0.inDoubtSettleDelay = .seconds(60) }) { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 1)
            harness.inventory.answer = { _ in .failure(RPCError(.deadlineExceeded, "slow")) }
            _ = try await harness.purchase(buy(1))
            harness.inventory.answer = { _ in .success(PurchaseResponse(outcome: .purchased, orderId: 11)) }
            #expect(try await harness.purchase(buy(1, retry: true)).response.orderId == 11)
            #expect(harness.path.resolver.pendingCount == 0)
            let usage = harness.ledger.usage(of: "tv")!
            #expect(usage.used == 1 && usage.available == 0, "one unit for one order")
        }
    }

    @Test func retryAfterSoldOutLearnsItsFirstOutcome() async throws {
        try await Harness.with { (harness: Harness) async throws in
            harness.ledger.markSoldOut("tv")
            harness.inventory.answer = { request in
                request.lookupOnly ? .success(PurchaseResponse(outcome: .purchased, orderId: 77, replayed: true)) : .failure(RPCError(.internal, "must not buy"))
            }
            #expect(try await harness.purchase(buy(5)).response.outcome == .soldOut)
            #expect(harness.inventory.received.isEmpty)
            #expect(try await harness.purchase(buy(5, retry: true)).response == PurchaseResponse(outcome: .purchased, orderId: 77, replayed: true))
            #expect(harness.inventory.received.map(\.lookupOnly) == [true])
        }
    }

    @Test func dryEdgeAsksForMoreBeforeAnswering() async throws {
        try await Harness.with(refillUnits: 2) { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 0)
            #expect(try await harness.purchase(buy(1)).response.outcome == .purchased)
            #expect(harness.ledger.usage(of: "tv")?.granted == 2)
        }
    }

    /// Near sell-out the last units are in flight or on other edges, and a refill answers nothing: the attempt asks
    /// again and answers what the next refill says (SOLD_OUT, or a unit that came back), UNAVAILABLE only after
    /// `PurchaseDecision.maxAsksAgain` asks again of nothing.
    @Test func aDryEdgeAsksAgainAfterARefillOfNothing() async throws {
        try await Harness.with(refillsFirst: [.nothingNow, .soldOut]) { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 0)
            #expect(try await harness.purchase(buy(1)).response.outcome == .soldOut)
            #expect(harness.refill.asked == 2)
        }
        try await Harness.with(refillUnits: 1, refillsFirst: [.nothingNow, .nothingNow]) { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 0)
            #expect(try await harness.purchase(buy(2)).response.outcome == .purchased)
            #expect(harness.refill.asked == 3)
        }
        try await Harness.with(refillsFirst: [.nothingNow, .nothingNow, .nothingNow, .soldOut]) { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 0)
            guard case .failure(let error) = try await harness.purchase(buy(3)) else {
                Issue.record("three refills of nothing: UNAVAILABLE")
                return
            }
            #expect(error.code == .unavailable)
            #expect(harness.refill.asked == 3)
            #expect(harness.inventory.received.isEmpty)
        }
    }
}

/// Finding 1: no sequence of client calls strands a unit.
@Suite(.timeLimit(.minutes(1))) struct PurchasePathStrandingTests {
    @Test func repeatingOneRequestIDWithoutRetryDuringAnOutageStrandsNothing() async throws {
        // The review's reproduce: two units, the inventory failing, the same request id twice without `retry`.
        try await Harness.with(configure: { $0.inDoubtSettleDelay = .seconds(60) }) { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 2)
            harness.inventory.answer = { _ in .failure(RPCError(.unavailable, "inventory down")) }
            _ = try await harness.purchase(buy(1))
            _ = try await harness.purchase(buy(1))
            #expect(harness.path.resolver.pendingCount == 1)
            #expect(harness.available == 1, "one purchase, one unit held")
        }
        try await Harness.with { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 2)
            harness.inventory.answer = { _ in .failure(RPCError(.unavailable, "inventory down")) }
            harness.inventory.hold { $0.lookupOnly }
            _ = try await harness.purchase(buy(1))
            _ = try await harness.purchase(buy(1))
            harness.inventory.answer = { _ in .success(PurchaseResponse(outcome: .soldOut)) }
            try await harness.eventually("the lookup went out") { !harness.inventory.heldRequests.isEmpty }
            harness.inventory.release(.success(PurchaseResponse(outcome: .soldOut)))
            try await harness.eventually("resolved") { harness.path.resolver.pendingCount == 0 }
            #expect(harness.available == 2, "both units back once the inventory says no order")
        }
    }

    @Test func aRetryClaimingItsUnitWithTheFenceTooNearLeavesTheUnitInDoubt() async throws {
        // The claim takes the held unit out of doubt; refused before it is forwarded, the unit goes back in doubt
        // (it was stranded in flight before: every later retry answered "in flight", and no lookup ever came).
        try await Harness.with(configure: { $0.inDoubtSettleDelay = .seconds(60) }) { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 1)
            harness.inventory.answer = { _ in .failure(RPCError(.unavailable, "inventory down")) }
            _ = try await harness.purchase(buy(1))
            #expect(harness.path.resolver.pendingCount == 1)
            harness.ledger.setFence(.now + .milliseconds(20))
            #expect(code(try await harness.purchase(buy(1, retry: true))) == .unavailable)
            #expect(harness.path.resolver.pendingCount == 1, "held in doubt again, not in flight")
            harness.ledger.setFence(.now + .seconds(30))
            harness.inventory.answer = { _ in .success(PurchaseResponse(outcome: .purchased, orderId: 6)) }
            #expect(try await harness.purchase(buy(1, retry: true)).response.orderId == 6)
            #expect(harness.path.resolver.pendingCount == 0 && harness.available == 0)
            #expect(harness.inventory.purchases == 2, "the refused retry forwarded nothing")
        }
    }

    @Test func aDoubleSubmitDuringAnInventoryStallTakesOneUnit() async throws {
        try await Harness.with { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 3)
            harness.inventory.hold { !$0.lookupOnly }
            let first = try await harness.send(buy(1))
            try await harness.eventually("the first forward is out") { harness.inventory.heldRequests.count == 1 }
            #expect(code(try await harness.purchase(buy(1))) == .unavailable, "in flight: refused without a unit")
            #expect(code(try await harness.purchase(buy(1, retry: true))) == .unavailable)
            #expect(harness.available == 2)
            #expect(harness.inventory.purchases == 1)
            // The stall ends in doubt; the lookup finds no order: every unit is back.
            harness.inventory.answer = { _ in .success(PurchaseResponse(outcome: .soldOut)) }
            harness.inventory.release(.failure(RPCError(.deadlineExceeded, "deadline exceeded")))
            #expect(code(try await harness.answer(first)) == .deadlineExceeded)
            try await harness.eventually("resolved") { harness.path.resolver.pendingCount == 0 }
            #expect(harness.available == 3)
        }
    }

    @Test func aBudgetTooSmallToBuyIsRefusedBeforeItTakesAUnit() async throws {
        try await Harness.with { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 10)
            // 1 µs (as the review's attack) and 10 ms, under the 50 ms floor; the same request id again and again.
            for timeoutUs: Int64 in [1, 10_000, 10_000, 1, 49_000] {
                #expect(code(try await harness.purchase(buy(1), timeoutUs: timeoutUs)) == .deadlineExceeded)
            }
            #expect(harness.inventory.received.isEmpty, "nothing forwarded")
            #expect(harness.available == 10 && harness.path.resolver.pendingCount == 0)
            #expect(try await harness.purchase(buy(1), timeoutUs: 2_000_000).response.outcome == .purchased)
        }
    }

    /// The model's timing rule T1 (BUG_LATE_COMMIT): a forward never outlives the edge's fence, so nothing it
    /// forwarded commits once its session may have expired and its units been granted again. The edge's default
    /// forward timeout (5 s) is longer than the default session's safe time (3.5 s of 4 s).
    @Test func noForwardOutlivesTheEdgesFence() async throws {
        try await Harness.with { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 10)
            harness.ledger.setFence(.now + .seconds(1))
            #expect(try await harness.purchase(buy(1), timeoutUs: 5_000_000).response.outcome == .purchased)
            #expect(try await harness.purchase(buy(2)).response.outcome == .purchased)  // no deadline: 5 s by default
            for timeout in harness.inventory.timeouts {
                #expect(timeout <= .seconds(1) && timeout > .milliseconds(500), "\(timeout)")
            }
            // The fence too near to buy: UNAVAILABLE (retry, here later or elsewhere) before a unit is taken.
            harness.ledger.setFence(.now + .milliseconds(20))
            #expect(code(try await harness.purchase(buy(3), timeoutUs: 5_000_000)) == .unavailable)
            #expect(code(try await harness.purchase(buy(4))) == .unavailable)
            #expect(harness.inventory.purchases == 2)
            #expect(harness.available == 8 && harness.path.resolver.pendingCount == 0)
        }
    }

    @Test func aCallThatNeverLeftTheEdgeGivesItsUnitBackAtOnce() async throws {
        try await Harness.with(configure: { $0.inDoubtSettleDelay = .seconds(60) }) { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 1)
            harness.inventory.answer = { _ in .failure(RPCError.notSent(.unavailable, "127.0.0.1:1 is unreachable; reconnecting")) }
            #expect(code(try await harness.purchase(buy(1))) == .unavailable)
            harness.inventory.answer = { _ in .failure(RPCError.notSent(.deadlineExceeded, "deadline passed before the call was sent")) }
            #expect(code(try await harness.purchase(buy(2))) == .deadlineExceeded)
            #expect(harness.path.resolver.pendingCount == 0, "never in doubt")
            #expect(harness.available == 1)
        }
    }

    @Test func aClaimedRetryThatIsNotSentKeepsTheUnitInDoubt() async throws {
        try await Harness.with(configure: { $0.inDoubtSettleDelay = .seconds(60) }) { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 1)
            harness.inventory.answer = { _ in .failure(RPCError(.unavailable, "connection closed with the call in flight")) }
            _ = try await harness.purchase(buy(1))
            harness.inventory.answer = { _ in .failure(RPCError.notSent(.unavailable, "unreachable")) }
            _ = try await harness.purchase(buy(1, retry: true))
            #expect(harness.path.resolver.pendingCount == 1, "the first forward's outcome is still unknown")
            #expect(harness.available == 0)
        }
    }

    @Test func pastTheCapNewForwardsAreRefusedBeforeTheyTakeAUnit() async throws {
        try await Harness.with(configure: { $0.maxTracked = 1; $0.inDoubtSettleDelay = .seconds(60) }) { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 3)
            harness.inventory.answer = { _ in .failure(RPCError(.unavailable, "inventory down")) }
            _ = try await harness.purchase(buy(1))
            #expect(code(try await harness.purchase(buy(2))) == .unavailable)
            #expect(harness.inventory.purchases == 1)
            #expect(harness.available == 2, "one held, none dropped")
            harness.inventory.answer = { _ in .success(PurchaseResponse(outcome: .purchased, orderId: 4)) }
            #expect(try await harness.purchase(buy(1, retry: true)).response.outcome == .purchased, "the held one still resolves")
        }
    }
}

/// Finding 9: in-doubt resolution has one owner per purchase, bounded whatever the client retries.
@Suite(.timeLimit(.minutes(1))) struct PurchasePathResolverTests {
    @Test func retriesDuringAnOutageNeverMultiplyLookups() async throws {
        try await Harness.with { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 1)
            harness.inventory.answer = { _ in .failure(RPCError(.unavailable, "inventory down")) }
            harness.inventory.hold { $0.lookupOnly }  // the lookups hang: each one stays outstanding
            _ = try await harness.purchase(buy(1))
            try await harness.eventually("the first lookup went out") { harness.inventory.lookups == 1 }
            for _ in 0..<200 { _ = try await harness.purchase(buy(1, retry: true)) }
            try await Task.sleep(for: .milliseconds(20))  // room for more lookups, if the resolver sent any
            #expect(harness.inventory.heldRequests.count == 1, "one lookup outstanding, not one per retry")
            #expect(harness.path.resolver.trackedCount == 1 && harness.path.resolver.pendingCount == 1)
            #expect(harness.available == 0)
        }
    }

    @Test func theResolverIsAServiceThatStopsOnGracefulShutdown() async throws {
        let ledger = QuotaLedger()
        let loop = NIOAsyncTestingEventLoop()
        let resolver = InDoubtResolver(ledger: ledger, forwarder: ScriptedInventory(eventLoop: loop), logger: Logger(label: "test"))
        let group = ServiceGroup(services: [resolver], logger: Logger(label: "test"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }
}

/// Finding 10: SOLD_OUT only when the stock is sold out; otherwise UNAVAILABLE, which the client retries.
@Suite(.timeLimit(.minutes(1))) struct PurchasePathDryTests {
    @Test func aDryEdgeSaysUnavailableWhenTheQuotaServiceCannotGrant() async throws {
        try await Harness.with(otherwise: .unavailable) { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 0)
            #expect(code(try await harness.purchase(buy(1))) == .unavailable)
            #expect(code(try await harness.purchase(buy(2, retry: true))) == .unavailable)
            #expect(harness.inventory.received.isEmpty)
        }
        try await Harness.with(otherwise: .soldOut) { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 0)
            #expect(try await harness.purchase(buy(1)).response.outcome == .soldOut, "the quota service says sold out")
        }
    }

    @Test func unitsAllInDoubtMeanUnavailableNotSoldOut() async throws {
        try await Harness.with(configure: { $0.inDoubtSettleDelay = .seconds(60) }) { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 1)
            harness.inventory.answer = { _ in .failure(RPCError(.unavailable, "inventory down")) }
            _ = try await harness.purchase(buy(1))
            #expect(code(try await harness.purchase(buy(2))) == .unavailable)
        }
    }
}

/// Finding 5: `retry` bypasses nothing; only a purchase held in doubt here skips the lottery.
@Suite(.timeLimit(.minutes(1))) struct PurchasePathLotteryTests {
    @Test func shedsTheConfiguredShareAndARetryHoldingNoUnitHere() async throws {
        try await Harness.with(keepPerMillion: 100_000) { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 1_000_000)
            var shed = 0
            for id in 1...2000 where try await harness.purchase(buy(UInt64(id))).response.outcome == .shed { shed += 1 }
            #expect((1700...1900).contains(shed), "about nine in ten shed, got \(shed)")
            harness.shedder.setKeepPerMillion(0)
            let before = harness.inventory.purchases
            // A retry on a request id this edge never saw: shed, settled by a lookup that finds no order.
            harness.inventory.answer = { $0.lookupOnly ? .success(PurchaseResponse(outcome: .soldOut)) : .success(PurchaseResponse(outcome: .purchased, orderId: 1)) }
            for id in UInt64(9000)..<9100 {
                #expect(try await harness.purchase(buy(id, retry: true)).response.outcome == .shed)
            }
            #expect(try await harness.purchase(buy(10000)).response.outcome == .shed)
            #expect(harness.inventory.purchases == before, "at keep 0 nothing is bought")
        }
    }

    @Test func aShedRetryLearnsAnOrderMadeElsewhere() async throws {
        try await Harness.with(keepPerMillion: 0) { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 10)
            harness.inventory.answer = { _ in .success(PurchaseResponse(outcome: .purchased, orderId: 8, replayed: true, edgeId: 3)) }
            #expect(try await harness.purchase(buy(1, retry: true)).response.orderId == 8)
            #expect(harness.inventory.received.map(\.lookupOnly) == [true])
            #expect(harness.available == 10)
        }
    }

    @Test func aRealInDoubtRetryAtKeepZeroStillLearnsItsFirstOutcome() async throws {
        try await Harness.with(configure: { $0.inDoubtSettleDelay = .seconds(60) }) { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 1)
            harness.inventory.answer = { _ in .failure(RPCError(.unavailable, "inventory down")) }
            _ = try await harness.purchase(buy(1))
            harness.shedder.setKeepPerMillion(0)
            harness.inventory.answer = { _ in .success(PurchaseResponse(outcome: .purchased, orderId: 5, replayed: true, edgeId: 7)) }
            #expect(try await harness.purchase(buy(1, retry: true)).response.orderId == 5)
            #expect(harness.available == 0, "its first forward made the order")
        }
    }
}

/// Finding 6, the edge's part: claims check the product (and the buyer).
@Suite(.timeLimit(.minutes(1))) struct PurchasePathKeyTests {
    @Test func aRetryNamingAnotherProductNeverClaimsTheHeldUnit() async throws {
        try await Harness.with(configure: { $0.inDoubtSettleDelay = .seconds(60) }) { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 1)
            harness.ledger.applyGrant("radio", granted: 1)
            harness.inventory.answer = { _ in .failure(RPCError(.unavailable, "inventory down")) }
            _ = try await harness.purchase(buy(1, product: "tv"))
            harness.inventory.answer = { _ in .failure(RPCError(.failedPrecondition, "request id reused with another product or user")) }
            #expect(code(try await harness.purchase(buy(1, product: "radio", retry: true))) == .failedPrecondition)
            #expect(harness.path.resolver.pendingCount == 1, "the tv unit is still held for its own purchase")
            #expect(harness.available == 0)
            #expect(harness.ledger.usage(of: "radio")?.available == 1)
            #expect(harness.inventory.received.last?.productId == "radio")
        }
    }
}

@Suite(.timeLimit(.minutes(1))) struct PurchasePathRefusalTests {
    @Test func refusalBeforeQueueingGivesTheUnitBackAtOnce() async throws {
        try await Harness.with { (harness: Harness) async throws in
            harness.ledger.applyGrant("tv", granted: 1)
            harness.inventory.answer = { _ in .failure(RPCError(.resourceExhausted, "queue full")) }
            #expect(code(try await harness.purchase(PurchaseRequest(requestId: 1, userId: 1, productId: "tv"))) == .resourceExhausted)
            #expect(harness.path.resolver.pendingCount == 0)
            #expect(harness.available == 1)
        }
    }
}

/// Whose order is it: an edge keeps a unit only for an order its own forwarded purchase made.
@Suite(.timeLimit(.minutes(1))) struct PurchasePathOwnershipTests {
    private func inDoubt(_ harness: Harness) async throws {
        harness.ledger.applyGrant("tv", granted: 1)
        harness.inventory.answer = { _ in .failure(RPCError(.unavailable, "inventory down")) }
        _ = try await harness.purchase(PurchaseRequest(requestId: 1, userId: 1, productId: "tv"))
        #expect(harness.path.resolver.pendingCount == 1)
    }

    @Test func claimedRetryReplayingThisEdgesOrderKeepsTheUnit() async throws {
        try await Harness.with(configure: { $0.inDoubtSettleDelay = .seconds(60) }) { (harness: Harness) async throws in
            try await inDoubt(harness)
            harness.inventory.answer = { _ in .success(PurchaseResponse(outcome: .purchased, orderId: 5, replayed: true, edgeId: 7)) }
            #expect(try await harness.purchase(PurchaseRequest(requestId: 1, userId: 1, productId: "tv", retry: true)).response.orderId == 5)
            #expect(harness.available == 0, "the first forward made the order: its unit is sold")
        }
    }

    @Test func claimedRetryReplayingAnotherEdgesOrderGivesTheUnitBack() async throws {
        try await Harness.with(configure: { $0.inDoubtSettleDelay = .seconds(60) }) { (harness: Harness) async throws in
            try await inDoubt(harness)
            harness.inventory.answer = { _ in .success(PurchaseResponse(outcome: .purchased, orderId: 5, replayed: true, edgeId: 3)) }
            _ = try await harness.purchase(PurchaseRequest(requestId: 1, userId: 1, productId: "tv", retry: true))
            #expect(harness.available == 1, "edge 3 sold it; this edge's attempt bought nothing")
        }
    }

    @Test func resolverKeepsTheUnitOnlyForThisEdgesOrder() async throws {
        for (maker, expectedAvailable) in [(UInt32(7), Int64(0)), (UInt32(3), Int64(1))] {
            try await Harness.with { (harness: Harness) async throws in
                harness.inventory.hold { $0.lookupOnly }
                try await inDoubt(harness)
                try await harness.eventually("the lookup went out") { !harness.inventory.heldRequests.isEmpty }
                harness.inventory.release(.success(PurchaseResponse(outcome: .purchased, orderId: 5, replayed: true, edgeId: maker)))
                try await harness.eventually("resolved") { harness.path.resolver.pendingCount == 0 }
                #expect(harness.available == expectedAvailable, "order made by edge \(maker)")
            }
        }
    }
}
