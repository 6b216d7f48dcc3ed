import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// A TCP server of multiplexed calls, run as a `Service`: on graceful shutdown it stops accepting, lets every
/// connection finish the calls it has in flight, then returns.
///
/// The drain is not NIOExtras' `ServerQuiescingHelper`: the helper fires its quiesce event at a connection
/// accepted while the server shuts down as soon as it is accepted, on the connection's loop, and with the async
/// bootstrap the connection's pipeline is built later on that loop (its initializer is submitted after the
/// helper's event), so the event can reach an empty pipeline and be lost: that connection would stay open until
/// its idle timeout. Here a connection is registered as the accept loop takes it, once its pipeline exists, under
/// the lock that starts the drain, so none is missed; the same table gives the connection count the metrics report
/// and tells `run` when the last connection has closed.
public final class RPCServer: Service, Sendable {
    private let configuration: RPCServerConfiguration
    private let router: RPCRouter
    private let group: any EventLoopGroup
    private let logger: Logger
    private let bound: EventLoopPromise<SocketAddress>
    private let connections = Mutex(Connections())

    private struct Connections {
        var open: [ObjectIdentifier: any Channel] = [:]
        var draining = false
        /// False once the listening socket is closed: the last connection to close then ends `run`.
        var accepting = true
    }

    public init(
        configuration: RPCServerConfiguration,
        router: RPCRouter,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger
    ) {
        self.configuration = configuration
        self.router = router
        self.group = group
        self.logger = logger
        self.bound = group.next().makePromise()
    }

    /// The address the server listens on, once it does (or the error that stopped it from binding).
    public func localAddress() async throws -> SocketAddress {
        try await self.bound.futureResult.get()
    }

    public var connectionCount: Int { self.connections.withLock { $0.open.count } }

    public func run() async throws {
        // The connections' task groups (see `ConnectionCalls`), started in this server's group as they are made.
        let (groups, spawner) = AsyncStream.makeStream(of: ConnectionCalls.Job.self)
        let server: NIOAsyncChannel<any Channel, Never>
        do {
            server = try await self.bind(spawn: { spawner.yield($0) })
        } catch {
            spawner.finish()
            self.bound.fail(error)
            throw error
        }
        let address = server.channel.localAddress!
        self.bound.succeed(address)
        self.logger.info("server listening", metadata: ["address": "\(address)", "methods": "\(router.methods)"])

        try await withGracefulShutdownHandler {
            try await withTaskCancellationHandler {
                try await withThrowingDiscardingTaskGroup { group in
                    group.addTask {
                        defer { self.stoppedAccepting(spawner) }
                        try await server.executeThenClose { inbound in
                            for try await channel in inbound { self.opened(channel, spawner) }
                        }
                    }
                    // Ends when the last connection has closed after the listening socket (or at a hard stop).
                    for await connectionGroup in groups { group.addTask(operation: connectionGroup) }
                }
            } onCancel: {
                // The hard stop (graceful shutdown drains instead): close every connection at once.
                for channel in self.connections.withLock({ Array($0.open.values) }) { channel.close(promise: nil) }
            }
        } onGracefulShutdown: {
            self.logger.info("server draining")
            server.channel.close(promise: nil)
            let open = self.connections.withLock { state in
                state.draining = true
                return Array(state.open.values)
            }
            for channel in open { channel.triggerUserOutboundEvent(RPCServerHandler.Drain(), promise: nil) }
        }
        self.logger.info("server stopped")
    }

    private func bind(spawn: @escaping @Sendable (@escaping ConnectionCalls.Job) -> Void) async throws
        -> NIOAsyncChannel<any Channel, Never>
    {
        let configuration = self.configuration
        let router = self.router
        let logger = self.logger
        return try await ServerBootstrap(group: self.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 4096)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            // A channel keeps its last receive buffer for the next read, so an idle connection holds one of the
            // allocator's size: NIO's initial 2 KiB cost 1.75 KiB more per connection than 256 bytes
            // (`flashsale-bench edge-rss`). A busy connection's buffer grows to its bursts after a read or two.
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 65536))
            .bind(host: configuration.host, port: configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let calls = ConnectionCalls(spawn: spawn)
                    channel.closeFuture.whenComplete { _ in calls.finish() }
                    try Self.addConnectionHandlers(
                        to: channel, router: router, configuration: configuration, logger: logger, calls: calls)
                    return channel
                }
            }
    }

    /// A server connection's handler, on `channel`'s event loop (it cuts its own frames). Every accepted
    /// connection gets them; `flashsale-bench calls` puts them on an embedded channel, to cost a call without sockets
    /// (its async handlers, having no connection task group, run in tasks of their own).
    public static func addConnectionHandlers(
        to channel: any Channel, router: RPCRouter, configuration: RPCServerConfiguration, logger: Logger
    ) throws {
        try addConnectionHandlers(to: channel, router: router, configuration: configuration, logger: logger, calls: .unowned)
    }

    static func addConnectionHandlers(
        to channel: any Channel, router: RPCRouter, configuration: RPCServerConfiguration, logger: Logger,
        calls: ConnectionCalls
    ) throws {
        try channel.pipeline.syncOperations.addHandler(
            RPCServerHandler(router: router, configuration: configuration, logger: logger, calls: calls))
    }

    /// An accepted connection, once its pipeline exists: counted until it closes, and drained at once if the
    /// server is draining. Holds no task: one bad connection never stops the server, and an idle one costs only
    /// its channel.
    private func opened(_ channel: any Channel, _ spawner: AsyncStream<ConnectionCalls.Job>.Continuation) {
        let id = ObjectIdentifier(channel)
        let draining = self.connections.withLock { state in
            state.open[id] = channel
            return state.draining
        }
        if draining { channel.triggerUserOutboundEvent(RPCServerHandler.Drain(), promise: nil) }
        channel.closeFuture.whenComplete { _ in
            let last = self.connections.withLock { state in
                state.open.removeValue(forKey: id)
                return !state.accepting && state.open.isEmpty
            }
            if last { spawner.finish() }
        }
    }

    private func stoppedAccepting(_ spawner: AsyncStream<ConnectionCalls.Job>.Continuation) {
        let none = self.connections.withLock { state in
            state.accepting = false
            return state.open.isEmpty
        }
        if none { spawner.finish() }
    }
}
