import NIOCore
import NIOPosix
import Synchronization

/// A TCP proxy on loopback that a case can blackhole: a partition that drops packets rather than refusing them.
/// While blackholed it still accepts connections and reads what comes, but forwards nothing either way, so each
/// side sees a silent peer until its own timeouts fire. Restored, it closes the connections it starved (their
/// streams lost bytes) and forwards again.
final class BlackholeProxy: Sendable {
    private let server: any Channel
    private let gate: Gate
    let port: Int

    var address: String { "127.0.0.1:\(port)" }

    private init(server: any Channel, gate: Gate, port: Int) {
        self.server = server
        self.gate = gate
        self.port = port
    }

    /// Listens on a free port of 127.0.0.1 and forwards each connection to `host:port`.
    static func start(
        forwardingTo host: String, port: Int, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> BlackholeProxy {
        let gate = Gate()
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { inbound in
                let relay = Relay(gate: gate)
                do {
                    try inbound.pipeline.syncOperations.addHandler(relay)
                } catch {
                    return inbound.eventLoop.makeFailedFuture(error)
                }
                let boundRelay = NIOLoopBound(relay, eventLoop: inbound.eventLoop)
                return ClientBootstrap(group: inbound.eventLoop)
                    .connectTimeout(.seconds(2))
                    .channelInitializer { outbound in
                        outbound.eventLoop.makeCompletedFuture {
                            try outbound.pipeline.syncOperations.addHandler(Relay(gate: gate, partner: inbound))
                        }
                    }
                    .connect(host: host, port: port)
                    .map { outbound in
                        boundRelay.value.connected(to: outbound)
                        gate.track(inbound)
                        gate.track(outbound)
                    }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return BlackholeProxy(server: server, gate: gate, port: server.localAddress?.port ?? 0)
    }

    /// From now on nothing passes either way.
    func blackhole() { gate.set(blackholed: true) }

    /// Forwards again; the connections that lost bytes are closed, so their clients reconnect on clean streams.
    func restore() {
        for channel in gate.set(blackholed: false) { channel.close(promise: nil) }
    }

    func stop() async {
        try? await server.close()
        for channel in gate.set(blackholed: true) { try? await channel.close() }
    }

    /// Whether bytes pass, and the connections to close on restore.
    fileprivate final class Gate: Sendable {
        private struct State {
            var blackholed = false
            var channels: [ObjectIdentifier: any Channel] = [:]
        }

        private let state = Mutex(State())

        var blackholed: Bool { state.withLock { $0.blackholed } }

        func track(_ channel: any Channel) {
            let id = ObjectIdentifier(channel)
            state.withLock { $0.channels[id] = channel }
            channel.closeFuture.whenComplete { _ in _ = self.state.withLock { $0.channels.removeValue(forKey: id) } }
        }

        /// Sets the gate; returns the connections open now.
        @discardableResult
        func set(blackholed: Bool) -> [any Channel] {
            state.withLock {
                $0.blackholed = blackholed
                return Array($0.channels.values)
            }
        }
    }

    /// One side of a proxied connection: what it reads goes to its partner, unless the gate is shut. The accepted
    /// side holds what it reads until its outgoing connection is up.
    private final class Relay: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer

        private let gate: Gate
        private var partner: (any Channel)?
        private var early: [ByteBuffer] = []

        init(gate: Gate, partner: (any Channel)? = nil) {
            self.gate = gate
            self.partner = partner
        }

        func connected(to partner: any Channel) {
            self.partner = partner
            for buffer in early where !gate.blackholed { partner.write(buffer, promise: nil) }
            early = []
            partner.flush()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard let partner else {
                early.append(Self.unwrapInboundIn(data))
                return
            }
            guard !gate.blackholed else { return }
            partner.writeAndFlush(Self.unwrapInboundIn(data), promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            partner?.close(promise: nil)
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}
