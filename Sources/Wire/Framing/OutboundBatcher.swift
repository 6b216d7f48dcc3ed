import NIOCore

/// Frames not yet handed to the channel, for both ends of a connection. Every frame of a read burst (or of a loop
/// tick) is appended to one buffer and written with one write and one flush, rather than a buffer, a pipeline
/// write and a pending-write node per frame (those showed up in `perf` profiles of `scripts/bench.sh wire`), and
/// pipelined calls share a syscall.
struct OutboundBatcher {
    /// Past this many bytes the frames so far are written out (not yet flushed) and a new buffer started.
    static let writeThreshold = 64 * 1024

    private var pending: ByteBuffer?
    private var inReadBurst = false
    private var needsFlush = false
    private var flushScheduled = false

    /// What the handler hands to the channel once a call here has returned. Never from inside one: a write can fail
    /// and close the channel at once, and the handler's callbacks for that (a last read, `channelInactive`) reach
    /// this batcher again, which would be a second access to it while the first is still under way.
    enum Output {
        case write(ByteBuffer)
        case writeAndFlush(ByteBuffer)
        case flush
    }

    /// Appends one frame (`write` writes it into the outgoing buffer). Returns what to write now (the frames so far,
    /// past the threshold), and whether the caller must run `scheduledFlush` at the end of this loop tick: outside
    /// a read burst, frames (answers completed from elsewhere, calls sent by other tasks) come in bursts too, and
    /// one flush per tick beats a syscall per frame.
    mutating func append(
        allocator: ByteBufferAllocator, _ write: (inout ByteBuffer) -> Void
    ) -> (output: Output?, scheduleFlush: Bool) {
        if self.pending == nil { self.pending = allocator.buffer(capacity: 512) }
        write(&self.pending!)
        var output: Output?
        if self.pending!.readableBytes >= Self.writeThreshold { output = .write(self.pending.take()!) }
        self.needsFlush = true
        guard !self.inReadBurst, !self.flushScheduled else { return (output, false) }
        self.flushScheduled = true
        return (output, true)
    }

    /// Between `beginBurst` and `endBurst`.
    var isInBurst: Bool { self.inReadBurst }

    /// A read burst (or a batch of answers) starts: its frames are flushed once, at `endBurst`. Returns whether
    /// one was under way already (then the caller does not end it).
    @discardableResult
    mutating func beginBurst() -> Bool {
        defer { self.inReadBurst = true }
        return self.inReadBurst
    }

    mutating func endBurst() -> Output? {
        self.inReadBurst = false
        return self.flush()
    }

    /// The flush `append` asked for.
    mutating func scheduledFlush() -> Output? {
        self.flushScheduled = false
        return self.flush()
    }

    /// Writes and flushes what is pending; also flushes frames written out at the threshold.
    mutating func flush() -> Output? {
        guard self.needsFlush else { return nil }
        self.needsFlush = false
        if let out = self.pending.take() { return .writeAndFlush(out) }
        return .flush
    }

    /// The connection closed: what is pending is dropped.
    mutating func discard() {
        self.pending = nil
        self.needsFlush = false
    }
}

extension ChannelHandlerContext {
    /// Runs what the batcher returned (after its call has returned).
    func write(batched output: OutboundBatcher.Output?) {
        switch output {
        case .write(let buffer)?: self.write(NIOAny(buffer), promise: nil)
        case .writeAndFlush(let buffer)?: self.writeAndFlush(NIOAny(buffer), promise: nil)
        case .flush?: self.flush()
        case nil: break
        }
    }
}
