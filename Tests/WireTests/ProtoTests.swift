import NIOCore
import Proto
import Testing

@Suite struct ProtoTests {
    @Test func roundTripsScalarsStringsAndBytes() throws {
        let request = WireRequest(
            callId: 77, method: InventoryRPC.Purchase.name, timeoutUs: 1500, token: "s3cret",
            payload: ByteBuffer(bytes: [0, 1, 2, 255]))
        let decoded = try WireRequest(decoding: request.serializedBuffer())
        #expect(decoded == request)
    }

    @Test func roundTripsNestedRepeatedAndOneof() throws {
        let audit = AuditResponse(
            products: [
                ProductAudit(productId: "p1", totalStock: 1000, remaining: 10, orders: 990, clean: true),
                ProductAudit(productId: "p2", totalStock: 5, remaining: -1, orders: 6, negativeSlots: 1, clean: false),
            ], clean: false)
        #expect(try AuditResponse(decoding: audit.serializedBuffer()) == audit)

        let raise = AdjustStockRequest(productId: "p1", change: .raiseBy(500))
        #expect(try AdjustStockRequest(decoding: raise.serializedBuffer()) == raise)
        let limit = AdjustStockRequest(productId: "p1", change: .saleLimit(0))
        #expect(try AdjustStockRequest(decoding: limit.serializedBuffer()) == limit)
        let none = AdjustStockRequest(productId: "p1")
        #expect(try AdjustStockRequest(decoding: none.serializedBuffer()).change == nil)
    }

    @Test func emptyBytesDecodeToDefaults() throws {
        let empty = try PurchaseRequest(decoding: ByteBuffer())
        #expect(empty == PurchaseRequest())
    }

    @Test func garbageIsRefused() {
        // A field header announcing a length-delimited field far longer than the input.
        #expect(throws: ProtoDecodingError.self) { try WireRequest(decoding: [0x2a, 0xff, 0xff, 0x03, 0x01]) }
        #expect(throws: ProtoDecodingError.self) { try WireRequest(decoding: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]) }
    }

    @Test func unknownEnumValuesSurvive() throws {
        let response = PurchaseResponse(outcome: PurchaseOutcome(rawValue: 99), orderId: 1)
        #expect(try PurchaseResponse(decoding: response.serializedBuffer()).outcome.rawValue == 99)
    }
}
