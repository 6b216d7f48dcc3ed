/// The cause of a client error raised before the request left this process (deadline already passed, no
/// connection, client shut down): the peer never saw the call, so nothing can have happened there. A caller that
/// holds something for the call's sake (the edge's quota unit) may release it at once instead of treating the
/// outcome as unknown.
public struct CallNotSent: Error, Sendable {
    public var underlying: (any Error)?
}

extension RPCError {
    /// An error for a call that was never sent (see `CallNotSent`).
    public static func notSent(_ code: Code, _ message: String, cause: (any Error)? = nil) -> RPCError {
        RPCError(code, message, cause: CallNotSent(underlying: cause))
    }

    /// True when the call never left this process: the peer did nothing with it.
    public var wasNotSent: Bool { self.cause is CallNotSent }
}
