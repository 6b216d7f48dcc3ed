import Logging
import NIOCore
import NIOPosix
import Proto
import Synchronization

public struct RPCClientConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// Connections in the pool; calls are spread over them (and prefer one on the caller's event loop).
    public var connections: Int
    public var maxFrameSize: Int
    public var connectTimeout: TimeAmount
    /// Used when a call names no timeout of its own. Nil: no deadline.
    public var defaultTimeout: TimeAmount?
    public var initialBackoff: TimeAmount
    public var maxBackoff: TimeAmount
    /// Sent with every call; operator methods need it.
    public var token: String

    public init(
        host: String = "127.0.0.1", port: Int, connections: Int = 1,
        maxFrameSize: Int = Framing.defaultMaxFrameSize, connectTimeout: TimeAmount = .seconds(2),
        defaultTimeout: TimeAmount? = .seconds(10), initialBackoff: TimeAmount = .milliseconds(20),
        maxBackoff: TimeAmount = .seconds(1), token: String = ""
    ) {
        self.host = host
        self.port = port
        self.connections = max(1, connections)
        self.maxFrameSize = maxFrameSize
        self.connectTimeout = connectTimeout
        self.defaultTimeout = defaultTimeout
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
        self.token = token
    }

    /// Between reconnects of a dropped connection: `initialBackoff` doubling to `maxBackoff`, jittered, so that
    /// many clients of a restarted server do not all come back at once.
    var reconnectBackoff: Backoff { Backoff(initial: Duration(initialBackoff), max: Duration(maxBackoff)) }
}

/// A pool of multiplexed connections to one server. Calls in flight fail with UNAVAILABLE when their
/// connection drops; the connection comes back by itself, with exponential backoff.
public final class RPCClient: Sendable {
    public let configuration: RPCClientConfiguration
    private let connections: [ClientConnection]
    private let roundRobin = Atomic<Int>(0)

    public init(
        configuration: RPCClientConfiguration,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger
    ) {
        self.configuration = configuration
        self.connections = (0..<configuration.connections).map { index in
            ClientConnection(configuration: configuration, eventLoop: group.next(), logger: logger, index: index)
        }
    }

    /// True while at least one connection of the pool is up (a call failing UNAVAILABLE with the pool still up was
    /// refused by the server, not lost with a connection).
    public var isConnected: Bool { self.connections.contains { $0.isReady } }

    /// An event loop of this client's connections, for timers that belong with its calls.
    public var eventLoop: any EventLoop { self.connections[0].eventLoop }

    /// Calls `method` and waits for its answer; a non-OK status is thrown as `RPCError`.
    public func call<Request: ProtoMessage, Response: ProtoMessage>(
        _ method: String, _ request: Request, as: Response.Type = Response.self,
        timeout: TimeAmount? = nil, token: String? = nil
    ) async throws -> Response {
        try await withCheckedThrowingContinuation { continuation in
            self.call(method, request, as: Response.self, timeout: timeout, token: token) { continuation.resume(with: $0) }
        }
    }

    /// The future-returning form, for callers on an event loop (the edge forwarding a purchase).
    public func callFuture<Request: ProtoMessage, Response: ProtoMessage>(
        _ method: String, _ request: Request, as: Response.Type = Response.self,
        timeout: TimeAmount? = nil, token: String? = nil
    ) -> EventLoopFuture<Response> {
        let connection = self.pickConnection()
        let promise = connection.eventLoop.makePromise(of: Response.self)
        self.call(on: connection, method, request, timeout: timeout, token: token) { (result: Result<Response, RPCError>) in
            promise.completeWith(result.mapError { $0 })
        }
        return promise.futureResult
    }

    /// The callback form, for callers on an event loop that make a call for every message they handle (the load
    /// generators): `completion` runs on the connection's event loop with the decoded response or the error (at
    /// once, on the caller's thread, for a call refused before it is sent). No promise and no future per call:
    /// their allocations and EventLoopFuture's generic-metadata lookups were a fifth of the load generator's CPU
    /// (`perf` of `scripts/bench.sh wire`, 16 in flight).
    public func call<Request: ProtoMessage, Response: ProtoMessage>(
        _ method: String, _ request: Request, as: Response.Type = Response.self,
        timeout: TimeAmount? = nil, token: String? = nil,
        completion: @escaping @Sendable (Result<Response, RPCError>) -> Void
    ) {
        self.call(on: self.pickConnection(), method, request, timeout: timeout, token: token, completion: completion)
    }

    /// The response is decoded in the completion itself: one closure per call, no chained future.
    private func call<Request: ProtoMessage, Response: ProtoMessage>(
        on connection: ClientConnection, _ method: String, _ request: Request,
        timeout: TimeAmount?, token: String?, completion: @escaping @Sendable (Result<Response, RPCError>) -> Void
    ) {
        connection.send(
            method, request, timeout: timeout ?? self.configuration.defaultTimeout,
            token: token ?? self.configuration.token
        ) { outcome in
            switch outcome {
            case .response(let response):
                guard response.status == .ok else {
                    completion(.failure(RPCError(RPCError.Code(rawValue: response.status.rawValue), response.message)))
                    return
                }
                do {
                    completion(.success(try Response(decoding: response.payload)))
                } catch {
                    completion(.failure(RPCError(.internal, "response is not a valid \(Response.self)", cause: error)))
                }
            case .failure(let error):
                completion(.failure(error))
            }
        }
    }

    /// Prefers a ready connection on the caller's own event loop (no thread hop), then any ready one.
    private func pickConnection() -> ClientConnection {
        let count = self.connections.count
        if count == 1 { return self.connections[0] }
        let start = self.roundRobin.wrappingAdd(1, ordering: .relaxed).oldValue
        if let current = MultiThreadedEventLoopGroup.currentEventLoop {
            for offset in 0..<count {
                let connection = self.connections[(start &+ offset) % count]
                if connection.isReady && connection.eventLoop === current { return connection }
            }
        }
        for offset in 0..<count {
            let connection = self.connections[(start &+ offset) % count]
            if connection.isReady { return connection }
        }
        return self.connections[start % count]
    }

    /// Closes every connection; calls in flight fail with UNAVAILABLE.
    public func shutdown() async {
        for connection in self.connections { await connection.shutdown() }
    }
}

/// One pooled connection, its state confined to its event loop.
final class ClientConnection: Sendable {
    private enum State {
        case idle
        case connecting(waiting: [OutgoingCall])
        case ready(any Channel, RPCClientHandler)
        case backoff
        case shutdown
    }

    let eventLoop: any EventLoop
    private let configuration: RPCClientConfiguration
    private let logger: Logger
    private let state: NIOLoopBoundBox<State>
    private let backoff: NIOLoopBoundBox<Backoff.Iterator>
    private let ready = Atomic<Bool>(false)

    init(configuration: RPCClientConfiguration, eventLoop: any EventLoop, logger: Logger, index: Int) {
        self.eventLoop = eventLoop
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "upstream"] = "\(configuration.host):\(configuration.port)#\(index)"
        self.logger = logger
        self.state = .makeBoxSendingValue(.idle, eventLoop: eventLoop)
        self.backoff = .makeBoxSendingValue(configuration.reconnectBackoff.makeIterator(), eventLoop: eventLoop)
    }

    var isReady: Bool { self.ready.load(ordering: .relaxed) }

    /// On the connection's loop with the connection up (the common case: a caller on this loop), the request
    /// is serialized straight into the connection's outgoing buffer; otherwise it is serialized here and
    /// handed over.
    func send<Request: ProtoMessage>(
        _ method: String, _ request: Request, timeout: TimeAmount?, token: String,
        complete: @escaping CallCompletion
    ) {
        if self.eventLoop.inEventLoop, case .ready(_, let handler) = self.state.value {
            handler.send(method: method, timeout: timeout, token: token, complete: complete) {
                request.serialize(into: &$0)
            }
            return
        }
        let call = OutgoingCall(
            method: method, payload: request.serializedBuffer(), timeout: timeout, token: token, complete: complete)
        if self.eventLoop.inEventLoop {
            self.sendOnLoop(call)
        } else {
            self.eventLoop.execute { self.sendOnLoop(call) }
        }
    }

    private func sendOnLoop(_ call: OutgoingCall) {
        switch self.state.value {
        case .ready(_, let handler):
            handler.send(call)
        case .idle:
            self.state.value = .connecting(waiting: [call])
            self.connect()
        case .connecting(var waiting):
            waiting.append(call)
            self.state.value = .connecting(waiting: waiting)
        case .backoff:
            call.complete(.failure(RPCError.notSent(.unavailable, "\(self.configuration.host):\(self.configuration.port) is unreachable; reconnecting")))
        case .shutdown:
            call.complete(.failure(RPCError.notSent(.unavailable, "client is shut down")))
        }
    }

    private func connect() {
        let configuration = self.configuration
        let logger = self.logger
        ClientBootstrap(group: self.eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        RPCClientHandler(maxFrameSize: configuration.maxFrameSize, logger: logger))
                }
            }
            .connect(host: configuration.host, port: configuration.port)
            .hop(to: self.eventLoop)
            .whenComplete { result in self.connected(result) }
    }

    private func connected(_ result: Result<any Channel, any Error>) {
        guard case .connecting(let waiting) = self.state.value else {
            if case .success(let channel) = result { channel.close(promise: nil) }  // shut down meanwhile
            return
        }
        switch result {
        case .success(let channel):
            guard let handler = try? channel.pipeline.syncOperations.handler(type: RPCClientHandler.self) else {
                channel.close(promise: nil)
                for call in waiting { call.complete(.failure(RPCError.notSent(.internal, "connection has no call handler"))) }
                self.scheduleReconnect()
                return
            }
            self.state.value = .ready(channel, handler)
            self.ready.store(true, ordering: .relaxed)
            self.backoff.value = self.configuration.reconnectBackoff.makeIterator()
            channel.closeFuture.hop(to: self.eventLoop).whenComplete { _ in self.disconnected(channel) }
            for call in waiting { self.sendOnLoop(call) }
        case .failure(let error):
            self.logger.debug("connect failed", metadata: ["error": "\(error)"])
            for call in waiting {
                call.complete(.failure(RPCError.notSent(.unavailable, "cannot connect to \(self.configuration.host):\(self.configuration.port)", cause: error)))
            }
            self.scheduleReconnect()
        }
    }

    private func disconnected(_ channel: any Channel) {
        guard case .ready(let current, _) = self.state.value, current === channel else { return }
        self.ready.store(false, ordering: .relaxed)
        self.logger.debug("connection lost; reconnecting")
        self.scheduleReconnect()
    }

    private func scheduleReconnect() {
        self.state.value = .backoff
        // The backoff's own jitter keeps a fleet of clients from reconnecting in lock-step after a server restart.
        self.eventLoop.scheduleTask(in: TimeAmount(self.backoff.value.next())) {
            guard case .backoff = self.state.value else { return }
            self.state.value = .connecting(waiting: [])
            self.connect()
        }
    }

    func shutdown() async {
        let channel: (any Channel)? = try? await self.eventLoop.submit { () -> (any Channel)? in
            defer {
                self.state.value = .shutdown
                self.ready.store(false, ordering: .relaxed)
            }
            switch self.state.value {
            case .ready(let channel, _): return channel
            case .connecting(let waiting):
                for call in waiting { call.complete(.failure(RPCError.notSent(.unavailable, "client is shut down"))) }
                return nil
            default: return nil
            }
        }.get()
        try? await channel?.close()
    }
}
