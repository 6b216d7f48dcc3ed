import NIOCore

/// The refills of one product, decided without I/O (`EdgeQuotaAgent.requestMore` is the driver): one GrantMore in
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
