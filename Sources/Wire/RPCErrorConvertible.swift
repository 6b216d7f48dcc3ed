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
}

/// A domain error that says, once, which status it becomes on the wire (as grpc-swift-2's `RPCErrorConvertible`):
/// `RPCError.wrapping` uses it, so a handler throws its own errors and never maps them by hand.
public protocol RPCErrorConvertible: Error {
    var rpcErrorCode: RPCError.Code { get }
    var rpcErrorMessage: String { get }
}
