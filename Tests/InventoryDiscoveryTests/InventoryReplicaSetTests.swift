import Addressing
import NIOCore
import Testing
import Wire

@testable import InventoryDiscovery

/// The choice of an inventory replica per call: least in flight, round robin on ties, a failed replica skipped
/// at once and retried after its backoff.
@Suite struct InventoryReplicaSetTests {
    let a = HostPort(host: "10.0.0.1", port: 7100)
    let b = HostPort(host: "10.0.0.2", port: 7100)
    let c = HostPort(host: "10.0.0.3", port: 7100)
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    /// No jitter, so the test knows each delay.
    let backoff = Backoff(initial: .milliseconds(100), max: .milliseconds(400), jitter: 0)

    @Test func emptySetChoosesNothing() {
        var set = InventoryReplicaSet([], backoff: backoff)
        #expect(set.choose(now: start) == nil)
        set.finished(a, .unavailable, now: start)  // unknown replica: ignored
        #expect(set.replicas.isEmpty)
    }

    @Test func idleReplicasTakeTurns() {
        var set = InventoryReplicaSet([a, b, c], backoff: backoff)
        var chosen: [HostPort] = []
        for _ in 0..<6 {
            let replica = set.choose(now: start)!
            chosen.append(replica)
            set.finished(replica, .answered, now: start)
        }
        #expect(chosen == [a, b, c, a, b, c])
    }

    @Test func leastInFlightWins() {
        var set = InventoryReplicaSet([a, b], backoff: backoff)
        #expect(set.choose(now: start) == a)  // a: 1
        #expect(set.choose(now: start) == b)  // b: 1
        #expect(set.choose(now: start) == a)  // a: 2
        set.finished(a, .answered, now: start)
        set.finished(a, .answered, now: start)  // a: 0, b: 1
        #expect(set.choose(now: start) == a)  // the idle one, though b is next in turn
        #expect(set.choose(now: start) == b)  // a: 1, b: 1: b's turn
    }

    @Test func failedReplicaIsSkippedAtOnceAndRetriedAfterItsBackoff() {
        var set = InventoryReplicaSet([a, b], backoff: backoff)
        let first = set.choose(now: start)!
        #expect(first == a)
        set.finished(a, .unavailable, now: start)
        // Every call goes to b while a waits out 100 ms.
        for _ in 0..<5 {
            #expect(set.choose(now: start + .milliseconds(50)) == b)
            set.finished(b, .answered, now: start + .milliseconds(50))
        }
        // Due again: a takes its turn, fails again, and waits twice as long.
        let due = start + .milliseconds(100)
        var seen: Set<HostPort> = []
        for _ in 0..<2 {
            let replica = set.choose(now: due)!
            seen.insert(replica)
            set.finished(replica, replica == a ? .unavailable : .answered, now: due)
        }
        #expect(seen == [a, b])
        #expect(set.replicas.first { $0.address == a }?.retryAt == due + .milliseconds(200))
        // An answer makes it healthy, and its next failure waits the first delay again.
        let later = due + .milliseconds(200)
        while set.choose(now: later) != a {}
        set.finished(a, .answered, now: later)
        #expect(set.replicas.first { $0.address == a }?.retryAt == nil)
        set.finished(a, .unavailable, now: later)
        #expect(set.replicas.first { $0.address == a }?.retryAt == later + .milliseconds(100))
    }

    @Test func everyReplicaWaitingTriesTheOneDueFirst() {
        var set = InventoryReplicaSet([a, b], backoff: backoff)
        _ = set.choose(now: start)
        _ = set.choose(now: start)
        set.finished(b, .unavailable, now: start)
        set.finished(a, .unavailable, now: start + .milliseconds(10))
        #expect(set.choose(now: start + .milliseconds(20)) == b)
    }

    @Test func aCallTriedOnAReplicaGoesElsewhereOrNowhere() {
        var set = InventoryReplicaSet([a, b], backoff: backoff)
        #expect(set.choose(now: start) == a)
        set.finished(a, .unavailable, now: start)
        #expect(set.choose(now: start, excluding: [a]) == b)
        set.finished(b, .unavailable, now: start)
        #expect(set.choose(now: start, excluding: [a, b]) == nil, "tried everywhere")
        #expect(set.choose(now: start, excluding: [b]) == a, "a waiting replica is still tried when it is the only one left")
    }

    @Test func replacingKeepsTheStateOfReplicasThatStay() {
        var set = InventoryReplicaSet([a, b], backoff: backoff)
        _ = set.choose(now: start)  // a in flight
        set.finished(b, .unavailable, now: start)
        set.replace(with: [b, c, b, c])
        #expect(set.addresses == [b, c])
        #expect(set.replicas[0].retryAt != nil)
        #expect(set.replicas[1].inFlight == 0 && set.replicas[1].retryAt == nil)
        // The call in flight on a, which left, ends unnoticed.
        set.finished(a, .answered, now: start)
        #expect(set.addresses == [b, c])
        #expect(set.choose(now: start) == c)
    }

    @Test func onlyTheTransportsUnavailableMarksAReplica() {
        #expect(InventoryReplicaSet.outcome(of: nil, connected: true) == .answered)
        let lost = RPCError(.unavailable, "connection closed with the call in flight")
        #expect(InventoryReplicaSet.outcome(of: lost, connected: false) == .unavailable)
        #expect(InventoryReplicaSet.outcome(of: RPCError.notSent(.unavailable, "cannot connect"), connected: true) == .unavailable)
        // The replica answered UNAVAILABLE itself (its hot database is down): it still serves the rest.
        #expect(InventoryReplicaSet.outcome(of: RPCError(.unavailable, "hot database unavailable"), connected: true) == .answered)
        #expect(InventoryReplicaSet.outcome(of: RPCError(.deadlineExceeded, "late"), connected: false) == .answered)
        #expect(InventoryReplicaSet.outcome(of: RPCError(.failedPrecondition, "request id reused"), connected: true) == .answered)
    }
}
