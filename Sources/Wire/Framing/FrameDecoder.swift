import NIOCore

/// Frames on every port: a 4-byte big-endian length, then that many bytes of one protobuf message.
public enum Framing {
    /// Default upper bound of one frame's payload; requests and responses of the platform are far smaller.
    public static let defaultMaxFrameSize = 1 << 20
    static let headerSize = 4

    /// Appends one frame to `buffer`: the only place a frame header is written. NIOCore reserves the header and
    /// patches it once the payload is written, so the message is serialized exactly once, straight into the
    /// outgoing buffer.
    public static func writeFrame(into buffer: inout ByteBuffer, _ writePayload: (inout ByteBuffer) -> Void) {
        // Cannot throw: a ByteBuffer holds less than 4 GiB, so every length fits the UInt32 header.
        try! buffer.writeLengthPrefixed(endianness: .big, as: UInt32.self) { buffer in
            let start = buffer.writerIndex
            writePayload(&buffer)
            return buffer.writerIndex - start
        }
    }
}

/// The stream is broken: the connection is closed.
public enum FrameError: Error, Equatable, Sendable {
    /// A length header over the limit; raised from the header alone, before any of the payload is buffered.
    case frameTooLarge(length: Int, limit: Int)
    /// The peer closed in the middle of a frame; the partial frame is discarded, never delivered.
    case truncatedFrame(bufferedBytes: Int)
}

/// Splits the byte stream into frame payloads, refusing an oversized frame from its length header
/// (as grpc-swift-nio-transport's GRPCMessageDecoder does) so that a hostile peer cannot make us buffer it.
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = ByteBuffer

    /// Fired (as a user inbound event) when the decoder starts holding the first bytes of a frame it cannot deliver
    /// yet; the frame is complete at the next frame delivered. The server closes a connection that holds a partial
    /// frame past its frame timeout (a slow client), without a timer or a clock read per frame.
    public struct PartialFrameStarted: Sendable {}

    public let maxFrameSize: Int
    /// Fire `PartialFrameStarted` (servers); off by default (clients, tests).
    public let reportsPartialFrames: Bool
    private var holdingPartialFrame = false

    public init(maxFrameSize: Int = Framing.defaultMaxFrameSize, reportsPartialFrames: Bool = false) {
        self.maxFrameSize = maxFrameSize
        self.reportsPartialFrames = reportsPartialFrames
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try self.nextFrame(&buffer) else {
            if buffer.readableBytes > 0 && !self.holdingPartialFrame {
                self.holdingPartialFrame = true
                if self.reportsPartialFrames { context.fireUserInboundEventTriggered(PartialFrameStarted()) }
            }
            return .needMoreData
        }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(
        context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool
    ) throws -> DecodingState {
        while try self.decode(context: context, buffer: &buffer) == .continue {}
        if buffer.readableBytes > 0 {
            let missing = buffer.readableBytes
            buffer.moveReaderIndex(forwardBy: missing)
            throw FrameError.truncatedFrame(bufferedBytes: missing)
        }
        return .needMoreData
    }

    mutating func nextFrame(_ buffer: inout ByteBuffer) throws -> ByteBuffer? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        guard length <= self.maxFrameSize else {
            throw FrameError.frameTooLarge(length: Int(length), limit: self.maxFrameSize)
        }
        guard buffer.readableBytes >= Framing.headerSize + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: Framing.headerSize)
        self.holdingPartialFrame = false
        return buffer.readSlice(length: Int(length))
    }
}
