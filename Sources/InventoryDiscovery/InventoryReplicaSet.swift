import Addressing
import NIOCore
import Wire

/// Which inventory replica takes the next call: the pure decision behind `InventoryReplicas`. Every replica serves
/// every call (they share the databases, which are the truth), so the choice is only about load and liveness:
/// the healthy replica with the fewest calls in flight, ties broken round robin. A replica whose call failed
/// UNAVAILABLE in the transport (connection refused or lost) is skipped at once until its `Backoff` delay has
/// passed, then tried again; a success makes it healthy. When every replica is waiting, the one
/// due first is tried anyway: a call fails fast on a dead one and nothing better exists.
public struct InventoryReplicaSet: Sendable {
    public struct Replica: Sendable, Equatable {
        public let address: HostPort
        public fileprivate(set) var inFlight = 0
        /// Skipped until then; nil: healthy.
        public fileprivate(set) var retryAt: NIODeadline?
        fileprivate var delays: Backoff.Iterator

        fileprivate init(address: HostPort, backoff: Backoff) {
            self.address = address
            self.delays = backoff.makeIterator()
        }
    }

    /// How a call on a replica ended, as far as choosing goes.
    public enum Outcome: Sendable, Equatable {
        /// The replica answered (any answer but UNAVAILABLE).
        case answered
        /// UNAVAILABLE in the transport: the replica is dead or unreachable.
        case unavailable
    }

    public let backoff: Backoff
    public private(set) var replicas: [Replica] = []
    private var cursor = 0

    public init(_ addresses: [HostPort] = [], backoff: Backoff = Backoff(initial: .milliseconds(50), max: .seconds(2))) {
        self.backoff = backoff
        self.replace(with: addresses)
    }

    public var addresses: [HostPort] { replicas.map(\.address) }

    /// The set is now `addresses` (duplicates dropped, order kept): replicas that stay keep their state (calls in
    /// flight, backoff), new ones start healthy, the others leave (their calls in flight still end, unnoticed).
    public mutating func replace(with addresses: [HostPort]) {
        var seen = Set<HostPort>()
        let old = Dictionary(replicas.map { ($0.address, $0) }, uniquingKeysWith: { first, _ in first })
        replicas = addresses.compactMap { address in
            guard seen.insert(address).inserted else { return nil }
            return old[address] ?? Replica(address: address, backoff: backoff)
        }
        if cursor >= replicas.count { cursor = 0 }
    }

    /// The replica for the next call, counted in flight until `finished`; never one of `excluding` (those a call
    /// was already tried on). Nil only when no other replica is in the set.
    public mutating func choose(now: NIODeadline, excluding: Set<HostPort> = []) -> HostPort? {
        let count = replicas.count
        var best: Int?
        var dueFirst: Int?
        for offset in 0..<count {
            let index = (cursor + offset) % count
            let replica = replicas[index]
            if excluding.contains(replica.address) { continue }
            if let retryAt = replica.retryAt, retryAt > now {
                if dueFirst.map({ retryAt < replicas[$0].retryAt ?? now }) ?? true { dueFirst = index }
                continue
            }
            if best.map({ replica.inFlight < replicas[$0].inFlight }) ?? true { best = index }
        }
        // Every replica is waiting: the one due first.
        guard let chosen = best ?? dueFirst else { return nil }
        cursor = (chosen + 1) % count
        replicas[chosen].inFlight += 1
        return replicas[chosen].address
    }

    /// A call chosen on `address` ended. An UNAVAILABLE puts the replica aside for its next backoff delay (longer
    /// each time in a row); an answer makes it healthy again.
    public mutating func finished(_ address: HostPort, _ outcome: Outcome, now: NIODeadline) {
        guard let index = replicas.firstIndex(where: { $0.address == address }) else { return }
        replicas[index].inFlight = max(0, replicas[index].inFlight - 1)
        switch outcome {
        case .answered:
            if replicas[index].retryAt != nil {
                replicas[index].retryAt = nil
                replicas[index].delays = backoff.makeIterator()
            }
        case .unavailable:
            let delay = replicas[index].delays.next()
            replicas[index].retryAt = now + TimeAmount(delay)
        }
    }

    /// What a call's error says about its replica: UNAVAILABLE from the transport (not sent, or the connection lost:
    /// `connected` false) puts it aside; the replica's own UNAVAILABLE over a live connection (its hot database
    /// down, say: every replica shares it) does not, nor does any other answer.
    public static func outcome(of error: (any Error)?, connected: Bool) -> Outcome {
        guard let error else { return .answered }
        let failure = RPCError.wrapping(error)
        guard failure.code == .unavailable, failure.wasNotSent || !connected else { return .answered }
        return .unavailable
    }
}
