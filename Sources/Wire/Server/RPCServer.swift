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
/// its idle timeout. Here a connection is registered in `serve`, once its pipeline exists, under the lock that
/// starts the drain, so none is missed; the same table gives the connection count the metrics report.
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
    }

    /// An accepted connection, and the stream of its async calls (see `ConnectionCalls`).
    private struct Connection: Sendable {
        let channel: any Channel
        let calls: ConnectionCalls
        let jobs: AsyncStream<ConnectionCalls.Job>
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
        let server: NIOAsyncChannel<Connection, Never>
        do {
            server = try await self.bind()
        } catch {
            self.bound.fail(error)
            throw error
        }
        let address = server.channel.localAddress!
        self.bound.succeed(address)
        self.logger.info("server listening", metadata: ["address": "\(address)", "methods": "\(router.methods)"])

        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { inbound in
                    for try await connection in inbound {
                        group.addTask { await self.serve(connection) }
                    }
                }
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

    private func bind() async throws -> NIOAsyncChannel<Connection, Never> {
        let configuration = self.configuration
        let router = self.router
        let logger = self.logger
        return try await ServerBootstrap(group: self.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 4096)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .bind(host: configuration.host, port: configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let (calls, jobs) = ConnectionCalls.makeStream()
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(ByteToMessageHandler(FrameDecoder(
                        maxFrameSize: configuration.maxFrameSize, reportsPartialFrames: configuration.frameTimeout != nil)))
                    try sync.addHandler(RPCServerHandler(router: router, configuration: configuration, logger: logger, calls: calls))
                    return Connection(channel: channel, calls: calls, jobs: jobs)
                }
            }
    }

    /// One connection's lifetime, and the task group its async calls run in. Never throws: one bad connection
    /// never stops the server.
    private func serve(_ connection: Connection) async {
        let channel = connection.channel
        let id = ObjectIdentifier(channel)
        let draining = self.connections.withLock { state in
            state.open[id] = channel
            return state.draining
        }
        if draining { channel.triggerUserOutboundEvent(RPCServerHandler.Drain(), promise: nil) }
        await withDiscardingTaskGroup { group in
            group.addTask {
                // Cancellation is the hard stop (graceful shutdown drains instead): close at once.
                await withTaskCancellationHandler {
                    try? await channel.closeFuture.get()
                } onCancel: {
                    channel.close(promise: nil)
                }
                connection.calls.finish()
            }
            for await call in connection.jobs {
                group.addTask(operation: call)
            }
            // Closed: the answers of calls still running have nowhere to go.
            group.cancelAll()
        }
        _ = self.connections.withLock { $0.open.removeValue(forKey: id) }
    }
}
