import NIOCore
import Synchronization

/// The refills of one product, decided without I/O (`SharedRefills` is the driver): one GrantMore in
/// flight at a time, its outcome shared by every dry attempt that asks meanwhile; after an answer of nothing (or no
/// answer), a hold-off, and the attempts that ask during it wait together for the one ask that follows it.
///
/// So a burst of dry attempts costs one call per hold-off (near sell-out, or with the quota service away), and an
/// attempt that asks again after "nothing" (`PurchaseDecision.refilled`) hears a new answer, not the one it just had:
/// near sell-out the last units are in flight or on other edges, and a moment later they are sold (SOLD_OUT) or back
/// in the pool (a grant).
struct RefillSharing: Equatable {
    /// After an answer of nothing, how long before the quota service is asked again.
    static let holdOff = TimeAmount.milliseconds(50)

    enum Phase: Equatable {
        /// No ask in flight and no hold-off: the entry can go.
        case idle
        case asking
        /// `joined`: someone waits for the ask after the hold-off.
        case holdingOff(joined: Bool)
    }

    private(set) var phase = Phase.idle

    enum OnAsk: Equatable {
        /// Ask the quota service now; the caller waits for this ask.
        case start
        /// Wait for the ask in flight.
        case joinCurrent
        /// Wait for the ask that follows the hold-off.
        case joinNext
    }

    mutating func asked() -> OnAsk {
        switch phase {
        case .idle:
            phase = .asking
            return .start
        case .asking:
            return .joinCurrent
        case .holdingOff:
            phase = .holdingOff(joined: true)
            return .joinNext
        }
    }

    enum OnAnswer: Equatable {
        /// Done: the next ask starts afresh.
        case done
        /// Hold off (`holdOff`), then `holdOffEnded`.
        case holdOff
    }

    mutating func answered(_ outcome: RefillOutcome) -> OnAnswer {
        precondition(phase == .asking, "answered: \(phase)")
        guard outcome == .nothingNow || outcome == .unavailable else {
            phase = .idle
            return .done
        }
        phase = .holdingOff(joined: false)
        return .holdOff
    }

    enum OnHoldOffEnd: Equatable {
        /// Ask now for those who joined during the hold-off (then `answered`).
        case askForTheJoined
        /// Nobody waits (and what was kept for them is answered nothing).
        case done
    }

    mutating func holdOffEnded() -> OnHoldOffEnd {
        guard case .holdingOff(let joined) = phase else { preconditionFailure("holdOffEnded: \(phase)") }
        phase = joined ? .asking : .idle
        return joined ? .askForTheJoined : .done
    }
}

/// `RefillSharing`'s driver for every product of one edge: the promises its callers wait on, and the hold-off's timer
/// on `eventLoop`. The agent (`EdgeQuotaAgent.requestMore`) gives it the ask; tests give it one they answer by hand.
final class SharedRefills: Sendable {
    private struct Refill {
        var sharing = RefillSharing()
        /// The ask the callers wait for: in flight, or while holding off the one that follows.
        var promise: EventLoopPromise<RefillOutcome>
        var ask: @Sendable () -> EventLoopFuture<RefillOutcome>
    }

    private let refills = Mutex<[String: Refill]>([:])
    /// Where the promises and the hold-off's timer live (for the agent: a quota client's, of the process's singleton
    /// group, never shut down, so a timer always fires and no promise is left unfulfilled).
    private let eventLoop: any EventLoop

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// More units of `product`: the answer of the ask in flight, or of the one after the hold-off, or of a new one
    /// made with `ask`.
    func request(
        _ product: String, ask: @escaping @Sendable () -> EventLoopFuture<RefillOutcome>
    ) -> EventLoopFuture<RefillOutcome> {
        let (future, starts) = refills.withLock { refills -> (EventLoopFuture<RefillOutcome>, EventLoopPromise<RefillOutcome>?) in
            var refill = refills[product] ?? Refill(promise: eventLoop.makePromise(), ask: ask)
            let onAsk = refill.sharing.asked()
            refills[product] = refill
            return (refill.promise.futureResult, onAsk == .start ? refill.promise : nil)
        }
        if let starts { self.ask(product, ask, completing: starts) }
        return future
    }

    private func ask(
        _ product: String, _ ask: @escaping @Sendable () -> EventLoopFuture<RefillOutcome>,
        completing promise: EventLoopPromise<RefillOutcome>
    ) {
        ask().whenComplete { result in
            let outcome = (try? result.get()) ?? .unavailable
            let holdsOff = self.refills.withLock { refills -> Bool in
                guard var refill = refills[product] else { return false }
                switch refill.sharing.answered(outcome) {
                case .done:
                    refills[product] = nil
                    return false
                case .holdOff:
                    refill.promise = self.eventLoop.makePromise()
                    refills[product] = refill
                    return true
                }
            }
            promise.succeed(outcome)
            if holdsOff { self.eventLoop.scheduleTask(in: RefillSharing.holdOff) { self.holdOffEnded(product) } }
        }
    }

    private func holdOffEnded(_ product: String) {
        let ended = refills.withLock { refills -> (RefillSharing.OnHoldOffEnd, Refill)? in
            guard var refill = refills[product] else { return nil }
            let onEnd = refill.sharing.holdOffEnded()
            refills[product] = onEnd == .done ? nil : refill
            return (onEnd, refill)
        }
        guard let (onEnd, refill) = ended else { return }
        switch onEnd {
        case .askForTheJoined: ask(product, refill.ask, completing: refill.promise)
        case .done: refill.promise.succeed(.unavailable)  // nobody joined: nobody hears it
        }
    }
}
