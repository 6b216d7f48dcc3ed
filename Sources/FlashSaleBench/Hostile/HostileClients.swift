import Foundation
import NIOCore
import NIOPosix
import Proto
import Synchronization
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// Raw TCP connections that misbehave on purpose against one server on loopback. Each kind counts what the server
/// did to it; nothing here speaks the protocol beyond writing frames.
final class HostileClients: Sendable {
    let host: String
    let port: Int
    let group: any EventLoopGroup

    /// What happened, counted from every hostile task.
    final class Counters: Sendable {
        let opened = Atomic(0)
        let peakOpen = Atomic(0)
        let open = Atomic(0)
        let connectFailures = Atomic(0)
        /// Idle connections the server closed, and the sum of how long each lived (ms).
        let idleClosed = Atomic(0)
        let idleLifetimeMsTotal = Atomic(0)
        /// Slow frames cut off by the server, answered anyway (the frame timeout did not fire), and lifetimes.
        let slowStarted = Atomic(0)
        let slowClosed = Atomic(0)
        let slowAnswered = Atomic(0)
        let slowLifetimeMsTotal = Atomic(0)
        /// Oversized length headers sent; connections the server closed at once; ones it did not close.
        let oversizedSent = Atomic(0)
        let oversizedClosed = Atomic(0)
        let oversizedNotClosed = Atomic(0)
        /// Connect-and-close storm: connections made and dropped (FIN, RST, or after half a frame).
        let stormConnections = Atomic(0)
        /// Clients that send big requests and never read the answers: connections, bytes the kernel took from
        /// them, connections the server closed.
        let nonReaders = Atomic(0)
        let nonReaderBytes = Atomic(0)
        let nonReadersClosed = Atomic(0)

        func didOpen() {
            opened.wrappingAdd(1, ordering: .relaxed)
            let now = open.wrappingAdd(1, ordering: .relaxed).newValue
            var peak = peakOpen.load(ordering: .relaxed)
            while now > peak {
                let (exchanged, original) = peakOpen.compareExchange(expected: peak, desired: now, ordering: .relaxed)
                if exchanged { break }
                peak = original
            }
        }

        func didClose() { open.wrappingSubtract(1, ordering: .relaxed) }
    }

    let counters = Counters()

    init(host: String, port: Int, group: any EventLoopGroup) {
        self.host = host
        self.port = port
        self.group = group
    }

    /// Counts what a hostile connection receives (answers to slow frames, if ever).
    private final class Sink: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received = Atomic(0)
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            received.wrappingAdd(Self.unwrapInboundIn(data).readableBytes, ordering: .relaxed)
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }

    private func connect(autoRead: Bool = true) async throws -> (any Channel, Sink) {
        let sink = Sink()
        do {
            let channel = try await ClientBootstrap(group: group)
                .connectTimeout(.seconds(5))
                .channelOption(.autoRead, value: autoRead)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(sink) }
                }
                .connect(host: host, port: port).get()
            counters.didOpen()
            channel.closeFuture.whenComplete { _ in self.counters.didClose() }
            return (channel, sink)
        } catch {
            counters.connectFailures.wrappingAdd(1, ordering: .relaxed)
            throw error
        }
    }

    /// Waits until the channel closes or `timeout` passes; true when it closed.
    private func closes(_ channel: any Channel, within timeout: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { (try? await channel.closeFuture.get()) != nil || !channel.isActive }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first || !channel.isActive
        }
    }

    // MARK: idle

    /// Opens `count` connections that never send a byte (500 connects at a time) and keeps them until the server
    /// closes them or `until` passes. Returns once all are open.
    func openIdle(_ count: Int, until: ContinuousClock.Instant) async -> [any Channel] {
        var channels: [any Channel] = []
        channels.reserveCapacity(count)
        for start in stride(from: 0, to: count, by: 500) {
            await withTaskGroup(of: (any Channel)?.self) { group in
                for _ in start..<min(start + 500, count) {
                    group.addTask {
                        guard let (channel, _) = try? await self.connect() else { return nil }
                        let opened = ContinuousClock.now
                        channel.closeFuture.whenComplete { _ in
                            guard ContinuousClock.now < until else { return }  // closed by us at the end
                            self.counters.idleClosed.wrappingAdd(1, ordering: .relaxed)
                            let ms = Int((ContinuousClock.now - opened) / .milliseconds(1))
                            self.counters.idleLifetimeMsTotal.wrappingAdd(ms, ordering: .relaxed)
                        }
                        return channel
                    }
                }
                for await channel in group { if let channel { channels.append(channel) } }
            }
        }
        return channels
    }

    // MARK: slow

    /// A client that sends a valid Ping frame one byte every `interval`, reconnecting whenever the server cuts it off,
    /// until `until`.
    func slowClient(interval: Duration, until: ContinuousClock.Instant) async {
        var frame = ByteBuffer()
        let request = WireRequest(
            callId: 1, method: CommonRPC.Ping.name, payload: WirePingRequest(data: ByteBuffer(repeating: 0x61, count: 40)).serializedBuffer())
        Framing.writeFrame(into: &frame) { request.serialize(into: &$0) }
        while ContinuousClock.now < until {
            guard let (channel, sink) = try? await connect() else {
                try? await Task.sleep(for: .milliseconds(100))
                continue
            }
            counters.slowStarted.wrappingAdd(1, ordering: .relaxed)
            let started = ContinuousClock.now
            var rest = frame
            while let byte = rest.readSlice(length: 1), channel.isActive, ContinuousClock.now < until {
                try? await channel.writeAndFlush(byte)
                try? await Task.sleep(for: interval)
            }
            if !channel.isActive {
                counters.slowClosed.wrappingAdd(1, ordering: .relaxed)
                counters.slowLifetimeMsTotal.wrappingAdd(
                    Int((ContinuousClock.now - started) / .milliseconds(1)), ordering: .relaxed)
            } else if rest.readableBytes == 0 {
                try? await Task.sleep(for: .milliseconds(200))
                if sink.received.load(ordering: .relaxed) > 0 { counters.slowAnswered.wrappingAdd(1, ordering: .relaxed) }
                try? await channel.close()
            } else {
                try? await channel.close()
            }
        }
    }

    // MARK: oversized

    /// Connects, sends a length header far over the limit and some bytes, and checks the server closes at once;
    /// again and again until `until`.
    func oversizedFlood(until: ContinuousClock.Instant) async {
        var header = ByteBuffer()
        header.writeInteger(UInt32(0x7FFF_FFF0))
        header.writeBytes(Array(repeating: UInt8(0x42), count: 64))
        while ContinuousClock.now < until {
            guard let (channel, _) = try? await connect() else {
                try? await Task.sleep(for: .milliseconds(50))
                continue
            }
            counters.oversizedSent.wrappingAdd(1, ordering: .relaxed)
            try? await channel.writeAndFlush(header)
            if await closes(channel, within: .seconds(2)) {
                counters.oversizedClosed.wrappingAdd(1, ordering: .relaxed)
            } else {
                counters.oversizedNotClosed.wrappingAdd(1, ordering: .relaxed)
                try? await channel.close()
            }
        }
    }

    // MARK: storm

    /// Connect-and-close: `perSecond` connections a second, dropped at once with RST (most: no TIME_WAIT left to
    /// take the ephemeral ports), with FIN, or after half a frame.
    func storm(perSecond: Int, until: ContinuousClock.Instant) async {
        let pause = Duration.seconds(1) / max(perSecond, 1)
        var half = ByteBuffer()
        half.writeInteger(UInt32(100))
        half.writeBytes([1, 2, 3])
        var n = 0
        while ContinuousClock.now < until {
            let next = ContinuousClock.now + pause
            n += 1
            if let (channel, _) = try? await connect() {
                counters.stormConnections.wrappingAdd(1, ordering: .relaxed)
                switch n % 4 {
                case 0: try? await channel.close()  // FIN
                case 1: try? await channel.writeAndFlush(half); fallthrough
                default:
                    if let options = channel as? any SocketOptionProvider {
                        _ = try? await options.setSoLinger(linger(l_onoff: 1, l_linger: 0)).get()
                    }
                    try? await channel.close()  // RST
                }
            }
            try? await Task.sleep(until: next)
        }
    }

    // MARK: non-readers

    /// Sends Ping requests with 60 KB of data (echoed back) as fast as the connection takes them, never reading
    /// an answer: the server must stop reading this connection rather than buffer its answers without bound (and
    /// then close it as idle). Reconnects whenever the server closes, until `until`.
    func nonReader(until: ContinuousClock.Instant) async {
        var frame = ByteBuffer()
        let request = WireRequest(
            callId: 1, method: CommonRPC.Ping.name, payload: WirePingRequest(data: ByteBuffer(repeating: 0x62, count: 60_000)).serializedBuffer())
        Framing.writeFrame(into: &frame) { request.serialize(into: &$0) }
        while ContinuousClock.now < until {
            guard let (channel, _) = try? await connect(autoRead: false) else {
                try? await Task.sleep(for: .milliseconds(100))
                continue
            }
            counters.nonReaders.wrappingAdd(1, ordering: .relaxed)
            // Each write completes once the kernel took it: when the server stops reading, writes stop completing.
            let writer = Task {
                while channel.isActive {
                    do { try await channel.writeAndFlush(frame) } catch { return }
                    self.counters.nonReaderBytes.wrappingAdd(frame.readableBytes, ordering: .relaxed)
                }
            }
            if await closes(channel, within: until - ContinuousClock.now) {
                counters.nonReadersClosed.wrappingAdd(1, ordering: .relaxed)
            }
            try? await channel.close()
            await writer.value
        }
    }
}
