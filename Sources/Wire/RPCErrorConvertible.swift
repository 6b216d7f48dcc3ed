extension RPCError.Code {
    /// The call may or may not have taken effect: the caller retries with the same idempotency key (a purchase's
    /// request id, with `retry: true`; a stock change's change id) and learns the first outcome, never a second
    /// effect. The one rule of every caller: the edge (whether a forwarded purchase keeps its unit in doubt), the
    /// client library's crowds of buyers and the tests (whether they ask again). The inventory's INTERNAL "retry
    /// with the same request id" is one of these, so every caller retries it.
    public var outcomeMayBeUnknown: Bool {
        switch self {
        case .unavailable, .deadlineExceeded, .internal, .unknown, .cancelled, .aborted, .dataLoss: true
        default: false
        }
    }

    /// The peer could not be reached or did not answer in time (UNAVAILABLE, DEADLINE_EXCEEDED): "that process is
    /// not there right now", as against one that answered with a refusal. What an operator's exit code, or a quota
    /// service giving up on an edge for now, goes by. Each such status also leaves the outcome in doubt.
    public var isUnreachable: Bool {
        switch self {
        case .unavailable, .deadlineExceeded: true
        default: false
        }
    }
}

extension RPCError {
    /// Whether asking again may help and cannot do harm. A call that may be repeated with no second effect (a read,
    /// or a change that carries its idempotency key: `idempotent`) is asked again whenever its outcome may be
    /// unknown; any other call only on UNAVAILABLE ("try again": a service reconnecting).
    public func mayRetry(idempotent: Bool) -> Bool {
        idempotent ? code.outcomeMayBeUnknown : code == .unavailable
    }
}

/// A domain error that says, once, which status it becomes on the wire (as grpc-swift-2's `RPCErrorConvertible`):
/// `RPCError.wrapping` uses it, so a handler throws its own errors and never maps them by hand.
public protocol RPCErrorConvertible: Error {
    var rpcErrorCode: RPCError.Code { get }
    var rpcErrorMessage: String { get }
}
