import Foundation
import NIOCore
import NIOPosix

/// A TCP proxy in front of a real server that a test can blackhole: from `blackhole()` on, whatever clients send is
/// dropped, on the connections open then (for good: they never forward again) and on every connection accepted until
/// `restore()` (accepted, then silent, as a host behind a dropping firewall looks to a client with a connect timeout).
/// Answers the server still sends on old connections are delivered, so a statement the server received before the
/// blackhole is answered as usual: the only statements that fail are those the server never saw, which makes "no
/// order without a PURCHASED answer" an exact check. Being a userspace proxy, it ACKs at the TCP level, so only the
/// client's own statement and connect timeouts can notice it.
final class BlackholeProxy: @unchecked Sendable {
    // @unchecked: `blackholed` and `links` are guarded by `lock`.
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let target: SocketAddress
    private let lock = NSLock()
    private var blackholed = false
    private var links: [ObjectIdentifier: Link] = [:]
    private var listener: (any Channel)?
    private(set) var port = 0

    /// One client connection: dropped once dead.
    final class Link: @unchecked Sendable {
        // @unchecked: `dead` under `lock`; the channels are touched on the proxy's one event loop.
        private let lock = NSLock()
        private var _dead = false
        var dead: Bool {
            get { lock.withLock { _dead } }
            set { lock.withLock { _dead = newValue } }
        }
        var upstream: (any Channel)?
        var pending: [ByteBuffer] = []
    }

    init(targetPort: Int, host: String = "127.0.0.1") throws {
        target = try SocketAddress(ipAddress: host, port: targetPort)
    }

    static func start(targetPort: Int) async throws -> BlackholeProxy {
        let proxy = try BlackholeProxy(targetPort: targetPort)
        let channel = try await ServerBootstrap(group: proxy.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ClientSide(proxy: proxy))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        proxy.listener = channel
        proxy.port = channel.localAddress?.port ?? 0
        return proxy
    }

    /// Drops everything clients send from now on; the connections open now stay dead after `restore()`.
    func blackhole() {
        lock.withLock {
            blackholed = true
            for link in links.values { link.dead = true }
        }
    }

    /// New connections reach the server again.
    func restore() {
        lock.withLock { blackholed = false }
    }

    func stop() async {
        try? await listener?.close()
        try? await group.shutdownGracefully()
    }

    fileprivate func opened(_ link: Link) -> Bool {
        lock.withLock {
            links[ObjectIdentifier(link)] = link
            if blackholed { link.dead = true }
            return !link.dead
        }
    }

    fileprivate func closed(_ link: Link) {
        _ = lock.withLock { links.removeValue(forKey: ObjectIdentifier(link)) }
    }

    /// The accepted (client) side: connects upstream unless blackholed, forwards while the link lives.
    private final class ClientSide: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        private let proxy: BlackholeProxy
        private let link = Link()

        init(proxy: BlackholeProxy) { self.proxy = proxy }

        func channelActive(context: ChannelHandlerContext) {
            guard proxy.opened(link) else { return }
            let client = context.channel
            let link = self.link
            ClientBootstrap(group: context.eventLoop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ServerSide(client: client))
                    }
                }
                .connect(to: proxy.target)
                .whenComplete { result in
                    switch result {
                    case .success(let upstream):
                        link.upstream = upstream
                        for buffer in link.pending where !link.dead { upstream.write(buffer, promise: nil) }
                        link.pending = []
                        upstream.flush()
                    case .failure:
                        client.close(promise: nil)
                    }
                }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !link.dead else { return }
            let buffer = unwrapInboundIn(data)
            if let upstream = link.upstream {
                upstream.writeAndFlush(buffer, promise: nil)
            } else {
                link.pending.append(buffer)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            proxy.closed(link)
            link.upstream?.close(promise: nil)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }

    /// The upstream (server) side: every answer goes back to the client, dead link or not.
    private final class ServerSide: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        private let client: any Channel

        init(client: any Channel) { self.client = client }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            client.writeAndFlush(unwrapInboundIn(data), promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            client.close(promise: nil)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}
