// libFuzzer harness over the platform's input parsing: the frame decoder (fed in random chunks) and the decoding of
// every message type, the request envelope and every method's request and response. Built by Fuzz/build.sh
// (swiftc -sanitize=fuzzer,address), run by scripts/fuzz.sh. SwiftPM cannot link it (see Fuzz/README.md).
//
// An input's first byte picks the mode:
//   0...127   direct: the rest is one message of type messageKinds[byte % count] (decode, round trip);
//   128...255 stream: the rest is a byte stream as a connection would deliver it, cut into chunks by a generator
//             seeded from that byte; every frame is decoded as a request envelope and, for a known method, its
//             payload as that method's request; and as a response envelope whose payload is decoded as the response
//             of the method picked by the call id. The frames must not depend on where the chunks were cut, and the
//             runtime's own envelope codec (WireEnvelope) must agree with protobuf-c on every frame.
#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// The edge's frame limit (Sources/Edge: --max-frame-size default): small enough for the fuzzer to reach it.
let maxFrameSize = 64 * 1024

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let selector = input[0]
    let rest = UnsafeRawBufferPointer(rebasing: input[1...])
    if selector < 128 {
        messageKinds[Int(selector) % messageKinds.count].roundTrip(rest)
    } else {
        fuzzStream(rest, seed: UInt64(selector))
    }
    return 0
}

/// What the decoder made of a stream: the frames, then whether it stopped on a broken stream.
struct StreamOutcome: Equatable {
    var frames: [ByteBuffer] = []
    var error: FrameError?
}

func fuzzStream(_ bytes: UnsafeRawBufferPointer, seed: UInt64) {
    var random = SplitMix64(seed: seed &+ UInt64(bytes.count))
    let chunked = decodeFrames(bytes) { remaining in 1 + Int(random.next() % UInt64(min(remaining, 97))) }
    let whole = decodeFrames(bytes) { $0 }
    guard chunked == whole else {
        fatalError("frames depend on chunking: \(chunked.frames.count) frames/\(String(describing: chunked.error)) "
                   + "vs \(whole.frames.count)/\(String(describing: whole.error))")
    }
    for frame in whole.frames {
        frame.withUnsafeReadableBytes { handleFrame($0) }
    }
}

/// Feeds `bytes` to the connections' FrameReader as reads arrive: append what arrived, take every whole frame.
func decodeFrames(_ bytes: UnsafeRawBufferPointer, chunk: (Int) -> Int) -> StreamOutcome {
    let reader = FrameReader(maxFrameSize: maxFrameSize)
    var outcome = StreamOutcome()
    var offset = 0
    while offset < bytes.count {
        let count = chunk(bytes.count - offset)
        reader.append(ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)])))
        offset += count
        do {
            while let frame = try reader.next() {
                guard frame.readableBytes <= maxFrameSize else { fatalError("frame over the limit delivered") }
                outcome.frames.append(frame)
            }
        } catch let error as FrameError {
            outcome.error = error
            return outcome  // the connection closes: nothing after this is read
        } catch {
            fatalError("unexpected error \(error)")
        }
    }
    return outcome
}

/// One frame as the server and as a client would take it. The envelopes are decoded twice: by protobuf-c and by the
/// hand-written codec the wire runtime uses (WireEnvelope), which must accept, refuse and encode exactly alike.
func handleFrame(_ payload: UnsafeRawBufferPointer) {
    let frame = ByteBuffer(bytes: payload)
    let request = try? WireRequest(decoding: payload)
    let fastRequest = try? WireEnvelope.decodeRequest(frame)
    guard request == fastRequest else {
        fatalError("WireEnvelope.decodeRequest disagrees with protobuf-c: \(String(describing: fastRequest)) vs \(String(describing: request))")
    }
    if let request {
        checkRoundTrip(WireRequest.self, payload)
        var fast = ByteBuffer()
        Framing.writeFrame(into: &fast) {
            WireEnvelope.writeRequest(
                into: &$0, callID: request.callId, method: request.method, timeoutUs: request.timeoutUs, token: request.token
            ) { $0.writeImmutableBuffer(request.payload) }
        }
        guard fast.readableBytesView.dropFirst(4).elementsEqual(request.serializedBytes()) else {
            fatalError("WireEnvelope encodes a request unlike protobuf-c: \(request)")
        }
        if let method = methods.first(where: { $0.name == request.method }) {
            request.payload.withUnsafeReadableBytes { messageKinds[method.request].roundTrip($0) }
        }
    }
    let response = try? WireResponse(decoding: payload)
    let fastResponse = try? WireEnvelope.decodeResponse(frame)
    guard response == fastResponse else {
        fatalError("WireEnvelope.decodeResponse disagrees with protobuf-c: \(String(describing: fastResponse)) vs \(String(describing: response))")
    }
    if let response {
        checkRoundTrip(WireResponse.self, payload)
        var fast = ByteBuffer()
        Framing.writeFrame(into: &fast) {
            WireEnvelope.writeResponse(
                into: &$0, callID: response.callId, status: response.status.rawValue, message: response.message
            ) { $0.writeImmutableBuffer(response.payload) }
        }
        guard fast.readableBytesView.dropFirst(4).elementsEqual(response.serializedBytes()) else {
            fatalError("WireEnvelope encodes a response unlike protobuf-c: \(response)")
        }
        let method = methods[Int(response.callId % UInt64(methods.count))]
        response.payload.withUnsafeReadableBytes { messageKinds[method.response].roundTrip($0) }
    }
}

struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

// MARK: - Seed corpus

/// `FLASHSALE_FUZZ_WRITE_SEEDS=DIR` writes the seed corpus (from real messages of every kind and method) to DIR
/// and exits; scripts/fuzz.sh --seeds runs it. Otherwise libFuzzer goes on as usual.
@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(
    _ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> Int32 {
    guard let dir = getenv("FLASHSALE_FUZZ_WRITE_SEEDS").map({ String(cString: $0) }), !dir.isEmpty else { return 0 }
    var written = 0
    for (name, bytes) in seeds() {
        let path = dir + "/" + name
        guard let file = fopen(path, "wb") else { fatalError("cannot write \(path)") }
        _ = bytes.withUnsafeBufferPointer { fwrite($0.baseAddress, 1, $0.count, file) }
        fclose(file)
        written += 1
    }
    print("wrote \(written) seeds to \(dir)")
    exit(0)
}

func frame(_ message: some ProtoMessage) -> [UInt8] {
    var buffer = ByteBuffer()
    Framing.writeFrame(into: &buffer) { message.serialize(into: &$0) }
    return Array(buffer.readableBytesView)
}

func seeds() -> [(String, [UInt8])] {
    var seeds: [(String, [UInt8])] = []
    for (index, kind) in messageKinds.enumerated() {
        seeds.append(("direct-\(kind.name)", [UInt8(index)] + kind.sample()))
    }
    var everything: [UInt8] = []
    for (index, method) in methods.enumerated() {
        let request = WireRequest(
            callId: UInt64(index + 1), method: method.name, timeoutUs: 5_000_000,
            token: method.needsToken ? "operator-secret" : "", payload: ByteBuffer(bytes: messageKinds[method.request].sample()))
        // The response's call id picks the method whose response type the harness decodes it as.
        let response = WireResponse(
            callId: UInt64(index + methods.count), status: .ok, payload: ByteBuffer(bytes: messageKinds[method.response].sample()))
        let failed = WireResponse(callId: UInt64(index + 2 * methods.count), status: .permissionDenied, message: "operator token refused")
        seeds.append(("request-\(method.name)", [128 + UInt8(index)] + frame(request)))
        seeds.append(("response-\(method.name)", [200 + UInt8(index % 50)] + frame(response) + frame(failed)))
        everything += frame(request)
    }
    seeds.append(("stream-every-method", [255] + everything))
    let purchase = frame(WireRequest(
        callId: 1, method: EdgeRPC.Purchase.name, payload: ByteBuffer(bytes: PurchaseRequest(requestId: 1, userId: 1, productId: "p1").serializedBytes())))
    seeds.append(("stream-oversized-header", [129] + purchase + [0x7F, 0xFF, 0xFF, 0xFF, 1, 2, 3]))
    seeds.append(("stream-truncated", [130] + purchase + Array(purchase.dropLast(3))))
    seeds.append(("stream-empty-frames", [131] + [0, 0, 0, 0, 0, 0, 0, 0] + purchase))
    seeds.append(("stream-not-an-envelope", [132] + [0, 0, 0, 3, 0xFF, 0xFF, 0xFF] + purchase))
    return seeds
}
