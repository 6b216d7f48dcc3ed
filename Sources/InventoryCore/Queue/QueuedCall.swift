import NIOCore

/// A queued call (a purchase, an order call) whose caller gives up at `deadline`: past it the call is answered and
/// dropped, never run. Nil: no deadline.
protocol QueuedCall: Sendable {
    var deadline: NIODeadline? { get }
}

extension Optional where Wrapped == NIODeadline {
    /// The earlier of the two deadlines, nil counting as none.
    func earlier(_ other: NIODeadline?) -> NIODeadline? {
        guard let self else { return other }
        guard let other else { return self }
        return Swift.min(self, other)
    }
}

extension CircularBuffer where Element: QueuedCall {
    /// Moves every call whose deadline is at or before `now` into `expired`, keeping the others in order, and returns
    /// the earliest deadline left. The buffer is rebuilt only when something expired.
    mutating func removeExpired(now: NIODeadline, into expired: inout [Element]) -> NIODeadline? {
        var earliestLeft: NIODeadline?
        guard contains(where: { $0.deadline.map { $0 <= now } ?? false }) else {
            for call in self { earliestLeft = earliestLeft.earlier(call.deadline) }
            return earliestLeft
        }
        var kept = CircularBuffer(initialCapacity: count)
        for call in self {
            if let deadline = call.deadline, deadline <= now {
                expired.append(call)
            } else {
                kept.append(call)
                earliestLeft = earliestLeft.earlier(call.deadline)
            }
        }
        self = kept
        return earliestLeft
    }
}
