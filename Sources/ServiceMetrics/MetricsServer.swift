import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle

/// A tiny HTTP/1.1 server for Prometheus: `GET /metrics` answers the registry in the text exposition format (after
/// running the scrape hooks), `GET /health` answers `ok`, anything else 404. Run as a `Service`: list it first in the
/// service group so that it is the last to stop (the other services' final figures stay visible while they drain).
/// Its `METRICS` line is the executables' to print, with their READY line (ServiceKit's `MetricsOptions.services`).
public final class MetricsServer: Service, Sendable {
    public let service: String
    private let host: String
    private let port: Int
    private let registry: PrometheusCollectorRegistry
    private let hooks: ScrapeHooks
    private let group: any EventLoopGroup
    private let logger: Logger
    private let bound: EventLoopPromise<SocketAddress>

    public init(
        service: String, host: String, port: Int, registry: PrometheusCollectorRegistry = ServiceMetrics.registry,
        hooks: ScrapeHooks, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger
    ) {
        self.service = service
        self.host = host
        self.port = port
        self.registry = registry
        self.hooks = hooks
        self.group = group
        self.logger = logger
        self.bound = group.next().makePromise()
    }

    /// The address the metrics port listens on, once it does.
    public func localAddress() async throws -> SocketAddress {
        try await bound.futureResult.get()
    }

    /// The exposition text of this process's metrics, hooks run first.
    public func render() -> [UInt8] {
        hooks.run()
        return registry.emitToBuffer()
    }

    public func run() async throws {
        let render: @Sendable () -> [UInt8] = { [self] in self.render() }
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(render: render))
                    }
                }
                .bind(host: host, port: port)
                .get()
        } catch {
            bound.fail(error)
            logger.error("metrics port could not bind", metadata: ["host": "\(host)", "port": "\(port)", "error": "\(error)"])
            throw error
        }
        let address = channel.localAddress!
        bound.succeed(address)
        logger.info("metrics serving", metadata: ["address": "\(address)"])
        try? await gracefulShutdown()
        try? await channel.close()
    }
}

/// One HTTP connection of the metrics port.
final class MetricsHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let render: @Sendable () -> [UInt8]
    private var head: HTTPRequestHead?

    init(render: @escaping @Sendable () -> [UInt8]) {
        self.render = render
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch Self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head else { return }
            self.head = nil
            respond(context: context, to: head)
        }
    }

    private func respond(context: ChannelHandlerContext, to head: HTTPRequestHead) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let status: HTTPResponseStatus
        let contentType: String
        var body = context.channel.allocator.buffer(capacity: 0)
        switch (head.method, path) {
        case (.GET, "/metrics"):
            status = .ok
            contentType = "text/plain; version=0.0.4; charset=utf-8"
            body.writeBytes(render())
        case (.GET, "/health"):
            status = .ok
            contentType = "text/plain; charset=utf-8"
            body.writeString("ok\n")
        case (_, "/metrics"), (_, "/health"):
            status = .methodNotAllowed
            contentType = "text/plain; charset=utf-8"
            body.writeString("GET only\n")
        default:
            status = .notFound
            contentType = "text/plain; charset=utf-8"
            body.writeString("not found: try /metrics\n")
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: "\(body.readableBytes)")
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(Self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        context.write(Self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(Self.wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }
}
