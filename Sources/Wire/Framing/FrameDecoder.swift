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
/// The connections cut their frames with `FrameReader`, which holds one of these; as a `ByteToMessageDecoder` it is
/// checked with NIO's `ByteToMessageDecoderVerifier`.
public struct FrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = ByteBuffer

    public let maxFrameSize: Int

    public init(maxFrameSize: Int = Framing.defaultMaxFrameSize) {
        self.maxFrameSize = maxFrameSize
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> ByteBuffer? {
        try self.nextFrame(&buffer)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> ByteBuffer? {
        if let frame = try self.nextFrame(&buffer) { return frame }
        if buffer.readableBytes > 0 {
            let missing = buffer.readableBytes
            buffer.moveReaderIndex(forwardBy: missing)
            throw FrameError.truncatedFrame(bufferedBytes: missing)
        }
        return nil
    }

    func nextFrame(_ buffer: inout ByteBuffer) throws(FrameError) -> ByteBuffer? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        guard length <= self.maxFrameSize else {
            throw FrameError.frameTooLarge(length: Int(length), limit: self.maxFrameSize)
        }
        guard buffer.readableBytes >= Framing.headerSize + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: Framing.headerSize)
        return buffer.readSlice(length: Int(length))
    }
}

/// One connection's inbound byte stream, cut into frames by the connection's own handler (server and client) rather
/// than by a `ByteToMessageHandler` in front of it: that handler's context, its `NIOAny` per frame and its
/// cumulation bookkeeping (exclusivity checks included) were ~8 % of an edge's CPU at 1 in flight (`perf`). Without
/// it a call cost 15-30 % less CPU (`scripts/bench.sh calls`, both shapes) and the reference sale took 4.6-5.3 s
/// instead of 6.2-6.7 s, at 35-38k attempts/s at 1 in flight instead of 33-35k (three alternating runs each).
/// NIO's `NIOSingleStepByteToMessageProcessor` would keep the last read's buffer (emptied) after every read, so the
/// channel could never reuse its receive buffer; this holds bytes only while a frame is incomplete. A class, so that
/// a frame's handler may close the connection (and so `discard()` this) while `read` is under way.
final class FrameReader {
    private let decoder: FrameDecoder
    private var buffered: ByteBuffer?

    init(maxFrameSize: Int) {
        self.decoder = FrameDecoder(maxFrameSize: maxFrameSize)
    }

    /// Part of a frame is held, waiting for the rest (the server's frame timeout watches this).
    var holdsPartialFrame: Bool { self.buffered != nil }

    var bufferedBytes: Int { self.buffered?.readableBytes ?? 0 }

    /// Appends what a read brought and hands each whole frame to `frame`, until it returns false (the connection
    /// closed over it) or no whole frame is left. A framing error breaks the stream: what is held is dropped and the
    /// error thrown, and the caller closes the connection.
    func read(_ bytes: ByteBuffer, frame: (ByteBuffer) -> Bool) throws(FrameError) {
        self.append(bytes)
        do {
            while let next = try self.next() {
                guard frame(next) else { return }
            }
        } catch {
            self.discard()
            throw error
        }
    }

    /// What a read brought; take the frames with `next()` until it returns nil.
    func append(_ bytes: ByteBuffer) {
        if self.buffered == nil {
            self.buffered = bytes
        } else {
            var bytes = bytes
            self.buffered!.writeBuffer(&bytes)
        }
    }

    /// The next whole frame (a slice of what was read), or nil until more bytes arrive. Throws
    /// `FrameError.frameTooLarge` from a header alone; the stream is broken then, and the connection closes.
    func next() throws(FrameError) -> ByteBuffer? {
        // Taken out while decoding, so that the slice read from it does not copy it (copy on write).
        guard var buffer = self.buffered.take() else { return nil }
        defer {
            if buffer.readableBytes > 0 {
                if buffer.readerIndex > 1024 && buffer.readerIndex > buffer.capacity / 2 { buffer.discardReadBytes() }
                self.buffered = buffer
            }
        }
        return try self.decoder.nextFrame(&buffer)
    }

    /// The connection closed: what is held is dropped (the bytes of a frame that never completed).
    func discard() {
        self.buffered = nil
    }
}
