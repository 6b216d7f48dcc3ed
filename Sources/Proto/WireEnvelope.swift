import NIOCore

/// A hand-written codec for the two envelope messages, `flashsale.wire.Request` and `flashsale.wire.Response`,
/// used by the wire runtime on every call. Every other message (and these two, through their generated
/// `serialize(into:)` / `init(decoding:)`) goes through protobuf-c.
///
/// Why: the envelope is encoded and decoded twice per call (client and server), and through protobuf-c each
/// pass cost a `ProtoArena` plus one malloc per string/bytes field to build the C struct, a separately
/// serialized payload buffer copied into the envelope, and on decode a malloc per field plus a copy of the
/// payload into a fresh `ByteBuffer`: in `perf` profiles of `scripts/bench.sh wire` (16 in flight) the
/// protobuf-c calls, malloc/free and copies of that path were ~12% of the server's samples (the client's
/// per-call timers were the biggest single cost there). This codec writes the envelope and payload straight into
/// the outgoing buffer in one pass (inside the frame header that Wire's `Framing.writeFrame` writes), and decodes
/// the payload as a zero-copy slice of the frame.
///
/// It produces exactly the bytes protobuf-c's pack produces (fields in number order, proto3 zero values
/// omitted, strings cut at their first NUL as protobuf-c's `strlen` does) and accepts and refuses exactly the
/// inputs protobuf-c's unpack does; `EnvelopeCodecTests` checks both against protobuf-c on many random
/// messages and mutated byte strings.
package enum WireEnvelope {
    // MARK: encoding

    /// Appends a Request envelope whose payload field holds whatever `writePayload` appends: the method's message
    /// is serialized once, in place. The frame header around it is Wire's (`Framing.writeFrame`).
    package static func writeRequest(
        into buffer: inout ByteBuffer, callID: UInt64, method: String, timeoutUs: Int64, token: String,
        payload writePayload: (inout ByteBuffer) -> Void
    ) {
        if callID != 0 { writeVarintField(0x08, callID, into: &buffer) }
        writeStringField(0x12, method, into: &buffer)
        if timeoutUs != 0 { writeVarintField(0x18, UInt64(bitPattern: timeoutUs), into: &buffer) }
        writeStringField(0x22, token, into: &buffer)
        writeNestedField(0x2a, into: &buffer, writePayload)
    }

    /// Appends a Response envelope whose payload field holds whatever `writePayload` appends.
    package static func writeResponse(
        into buffer: inout ByteBuffer, callID: UInt64, status: Int32, message: String,
        payload writePayload: (inout ByteBuffer) -> Void
    ) {
        if callID != 0 { writeVarintField(0x08, callID, into: &buffer) }
        // An enum is an int32: a negative value is sign-extended to ten bytes, as protobuf-c does.
        if status != 0 { writeVarintField(0x10, UInt64(bitPattern: Int64(status)), into: &buffer) }
        writeStringField(0x1a, message, into: &buffer)
        writeNestedField(0x22, into: &buffer, writePayload)
    }

    /// Byte-identical to `request.serialize(into:)`.
    package static func encode(_ request: WireRequest, into buffer: inout ByteBuffer) {
        writeRequest(
            into: &buffer, callID: request.callId, method: request.method, timeoutUs: request.timeoutUs,
            token: request.token
        ) { $0.writeImmutableBuffer(request.payload) }
    }

    /// Byte-identical to `response.serialize(into:)`.
    package static func encode(_ response: WireResponse, into buffer: inout ByteBuffer) {
        writeResponse(
            into: &buffer, callID: response.callId, status: response.status.rawValue, message: response.message
        ) { $0.writeImmutableBuffer(response.payload) }
    }

    static func varintSize(_ value: UInt64) -> Int {
        // 1 + (index of the highest set bit) / 7, with 0 taking one byte.
        let bits = 64 - (value | 1).leadingZeroBitCount
        return (bits + 6) / 7
    }

    // Each field below is one `writeWithUnsafeMutableBytes`: its tag, its varints and its bytes stored straight into
    // the buffer's memory. A `writeInteger` per tag byte went through ByteBuffer's generic `setInteger` path
    // (`_setBytesAssumingUniqueBufferAccess`, a `dropFirst` on the integer's bytes, a capacity and uniqueness check
    // each): ~5 % of the machine's CPU during a sale at 16 in flight (`perf record -a`), on the buyers and the edges.

    /// Stores `value` as a varint at `start` (at most 10 bytes); returns where it ends.
    @inline(__always)
    static func storeVarint(_ value: UInt64, into out: UnsafeMutableRawBufferPointer, at start: Int) -> Int {
        var value = value
        var index = start
        while value >= 0x80 {
            out[index] = UInt8(truncatingIfNeeded: value) | 0x80
            value >>= 7
            index += 1
        }
        out[index] = UInt8(truncatingIfNeeded: value)
        return index + 1
    }

    static func writeVarintField(_ tag: UInt8, _ value: UInt64, into buffer: inout ByteBuffer) {
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 11) { out in
            out[0] = tag
            return storeVarint(value, into: out, at: 1)
        }
    }

    /// A string as protobuf-c packs a `char *`: omitted when empty, cut at its first NUL.
    static func writeStringField(_ tag: UInt8, _ string: String, into buffer: inout ByteBuffer) {
        guard !string.isEmpty else { return }
        var string = string
        string.withUTF8 { utf8 in
            let length = utf8.firstIndex(of: 0) ?? utf8.count
            guard length > 0 else { return }
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 11 + length) { out in
                out[0] = tag
                let start = storeVarint(UInt64(length), into: out, at: 1)
                UnsafeMutableRawBufferPointer(rebasing: out[start..<(start + length)])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(utf8)[0..<length]))
                return start + length
            }
        }
    }

    /// A length-delimited field whose length is known only once its content is written: one byte is reserved
    /// for the length (enough below 128 bytes, the common case); a longer content is moved up to make room for
    /// a longer varint, so the bytes stay exactly protobuf-c's. An empty content drops the field (proto3).
    static func writeNestedField(_ tag: UInt8, into buffer: inout ByteBuffer, _ writeContent: (inout ByteBuffer) -> Void) {
        let fieldStart = buffer.writerIndex
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 2) { out in
            out[0] = tag
            out[1] = 0
            return 2
        }
        let contentStart = buffer.writerIndex
        writeContent(&buffer)
        let length = buffer.writerIndex - contentStart
        if length == 0 {
            buffer.moveWriterIndex(to: fieldStart)
        } else if length < 0x80 {
            buffer.setInteger(UInt8(length), at: contentStart - 1)
        } else {
            let extra = varintSize(UInt64(length)) - 1
            try! buffer.copyBytes(at: contentStart, to: contentStart + extra, length: length)
            buffer.moveWriterIndex(forwardBy: extra)
            var index = contentStart - 1
            var value = UInt64(length)
            while value >= 0x80 {
                buffer.setInteger(UInt8(truncatingIfNeeded: value) | 0x80, at: index)
                value >>= 7
                index += 1
            }
            buffer.setInteger(UInt8(truncatingIfNeeded: value), at: index)
        }
    }

    // MARK: decoding

    /// Decodes a Request envelope; its payload is a slice of `frame` (no copy).
    /// Throws `ProtoDecodingError` exactly where protobuf-c's unpack fails.
    package static func decodeRequest(_ frame: ByteBuffer) throws -> WireRequest {
        var request = WireRequest()
        let payload = try decodeEnvelope(frame, messageType: "WireRequest", payloadField: 5) { number, wireType, reader in
            switch (number, wireType) {
            case (1, 0):
                guard let value = reader.readVarint() else { return false }
                request.callId = value
            case (2, 2):
                guard let range = reader.readLengthDelimited() else { return false }
                request.method = reader.string(range)
            case (3, 0):
                guard let value = reader.readVarint() else { return false }
                request.timeoutUs = Int64(bitPattern: value)
            case (4, 2):
                guard let range = reader.readLengthDelimited() else { return false }
                request.token = reader.string(range)
            default:
                return nil
            }
            return true
        }
        if let payload { request.payload = payload }
        return request
    }

    /// Decodes a Response envelope; its payload is a slice of `frame` (no copy).
    /// Throws `ProtoDecodingError` exactly where protobuf-c's unpack fails.
    package static func decodeResponse(_ frame: ByteBuffer) throws -> WireResponse {
        var response = WireResponse()
        let payload = try decodeEnvelope(frame, messageType: "WireResponse", payloadField: 4) { number, wireType, reader in
            switch (number, wireType) {
            case (1, 0):
                guard let value = reader.readVarint() else { return false }
                response.callId = value
            case (2, 0):
                // int32: the low 32 bits of the varint, as protobuf-c's parse_int32 keeps.
                guard let value = reader.readVarint() else { return false }
                response.status = WireStatusCode(rawValue: Int32(truncatingIfNeeded: value))
            case (3, 2):
                guard let range = reader.readLengthDelimited() else { return false }
                response.message = reader.string(range)
            default:
                return nil
            }
            return true
        }
        if let payload { response.payload = payload }
        return response
    }

    /// The field loop both envelopes share. Their last field, `payloadField`, is the payload (bytes); fields
    /// 1..<payloadField go to `readField` (false: malformed; nil: not one of its fields at that wire type). Any
    /// field up to `payloadField` with another wire type is refused, as protobuf-c does; later fields are
    /// skipped. Returns the payload as a slice of `frame`, nil when absent or empty.
    @inline(__always)
    private static func decodeEnvelope(
        _ frame: ByteBuffer, messageType: String, payloadField: UInt32,
        _ readField: (UInt32, UInt8, inout Reader) -> Bool?
    ) throws -> ByteBuffer? {
        var payload: Range<Int>? = nil
        let ok = frame.withUnsafeReadableBytes { bytes -> Bool in
            var reader = Reader(bytes)
            while !reader.atEnd {
                guard let (number, wireType) = reader.readTag() else { return false }
                if number == payloadField && wireType == 2 {
                    guard let range = reader.readLengthDelimited() else { return false }
                    payload = range
                } else if let read = readField(number, wireType, &reader) {
                    guard read else { return false }
                } else if (1...payloadField).contains(number) {
                    return false  // a known field with the wrong wire type
                } else {
                    guard reader.skip(wireType: wireType) else { return false }
                }
            }
            return true
        }
        guard ok else { throw ProtoDecodingError(messageType: messageType) }
        guard let payload, !payload.isEmpty else { return nil }
        return frame.getSlice(at: frame.readerIndex + payload.lowerBound, length: payload.count)!
    }

    /// protobuf-c's scanning rules: a tag of at most 5 bytes, a varint of at most 10, a length prefix of at
    /// most 5 and within the input, wire types 0, 1, 2 and 5 only (groups are refused).
    struct Reader {
        let bytes: UnsafeRawBufferPointer
        var index = 0

        init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

        var atEnd: Bool { index >= bytes.count }

        mutating func readTag() -> (UInt32, UInt8)? {
            let limit = min(bytes.count - index, 5)
            // protobuf-c refuses a first byte without field-number bits (field 0 in one byte), and only that.
            guard limit > 0, bytes[index] & 0xf8 != 0 else { return nil }
            // Accumulated in 64 bits, then cut to 32 after the wire type is shifted out: protobuf-c's field number.
            var tag: UInt64 = 0
            var shift: UInt64 = 0
            for offset in 0..<limit {
                let byte = bytes[index + offset]
                tag |= UInt64(byte & 0x7f) << shift
                shift += 7
                if byte & 0x80 == 0 {
                    index += offset + 1
                    return (UInt32(truncatingIfNeeded: tag >> 3), UInt8(tag & 7))
                }
            }
            return nil
        }

        mutating func readVarint() -> UInt64? {
            let limit = min(bytes.count - index, 10)
            var value: UInt64 = 0
            var shift: UInt64 = 0
            for offset in 0..<limit {
                let byte = bytes[index + offset]
                value |= UInt64(byte & 0x7f) << shift
                shift += 7
                if byte & 0x80 == 0 {
                    index += offset + 1
                    return value
                }
            }
            return nil
        }

        mutating func readLengthDelimited() -> Range<Int>? {
            let limit = min(bytes.count - index, 5)
            var length = 0
            var shift = 0
            for offset in 0..<limit {
                let byte = bytes[index + offset]
                length |= Int(byte & 0x7f) << shift
                shift += 7
                if byte & 0x80 == 0 {
                    let start = index + offset + 1
                    guard length <= bytes.count - start else { return nil }
                    index = start + length
                    return start..<index
                }
            }
            return nil
        }

        mutating func skip(wireType: UInt8) -> Bool {
            switch wireType {
            case 0: return readVarint() != nil
            case 1:
                guard bytes.count - index >= 8 else { return false }
                index += 8
                return true
            case 2: return readLengthDelimited() != nil
            case 5:
                guard bytes.count - index >= 4 else { return false }
                index += 4
                return true
            default: return false
            }
        }

        /// As protobuf-c's NUL-terminated copy read back with `String(cString:)`: cut at the first NUL,
        /// invalid UTF-8 repaired.
        func string(_ range: Range<Int>) -> String {
            let slice = UnsafeRawBufferPointer(rebasing: bytes[range])
            let end = slice.firstIndex(of: 0) ?? slice.count
            return String(decoding: UnsafeRawBufferPointer(rebasing: slice[0..<end]), as: UTF8.self)
        }
    }
}
