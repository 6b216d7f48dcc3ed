@testable import InventoryCore
import NIOCore
import Testing
import Wire

/// The pure decisions behind hot-item isolation: queue expiry, a pool's reachability, the admin gate.
@Suite struct HotIsolationUnitTests {
    struct Item: LaneItem, Equatable {
        var requestId: Int64
        var userId: Int64 { requestId }
        var lookupOnly: Bool { false }
        var deadline: NIODeadline?
    }

    @Test func queuedItemsExpireAtTheirDeadlineAndLeaveTheReadyList() {
        var lanes = PurchaseLanes<Item>(queueLimit: 100, maxBatch: 10)
        let now = NIODeadline.uptimeNanoseconds(1_000_000_000)
        _ = lanes.admit(Item(requestId: 1, deadline: now + .milliseconds(10)), product: 1)
        _ = lanes.admit(Item(requestId: 2, deadline: nil), product: 1)
        _ = lanes.admit(Item(requestId: 3, deadline: now + .milliseconds(30)), product: 1)
        _ = lanes.admit(Item(requestId: 4, deadline: now + .milliseconds(10)), product: 2)
        let none = lanes.expire(now: now)
        #expect(none.isEmpty, "nothing is due yet")
        #expect(lanes.earliestDeadline == now + .milliseconds(10))
        let first = lanes.expire(now: now + .milliseconds(10)).map(\.requestId).sorted()
        #expect(first == [1, 4])
        #expect(lanes.queuedCount == 2)
        #expect(lanes.earliestDeadline == now + .milliseconds(30))
        // Product 2's lane is empty now: the next batch is product 1's, and then nothing.
        let batch = lanes.nextBatch()
        let after = lanes.nextBatch()
        #expect(batch?.productKey == 1 && batch?.purchases.map(\.requestId) == [2, 3])
        #expect(after == nil && !lanes.hasWork)
        // Requeued items count again.
        lanes.requeue([Item(requestId: 5, deadline: now + .milliseconds(5))], product: 3)
        let requeued = lanes.expire(now: now + .milliseconds(5)).map(\.requestId)
        #expect(requeued == [5])
        #expect(!lanes.hasWork && lanes.queuedCount == 0)
    }

    @Test func aPoolRefusesBeforeStartAndWhileNoConsumerCanConnect() {
        var link = PoolLink()
        #expect(!link.admits)
        let started = link.start()
        let startedAgain = link.start()
        #expect(started && link.admits && !startedAgain)
        let epoch = link.connected()
        let closed = link.connectFailed()
        #expect(closed, "the first failure closes the pool")
        #expect(!link.admits && link.epoch != epoch, "connections of the old epoch are checked again")
        let closedAgain = link.connectFailed()
        #expect(!closedAgain, "closed already")
        let next = link.connected()
        #expect(link.admits && next == link.epoch)
    }

    @Test func theAdminGateFailsFastWhileUnreachableAndBoundsWaitingCalls() {
        var gate = AdminGate(
            ready: false, maxWaiting: 2, backoff: Backoff(initial: .milliseconds(100), max: .milliseconds(300), jitter: 0))
        let now = NIODeadline.uptimeNanoseconds(1_000_000_000)
        let early = gate.enter(now: now)
        #expect(early?.reason == "is not reachable yet")
        gate.markReady()
        let first = gate.enter(now: now)
        let second = gate.enter(now: now)
        let third = gate.enter(now: now)
        #expect(first == nil && second == nil)
        #expect(third?.reason == "is too slow to answer more calls")
        gate.connectFailed(now: now)
        #expect(gate.mayConnect(now: now + .milliseconds(50)) != nil, "a waiting call does not try again at once")
        gate.leave()
        gate.leave()
        let during = gate.enter(now: now + .milliseconds(50))
        #expect(during?.reason == "is unreachable")
        let after = gate.enter(now: now + .milliseconds(100))
        #expect(after == nil, "one call tries again after the backoff")
        gate.connectFailed(now: now + .milliseconds(100))
        #expect(gate.retryAt == now + .milliseconds(300), "the backoff doubles")
        gate.connected()
        let recovered = gate.enter(now: now + .milliseconds(101))
        #expect(gate.retryAt == nil && recovered == nil)
    }
}
