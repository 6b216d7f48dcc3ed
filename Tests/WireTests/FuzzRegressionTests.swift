import NIOCore
import NIOEmbedded
import Proto
import Testing

@testable import Wire

/// Inputs the fuzzer (Fuzz/, scripts/fuzz.sh) found crashing, kept as tests; and the decoder fed at random cut points.
@Suite struct FuzzRegressionTests {
    /// crash-2d2d6a48: a PurchaseResponse whose outcome is a varint past Int32 (protobuf-c keeps the low 32 bits,
    /// 0xAFFFFFFF here) trapped in the generated bridge's `numericCast` to Int32: an inventory (or anyone on the
    /// edge's inventory connection) could crash the edge with one response. Enums now convert by truncation.
    @Test func enumValuesPastInt32DecodeWithoutTrapping() throws {
        let bytes: [UInt8] = [0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xAA, 0x04, 0x10, 0x4D, 0x18, 0x01]
        let response = try PurchaseResponse(decoding: bytes)
        #expect(response.orderId == 0x4D)
        #expect(response.replayed)
        let again = try PurchaseResponse(decoding: response.serializedBytes())
        #expect(again == response, "round trip keeps the unknown outcome")
    }

    /// The same in the envelope: a response status of -1 (or any 32-bit value) reaches the client as an unknown
    /// code, and a negative code encodes without trapping.
    @Test func unknownStatusCodesSurviveARoundTrip() throws {
        for raw: Int32 in [-1, .min, .max, 17, 1_000] {
            let response = WireResponse(callId: 1, status: WireStatusCode(rawValue: raw), message: "x")
            let decoded = try WireResponse(decoding: response.serializedBytes())
            #expect(decoded.status.rawValue == raw)
        }
        // status = varint of 2^40 + 5: protobuf-c keeps the low 32 bits.
        let bytes: [UInt8] = [0x08, 0x01, 0x10, 0x85, 0x80, 0x80, 0x80, 0x80, 0x20]
        let decoded = try WireResponse(decoding: bytes)
        #expect(decoded.callId == 1)
        #expect(decoded.status.rawValue == 5)
    }

    /// Frames of random sizes, delivered to the connections' FrameReader cut at random points: the same frames come
    /// out, in order, whatever the cuts, and nothing is held at the end.
    @Test(arguments: 0..<20)
    func framesSurviveRandomCuts(seed: Int) throws {
        var random = SeededRandom(seed: UInt64(seed) &+ 1)
        let payloads = (0..<Int(random.next() % 40 + 1)).map { _ in
            (0..<Int(random.next() % 600)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        }
        var stream = ByteBuffer()
        for payload in payloads { Framing.writeFrame(into: &stream) { $0.writeBytes(payload) } }

        let reader = FrameReader(maxFrameSize: 1024)
        var received: [[UInt8]] = []
        while stream.readableBytes > 0 {
            let cut = Int(random.next() % UInt64(min(stream.readableBytes, 300))) + 1
            reader.append(stream.readSlice(length: cut)!)
            while let frame = try reader.next() { received.append(Array(frame.readableBytesView)) }
        }
        #expect(received == payloads)
        #expect(!reader.holdsPartialFrame)
    }
}

typealias SeededRandom = SplitMix64
