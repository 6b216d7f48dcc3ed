import Testing
import Wire

/// The one rule of which failures a caller treats as "not there right now", and which it may ask again
/// (`RPCError.Code.isUnreachable`, `RPCError.mayRetry(idempotent:)`), beside `outcomeMayBeUnknown`.
@Suite struct RetryRuleTests {
    static let all: [RPCError.Code] = [
        .cancelled, .unknown, .invalidArgument, .deadlineExceeded, .notFound, .alreadyExists, .permissionDenied,
        .resourceExhausted, .failedPrecondition, .aborted, .outOfRange, .unimplemented, .internal, .unavailable,
        .dataLoss, .unauthenticated,
    ]

    @Test func unreachableIsUnavailableOrDeadlineExceeded() {
        for code in Self.all {
            #expect(code.isUnreachable == (code == .unavailable || code == .deadlineExceeded), "\(code)")
        }
    }

    @Test func anUnreachablePeerLeavesTheOutcomeInDoubt() {
        for code in Self.all where code.isUnreachable { #expect(code.outcomeMayBeUnknown, "\(code)") }
    }

    @Test func anIdempotentCallIsAskedAgainWheneverItsOutcomeMayBeUnknown() {
        for code in Self.all {
            #expect(RPCError(code, "x").mayRetry(idempotent: true) == code.outcomeMayBeUnknown, "\(code)")
        }
    }

    @Test func anyOtherCallOnlyOnUnavailable() {
        for code in Self.all {
            #expect(RPCError(code, "x").mayRetry(idempotent: false) == (code == .unavailable), "\(code)")
            #expect(RPCError.notSent(code, "x").mayRetry(idempotent: false) == (code == .unavailable), "\(code)")
        }
    }
}
