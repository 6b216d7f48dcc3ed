import Proto

// `RPCAccess` (who may call a method) is declared in Proto, beside the generated method table that says it per
// method.

/// The tokens a server accepts, one per kind. Neither does the other's work: a method needing the service token
/// refuses the operator token like any wrong one, and the other way round.
public struct RPCCredentials: Sendable {
    /// Nil: methods needing that kind of token are refused.
    public var operatorToken: String?
    public var serviceToken: String?

    public init(operatorToken: String? = nil, serviceToken: String? = nil) {
        self.operatorToken = operatorToken
        self.serviceToken = serviceToken
    }

    /// Why a call with `token` may not run a method of `access`; nil when it may. Every wrong token gets the same
    /// answer (whether it is the other kind's is not said: that would confirm a guess), in constant time.
    public func refusal(_ access: RPCAccess, token: String) -> RPCError? {
        let expected: String?
        let kind: String
        switch access {
        case .public: return nil
        case .service: (expected, kind) = (serviceToken, "service")
        case .operator: (expected, kind) = (operatorToken, "operator")
        }
        guard !token.isEmpty else { return RPCError(.unauthenticated, "this method needs the \(kind) token") }
        guard let expected, constantTimeEquals(token, expected) else {
            return RPCError(.permissionDenied, "the \(kind) token was refused")
        }
        return nil
    }
}

func constantTimeEquals(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    var difference = UInt8(x.count == y.count ? 0 : 1)
    for index in 0..<min(x.count, y.count) { difference |= x[index] ^ y[index] }
    return difference == 0
}
