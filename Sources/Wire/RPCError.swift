import Proto

/// The error of a call: a status code modelled on gRPC's, a message, and optionally the error that caused it.
public struct RPCError: Error, Sendable, CustomStringConvertible {
    /// Every non-OK status; extensible like grpc-swift's, so a newer peer's code survives as `.init(rawValue:)`.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        public static let cancelled = Code(rawValue: WireStatusCode.cancelled.rawValue)
        public static let unknown = Code(rawValue: WireStatusCode.unknown.rawValue)
        public static let invalidArgument = Code(rawValue: WireStatusCode.invalidArgument.rawValue)
        public static let deadlineExceeded = Code(rawValue: WireStatusCode.deadlineExceeded.rawValue)
        public static let notFound = Code(rawValue: WireStatusCode.notFound.rawValue)
        public static let alreadyExists = Code(rawValue: WireStatusCode.alreadyExists.rawValue)
        public static let permissionDenied = Code(rawValue: WireStatusCode.permissionDenied.rawValue)
        public static let resourceExhausted = Code(rawValue: WireStatusCode.resourceExhausted.rawValue)
        public static let failedPrecondition = Code(rawValue: WireStatusCode.failedPrecondition.rawValue)
        public static let aborted = Code(rawValue: WireStatusCode.aborted.rawValue)
        public static let outOfRange = Code(rawValue: WireStatusCode.outOfRange.rawValue)
        public static let unimplemented = Code(rawValue: WireStatusCode.unimplemented.rawValue)
        public static let `internal` = Code(rawValue: WireStatusCode.internal.rawValue)
        public static let unavailable = Code(rawValue: WireStatusCode.unavailable.rawValue)
        public static let dataLoss = Code(rawValue: WireStatusCode.dataLoss.rawValue)
        public static let unauthenticated = Code(rawValue: WireStatusCode.unauthenticated.rawValue)

        public var description: String {
            let name = WireStatusCode(rawValue: rawValue).description
            return name.hasPrefix("WireStatusCode(") ? "code \(rawValue)" : name
        }
    }

    public var code: Code
    public var message: String
    public var cause: (any Error)?

    public init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String {
        if let cause { return "\(code): \(message) (cause: \(cause))" }
        return "\(code): \(message)"
    }

    /// Any error as an `RPCError`: itself if it is one, the status it names if it is `RPCErrorConvertible`, INTERNAL
    /// otherwise.
    public static func wrapping(_ error: any Error) -> RPCError {
        if let error = error as? RPCError { return error }
        if let error = error as? any RPCErrorConvertible { return RPCError(error.rpcErrorCode, error.rpcErrorMessage, cause: error) }
        return RPCError(.internal, "internal error", cause: error)
    }
}
