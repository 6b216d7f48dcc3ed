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

    /// Appends one frame (`write` writes it into the outgoing buffer). Returns true when the caller must run
    /// `scheduledFlush` at the end of this loop tick: outside a read burst, frames (answers completed from
    /// elsewhere, calls sent by other tasks) come in bursts too, and one flush per tick beats a syscall per frame.
    mutating func append(context: ChannelHandlerContext, _ write: (inout ByteBuffer) -> Void) -> Bool {
        if self.pending == nil { self.pending = context.channel.allocator.buffer(capacity: 512) }
        write(&self.pending!)
        if self.pending!.readableBytes >= Self.writeThreshold {
            context.write(NIOAny(self.pending.take()!), promise: nil)
        }
        self.needsFlush = true
        guard !self.inReadBurst, !self.flushScheduled else { return false }
        self.flushScheduled = true
        return true
    }

    /// A read burst (or a batch of answers) starts: its frames are flushed once, at `endBurst`. Returns whether
    /// one was under way already (then the caller does not end it).
    @discardableResult
    mutating func beginBurst() -> Bool {
        defer { self.inReadBurst = true }
        return self.inReadBurst
    }

    mutating func endBurst(context: ChannelHandlerContext) {
        self.inReadBurst = false
        self.flush(context: context)
    }

    /// The flush `append` asked for.
    mutating func scheduledFlush(context: ChannelHandlerContext) {
        self.flushScheduled = false
        self.flush(context: context)
    }

    /// Writes and flushes what is pending; also flushes frames written out at the threshold.
    mutating func flush(context: ChannelHandlerContext) {
        guard self.needsFlush else { return }
        self.needsFlush = false
        if let out = self.pending.take() {
            context.writeAndFlush(NIOAny(out), promise: nil)
        } else {
            context.flush()
        }
    }

    /// The connection closed: what is pending is dropped.
    mutating func discard() {
        self.pending = nil
        self.needsFlush = false
    }
}
