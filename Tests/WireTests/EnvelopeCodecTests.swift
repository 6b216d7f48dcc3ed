import NIOCore
import Proto
import Testing
import Wire

/// The hand-written envelope codec (`WireEnvelope`) against protobuf-c, the reference: the same bytes out for
/// every message, the same verdict and the same values for every input, valid or not.
@Suite struct EnvelopeCodecTests {
    /// A fixed seed, so that a failure reproduces.
    typealias Random = SeededRandom

    static func varint(_ random: inout Random) -> UInt64 {
        switch Int.random(in: 0..<6, using: &random) {
        case 0: return 0
        case 1: return UInt64.random(in: 1..<128, using: &random)
        case 2: return UInt64.max - UInt64.random(in: 0..<3, using: &random)
        default: return random.next() >> UInt64.random(in: 0..<64, using: &random)
        }
    }

    static func string(_ random: inout Random) -> String {
        let pieces = ["a", "Z", "0", ".", "é", "ß", "日本", "😀", "\u{0}", " ", InventoryRPC.Purchase.name, CommonRPC.Ping.name]
        var out = ""
        for _ in 0..<Int.random(in: 0..<(Bool.random(using: &random) ? 3 : 40), using: &random) {
            out += pieces.randomElement(using: &random)!
        }
        return out
    }

    static func bytes(_ random: inout Random) -> ByteBuffer {
        let sizes = [0, 0, 1, 5, 127, 128, 129, 300, 16383, 16384, 20000]
        let count = Bool.random(using: &random) ? sizes.randomElement(using: &random)! : Int.random(in: 0..<200, using: &random)
        var buffer = ByteBuffer()
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { out in
            for index in 0..<count { out[index] = UInt8(truncatingIfNeeded: random.next()) }
            return count
        }
        return buffer
    }

    static func request(_ random: inout Random) -> WireRequest {
        WireRequest(
            callId: varint(&random), method: string(&random), timeoutUs: Int64(bitPattern: varint(&random)),
            token: Bool.random(using: &random) ? "" : string(&random), payload: bytes(&random))
    }

    static func response(_ random: inout Random) -> WireResponse {
        let status: Int32 = Bool.random(using: &random)
            ? Int32.random(in: 0...16, using: &random) : Int32(truncatingIfNeeded: random.next())
        return WireResponse(
            callId: varint(&random), status: WireStatusCode(rawValue: status), message: string(&random),
            payload: bytes(&random))
    }

    @Test func encodesExactlyTheBytesProtobufCPacks() {
        var random = Random(seed: 1)
        for _ in 0..<2000 {
            let request = Self.request(&random)
            var ours = ByteBuffer()
            WireEnvelope.encode(request, into: &ours)
            #expect(ours == request.serializedBuffer(), "\(request.callId) \(request.method)")

            let response = Self.response(&random)
            ours.clear()
            WireEnvelope.encode(response, into: &ours)
            #expect(ours == response.serializedBuffer(), "\(response.callId) \(response.message)")
        }
    }

    @Test func framesTheEnvelopeWithAPayloadWrittenInPlace() {
        var random = Random(seed: 2)
        for _ in 0..<500 {
            let request = Self.request(&random)
            let ping = WirePingResponse(data: Self.bytes(&random), service: Self.string(&random))
            var expected = ByteBuffer(bytes: [0xAA])  // something before the frame, as in a buffer of several
            var withPayload = request
            withPayload.payload = ping.serializedBuffer()
            Framing.writeFrame(into: &expected) { withPayload.serialize(into: &$0) }
            var ours = ByteBuffer(bytes: [0xAA])
            Framing.writeFrame(into: &ours) {
                WireEnvelope.writeRequest(
                    into: &$0, callID: request.callId, method: request.method, timeoutUs: request.timeoutUs,
                    token: request.token) { ping.serialize(into: &$0) }
            }
            #expect(ours == expected)

            let response = Self.response(&random)
            var expectedResponse = ByteBuffer()
            var responseWithPayload = response
            responseWithPayload.payload = ping.serializedBuffer()
            Framing.writeFrame(into: &expectedResponse) { responseWithPayload.serialize(into: &$0) }
            var oursResponse = ByteBuffer()
            Framing.writeFrame(into: &oursResponse) {
                WireEnvelope.writeResponse(
                    into: &$0, callID: response.callId, status: response.status.rawValue,
                    message: response.message) { ping.serialize(into: &$0) }
            }
            #expect(oursResponse == expectedResponse)
        }
    }

    /// Field-level noise: unknown fields of every wire type, wrong wire types for known fields, field 0,
    /// duplicates, over-long varints and tags, lengths past the end, invalid UTF-8.
    static func noisyFields(_ random: inout Random) -> [UInt8] {
        var out: [UInt8] = []
        func varintBytes(_ value: UInt64) -> [UInt8] {
            var value = value, bytes: [UInt8] = []
            while value >= 0x80 { bytes.append(UInt8(truncatingIfNeeded: value) | 0x80); value >>= 7 }
            return bytes + [UInt8(value)]
        }
        for _ in 0..<Int.random(in: 0..<6, using: &random) {
            let number = [0, 1, 2, 3, 4, 5, 6, 15, 16, 2047, 1 << 28, (1 << 29) + 1, Int(UInt32.max >> 3)]
                .randomElement(using: &random)!
            let wireType = UInt64.random(in: 0...7, using: &random)
            out += varintBytes(UInt64(number) << 3 | wireType)
            switch Int.random(in: 0..<8, using: &random) {
            case 0: out += varintBytes(varint(&random))
            case 1: out += [UInt8](repeating: 0xff, count: Int.random(in: 9...11, using: &random)) + [0x01]
            case 2:
                let body: [UInt8] = [[0xff, 0xfe], [0xc3, 0x28], [0x41, 0x00, 0x42], Array("ok".utf8)].randomElement(using: &random)!
                out += varintBytes(UInt64(body.count)) + body
            case 3: out += varintBytes(UInt64.random(in: 0..<64, using: &random))  // a length, perhaps past the end
            case 4: out += [UInt8](repeating: 0x11, count: Int.random(in: 0...9, using: &random))
            case 5: out += [0x80, 0x80, 0x80, 0x80, 0x80, 0x01]  // a 6-byte length prefix
            default: break
            }
        }
        return out
    }

    static func mutate(_ bytes: [UInt8], _ random: inout Random) -> [UInt8] {
        var bytes = bytes
        switch Int.random(in: 0..<5, using: &random) {
        case 0 where !bytes.isEmpty:
            bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
        case 1 where !bytes.isEmpty:
            bytes.removeLast(Int.random(in: 1...bytes.count, using: &random))
        case 2:
            bytes.insert(UInt8.random(in: 0...255, using: &random), at: Int.random(in: 0...bytes.count, using: &random))
        case 3:
            bytes += noisyFields(&random)
        default:
            bytes = noisyFields(&random) + bytes
        }
        return bytes
    }

    /// `count` inputs for a decoder against protobuf-c: in turn the encodings `valid` makes, field-level noise and
    /// random bytes, each mutated up to twice.
    static func decoderInputs(count: Int, seed: UInt64, valid: [(inout Random) -> ByteBuffer]) -> [[UInt8]] {
        var random = Random(seed: seed)
        return (0..<count).map { round in
            let kind = round % (valid.count + 2)
            var input: [UInt8]
            if kind < valid.count {
                input = Array(valid[kind](&random).readableBytesView)
            } else if kind == valid.count {
                input = noisyFields(&random)
            } else {
                input = (0..<Int.random(in: 0..<24, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            }
            for _ in 0..<Int.random(in: 0..<3, using: &random) { input = mutate(input, &random) }
            return input
        }
    }

    @Test func decodesAndRefusesExactlyWhatProtobufCDoes() throws {
        var accepted = 0, refused = 0
        let inputs = Self.decoderInputs(
            count: 12000, seed: 3, valid: [{ Self.request(&$0).serializedBuffer() }, { Self.response(&$0).serializedBuffer() }])
        for input in inputs {

            // Decoded from the middle of a larger buffer, as frames are.
            var frame = ByteBuffer(bytes: [9, 9, 9] + input + [7])
            frame.moveReaderIndex(forwardBy: 3)
            frame = frame.getSlice(at: frame.readerIndex, length: input.count)!

            let referenceRequest = try? WireRequest(decoding: input)
            let ourRequest = try? WireEnvelope.decodeRequest(frame)
            #expect(ourRequest == referenceRequest, "request \(input)")
            let referenceResponse = try? WireResponse(decoding: input)
            let ourResponse = try? WireEnvelope.decodeResponse(frame)
            #expect(ourResponse == referenceResponse, "response \(input)")
            if referenceRequest == nil { refused += 1 } else { accepted += 1 }
        }
        // Both sides of the verdict are exercised.
        #expect(accepted > 1000 && refused > 1000, "accepted \(accepted), refused \(refused)")
    }
}
