import PostgresClient
import Testing
import Wire
import ZooKeeperClient

@testable import InventoryService
@testable import QuotaService

/// Each domain error says once which status it becomes (`RPCErrorConvertible`), and `RPCError.wrapping` uses it.
@Suite struct ErrorStatusTests {
    @Test func zooKeeperUnreachableIsUnavailableAndTheRestInternal() {
        for code: ZooKeeperError.Code in [.connectionLoss, .operationTimeout, .sessionExpired, .closing, .invalidState, .connectTimeout] {
            #expect(RPCError.wrapping(ZooKeeperError(code: code, message: "x")).code == .unavailable, "\(code)")
        }
        #expect(RPCError.wrapping(ZooKeeperError(code: .noNode, message: "x")).code == .internal)
    }

    @Test func postgresUnreachableCancelledOrRolledBackIsUnavailableAndTheRestInternal() {
        // 08006 connection failure, 57014 query cancelled (the statement timeout), 40001 serialization failure.
        for sqlState in ["08006", "57014", "40001", "40P01"] {
            #expect(RPCError.wrapping(PostgresError(code: sqlState, message: "x")).code == .unavailable, "\(sqlState)")
        }
        #expect(RPCError.wrapping(PostgresError(code: "23505", message: "x")).code == .internal)
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
