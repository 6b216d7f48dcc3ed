@testable import InventoryCore
import Testing

/// How `order_batch`'s rows are matched to the calls of a batch (OrderBatch.rows): by the entry index the procedure
/// returns, each call its own row, an entry without one naming no order.
struct OrderBatchRowsTests {
    static func row(_ request: Int64) -> OrderAction.Row {
        OrderAction.Row(outcome: 1, requestId: request, orderId: request * 10, userId: 1, state: "paid",
                        payByUnixMs: nil, endedUnixMs: 5, reason: nil)
    }

    @Test func eachCallGetsTheRowOfItsIndex() {
        let rows = OrderBatch.rows(count: 4, [(3, Self.row(30)), (1, Self.row(10)), (4, Self.row(10))])
        #expect(rows == [Self.row(10), nil, Self.row(30), Self.row(10)])
    }

    @Test func indexesOutsideTheBatchAreIgnored() {
        #expect(OrderBatch.rows(count: 2, [(0, Self.row(1)), (3, Self.row(2)), (-1, Self.row(3))]) == [nil, nil])
        #expect(OrderBatch.rows(count: 0, []).isEmpty)
    }
}
