@testable import InventoryCore
import NIOCore
import Proto
import Testing
import Wire

/// The purchase queues' state machine and the array codec, without sockets or a database.
@Suite struct InventoryLanesTests {
    struct Item: LaneItem, Equatable {
        var requestId: Int64
        var userId: Int64
        var lookupOnly = false
        var deadline: NIODeadline?
    }

    private static func item(_ id: Int64, user: Int64? = nil, lookupOnly: Bool = false) -> Item {
        Item(requestId: id, userId: user ?? id, lookupOnly: lookupOnly)
    }

    /// Test-side helpers that keep mutations out of `#expect`.
    private struct Lanes {
        var lanes: PurchaseLanes<Item>

        init(queueLimit: Int = 100, maxBatch: Int = 10) {
            lanes = PurchaseLanes(queueLimit: queueLimit, maxBatch: maxBatch)
        }

        mutating func queue(_ item: Item, _ product: Int32 = 1) -> Bool {
            if case .queued = lanes.admit(item, product: product) { return true }
            return false
        }

        mutating func answer(_ item: Item, _ product: Int32 = 1) -> PurchaseResponse? {
            if case .answered(let response) = lanes.admit(item, product: product) { return response }
            return nil
        }

        mutating func refusal(_ item: Item, _ product: Int32 = 1) -> RPCError.Code? {
            if case .rejected(let error) = lanes.admit(item, product: product) { return error.code }
            return nil
        }

        mutating func next() -> (product: Int32, ids: [Int64], generation: UInt64)? {
            lanes.nextBatch().map { ($0.productKey, $0.purchases.map(\.requestId), $0.generation) }
        }
    }

    @Test func boundedQueueRefusesWithResourceExhausted() {
        var lanes = Lanes(queueLimit: 3)
        for id in 1...3 {
            let queued = lanes.queue(Self.item(Int64(id)))
            #expect(queued)
        }
        let refused = lanes.refusal(Self.item(4))
        #expect(refused == .resourceExhausted)
        let otherProduct = lanes.queue(Self.item(5), 2)
        #expect(otherProduct, "another product has a queue of its own")
        #expect(lanes.lanes.queuedCount == 4)
    }

    @Test func batchesAreOldestFirstUpToTheMaximumAndProductsTakeTurns() {
        var lanes = Lanes(maxBatch: 2)
        for id in 1...5 { _ = lanes.queue(Self.item(Int64(id))) }
        _ = lanes.queue(Self.item(100), 2)
        let first = lanes.next(), second = lanes.next(), third = lanes.next(), fourth = lanes.next(), none = lanes.next()
        #expect(first?.product == 1 && first?.ids == [1, 2])
        #expect(second?.product == 2 && second?.ids == [100])
        #expect(third?.ids == [3, 4])
        #expect(fourth?.ids == [5])
        #expect(none == nil)
        #expect(!lanes.lanes.hasWork && lanes.lanes.queuedCount == 0)
    }

    @Test func requeuedPurchasesGoFirst() {
        var lanes = Lanes()
        for id in 1...3 { _ = lanes.queue(Self.item(Int64(id))) }
        let batch = lanes.lanes.nextBatch()!
        _ = lanes.queue(Self.item(4))
        lanes.lanes.requeue(Array(batch.purchases.prefix(2)), product: 1)
        let next = lanes.next()
        #expect(next?.ids == [1, 2, 4])
    }

    @Test func soldOutAnswersFromMemoryAndStillHonoursIdempotency() {
        var lanes = Lanes()
        _ = lanes.queue(Self.item(1))
        let generation = lanes.next()!.generation
        let marked = lanes.lanes.markSoldOut(product: 1, generation: generation)
        let markedAgain = lanes.lanes.markSoldOut(product: 1, generation: generation)
        #expect(marked && !markedAgain, "the lookup is loaded once")
        let whileLoading = lanes.queue(Self.item(2))
        #expect(whileLoading, "while the lookup loads, purchases still go to the database")
        lanes.lanes.soldOutLoaded(product: 1, generation: generation, lookup: SoldOutLookup(byRequest: [
            1: .init(user: 1, order: .init(id: 500, edge: 3)),
            7: .init(user: 7, order: nil),  // closed: answered SOLD_OUT before
        ]))

        let retry = lanes.answer(Self.item(1))
        let lookupOfRetry = lanes.answer(Self.item(1, lookupOnly: true))
        let retryOfClosed = lanes.answer(Self.item(7))
        let lookupOfClosed = lanes.answer(Self.item(7, lookupOnly: true))
        #expect(retry == PurchaseResponse(outcome: .purchased, orderId: 500, replayed: true, edgeId: 3))
        #expect(lookupOfRetry == PurchaseResponse(outcome: .purchased, orderId: 500, replayed: true, edgeId: 3))
        #expect(retryOfClosed == PurchaseResponse(outcome: .soldOut, replayed: true))
        #expect(lookupOfClosed == PurchaseResponse(outcome: .soldOut))
        // A settled request id sent by another user is refused; an id the product has not settled goes to the
        // database (which binds or closes it, and knows the other products' ids).
        let reused = lanes.refusal(Self.item(1, user: 2))
        let reusedClosed = lanes.refusal(Self.item(7, user: 2, lookupOnly: true))
        let newcomer = lanes.queue(Self.item(10))
        let sameBuyer = lanes.queue(Self.item(9, user: 1))
        #expect(reused == .failedPrecondition && reusedClosed == .failedPrecondition)
        #expect(newcomer && sameBuyer)
    }

    @Test func aStockChangeOutranksSoldOutSeenBeforeIt() {
        var lanes = Lanes()
        _ = lanes.queue(Self.item(1))
        let before = lanes.next()!.generation
        lanes.lanes.stockChanged(product: 1)  // a raise committed while that batch ran
        let staleMark = lanes.lanes.markSoldOut(product: 1, generation: before)
        let queued = lanes.queue(Self.item(2))
        #expect(!staleMark && queued)

        // Sold out again later, then raised while the lookup loads: the stale lookup is dropped.
        let later = lanes.next()!.generation
        let marked = lanes.lanes.markSoldOut(product: 1, generation: later)
        lanes.lanes.stockChanged(product: 1)
        lanes.lanes.soldOutLoaded(product: 1, generation: later, lookup: SoldOutLookup())
        let queuedAfterRaise = lanes.queue(Self.item(3))
        #expect(marked && queuedAfterRaise)
    }

    @Test func aSoldOutProductTooLargeToMirrorKeepsUsingTheDatabase() {
        var lanes = Lanes()
        _ = lanes.queue(Self.item(1))
        let generation = lanes.next()!.generation
        let marked = lanes.lanes.markSoldOut(product: 1, generation: generation)
        lanes.lanes.soldOutLoaded(product: 1, generation: generation, lookup: nil)
        let queued = lanes.queue(Self.item(2))
        let markedAgain = lanes.lanes.markSoldOut(product: 1, generation: generation)
        #expect(marked && queued && !markedAgain)
    }

    @Test func integerArraysRoundTripThroughPostgresText() {
        // Int64.min and -1: the bit patterns of request and user ids 2^63 and 2^64-1.
        let values: [Int64] = [1, -7, 0, Int64.max, Int64.min + 1, 1_234_567_890_123, Int64.min, -1]
        let text = PostgresArrays.text(count: values.count) { values[$0] }
        #expect(text == "{1,-7,0,9223372036854775807,-9223372036854775807,1234567890123,-9223372036854775808,-1}")
        #expect(PostgresArrays.integers(text) == values)
        #expect(PostgresArrays.text(count: 0) { _ in 0 } == "{}")
        #expect(PostgresArrays.integers("{}") == [])
        #expect(PostgresArrays.integers("{1,NULL,3}") == [1, 0, 3])
        for bad in ["", "{", "1,2", "{1,,2}", "{a}", "{99999999999999999999}", "{9223372036854775808}", "{-9223372036854775809}", "{1 ,2}"] {
            #expect(PostgresArrays.integers(bad) == nil, "\(bad)")
        }
    }
}
