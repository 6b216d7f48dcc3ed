@testable import InventoryCore
import NIOCore
import Proto
import Testing
import Wire

/// What each inventory replica keeps in memory, and why several replicas sharing the databases keep it correct.
@Suite struct ReplicaStateTests {
    struct Item: LaneItem {
        var requestId: Int64
        var userId: Int64
        var lookupOnly = false
        var deadline: NIODeadline?
    }

    /// Replica A mirrors a sold-out product; replica B then raises its stock (A never hears of it). A's stale
    /// mirror answers only request ids settled for good (an order, a closed id: neither ever changes), and sends
    /// every other one to the database, which sells the raised units: a stale mirror never refuses a sale.
    @Test func aStaleSoldOutMirrorOnlyAnswersWhatNeverChanges() {
        var lanes = PurchaseLanes<Item>(queueLimit: 10, maxBatch: 10)
        _ = lanes.admit(Item(requestId: 1, userId: 1), product: 1)
        let generation = lanes.nextBatch()!.generation
        let marked = lanes.markSoldOut(product: 1, generation: generation)
        #expect(marked)
        lanes.soldOutLoaded(product: 1, generation: generation, lookup: SoldOutLookup(byRequest: [
            1: .init(user: 1, order: .init(id: 500, edge: 3)),
            2: .init(user: 2, order: nil),
        ]))
        // (B's raise happens here; A's lanes are not told.)
        guard case .queued = lanes.admit(Item(requestId: 3, userId: 3), product: 1) else {
            Issue.record("a new request id must reach the database")
            return
        }
        guard case .answered(let replay) = lanes.admit(Item(requestId: 1, userId: 1), product: 1),
              case .answered(let closed) = lanes.admit(Item(requestId: 2, userId: 2, lookupOnly: true), product: 1)
        else {
            Issue.record("settled ids are answered from memory")
            return
        }
        #expect(replay.outcome == .purchased && replay.replayed && replay.orderId == 500)
        #expect(closed.outcome == .soldOut)
    }

    // MARK: catalog misses

    let start = NIODeadline.uptimeNanoseconds(10_000_000_000)

    @Test func theFirstMissLoadsAndTheOthersWait() {
        var misses = CatalogMisses<Int>(minInterval: .milliseconds(100), maxWaiting: 10)
        #expect(misses.miss(1) == .load)
        #expect(misses.miss(2) == .wait)  // the load is due, not started: it will answer 2 too
        #expect(misses.start(now: start) == .zero)
        #expect(misses.miss(3) == .wait)  // it read before 3's product may exist: 3 waits for the next load
        let (answered, again) = misses.loaded()
        #expect(answered == [1, 2] && again)
        // The next load is spaced from the last one's start.
        #expect(misses.start(now: start + .milliseconds(30)) == .milliseconds(70))
        let (second, more) = misses.loaded()
        #expect(second == [3] && !more)
        #expect(misses.waitingCount == 0)
    }

    @Test func garbageNamesCannotMakeMoreThanOneLoadPerInterval() {
        var misses = CatalogMisses<Int>(minInterval: .milliseconds(100), maxWaiting: 3)
        var loads = 0
        var now = start
        for id in 0..<50 {
            if misses.miss(id) == .load { loads += 1 }
            if !misses.loading {
                let wait = misses.start(now: now)
                now = now + wait
                _ = misses.loaded()
            }
        }
        // One load per miss here (each came after the last load ended), but never two within 100 ms.
        #expect(loads == 50)
        #expect(now - start >= .milliseconds(100 * 49))
    }

    @Test func tooManyWaitingAreRefused() {
        var misses = CatalogMisses<Int>(minInterval: .milliseconds(100), maxWaiting: 2)
        #expect(misses.miss(1) == .load)
        #expect(misses.miss(2) == .wait)
        #expect(misses.miss(3) == .refuse)
        _ = misses.start(now: start)
        #expect(misses.miss(4) == .refuse)
        #expect(misses.drain() == [1, 2])
        #expect(misses.waitingCount == 0 && !misses.loading)
    }
}
