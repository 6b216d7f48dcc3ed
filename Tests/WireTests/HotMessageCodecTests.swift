import NIOCore
import Testing

@testable import Proto

/// The hand-written purchase codec (`HotMessageCodec`) against protobuf-c, the reference (`ProtoRuntime`): the same
/// bytes out for every message, the same verdict and the same values for every input, valid or not.
@Suite struct HotMessageCodecTests {
    typealias Random = SeededRandom
    typealias Gen = EnvelopeCodecTests

    static func request(_ random: inout Random) -> PurchaseRequest {
        PurchaseRequest(
            requestId: Gen.varint(&random), userId: Gen.varint(&random), productId: Gen.string(&random),
            edgeId: UInt32(truncatingIfNeeded: Gen.varint(&random)), retry: Bool.random(using: &random),
            lookupOnly: Bool.random(using: &random))
    }

    static func response(_ random: inout Random) -> PurchaseResponse {
        let outcome: Int32 = Bool.random(using: &random)
            ? Int32.random(in: 0...6, using: &random) : Int32(truncatingIfNeeded: random.next())
        return PurchaseResponse(
            outcome: PurchaseOutcome(rawValue: outcome), orderId: Gen.varint(&random), replayed: Bool.random(using: &random),
            edgeId: UInt32(truncatingIfNeeded: Gen.varint(&random)), payByUnixMs: Int64(bitPattern: Gen.varint(&random)))
    }

    static func reference<M: ProtoBridged>(_ message: M) -> ByteBuffer {
        var buffer = ByteBuffer()
        ProtoRuntime.serialize(message, into: &buffer)
        return buffer
    }

    @Test func encodesExactlyTheBytesProtobufCPacks() {
        var random = Random(seed: 11)
        for _ in 0..<3000 {
            let request = Self.request(&random)
            #expect(request.serializedBuffer() == Self.reference(request), "\(request)")
            let response = Self.response(&random)
            #expect(response.serializedBuffer() == Self.reference(response), "\(response)")
        }
    }

    @Test func decodesAndRefusesExactlyWhatProtobufCDoes() {
        var accepted = 0, refused = 0
        let inputs = Gen.decoderInputs(
            count: 16000, seed: 12, valid: [{ Self.request(&$0).serializedBuffer() }, { Self.response(&$0).serializedBuffer() }])
        for input in inputs {
            input.withUnsafeBytes { bytes in
                let referenceRequest: PurchaseRequest? = try? ProtoRuntime.decode(bytes)
                let ourRequest = try? PurchaseRequest(decoding: bytes)
                #expect(ourRequest == referenceRequest, "request \(input)")
                let referenceResponse: PurchaseResponse? = try? ProtoRuntime.decode(bytes)
                let ourResponse = try? PurchaseResponse(decoding: bytes)
                #expect(ourResponse == referenceResponse, "response \(input)")
                if referenceRequest == nil { refused += 1 } else { accepted += 1 }
            }
        }
        #expect(accepted > 1000 && refused > 1000, "accepted \(accepted), refused \(refused)")
    }

    /// protobuf-c reads a bool as true when any byte of its varint has a value bit, even past 64 bits.
    @Test func anOverlongBoolVarintIsTrueAsProtobufCReadsIt() throws {
        let bytes: [UInt8] = [0x28] + [UInt8](repeating: 0x80, count: 9) + [0x02]
        let reference: PurchaseRequest = try bytes.withUnsafeBytes { try ProtoRuntime.decode($0) }
        #expect(reference.retry)
        #expect(try PurchaseRequest(decoding: bytes).retry)
    }
}

extension HotMessageCodecTests {
    /// protobuf-c checks no wire type for a bool: a non-empty string, a fixed64 or a fixed32 in its place is true when
    /// any of its bytes (a string's length prefix too) has a value bit, and an empty string is false.
    @Test func aBoolOfAnyWireTypeReadsAsProtobufCReadsIt() throws {
        let cases: [[UInt8]] = [
            [0x2a, 0x01, 0x41], [0x2a, 0x00], [0x29] + [UInt8](repeating: 0, count: 8), [0x29, 0, 0, 0, 0, 0, 0, 0, 0x80],
            [0x2d, 0, 0, 0x01, 0], [0x2b], [0x2a, 0x05, 0x41],
        ]
        for bytes in cases {
            let reference: PurchaseRequest? = bytes.withUnsafeBytes { try? ProtoRuntime.decode($0) }
            #expect((try? PurchaseRequest(decoding: bytes)) == reference, "\(bytes)")
        }
    }
}
