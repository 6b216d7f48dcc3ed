@testable import InventoryCore
import NIOCore
import Testing

/// The order calls' queue (OrderQueue), pure: arrival order, batches up to the maximum, the limit, calls put back in
/// front, and calls past their deadline taken out for an answer while the others stay queued.
struct OrderQueueTests {
    struct Call: QueuedCall, Equatable {
        var id: Int
        var deadline: NIODeadline?
    }

    @Test func batchesTakeTheOldestCallsUpToTheMaximum() {
        var queue = OrderQueue<Call>(queueLimit: 10, maxBatch: 3)
        for id in 1...5 { _ = queue.admit(Call(id: id)) }
        let first = queue.nextBatch().map(\.id)
        let second = queue.nextBatch().map(\.id)
        #expect(first == [1, 2, 3] && second == [4, 5])
        #expect(!queue.hasWork)
    }

    @Test func aFullQueueRefusesAndRequeuedCallsGoFirst() {
        var queue = OrderQueue<Call>(queueLimit: 3, maxBatch: 2)
        let admitted = (1...4).map { queue.admit(Call(id: $0)) }
        #expect(admitted == [true, true, true, false], "past the limit")
        let taken = queue.nextBatch()
        queue.requeue(taken)
        #expect(queue.count == 3)
        let again = queue.nextBatch().map(\.id)
        let drained = queue.drainAll().map(\.id)
        #expect(again == [1, 2] && drained == [3] && !queue.hasWork)
    }

    @Test func callsPastTheirDeadlineAreTakenOutAndTheOthersStay() {
        let now = NIODeadline.now()
        var queue = OrderQueue<Call>(queueLimit: 10, maxBatch: 10)
        _ = queue.admit(Call(id: 1, deadline: now + .seconds(10)))
        _ = queue.admit(Call(id: 2, deadline: now - .milliseconds(1)))
        _ = queue.admit(Call(id: 3))
        _ = queue.admit(Call(id: 4, deadline: now))
        let due = queue.expire(now: now).map(\.id)
        let dueAgain = queue.expire(now: now).map(\.id)
        let later = queue.expire(now: now + .seconds(11)).map(\.id)
        let left = queue.nextBatch().map(\.id)
        #expect(due == [2, 4])
        #expect(dueAgain.isEmpty, "nothing else is due")
        #expect(later == [1] && left == [3])
    }
}
