import PostgresClient
import Testing
import Wire

@testable import InventoryCore

/// Each domain error says once which status it becomes (`RPCErrorConvertible`), and `RPCError.wrapping` uses it.
/// (PostgreSQL's errors: the inventory's conformance; ZooKeeper's are in QuotaCoreTests.)
@Suite struct PostgresErrorStatusTests {
    @Test func postgresUnreachableCancelledOrRolledBackIsUnavailableAndTheRestInternal() {
        // 08006 connection failure, 57014 query cancelled (the statement timeout), 40001 serialization failure.
        for sqlState in ["08006", "57014", "40001", "40P01"] {
            #expect(RPCError.wrapping(PostgresError(code: sqlState, message: "x")).code == .unavailable, "\(sqlState)")
        }
        #expect(RPCError.wrapping(PostgresError(code: "23505", message: "x")).code == .internal)
    }
}
