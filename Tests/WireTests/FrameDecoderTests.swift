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
