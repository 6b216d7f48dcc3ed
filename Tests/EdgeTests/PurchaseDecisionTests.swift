import NIOCore
import Proto
import Testing
import Wire

@testable import EdgeCore

/// Readings fixed by the test, counting what the decision read (a shed attempt must read no clock).
final class FixedReadings: PurchaseReadings {
    var budget: TimeAmount
    var toFence: TimeAmount?
    var full: Bool
    private(set) var budgetReads = 0
    private(set) var fenceReads = 0

    init(budget: TimeAmount = .seconds(5), toFence: TimeAmount? = nil, full: Bool = false) {
        self.budget = budget
        self.toFence = toFence
        self.full = full
    }

    func clientBudget() -> TimeAmount {
        budgetReads += 1
        return budget
    }

    func timeToFence() -> TimeAmount? {
        fenceReads += 1
        return toFence
    }

    var inDoubtFull: Bool { full }
}

/// The purchase decision alone: every input of every step, as plain function calls (no channel, no event loop).
@Suite struct PurchaseDecisionTests {
    typealias Action = PurchaseDecision.Action
    typealias Forward = PurchaseDecision.Forward
    static let minimum = TimeAmount.milliseconds(50)

    func decision(retry: Bool = false) -> PurchaseDecision {
        PurchaseDecision(retry: retry, minimumBudget: Self.minimum)
    }

    func request(retry: Bool = false) -> PurchaseRequest {
        PurchaseRequest(requestId: 1, userId: 2, productId: "tv", retry: retry)
    }

    /// A decision that has passed `start` and the claim and is at the lottery.
    func atLottery(retry: Bool = false, _ readings: FixedReadings = FixedReadings()) -> PurchaseDecision {
        var decision = decision(retry: retry)
        #expect(decision.start(request(retry: retry), readings) == .claimInDoubt)
        #expect(decision.claimed(.none, readings) == .drawLottery)
        return decision
    }

    func atTake(retry: Bool = false, _ readings: FixedReadings = FixedReadings()) -> PurchaseDecision {
        var decision = atLottery(retry: retry, readings)
        #expect(decision.drawn(admitted: true, readings) == .take)
        return decision
    }

    // MARK: start

    @Test func badInputIsRefusedInvalidArgumentBeforeAnythingIsRead() {
        let cases: [(PurchaseRequest, PurchaseDecision.Refusal)] = [
            (PurchaseRequest(requestId: 0, userId: 1, productId: "tv"), .missingRequestID),
            (PurchaseRequest(requestId: 1, userId: 0, productId: "tv"), .missingUserID),
            (PurchaseRequest(requestId: 1, userId: 1, productId: ""), .missingProductID),
            (PurchaseRequest(requestId: 1, userId: 1, productId: String(repeating: "x", count: 129)), .productIDTooLong),
            (PurchaseRequest(requestId: 1, userId: 1, productId: "../tv"), .productIDNotANodeName),
            (PurchaseRequest(requestId: 1, userId: 1, productId: "a\u{7}b"), .productIDNotANodeName),
            (PurchaseRequest(requestId: 1, userId: 1, productId: "tv", lookupOnly: true), .lookupOnlyFromClient),
        ]
        for (request, refusal) in cases {
            let readings = FixedReadings()
            var decision = decision()
            #expect(decision.start(request, readings) == .answer(.refused(refusal)))
            #expect(refusal.rpcErrorCode == .invalidArgument)
            #expect(readings.budgetReads == 0 && readings.fenceReads == 0)
        }
        var decision = decision()
        let longest = PurchaseRequest(requestId: 1, userId: 1, productId: String(repeating: "x", count: 128))
        #expect(decision.start(longest, FixedReadings()) == .claimInDoubt, "128 bytes is allowed")
    }

    @Test func aBudgetUnderTheFloorIsTooLateAndTheFenceIsNotReadBeforeTheLottery() {
        for (budget, expected) in [
            (TimeAmount.microseconds(1), Action.answer(.refused(.tooLate))),
            (.milliseconds(49), .answer(.refused(.tooLate))),
            (.milliseconds(50), .claimInDoubt),
            (.seconds(5), .claimInDoubt),
        ] {
            let readings = FixedReadings(budget: budget, toFence: .zero)
            var decision = decision()
            #expect(decision.start(request(), readings) == expected, "\(budget)")
            #expect(readings.budgetReads == 1 && readings.fenceReads == 0)
        }
        #expect(PurchaseDecision.Refusal.tooLate.rpcErrorCode == .deadlineExceeded)
    }

    // MARK: claimed

    @Test func aPurchaseHeldInDoubtForwardsWithItsUnitReadingTheClockOnce() {
        let readings = FixedReadings(budget: .seconds(2), toFence: .seconds(1))
        var decision = decision(retry: true)
        _ = decision.start(request(retry: true), readings)
        #expect(decision.claimed(.claimed(generation: 9), readings) == .forward(Forward(
            generation: 9, carriesInDoubtUnit: true, timeout: .seconds(1), givesBackTakenUnit: false)))
        #expect(readings.budgetReads == 2 && readings.fenceReads == 1, "start once, the claim once for check and timeout")
    }

    @Test func aClaimedUnitThatCannotBeForwardedIsHeldInDoubtAgain() {
        // Never stranded: the claim moved the unit out of the table's doubt; not forwarded, it goes back there.
        for (budget, toFence, refusal) in [
            (TimeAmount.milliseconds(60), TimeAmount.milliseconds(20), PurchaseDecision.Refusal.cutOff),
            (.milliseconds(60), .milliseconds(-5), .cutOff),
        ] {
            let readings = FixedReadings(budget: budget, toFence: toFence)
            var decision = decision(retry: true)
            _ = decision.start(request(retry: true), readings)
            #expect(decision.claimed(.claimed(generation: 4), readings) == .holdInDoubtAndAnswer(generation: 4, .refused(refusal)))
        }
        // The budget went between the start and the claim (read again there).
        let readings = FixedReadings(budget: .seconds(1))
        var decision = decision(retry: true)
        _ = decision.start(request(retry: true), readings)
        readings.budget = .milliseconds(10)
        #expect(decision.claimed(.claimed(generation: 4), readings) == .holdInDoubtAndAnswer(generation: 4, .refused(.tooLate)))
    }

    @Test func aPurchaseInFlightIsRefusedWithoutAUnit() {
        let readings = FixedReadings()
        var decision = decision()
        _ = decision.start(request(), readings)
        #expect(decision.claimed(.inFlight, readings) == .answer(.refused(.inFlight)))
        #expect(PurchaseDecision.Refusal.inFlight.rpcErrorCode == .unavailable)
    }

    @Test func notHeldGoesToTheLotteryReadingNothing() {
        let readings = FixedReadings()
        var decision = decision()
        _ = decision.start(request(), readings)
        #expect(decision.claimed(.none, readings) == .drawLottery)
        #expect(readings.budgetReads == 1 && readings.fenceReads == 0)
    }

    // MARK: drawn

    @Test func aShedAttemptIsShedAndReadsNoClock() {
        let readings = FixedReadings()
        var decision = atLottery(readings)
        let before = readings.budgetReads
        #expect(decision.drawn(admitted: false, readings) == .answer(.outcome(.shed)))
        #expect(readings.budgetReads == before && readings.fenceReads == 0)
    }

    @Test func aShedRetryIsLookedUpWithinTheClientsBudgetAlone() {
        let readings = FixedReadings(budget: .seconds(3), toFence: .milliseconds(1))
        var decision = atLottery(retry: true, readings)
        #expect(decision.drawn(admitted: false, readings) == .lookUp(timeout: .seconds(3), otherwise: .outcome(.shed)))
        #expect(readings.fenceReads == 0, "a lookup buys nothing: the fence does not bound it")
    }

    @Test func aWinnerIsCheckedBeforeItTakes() {
        for (budget, toFence, full, expected) in [
            (TimeAmount.seconds(1), TimeAmount?.none, false, Action.take),
            (.seconds(1), .seconds(1), false, .take),
            (.seconds(1), .milliseconds(50), false, .take),
            (.seconds(1), .milliseconds(49), false, .answer(.refused(.cutOff))),
            (.seconds(1), nil, true, .answer(.refused(.tooManyInDoubt))),
            (.seconds(1), .milliseconds(1), true, .answer(.refused(.cutOff))),
        ] {
            let readings = FixedReadings(budget: budget, toFence: toFence, full: full)
            var decision = atLottery(readings)
            #expect(decision.drawn(admitted: true, readings) == expected, "\(budget) \(String(describing: toFence)) \(full)")
        }
        let readings = FixedReadings(budget: .seconds(1))
        var decision = atLottery(readings)
        readings.budget = .milliseconds(49)
        #expect(decision.drawn(admitted: true, readings) == .answer(.refused(.tooLate)))
    }

    // MARK: took

    @Test func eachTakeWithoutAUnitAnswersOrLooksUpARetry() {
        let cases: [(QuotaLedger.Take, Action, Action)] = [
            (.taken, .reserve, .reserve),
            (.dry, .refill, .refill),
            (.soldOut, .answer(.outcome(.soldOut)), .lookUp(timeout: .seconds(5), otherwise: .outcome(.soldOut))),
            (.unavailable, .answer(.refused(.cutOff)), .answer(.refused(.cutOff))),
            (.unknownProduct, .answer(.refused(.unknownProduct)),
             .lookUp(timeout: .seconds(5), otherwise: .refused(.unknownProduct))),
        ]
        for (take, plain, retried) in cases {
            var first = atTake()
            #expect(first.took(take, FixedReadings()) == plain, "\(take)")
            var retry = atTake(retry: true)
            #expect(retry.took(take, FixedReadings()) == retried, "\(take), retry")
        }
        #expect(PurchaseDecision.Refusal.unknownProduct.rpcErrorCode == .notFound)
        #expect(PurchaseDecision.Refusal.cutOff.rpcErrorCode == .unavailable)
    }

    // MARK: refills

    @Test func aDryCounterIsRefilledTwiceAtMostThenUnavailable() {
        let readings = FixedReadings()
        var decision = atTake(readings)
        #expect(decision.took(.dry, readings) == .refill)
        #expect(decision.refilled(.granted, readings) == .take)
        #expect(decision.took(.dry, readings) == .refill)
        #expect(decision.refilled(.granted, readings) == .take)
        #expect(decision.took(.dry, readings) == .answer(.refused(.dry)))
        #expect(PurchaseDecision.Refusal.dry.rpcErrorCode == .unavailable, "not SOLD_OUT: stock may remain elsewhere")
    }

    /// Near sell-out a refill may answer nothing while the last units are in flight or on other edges: the attempt
    /// asks again (the ask after the hold-off) twice, budget allowing, and only then answers UNAVAILABLE.
    @Test func aRefillAnsweredNothingIsAskedAgainWhileTheBudgetOutlastsAHoldOff() {
        let readings = FixedReadings()
        var decision = atTake(readings)
        #expect(decision.took(.dry, readings) == .refill)
        #expect(decision.refilled(.nothingNow, readings) == .refill)
        #expect(decision.refilled(.nothingNow, readings) == .refill)
        #expect(decision.refilled(.nothingNow, readings) == .answer(.refused(.dry)))

        // The asks again are the attempt's, not each refill's: after a grant and a dry counter, none is left.
        var granted = atTake(readings)
        _ = granted.took(.dry, readings)
        #expect(granted.refilled(.nothingNow, readings) == .refill)
        #expect(granted.refilled(.granted, readings) == .take)
        #expect(granted.took(.dry, readings) == .refill)
        #expect(granted.refilled(.nothingNow, readings) == .refill)
        #expect(granted.refilled(.nothingNow, readings) == .answer(.refused(.dry)))

        // Too little budget to wait out a hold-off and still buy: UNAVAILABLE at once.
        for budget in [Self.minimum, Self.minimum + RefillSharing.holdOff - .milliseconds(1)] {
            let short = FixedReadings(budget: .seconds(5))
            var decision = atTake(short)
            _ = decision.took(.dry, short)
            short.budget = budget
            #expect(decision.refilled(.nothingNow, short) == .answer(.refused(.dry)), "budget \(budget)")
        }
        let enough = FixedReadings(budget: .seconds(5))
        var last = atTake(enough)
        _ = last.took(.dry, enough)
        enough.budget = Self.minimum + RefillSharing.holdOff
        #expect(last.refilled(.nothingNow, enough) == .refill)

        // No answer at all (unreachable, failing, past its deadline): asking again would only wait out another.
        var unanswered = atTake(readings)
        _ = unanswered.took(.dry, readings)
        #expect(unanswered.refilled(.unavailable, readings) == .answer(.refused(.dry)))
    }

    @Test func aRefillsOutcome() {
        for (retry, outcome, expected) in [
            (false, RefillOutcome.soldOut, Action.answer(.outcome(.soldOut))),
            (true, .soldOut, .lookUp(timeout: .seconds(5), otherwise: .outcome(.soldOut))),
            (false, .unavailable, .answer(.refused(.dry))),
            (true, .unavailable, .answer(.refused(.dry))),
            (false, .nothingNow, .refill),
            (true, .nothingNow, .refill),
            (false, .granted, .take),
        ] {
            let readings = FixedReadings()
            var decision = atTake(retry: retry, readings)
            _ = decision.took(.dry, readings)
            #expect(decision.refilled(outcome, readings) == expected, "\(outcome) retry \(retry)")
        }
        // The wait used the budget up, or brought the fence near: checked again before the take.
        for (budget, toFence, full, expected) in [
            (TimeAmount.milliseconds(10), TimeAmount?.none, false, Action.answer(.refused(.tooLate))),
            (.seconds(1), .milliseconds(10), false, .answer(.refused(.cutOff))),
            (.seconds(1), nil, true, .answer(.refused(.tooManyInDoubt))),
        ] {
            let readings = FixedReadings()
            var decision = atTake(readings)
            _ = decision.took(.dry, readings)
            readings.budget = budget
            readings.toFence = toFence
            readings.full = full
            #expect(decision.refilled(.granted, readings) == expected)
        }
    }

    // MARK: reserved

    @Test func aTakenUnitIsForwardedOrGivenBack() {
        let readings = FixedReadings(budget: .seconds(5), toFence: .seconds(2))
        let cases: [(InDoubtTable.Reserve, Action)] = [
            (.reserved(generation: 3), .forward(Forward(generation: 3, carriesInDoubtUnit: false, timeout: .seconds(2), givesBackTakenUnit: false))),
            (.claimed(generation: 5), .forward(Forward(generation: 5, carriesInDoubtUnit: true, timeout: .seconds(2), givesBackTakenUnit: true))),
            (.inFlight, .giveBackAndAnswer(.refused(.inFlight))),
            (.full, .giveBackAndAnswer(.refused(.tooManyInDoubt))),
        ]
        for (reserve, expected) in cases {
            var decision = atTake(readings)
            _ = decision.took(.taken, readings)
            #expect(decision.reserved(reserve, readings) == expected, "\(reserve)")
        }
    }

    @Test func aForwardEndsBeforeTheClientGivesUpAndBeforeTheFence() {
        #expect(PurchaseDecision.forwardTimeout(budget: .seconds(5), toFence: nil) == .seconds(5))
        #expect(PurchaseDecision.forwardTimeout(budget: .seconds(5), toFence: .seconds(1)) == .seconds(1))
        #expect(PurchaseDecision.forwardTimeout(budget: .milliseconds(300), toFence: .seconds(1)) == .milliseconds(300))
    }

    // MARK: answers

    @Test func answersFromTheInventory() {
        #expect(PurchaseDecision.relaysLookup(PurchaseResponse(outcome: .purchased, orderId: 1)))
        #expect(PurchaseDecision.relaysLookup(PurchaseResponse(outcome: .alreadyPurchased, orderId: 1)))
        #expect(!PurchaseDecision.relaysLookup(PurchaseResponse(outcome: .soldOut)))
        #expect(!PurchaseDecision.relaysLookup(PurchaseResponse(outcome: .shed)))
        #expect(PurchaseDecision.marksSoldOut(PurchaseResponse(outcome: .soldOut)))
        #expect(!PurchaseDecision.marksSoldOut(PurchaseResponse(outcome: .soldOut, replayed: true)), "a replay is no news")
        #expect(!PurchaseDecision.marksSoldOut(PurchaseResponse(outcome: .purchased)))
    }

    @Test func everyRefusalSaysItsStatusOnce() {
        for refusal in PurchaseDecision.Refusal.allCases {
            let error = refusal.rpcError
            #expect(error.code == refusal.rpcErrorCode && error.message == refusal.rpcErrorMessage && error.cause == nil)
            #expect(RPCError.wrapping(refusal).code == refusal.rpcErrorCode)
            if case .failure(let failure) = PurchaseDecision.Answer.refused(refusal).result {
                #expect(failure.code == refusal.rpcErrorCode)
            } else {
                Issue.record("a refusal answers with an error")
            }
        }
        if case .success(let response) = PurchaseDecision.Answer.outcome(.shed).result {
            #expect(response == PurchaseResponse(outcome: .shed))
        } else {
            Issue.record("an outcome answers with a response")
        }
    }

    // MARK: every path

    /// Every sequence of inputs, driven to its end: each ends in one answer, forward or lookup, and no unit is
    /// stranded (a unit taken is forwarded or given back; a claimed unit is forwarded or held in doubt again).
    @Test func everyPathEndsAndStrandsNoUnit() {
        let claims: [InDoubtTable.Claim] = [.none, .inFlight, .claimed(generation: 1)]
        let takes: [QuotaLedger.Take] = [.taken, .dry, .soldOut, .unavailable, .unknownProduct]
        let reserves: [InDoubtTable.Reserve] = [.reserved(generation: 2), .claimed(generation: 1), .inFlight, .full]
        let refills: [RefillOutcome] = [.granted, .soldOut, .nothingNow, .unavailable]
        let budgets: [TimeAmount] = [.milliseconds(10), .seconds(1)]
        let fences: [TimeAmount?] = [nil, .milliseconds(10), .seconds(1)]
        var paths = 0

        struct Walk {
            var decision: PurchaseDecision
            var action: Action
            var takenUnits = 0
            var claimedUnits = 0
            var steps = 0
        }

        func finish(_ walk: Walk) {
            paths += 1
            var taken = walk.takenUnits
            var claimed = walk.claimedUnits
            switch walk.action {
            case .answer:
                break
            case .forward(let forward):
                if forward.givesBackTakenUnit { taken -= 1 }
                if forward.carriesInDoubtUnit { claimed -= 1 } else { taken -= 1 }
            case .lookUp:
                break
            case .giveBackAndAnswer:
                taken -= 1
            case .holdInDoubtAndAnswer:
                claimed -= 1
            default:
                Issue.record("a path stopped at \(walk.action)")
            }
            #expect(taken == 0 && claimed == 0, "units left: taken \(taken), claimed \(claimed), ended by \(walk.action)")
        }

        func explore(_ walk: Walk, _ readings: FixedReadings) {
            #expect(walk.steps < 20, "a path that never ends")
            guard walk.steps < 20 else { return }
            /// Each input in turn, from a copy of `walk`; `units` says what the input hands the attempt.
            func branch<Input>(
                _ inputs: [Input], units: (Input) -> (taken: Int, claimed: Int) = { _ in (0, 0) },
                _ feed: (inout PurchaseDecision, Input) -> Action
            ) {
                for input in inputs {
                    var next = walk
                    next.steps += 1
                    next.takenUnits += units(input).taken
                    next.claimedUnits += units(input).claimed
                    next.action = feed(&next.decision, input)
                    explore(next, readings)
                }
            }
            switch walk.action {
            case .claimInDoubt:
                branch(claims, units: { if case .claimed = $0 { (0, 1) } else { (0, 0) } }) { $0.claimed($1, readings) }
            case .drawLottery:
                branch([false, true]) { $0.drawn(admitted: $1, readings) }
            case .take:
                branch(takes, units: { $0 == .taken ? (1, 0) : (0, 0) }) { $0.took($1, readings) }
            case .reserve:
                branch(reserves, units: { if case .claimed = $0 { (0, 1) } else { (0, 0) } }) { $0.reserved($1, readings) }
            case .refill:
                branch(refills) { $0.refilled($1, readings) }
            default:
                finish(walk)
            }
        }

        for retry in [false, true] {
            for budget in budgets {
                for toFence in fences {
                    for full in [false, true] {
                        let readings = FixedReadings(budget: budget, toFence: toFence, full: full)
                        var decision = decision(retry: retry)
                        let action = decision.start(request(retry: retry), readings)
                        explore(Walk(decision: decision, action: action), readings)
                    }
                }
            }
        }
        #expect(paths > 100)
    }
}
