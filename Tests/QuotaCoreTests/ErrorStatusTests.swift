import Testing
import Wire
import ZooKeeperClient

@testable import QuotaCore

/// Each domain error says once which status it becomes (`RPCErrorConvertible`), and `RPCError.wrapping` uses it.
/// (ZooKeeper's errors: the quota service's conformance; PostgreSQL's are in InventoryCoreTests.)
@Suite struct ErrorStatusTests {
    @Test func zooKeeperUnreachableIsUnavailableAndTheRestInternal() {
        for code: ZooKeeperError.Code in [.connectionLoss, .operationTimeout, .sessionExpired, .closing, .invalidState, .connectTimeout] {
            #expect(RPCError.wrapping(ZooKeeperError(code: code, message: "x")).code == .unavailable, "\(code)")
        }
        #expect(RPCError.wrapping(ZooKeeperError(code: .noNode, message: "x")).code == .internal)
    }

    @Test func oneRuleSaysWhichOutcomesMayBeUnknown() {
        let unknown: [RPCError.Code] = [.unavailable, .deadlineExceeded, .internal, .unknown, .cancelled, .aborted, .dataLoss]
        let known: [RPCError.Code] = [
            .invalidArgument, .notFound, .alreadyExists, .permissionDenied, .unauthenticated, .failedPrecondition,
            .resourceExhausted, .unimplemented, .outOfRange,
        ]
        for code in unknown { #expect(code.outcomeMayBeUnknown, "\(code)") }
        for code in known { #expect(!code.outcomeMayBeUnknown, "\(code)") }
    }
}
