import NIOCore

/// A hand-written codec for the purchase messages, `PurchaseRequest` and `PurchaseResponse`, which the generated
/// `serialize(into:)` and `init(decoding:)` of those two use (scripts/gen-swift-proto.py's `HAND_CODED`). Every
/// attempt is encoded and decoded on each hop (buyer, edge, inventory), and through protobuf-c each pass cost a
/// `ProtoArena`, the C struct, a malloc'd copy of the product id, `String(cString:)` and a free: protobuf-c and that
/// glue were about 6% of a sale's CPU (`perf record -a` during `flashsale sale`, 16 in flight).
///
/// Like `WireEnvelope`, whose field writers and `Reader` it uses, it produces exactly the bytes protobuf-c packs and
/// accepts and refuses exactly the inputs protobuf-c unpacks, with the same values; `HotMessageCodecTests` checks
/// both against protobuf-c (which stays reachable through `ProtoRuntime`).
enum HotMessageCodec {
    // MARK: PurchaseRequest (request_id 1, user_id 2, product_id 3, edge_id 4, retry 5, lookup_only 6)

    static func serialize(_ request: PurchaseRequest, into buffer: inout ByteBuffer) {
        if request.requestId != 0 { WireEnvelope.writeVarintField(0x08, request.requestId, into: &buffer) }
        if request.userId != 0 { WireEnvelope.writeVarintField(0x10, request.userId, into: &buffer) }
        WireEnvelope.writeStringField(0x1a, request.productId, into: &buffer)
        if request.edgeId != 0 { WireEnvelope.writeVarintField(0x20, UInt64(request.edgeId), into: &buffer) }
        if request.retry { WireEnvelope.writeVarintField(0x28, 1, into: &buffer) }
        if request.lookupOnly { WireEnvelope.writeVarintField(0x30, 1, into: &buffer) }
    }

    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> PurchaseRequest {
        var request = PurchaseRequest()
        try decodeFields(bytes, messageType: "PurchaseRequest", lastField: 6) { number, wireType, reader in
            switch (number, wireType) {
            case (1, 0): return reader.readVarint().map { request.requestId = $0 } != nil
            case (2, 0): return reader.readVarint().map { request.userId = $0 } != nil
            case (3, 2): return reader.readLengthDelimited().map { request.productId = reader.string($0) } != nil
            case (4, 0): return reader.readVarint().map { request.edgeId = UInt32(truncatingIfNeeded: $0) } != nil
            case (5, _): return reader.readBool(wireType: wireType).map { request.retry = $0 } != nil
            case (6, _): return reader.readBool(wireType: wireType).map { request.lookupOnly = $0 } != nil
            default: return nil
            }
        }
        return request
    }

    // MARK: PurchaseResponse (outcome 1, order_id 2, replayed 3, edge_id 4, pay_by_unix_ms 5)

    static func serialize(_ response: PurchaseResponse, into buffer: inout ByteBuffer) {
        // An enum is an int32: a negative value is sign-extended to ten bytes, as protobuf-c does.
        let outcome = response.outcome.rawValue
        if outcome != 0 { WireEnvelope.writeVarintField(0x08, UInt64(bitPattern: Int64(outcome)), into: &buffer) }
        if response.orderId != 0 { WireEnvelope.writeVarintField(0x10, response.orderId, into: &buffer) }
        if response.replayed { WireEnvelope.writeVarintField(0x18, 1, into: &buffer) }
        if response.edgeId != 0 { WireEnvelope.writeVarintField(0x20, UInt64(response.edgeId), into: &buffer) }
        if response.payByUnixMs != 0 {
            WireEnvelope.writeVarintField(0x28, UInt64(bitPattern: response.payByUnixMs), into: &buffer)
        }
    }

    static func decode(_ bytes: UnsafeRawBufferPointer) throws -> PurchaseResponse {
        var response = PurchaseResponse()
        try decodeFields(bytes, messageType: "PurchaseResponse", lastField: 5) { number, wireType, reader in
            switch (number, wireType) {
            // int32: the low 32 bits of the varint, as protobuf-c's parse_int32 keeps.
            case (1, 0): return reader.readVarint().map { response.outcome = PurchaseOutcome(rawValue: Int32(truncatingIfNeeded: $0)) } != nil
            case (2, 0): return reader.readVarint().map { response.orderId = $0 } != nil
            case (3, _): return reader.readBool(wireType: wireType).map { response.replayed = $0 } != nil
            case (4, 0): return reader.readVarint().map { response.edgeId = UInt32(truncatingIfNeeded: $0) } != nil
            case (5, 0): return reader.readVarint().map { response.payByUnixMs = Int64(bitPattern: $0) } != nil
            default: return nil
            }
        }
        return response
    }

    /// protobuf-c's field loop for a message of scalar and string fields 1...`lastField`: `readField` reads one
    /// (false: malformed; nil: not one of its fields at that wire type). A known field with another wire type is
    /// refused (but a bool takes any: see `readBool`); unknown fields are skipped by protobuf-c's scanning rules; a later duplicate wins.
    @inline(__always)
    private static func decodeFields(
        _ bytes: UnsafeRawBufferPointer, messageType: String, lastField: UInt32,
        _ readField: (UInt32, UInt8, inout WireEnvelope.Reader) -> Bool?
    ) throws {
        var reader = WireEnvelope.Reader(bytes)
        while !reader.atEnd {
            guard let (number, wireType) = reader.readTag() else { throw ProtoDecodingError(messageType: messageType) }
            if let read = readField(number, wireType, &reader) {
                guard read else { throw ProtoDecodingError(messageType: messageType) }
            } else if (1...lastField).contains(number) {
                throw ProtoDecodingError(messageType: messageType)  // a known field with the wrong wire type
            } else {
                guard reader.skip(wireType: wireType) else { throw ProtoDecodingError(messageType: messageType) }
            }
        }
    }
}

extension WireEnvelope.Reader {
    /// A bool as protobuf-c's parse_boolean reads it: of any wire type (protobuf-c checks none for a bool), true when
    /// any byte of the field's value has a value bit set, a length-delimited value's length prefix included (so an
    /// over-long varint whose set bits lie past 64 is still true, and so is a non-empty string).
    mutating func readBool(wireType: UInt8) -> Bool? {
        let start = index
        guard skip(wireType: wireType) else { return nil }
        for offset in start..<index where bytes[offset] & 0x7f != 0 { return true }
        return false
    }
}
