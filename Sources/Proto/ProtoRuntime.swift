import CProtobufC
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A platform message: a Swift value that (de)serializes through the protobuf-c code generated from `proto/`.
public protocol ProtoMessage: Sendable {
    init()
    /// Appends the message's protobuf encoding to `buffer`.
    func serialize(into buffer: inout ByteBuffer)
    /// Decodes one message; throws `ProtoDecodingError` when the bytes are not a valid encoding.
    init(decoding bytes: UnsafeRawBufferPointer) throws
}

public struct ProtoDecodingError: Error, CustomStringConvertible {
    public var messageType: String
    public var description: String { "bytes are not a valid \(messageType) message" }
}

extension ProtoMessage {
    public init(decoding buffer: ByteBuffer) throws {
        self = try buffer.withUnsafeReadableBytes { try Self(decoding: $0) }
    }

    public init(decoding bytes: [UInt8]) throws {
        self = try bytes.withUnsafeBytes { try Self(decoding: $0) }
    }

    public func serializedBuffer(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 64)
        self.serialize(into: &buffer)
        return buffer
    }

    public func serializedBytes() -> [UInt8] {
        Array(self.serializedBuffer().readableBytesView)
    }
}

/// The generated bridge between a Swift message and its protobuf-c struct.
protocol ProtoBridged: ProtoMessage {
    associatedtype CMessage
    static func unpackC(_ length: Int, _ data: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CMessage>?
    static func freeC(_ message: UnsafeMutablePointer<CMessage>)
    static func packedSizeC(_ message: UnsafePointer<CMessage>) -> Int
    static func packC(_ message: UnsafePointer<CMessage>, _ out: UnsafeMutablePointer<UInt8>) -> Int
    func fill(_ c: inout CMessage, arena: ProtoArena)
    init(c: UnsafePointer<CMessage>)
}

enum ProtoRuntime {
    /// protobuf-c wants a non-null pointer even for an empty message.
    nonisolated(unsafe) private static let emptyInput = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)

    static func serialize<M: ProtoBridged>(_ message: M, into buffer: inout ByteBuffer) {
        ProtoArena.with { arena in
            let c = arena.zeroed(M.CMessage.self)
            message.fill(&c.pointee, arena: arena)
            let size = M.packedSizeC(c)
            guard size > 0 else { return }
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in
                M.packC(c, out.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
    }

    static func decode<M: ProtoBridged>(_ bytes: UnsafeRawBufferPointer) throws -> M {
        let data = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(Self.emptyInput)
        guard let c = M.unpackC(bytes.count, data) else {
            throw ProtoDecodingError(messageType: String(describing: M.self))
        }
        defer { M.freeC(c) }
        return M(c: c)
    }

    static func string(_ pointer: UnsafeMutablePointer<CChar>?) -> String {
        guard let pointer else { return "" }
        return String(cString: pointer)
    }

    static func bytes(_ data: ProtobufCBinaryData) -> ByteBuffer {
        guard data.len > 0, let base = data.data else { return ByteBuffer() }
        return ByteBuffer(bytes: UnsafeRawBufferPointer(start: base, count: data.len))
    }
}

/// Owns the C memory a message points into while it is packed; everything is freed when `with` returns.
/// A bump allocator over a stack scratch area (falling back to malloc'd blocks past it), rather than one
/// malloc per field plus a class instance and an array of pointers: malloc and free were ~7% of the wire
/// server's samples in a `perf` profile of `scripts/bench.sh wire` (16 in flight), much of it from packing.
/// Copyable and non-mutating, so nested fills share it without overlapping inout accesses.
struct ProtoArena {
    private struct State {
        var cursor: UnsafeMutableRawPointer
        var end: UnsafeMutableRawPointer
        /// malloc'd blocks, each starting with a pointer to the previous one.
        var overflow: UnsafeMutableRawPointer?
    }

    private static let scratchSize = 1024
    private static let blockHeader = 16
    private let state: UnsafeMutablePointer<State>

    private init(state: UnsafeMutablePointer<State>) { self.state = state }

    static func with<R>(_ body: (ProtoArena) throws -> R) rethrows -> R {
        try withUnsafeTemporaryAllocation(byteCount: scratchSize, alignment: 16) { scratch in
            let base = scratch.baseAddress!
            var state = State(cursor: base, end: base + scratch.count, overflow: nil)
            return try withUnsafeMutablePointer(to: &state) { pointer in
                defer {
                    var block = pointer.pointee.overflow
                    while let current = block {
                        block = current.load(as: UnsafeMutableRawPointer?.self)
                        free(current)
                    }
                }
                return try body(ProtoArena(state: pointer))
            }
        }
    }

    private func allocate(byteCount: Int, alignment: Int) -> UnsafeMutableRawPointer {
        let byteCount = max(byteCount, 1)
        let mask = UInt(max(alignment, 1) - 1)
        let aligned = UnsafeMutableRawPointer(bitPattern: (UInt(bitPattern: state.pointee.cursor) + mask) & ~mask)!
        if byteCount <= aligned.distance(to: state.pointee.end) {
            state.pointee.cursor = aligned + byteCount
            return aligned
        }
        // Past the scratch area: a block of its own (header padded to keep 16-byte alignment).
        let block = malloc(Self.blockHeader + byteCount)!
        block.storeBytes(of: state.pointee.overflow, as: UnsafeMutableRawPointer?.self)
        state.pointee.overflow = block
        return block + Self.blockHeader
    }

    func zeroed<T>(_ type: T.Type, count: Int = 1) -> UnsafeMutablePointer<T> {
        let raw = allocate(byteCount: MemoryLayout<T>.stride * count, alignment: MemoryLayout<T>.alignment)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: max(MemoryLayout<T>.stride * count, 1))
        return raw.bindMemory(to: T.self, capacity: count)
    }

    func cString(_ string: String) -> UnsafeMutablePointer<CChar> {
        var string = string
        return string.withUTF8 { utf8 in
            let out = zeroed(CChar.self, count: utf8.count + 1)
            if let base = utf8.baseAddress {
                UnsafeMutableRawPointer(out).copyMemory(from: base, byteCount: utf8.count)
            }
            return out
        }
    }

    func binary(_ buffer: ByteBuffer) -> ProtobufCBinaryData {
        let count = buffer.readableBytes
        guard count > 0 else { return ProtobufCBinaryData(len: 0, data: nil) }
        let out = zeroed(UInt8.self, count: count)
        buffer.withUnsafeReadableBytes { UnsafeMutableRawPointer(out).copyMemory(from: $0.baseAddress!, byteCount: count) }
        return ProtobufCBinaryData(len: count, data: out)
    }

    func message<C>(_ type: C.Type, _ fill: (inout C) -> Void) -> UnsafeMutablePointer<C> {
        let c = zeroed(C.self)
        fill(&c.pointee)
        return c
    }

    func array<T>(_ values: [T]) -> (Int, UnsafeMutablePointer<T>?) {
        guard !values.isEmpty else { return (0, nil) }
        let out = zeroed(T.self, count: values.count)
        for (index, value) in values.enumerated() { out[index] = value }
        return (values.count, out)
    }

    func messageArray<M: ProtoBridged>(
        _ values: [M], _ fill: (M, inout M.CMessage) -> Void
    ) -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<M.CMessage>?>?) {
        guard !values.isEmpty else { return (0, nil) }
        let out = zeroed(UnsafeMutablePointer<M.CMessage>?.self, count: values.count)
        for (index, value) in values.enumerated() {
            out[index] = message(M.CMessage.self) { fill(value, &$0) }
        }
        return (values.count, out)
    }
}
