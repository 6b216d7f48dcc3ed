import PostgresClient
import Testing

@testable import InventoryCore

/// The consumers' statements without a database: what they send (`PurchaseBatch.*Parameters`) and how their
/// answers other than the outcome codes read (pay-by, reused request ids, the sold-out mirror).
@Suite struct PurchaseStatementsTests {
    struct Purchase: PurchaseIdentity {
        var requestId: Int64
        var userId: Int64
        var edgeId: Int32
    }

    static func result(_ rows: [[String?]]) -> PostgresResult {
        PostgresResult(columns: [], rows: rows, commandTag: "SELECT \(rows.count)", affectedRows: rows.count)
    }

    @Test func purchaseSendsTheProductAndOneArrayPerColumn() {
        let purchases = [Purchase(requestId: 11, userId: -5, edgeId: 3), Purchase(requestId: 12, userId: 6, edgeId: 4)]
        #expect(PurchaseBatch.purchaseParameters(product: 7, purchases) == ["7", "{11,12}", "{-5,6}", "{3,4}"])
        #expect(PurchaseBatch.requestParameters(product: 7, purchases) == ["7", "{11,12}", "{-5,6}"])
        #expect(PurchaseBatch.purchaseParameters(product: 7, [Purchase]()) == ["7", "{}", "{}", "{}"])
    }

    @Test func theSoldOutReadAsksOneRowPastItsLimit() {
        #expect(PurchaseBatch.soldOutParameters(product: 9, limit: 1000) == ["9", "1001"])
    }

    @Test func payByIsColumnFourOrZeroWithoutAHoldTime() {
        #expect(PurchaseBatch.payBy(Self.result([["{1}", "{1}", "{10}", "{2}", "1767225600000"]])) == 1_767_225_600_000)
        #expect(PurchaseBatch.payBy(Self.result([["{1}", "{1}", "{10}", "{2}", nil]])) == 0)
        #expect(PurchaseBatch.payBy(Self.result([])) == 0)
    }

    @Test func bindAnswersTheReusedRequestIdsOrFails() throws {
        #expect(try PurchaseBatch.reused(Self.result([["{}"]])) == [])
        #expect(try PurchaseBatch.reused(Self.result([["{4,9}"]])) == [4, 9])
        #expect(throws: PostgresError.self) { try PurchaseBatch.reused(Self.result([[nil]])) }
        #expect(throws: PostgresError.self) { try PurchaseBatch.reused(Self.result([])) }
        #expect(throws: PostgresError.self) { try PurchaseBatch.reused(Self.result([["not an array"]])) }
    }

    @Test func theSoldOutMirrorHoldsOrdersAndClosedIds() throws {
        let rows: [[String?]] = [
            ["11", "5", "101", "3"],  // bought through edge 3
            ["12", "6", "102", nil],  // an order without an edge reads as edge 0
            ["13", "7", nil, nil],  // closed without an order
            [nil, "8", "104", "1"],  // no request id: skipped
        ]
        let lookup = try #require(PurchaseBatch.soldOutLookup(Self.result(rows), limit: 4))
        #expect(lookup.byRequest.count == 3)
        #expect(lookup.byRequest[11]?.user == 5 && lookup.byRequest[11]?.order?.id == 101 && lookup.byRequest[11]?.order?.edge == 3)
        #expect(lookup.byRequest[12]?.order?.edge == 0)
        #expect(lookup.byRequest[13]?.user == 7 && lookup.byRequest[13]?.order == nil)
        // Its answers: the order replayed, SOLD_OUT for a closed id, REUSED for another user, nil for the unknown.
        #expect(try lookup.answer(requestId: 11, userId: 5, lookupOnly: false)?.get().orderId == 101)
        #expect(try lookup.answer(requestId: 13, userId: 7, lookupOnly: false)?.get().outcome == .soldOut)
        #expect(lookup.answer(requestId: 11, userId: 6, lookupOnly: false).map { (try? $0.get()) == nil } == true, "another user's: refused")
        #expect(lookup.answer(requestId: 99, userId: 5, lookupOnly: false) == nil)
    }

    @Test func aProductPastTheLimitIsNotMirrored() {
        let rows: [[String?]] = (1...3).map { [String($0), "1", String(100 + $0), "1"] }
        #expect(PurchaseBatch.soldOutLookup(Self.result(rows), limit: 2) == nil)
        #expect(PurchaseBatch.soldOutLookup(Self.result(rows), limit: 3)?.byRequest.count == 3)
    }
}
