/// A failure reported by PostgreSQL or by libpq.
///
/// `code` is the SQLSTATE (for example `23505` unique violation, `40001` serialization failure).
/// Failures of the connection itself carry class `08` codes (`08001` cannot connect, `08006` lost).
public struct PostgresError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: String
    public var message: String
    public var detail: String?
    public var hint: String?
    /// The constraint a violation names, to tell one unique key from another.
    public var constraint: String?

    public init(code: String, message: String, detail: String? = nil, hint: String? = nil, constraint: String? = nil) {
        self.code = code
        self.message = message
        self.detail = detail
        self.hint = hint
        self.constraint = constraint
    }

    /// The connection is unusable: call `reset()` (or connect anew) before the next query.
    public var isConnectionFailure: Bool { code.hasPrefix("08") }
    public var isUniqueViolation: Bool { code == "23505" }
    public var isCheckViolation: Bool { code == "23514" }
    /// Serialization failure or deadlock: the transaction may be retried as a whole.
    public var isRetryableTransactionFailure: Bool { code == "40001" || code == "40P01" }
    public var isQueryCanceled: Bool { code == "57014" }

    public var description: String {
        var text = "PostgresError \(code): \(message)"
        if let detail { text += " (\(detail))" }
        return text
    }

    static func connectionFailure(_ message: String, code: String = "08006") -> PostgresError {
        PostgresError(code: code, message: message)
    }
}
