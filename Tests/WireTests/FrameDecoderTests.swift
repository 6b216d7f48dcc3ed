import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing

@testable import Wire

@Suite struct FrameDecoderTests {
    private func frame(_ payload: [UInt8]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(payload.count))
        buffer.writeBytes(payload)
        return buffer
    }

    @Test func decodesFramesWhateverTheChunking() throws {
        let payloads: [[UInt8]] = [[1, 2, 3], [], Array(repeating: 7, count: 300), [42]]
        let pairs = payloads.map { (frame($0), [ByteBuffer(bytes: $0)]) }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) {
            FrameDecoder(maxFrameSize: 1024)
        }
    }

    @Test func refusesAnOversizedFrameFromItsHeaderAlone() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maxFrameSize: 16)))
        var header = ByteBuffer()
        header.writeInteger(UInt32(17))
        // Only the header: the decoder must refuse before any payload arrives.
        #expect(throws: FrameError.frameTooLarge(length: 17, limit: 16)) {
            try channel.writeInbound(header)
        }
        _ = try? channel.finish()
    }

    @Test func acceptsAFrameAtTheLimit() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maxFrameSize: 16)))
        try channel.writeInbound(frame(Array(repeating: 1, count: 16)))
        let out = try channel.readInbound(as: ByteBuffer.self)
        #expect(out?.readableBytes == 16)
        #expect(try channel.finish().isClean)
    }

    @Test func reportsATruncatedFrameAtEndOfStream() throws {
        let catcher = ErrorCatcher()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameSize: 1024)))
        try channel.pipeline.syncOperations.addHandler(catcher)
        var partial = ByteBuffer()
        partial.writeInteger(UInt32(10))
        partial.writeBytes([1, 2, 3])
        try channel.writeInbound(partial)
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        _ = try? channel.finish()
        #expect(catcher.errors.contains { ($0 as? FrameError) == .truncatedFrame(bufferedBytes: 7) }, "truncated frame surfaces as an error")
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil, "and never as a frame")
    }

    /// The reader the connections use: the same frames at every cut of the stream, and nothing held once they are
    /// all out.
    @Test func theReaderCutsTheSameFramesAtEveryCut() throws {
        var stream = ByteBuffer()
        for payload: [UInt8] in [[1, 2, 3], [], Array(repeating: 7, count: 300), [42]] {
            stream.writeImmutableBuffer(frame(payload))
        }
        for cut in 0...stream.readableBytes {
            let reader = FrameReader(maxFrameSize: 1024)
            var frames: [[UInt8]] = []
            for part in [stream.getSlice(at: 0, length: cut)!, stream.getSlice(at: cut, length: stream.readableBytes - cut)!] {
                reader.append(part)
                while let frame = try reader.next() { frames.append(Array(frame.readableBytesView)) }
            }
            #expect(frames == [[1, 2, 3], [], Array(repeating: 7, count: 300), [42]], "cut at \(cut)")
            #expect(!reader.holdsPartialFrame && reader.bufferedBytes == 0)
        }
    }

    @Test func theReaderRefusesAnOversizedFrameFromItsHeaderAlone() {
        let reader = FrameReader(maxFrameSize: 16)
        var header = ByteBuffer()
        header.writeInteger(UInt32(17))
        reader.append(header)
        #expect(throws: FrameError.frameTooLarge(length: 17, limit: 16)) { try reader.next() }
    }

    @Test func theReaderHoldsOnlyAnIncompleteFrame() throws {
        let reader = FrameReader(maxFrameSize: 1024)
        var bytes = frame([1, 2])
        bytes.writeInteger(UInt32(5))
        bytes.writeBytes([9])
        reader.append(bytes)
        #expect(try reader.next().map { Array($0.readableBytesView) } == [1, 2])
        #expect(try reader.next() == nil)
        #expect(reader.holdsPartialFrame && reader.bufferedBytes == 5, "the next frame's header and first byte")
        reader.append(ByteBuffer(bytes: [8, 7, 6, 5]))
        #expect(try reader.next().map { Array($0.readableBytesView) } == [9, 8, 7, 6, 5])
        #expect(!reader.holdsPartialFrame)
    }

    /// Once a read's frames are all out (and handled), the reader holds no reference to the read's buffer: the
    /// channel reuses its receive buffer only when nobody else holds it.
    @Test func theReaderLetsGoOfAReadOnceItsFramesAreOut() throws {
        let reader = FrameReader(maxFrameSize: 1024)
        var received = ByteBuffer()
        received.writeImmutableBuffer(frame([1, 2, 3]))
        reader.append(received)
        while try reader.next() != nil {}
        #expect(received.modifyIfUniquelyOwned { _ in true } == true)
    }

    /// A frame's handler may close the connection (which drops what the reader holds) in the middle of a read.
    @Test func aReadStopsWhereItsHandlerClosesTheConnection() throws {
        let reader = FrameReader(maxFrameSize: 1024)
        var bytes = frame([1])
        bytes.writeImmutableBuffer(frame([2]))
        bytes.writeInteger(UInt32(9))
        var handed: [[UInt8]] = []
        try reader.read(bytes) { frame in
            handed.append(Array(frame.readableBytesView))
            reader.discard()  // as channelInactive does
            return false
        }
        #expect(handed == [[1]])
        #expect(!reader.holdsPartialFrame)
    }

    @Test func aReadThatBreaksTheStreamThrowsAndHoldsNothing() {
        let reader = FrameReader(maxFrameSize: 16)
        var bytes = frame([1])
        bytes.writeInteger(UInt32(17))
        var handed = 0
        #expect(throws: FrameError.frameTooLarge(length: 17, limit: 16)) {
            try reader.read(bytes) { _ in
                handed += 1
                return true
            }
        }
        #expect(handed == 1, "the whole frame before the bad header")
        #expect(!reader.holdsPartialFrame)
    }

    @Test func writesFramesWithTheirLength() {
        var buffer = ByteBuffer()
        Framing.writeFrame(into: &buffer) { $0.writeBytes([9, 8, 7]) }
        #expect(buffer.readInteger(as: UInt32.self) == 3)
        #expect(buffer.readBytes(length: 3) == [9, 8, 7])
    }
}

private final class ErrorCatcher: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var errors: [any Error] = []
    func errorCaught(context: ChannelHandlerContext, error: any Error) { errors.append(error) }
}
