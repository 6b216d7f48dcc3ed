import Addressing
import NIOCore
import NIOPosix
import ServiceKit
import Synchronization

/// A TCP proxy on loopback that a test or a fault case can blackhole: a partition that drops packets rather than
/// refusing them. Being a userspace proxy it still ACKs at the TCP level, so only the peers' own timeouts notice.
public final class BlackholeProxy: Sendable {
    public enum Mode: Sendable {
        /// Only what clients send is dropped: on the connections open at the cut (for good: they never forward
        /// again) and on every connection accepted until `restore()` (accepted, then silent). Answers the server
        /// still sends on old connections are delivered, so a statement the server received before the cut is
        /// answered as usual: only statements the server never saw fail, which makes "no order without a PURCHASED
        /// answer" an exact check.
        case requests
        /// Nothing passes either way; restored, the connections that starved (their streams lost bytes) are closed,
        /// so their clients reconnect on clean streams.
        case bothWays
    }

    private let server: any Channel
    private let gate: Gate
    public let port: Int

    public var address: String { "127.0.0.1:\(port)" }

    private init(server: any Channel, gate: Gate, port: Int) {
        self.server = server
        self.gate = gate
        self.port = port
    }

    /// Listens on a free port of 127.0.0.1 and forwards each connection to `host:port`.
    public static func start(
        forwardingTo host: String = "127.0.0.1", port: Int, mode: Mode,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> BlackholeProxy {
        let gate = Gate(mode: mode)
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { inbound in
                let link = Link()
                let relay = Relay(gate: gate, link: link, carriesRequests: true)
                do {
                    try inbound.pipeline.syncOperations.addHandler(relay)
                } catch {
                    return inbound.eventLoop.makeFailedFuture(error)
                }
                gate.track(inbound)
                // A connection accepted while cut (requests mode) stays silent: it never reaches the server.
                guard gate.opened(link) else { return inbound.eventLoop.makeSucceededVoidFuture() }
                let boundRelay = NIOLoopBound(relay, eventLoop: inbound.eventLoop)
                return ClientBootstrap(group: inbound.eventLoop)
                    .connectTimeout(.seconds(2))
                    .channelInitializer { outbound in
                        outbound.eventLoop.makeCompletedFuture {
                            try outbound.pipeline.syncOperations.addHandler(
                                Relay(gate: gate, link: link, carriesRequests: false, partner: inbound))
                        }
                    }
                    .connect(host: host, port: port)
                    .map { outbound in
                        boundRelay.value.connected(to: outbound)
                        gate.track(outbound)
                    }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return BlackholeProxy(server: server, gate: gate, port: server.localAddress?.port ?? 0)
    }

    /// Forwards to the first host of a connection string (`host:port,host:port`, ZooKeeper's form).
    public static func start(forwardingToFirstOf hosts: String, mode: Mode) async throws -> BlackholeProxy {
        guard let first = hosts.split(separator: ",").first.flatMap({ HostPort($0) }) else {
            throw ClusterError.commandFailed("no port in \(hosts)")
        }
        return try await start(forwardingTo: first.host, port: first.port, mode: mode)
    }

    /// The cut: from now on nothing passes (both ways), or nothing clients send (requests).
    public func blackhole() { gate.set(blackholed: true) }

    /// New connections reach the server again; in `bothWays` mode the starved ones are closed.
    public func restore() {
        let open = gate.set(blackholed: false)
        if gate.mode == .bothWays { for channel in open { channel.close(promise: nil) } }
    }

    public func stop() async {
        try? await server.close()
        for channel in gate.set(blackholed: true) { try? await channel.close() }
    }

    /// One proxied connection. Dead (requests mode): what its client sends is dropped for good.
    fileprivate final class Link: Sendable {
        private let state = Atomic<Bool>(false)
        var dead: Bool { state.load(ordering: .relaxed) }
        func kill() { state.store(true, ordering: .relaxed) }
    }

    /// Whether bytes pass, and the connections open now.
    fileprivate final class Gate: Sendable {
        private struct State {
            var blackholed = false
            var channels: [ObjectIdentifier: any Channel] = [:]
            var links: [ObjectIdentifier: Link] = [:]
        }

        let mode: Mode
        private let state = Mutex(State())

        init(mode: Mode) { self.mode = mode }

        func track(_ channel: any Channel) {
            let id = ObjectIdentifier(channel)
            state.withLock { $0.channels[id] = channel }
            channel.closeFuture.whenComplete { _ in _ = self.state.withLock { $0.channels.removeValue(forKey: id) } }
        }

        /// Registers a new connection; false when it must never reach the server (accepted during a requests cut).
        func opened(_ link: Link) -> Bool {
            state.withLock { state in
                guard mode == .requests else { return true }
                state.links[ObjectIdentifier(link)] = link
                if state.blackholed { link.kill() }
                return !link.dead
            }
        }

        func closed(_ link: Link) {
            _ = state.withLock { $0.links.removeValue(forKey: ObjectIdentifier(link)) }
        }

        /// Whether a relay drops what it reads now.
        func drops(_ link: Link, carriesRequests: Bool) -> Bool {
            switch mode {
            case .requests: carriesRequests && link.dead
            case .bothWays: state.withLock { $0.blackholed }
            }
        }

        /// Sets the gate (a requests cut kills the links open now); returns the connections open now.
        @discardableResult
        func set(blackholed: Bool) -> [any Channel] {
            state.withLock { state in
                state.blackholed = blackholed
                if blackholed { for link in state.links.values { link.kill() } }
                return Array(state.channels.values)
            }
        }
    }

    /// One side of a proxied connection: what it reads goes to its partner unless the gate drops it. The accepted
    /// side holds what it reads until its outgoing connection is up.
    private final class Relay: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer

        private let gate: Gate
        private let link: Link
        private let carriesRequests: Bool
        private var partner: (any Channel)?
        private var early: [ByteBuffer] = []

        init(gate: Gate, link: Link, carriesRequests: Bool, partner: (any Channel)? = nil) {
            self.gate = gate
            self.link = link
            self.carriesRequests = carriesRequests
            self.partner = partner
        }

        func connected(to partner: any Channel) {
            self.partner = partner
            for buffer in early where !gate.drops(link, carriesRequests: carriesRequests) { partner.write(buffer, promise: nil) }
            early = []
            partner.flush()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !gate.drops(link, carriesRequests: carriesRequests) else { return }
            guard let partner else {
                early.append(Self.unwrapInboundIn(data))
                return
            }
            partner.writeAndFlush(Self.unwrapInboundIn(data), promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            gate.closed(link)
            partner?.close(promise: nil)
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}
