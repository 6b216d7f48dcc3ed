import Synchronization

/// A result set once and awaited by any number of tasks: a service's "registered" (or "failed before it could").
/// The first `settle` wins; later ones change nothing, so a service may settle on every path out of its `run`.
public final class Settled<Value: Sendable>: Sendable {
    private enum State {
        case pending([UInt64: CheckedContinuation<Value, any Error>])
        case settled(Result<Value, any Error>)
    }

    private let state = Mutex(State.pending([:]))
    private let nextWaiter = Atomic<UInt64>(0)

    public init() {}

    public func settle(_ result: Result<Value, any Error>) {
        let waiters = state.withLock { state -> [CheckedContinuation<Value, any Error>] in
            guard case .pending(let waiters) = state else { return [] }
            state = .settled(result)
            return Array(waiters.values)
        }
        for waiter in waiters { waiter.resume(with: result) }
    }

    /// Waits for the result; at once if it is settled. A cancelled waiter throws `CancellationError` at once: a
    /// service stopping before the result came (its READY line waiting for a registration) must not hang its group.
    public func value() async throws -> Value {
        let id = nextWaiter.wrappingAdd(1, ordering: .relaxed).oldValue
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let now = state.withLock { state -> Result<Value, any Error>? in
                    switch state {
                    case .pending(var waiters):
                        // Cancelled before it waited: the handler below found nothing to resume.
                        if Task.isCancelled { return .failure(CancellationError()) }
                        waiters[id] = continuation
                        state = .pending(waiters)
                        return nil
                    case .settled(let result):
                        return result
                    }
                }
                if let now { continuation.resume(with: now) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Value, any Error>? in
                guard case .pending(var waiters) = state, let waiter = waiters.removeValue(forKey: id) else { return nil }
                state = .pending(waiters)
                return waiter
            }
            waiter?.resume(throwing: CancellationError())
        }
    }
}
