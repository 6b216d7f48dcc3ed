import Proto
import Testing
import Wire

@testable import EdgeCore

/// The in-doubt table's decisions, with explicit time: no sockets, no sleeping.
@Suite struct InDoubtTableTests {
    let t0 = ContinuousClock.now
    func at(_ ms: Int) -> ContinuousClock.Instant { t0 + .milliseconds(ms) }

    func request(_ id: UInt64, product: String = "tv", user: UInt64? = nil) -> PurchaseRequest {
        PurchaseRequest(requestId: id, userId: user ?? id, productId: product, edgeId: 7)
    }

    func limits(capacity: Int = 100, lookups: Int = 100) -> InDoubtTable.Limits {
        var limits = InDoubtTable.Limits()
        limits.capacity = capacity
        limits.lookupsInFlight = lookups
        limits.settle = .seconds(1)
        limits.backoff = Backoff(initial: .seconds(1), max: .seconds(10), jitter: 0)
        limits.batchWindow = .milliseconds(20)
        return limits
    }

    /// Puts `request` in doubt: reserved, forwarded, no answer.
    func inDoubt(_ table: inout InDoubtTable, _ request: PurchaseRequest, at now: ContinuousClock.Instant) {
        guard case .reserved(let generation) = table.reserve(request) else {
            Issue.record("not reserved")
            return
        }
        table.forwardEnded(request, generation: generation, fate: .inDoubt, now: now)
    }

    @Test func aSecondForwardOfAPurchaseInFlightIsRefusedBeforeItTakesAUnit() {
        // Finding 1, scenario B: a double submit during an inventory stall.
        var table = InDoubtTable(limits: limits())
        #expect(table.reserve(request(1)) == .reserved(generation: 1))
        #expect(table.reserve(request(1)) == .inFlight)
        #expect(table.claim(PurchaseKey(request(1))) == .inFlight)
        #expect(table.count == 1)
    }

    @Test func anyAttemptOfAPurchaseInDoubtTakesTheHeldUnitOver() {
        // Finding 1: a repeat without `retry` must not take a second unit for the same purchase.
        var table = InDoubtTable(limits: limits())
        inDoubt(&table, request(1), at: at(0))
        #expect(table.heldCount == 1)
        #expect(table.reserve(request(1)) == .claimed(generation: 2), "the caller gives its new unit back")
        #expect(table.heldCount == 0 && table.count == 1)
    }

    @Test func claimsCheckTheProductAndTheUser() {
        // Finding 6, edge part: a retry naming product B never takes product A's unit.
        var table = InDoubtTable(limits: limits())
        inDoubt(&table, request(1, product: "tv"), at: at(0))
        #expect(table.claim(PurchaseKey(request(1, product: "radio"))) == .none)
        #expect(table.claim(PurchaseKey(request(1, user: 99))) == .none)
        #expect(table.claim(PurchaseKey(request(1, product: "tv"))) == .claimed(generation: 2))
    }

    @Test func theLookupGoesOutAfterTheSettleDelayAndSettlesTheUnit() {
        var table = InDoubtTable(limits: limits())
        inDoubt(&table, request(1), at: at(0))
        #expect(table.takeDue(now: at(500)).isEmpty)
        #expect(table.nextDue() == at(1000))
        let due = table.takeDue(now: at(1000))
        #expect(due.map(\.key) == [PurchaseKey(request(1))])
        #expect(table.takeDue(now: at(5000)).isEmpty, "one lookup per purchase at a time")
        #expect(table.lookupAnswered(due[0].key, generation: due[0].generation, fate: .giveBack, now: at(1010)) == .resolved(.giveBack))
        #expect(table.count == 0 && table.heldCount == 0 && table.lookupsOutstanding == 0)
    }

    @Test func failedLookupsBackOff() {
        var table = InDoubtTable(limits: limits())
        inDoubt(&table, request(1), at: at(0))
        var now = 1000
        var gaps: [Int] = []
        for _ in 0..<6 {
            let due = table.takeDue(now: at(now))
            #expect(due.count == 1)
            #expect(table.lookupAnswered(due[0].key, generation: due[0].generation, fate: .inDoubt, now: at(now)) == .later)
            let next = table.nextDue()!
            let gap = Int((next - at(now)) / .milliseconds(1))
            gaps.append(gap)
            now += gap
        }
        #expect(gaps == [1000, 2000, 4000, 8000, 10000, 10000], "\(gaps)")
    }

    @Test func retriesDuringAnOutageKeepOneEntryAndAtMostOneLookup() {
        // Finding 9: a client retrying one request id every 100 ms for a long outage.
        var table = InDoubtTable(limits: limits())
        inDoubt(&table, request(1), at: at(0))
        var lookups = 0
        for step in 1...200 {
            let now = at(step * 100)
            lookups += table.takeDue(now: now).count
            guard case .claimed(let generation) = table.claim(PurchaseKey(request(1))) else {
                Issue.record("not claimed at step \(step)")
                return
            }
            table.forwardEnded(request(1), generation: generation, fate: .inDoubt, now: now)
            #expect(table.count == 1 && table.heldCount == 1)
        }
        #expect(lookups <= 1, "each retry's own forward asks the inventory; lookups do not pile up: \(lookups)")
        #expect(table.lookupsOutstanding <= 1)
    }

    @Test func aLateLookupAnswerNeverSettlesTheNextHolder() {
        var table = InDoubtTable(limits: limits())
        inDoubt(&table, request(1), at: at(0))
        let first = table.takeDue(now: at(1000))[0]
        // A retry claims the unit while the lookup is out, and goes in doubt again.
        guard case .claimed(let generation) = table.claim(first.key) else {
            Issue.record("not claimed")
            return
        }
        table.forwardEnded(request(1), generation: generation, fate: .inDoubt, now: at(1100))
        #expect(table.takeDue(now: at(9000)).isEmpty, "not while the first lookup is out")
        #expect(table.lookupAnswered(first.key, generation: first.generation, fate: .giveBack, now: at(9000)) == .stale)
        #expect(table.heldCount == 1, "the unit held now is still in doubt")
        #expect(table.takeDue(now: at(9000)).count == 1, "asked about again")
    }

    @Test func lookupsInFlightAreBoundedAndBatched() {
        var table = InDoubtTable(limits: limits(capacity: 1000, lookups: 8))
        for id in 1...100 { inDoubt(&table, request(UInt64(id)), at: at(id % 10)) }
        let batch = table.takeDue(now: at(1000))
        #expect(batch.count == 8, "due within the batch window, up to the bound")
        #expect(table.takeDue(now: at(1000)).isEmpty)
        #expect(table.nextDue() == nil, "nothing more until an answer frees room")
        for lookup in batch { _ = table.lookupAnswered(lookup.key, generation: lookup.generation, fate: .sold, now: at(1001)) }
        #expect(table.takeDue(now: at(1001)).count == 8)
        #expect(table.count == 92)
    }

    @Test func theTableIsCapped() {
        var table = InDoubtTable(limits: limits(capacity: 2))
        inDoubt(&table, request(1), at: at(0))
        #expect(table.reserve(request(2)) == .reserved(generation: 2))
        #expect(table.isFull)
        #expect(table.reserve(request(3)) == .full)
        #expect(table.reserve(request(1)) == .claimed(generation: 3), "a held purchase is still claimed when full")
    }

    @Test func aSettledForwardLeavesTheTable() {
        var table = InDoubtTable(limits: limits())
        guard case .reserved(let generation) = table.reserve(request(1)) else {
            Issue.record("not reserved")
            return
        }
        table.forwardEnded(request(1), generation: generation, fate: .sold, now: at(0))
        #expect(table.count == 0 && table.heldCount == 0)
    }

    @Test func oneOrderKeepsOneUnitHoweverOftenItIsNamedAgain() {
        // Found by the model (QuotaProtocol.pml, BUG_MADE_HERE_BY_EDGE_ID): a bought request id sent again whose
        // second forward went in doubt; the lookup finds the first order, made here, and must not keep a 2nd unit.
        var table = InDoubtTable(limits: limits())
        guard case .reserved(let first) = table.reserve(request(1)) else { Issue.record("not reserved"); return }
        #expect(table.forwardEnded(request(1), generation: first, fate: .sold, now: at(0)) == .sold)
        inDoubt(&table, request(1), at: at(10))
        let lookups = table.takeDue(now: at(2000))
        #expect(lookups.count == 1)
        #expect(table.lookupAnswered(lookups[0].key, generation: lookups[0].generation, fate: .sold, now: at(2001))
            == .resolved(.giveBack))
        // And a claimed retry whose replay names the same order gives its unit back too.
        inDoubt(&table, request(1), at: at(3000))
        guard case .claimed(let claimed) = table.claim(PurchaseKey(request(1))) else { Issue.record("not claimed"); return }
        #expect(table.forwardEnded(request(1), generation: claimed, fate: .sold, now: at(3001)) == .giveBack)
        #expect(table.count == 0 && table.heldCount == 0)
    }

    // MARK: - What answers say

    @Test func forwardFates() {
        typealias T = InDoubtTable
        let purchased = PurchaseResponse(outcome: .purchased, orderId: 1, edgeId: 7)
        let replayedHere = PurchaseResponse(outcome: .purchased, orderId: 1, replayed: true, edgeId: 7)
        let replayedElsewhere = PurchaseResponse(outcome: .purchased, orderId: 1, replayed: true, edgeId: 3)
        #expect(T.fate(ofForward: .success(purchased), carriesInDoubtUnit: false, edgeID: 7) == .sold)
        #expect(T.fate(ofForward: .success(replayedHere), carriesInDoubtUnit: false, edgeID: 7) == .giveBack)
        #expect(T.fate(ofForward: .success(replayedHere), carriesInDoubtUnit: true, edgeID: 7) == .sold)
        #expect(T.fate(ofForward: .success(replayedElsewhere), carriesInDoubtUnit: true, edgeID: 7) == .giveBack)
        #expect(T.fate(ofForward: .success(PurchaseResponse(outcome: .soldOut)), carriesInDoubtUnit: false, edgeID: 7) == .giveBack)

        // Failed before it left the process: nothing bought, unless the unit was already in doubt.
        let notSent = RPCError.notSent(.deadlineExceeded, "deadline passed before the call was sent")
        #expect(notSent.wasNotSent)
        #expect(T.fate(ofForward: .failure(notSent), carriesInDoubtUnit: false, edgeID: 7) == .giveBack)
        #expect(T.fate(ofForward: .failure(notSent), carriesInDoubtUnit: true, edgeID: 7) == .inDoubt)
        let lost = RPCError(.unavailable, "connection closed with the call in flight")
        #expect(T.fate(ofForward: .failure(lost), carriesInDoubtUnit: false, edgeID: 7) == .inDoubt)
        let refused = RPCError(.resourceExhausted, "queue full")
        #expect(T.fate(ofForward: .failure(refused), carriesInDoubtUnit: false, edgeID: 7) == .giveBack)
        #expect(T.fate(ofForward: .failure(refused), carriesInDoubtUnit: true, edgeID: 7) == .inDoubt, "says nothing of the first forward")
        let reused = RPCError(.failedPrecondition, "request id reused with another product or user")
        #expect(T.fate(ofForward: .failure(reused), carriesInDoubtUnit: true, edgeID: 7) == .giveBack)
    }

    @Test func lookupFates() {
        typealias T = InDoubtTable
        #expect(T.fate(ofLookup: .success(PurchaseResponse(outcome: .purchased, replayed: true, edgeId: 7)), edgeID: 7) == .sold)
        #expect(T.fate(ofLookup: .success(PurchaseResponse(outcome: .purchased, replayed: true, edgeId: 3)), edgeID: 7) == .giveBack)
        #expect(T.fate(ofLookup: .success(PurchaseResponse(outcome: .soldOut)), edgeID: 7) == .giveBack)
        #expect(T.fate(ofLookup: .failure(RPCError(.failedPrecondition, "reused")), edgeID: 7) == .giveBack)
        #expect(T.fate(ofLookup: .failure(RPCError(.unavailable, "down")), edgeID: 7) == .inDoubt)
    }
}

@Suite struct BackoffTests {
    @Test func growsToItsCapWithBoundedJitter() {
        var fixed = Backoff(initial: .milliseconds(100), max: .seconds(1), jitter: 0).makeIterator()
        #expect((0..<6).map { _ in fixed.next() } == [100, 200, 400, 800, 1000, 1000].map { .milliseconds($0) })
        var jittered = Backoff(initial: .milliseconds(100), max: .seconds(1), jitter: 0.2).makeIterator()
        _ = jittered.next()
        for base in [200, 400, 800, 1000, 1000] {
            let delay = jittered.next()
            #expect(delay >= .milliseconds(base) * 0.8 && delay <= .milliseconds(base) * 1.2, "\(delay) around \(base) ms")
        }
    }
}
