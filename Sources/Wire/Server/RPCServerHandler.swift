import Logging
import NIOCore
import Proto

/// What every call of one connection shares, made once when the connection's handler is added: a call's context
/// and responder hold one reference to it instead of each copying the event loop, the logger, the task group and
/// the handler (their retains and releases were ~6 % of an edge's CPU per call in session 11's profile of
/// `flashsale-bench calls`). The handler drops it when removed; calls still running keep it until they answer.
final class ServerConnection: Sendable {
    let handler: NIOLoopBound<RPCServerHandler>
    let logger: ConnectionLogger
    /// Where the connection runs its async handlers.
    let calls: ConnectionCalls

    var eventLoop: any EventLoop { self.handler.eventLoop }

    init(handler: RPCServerHandler, eventLoop: any EventLoop, logger: ConnectionLogger, calls: ConnectionCalls) {
        self.logger = logger
        self.calls = calls
        self.handler = NIOLoopBound(handler, eventLoop: eventLoop)
    }
}

/// Completes one server call from any thread by hopping to the connection's event loop.
struct RawResponder: Sendable {
    let connection: ServerConnection
    let serial: UInt64

    /// On the connection's loop the response is serialized straight into the connection's outgoing buffer
    /// (no intermediate buffer); from elsewhere it is serialized here, then handed over.
    func succeed<Response: ProtoMessage>(_ response: Response) {
        if self.connection.eventLoop.inEventLoop {
            self.connection.handler.value.succeed(serial: self.serial, response)
        } else {
            self.complete(.success(response.serializedBuffer()))
        }
    }

    func complete(_ result: Result<ByteBuffer, RPCError>) {
        if self.connection.eventLoop.inEventLoop {
            self.connection.handler.value.complete(serial: self.serial, result)
        } else {
            let handler = self.connection.handler
            let serial = self.serial
            self.connection.eventLoop.execute { handler.value.complete(serial: serial, result) }
        }
    }
}

/// The server side of one connection: cuts the byte stream into frames, decodes request envelopes, dispatches them
/// to the router, writes the responses in whatever order they complete. It only translates channel events into inputs of its
/// `ServerConnectionStateMachine` (back-pressure, timers, drain) and `CallAdmission`, and runs what they return.
final class RPCServerHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Never
    typealias OutboundOut = ByteBuffer

    /// Sent by the server on graceful shutdown: stop reading, finish the calls in flight, then close.
    struct Drain: Sendable {}

    private let router: RPCRouter
    private let baseLogger: Logger
    private let calls: ConnectionCalls
    private var context: ChannelHandlerContext?
    /// Set while the handler is in a pipeline.
    private var connection: ServerConnection?

    private var state: ServerConnectionStateMachine
    private var admission: CallAdmission
    private let frames: FrameReader
    private var outbound = OutboundBatcher()
    /// The channel's, kept here: each `context.channel` is a retain and a release of the channel, twice for every
    /// answer (its `isActive` and its `allocator`), ~3 % of a call's CPU (`flashsale-bench calls`, `perf`).
    private var allocator = ByteBufferAllocator()
    /// Between `channelActive` and `channelInactive` (NIO fires that within `close`, so no write follows a close).
    private var isActive = false
    /// The connection's one idle timer and one frame timer, armed by the state machine.
    private var idleTimer: Scheduled<Void>?
    private var frameTimer: Scheduled<Void>?

    /// `calls` runs the connection's async handlers (`RPCServer` passes its connection's task group).
    init(router: RPCRouter, configuration: RPCServerConfiguration, logger: Logger, calls: ConnectionCalls = .unowned) {
        self.router = router
        self.baseLogger = logger
        self.calls = calls
        self.state = ServerConnectionStateMachine(configuration: .init(
            maxCallsInFlight: configuration.maxCallsInFlightPerConnection,
            idleTimeout: configuration.idleTimeout, frameTimeout: configuration.frameTimeout))
        self.admission = CallAdmission(router: router, credentials: configuration.credentials)
        self.frames = FrameReader(maxFrameSize: configuration.maxFrameSize)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.allocator = context.channel.allocator
        self.connection = ServerConnection(
            handler: self, eventLoop: context.eventLoop,
            logger: ConnectionLogger(base: self.baseLogger, peer: context.channel.remoteAddress), calls: self.calls)
        if !context.channel.isWritable { _ = self.state.writabilityChanged(isWritable: false) }
        if context.channel.isActive {
            self.isActive = true
            self.run(self.state.activated(now: context.eventLoop.now))
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        self.isActive = true
        self.run(self.state.activated(now: context.eventLoop.now))
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.frameTimer?.cancel()
        self.frameTimer = nil
        self.idleTimer?.cancel()
        self.idleTimer = nil
        self.context = nil
        self.connection = nil
    }

    private var logger: Logger { self.connection?.logger.logger ?? self.baseLogger }

    /// Carries out what the state machine decided.
    private func run(_ action: ServerConnectionStateMachine.Action) {
        guard let context = self.context else { return }
        switch action {
        case .none:
            break
        case .read:
            context.read()
        case .armIdleTimer(let deadline):
            let handler = self.connection?.handler
            self.idleTimer = context.eventLoop.scheduleTask(deadline: deadline) { handler?.value.idleTimerFired() }
        case .armFrameTimer(let deadline):
            let handler = self.connection?.handler
            self.frameTimer = context.eventLoop.scheduleTask(deadline: deadline) { handler?.value.frameTimerFired() }
        case .close(.idle):
            self.idleTimer = nil
            self.logger.debug("closing idle connection")
            context.close(promise: nil)
        case .close(.partialFrameTimeout):
            self.logger.debug("closing connection: a partial frame held past the frame timeout")
            context.close(promise: nil)
        case .close(.drained):
            context.write(batched: self.outbound.flush())
            context.close(promise: nil)
        }
    }

    private func idleTimerFired() {
        guard let context = self.context else { return }
        self.run(self.state.idleTimerFired(now: context.eventLoop.now))
    }

    private func frameTimerFired() {
        self.frameTimer = nil
        guard let context = self.context else { return }
        self.run(self.state.frameTimerFired(now: context.eventLoop.now))
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.outbound.beginBurst()
        do {
            try self.frames.read(Self.unwrapInboundIn(data)) { frame in
                self.frameReceived(frame)
                return true
            }
        } catch {
            // Framing errors break the stream: nothing after them can be trusted, so the connection closes.
            self.logger.debug("closing connection after stream error", metadata: ["error": "\(error)"])
            context.close(promise: nil)
            return
        }
        if self.frames.holdsPartialFrame {
            self.run(self.state.partialFrameHeld(now: context.eventLoop.now))
        }
    }

    private func frameReceived(_ frame: ByteBuffer) {
        self.state.frameReceived()
        let request: WireRequest
        do {
            request = try WireEnvelope.decodeRequest(frame)
        } catch {
            // The frame boundary is intact, so the stream is still usable: answer with call id 0.
            self.writeResponse(callID: 0, .failure(RPCError(.invalidArgument, "frame is not a valid request envelope")))
            return
        }
        if self.state.requestReceived(request, now: NIODeadline.now()) {
            self.start(request, arrival: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.state.readCompleted(now: context.eventLoop.now)
        context.write(batched: self.outbound.endBurst())
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.logger.debug("closing connection after error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.isActive = false
        self.state.closed()
        self.outbound.discard()
        self.frames.discard()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        self.run(self.state.writabilityChanged(isWritable: context.channel.isWritable))
        context.fireChannelWritabilityChanged()
    }

    // MARK: outbound

    func read(context: ChannelHandlerContext) {
        self.run(self.state.readRequested())
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is Drain else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        self.run(self.state.drain())
        promise?.succeed()
    }

    // MARK: calls

    /// `arrival` is set for a call that waited in the queue.
    private func start(_ request: WireRequest, arrival: NIODeadline?) {
        switch self.admission.admit(request, arrival: arrival, now: NIODeadline.now()) {
        case .reject(let callID, let error):
            self.writeResponse(callID: callID, .failure(error))
        case .start(let call):
            guard let connection = self.connection else { return }
            let serial = self.state.callStarted(callID: call.callID)
            let callContext = ServerCallContext(
                method: call.method, callID: call.callID, deadline: call.deadline, admittedAt: call.admittedAt,
                connection: connection)
            call.route.invoke(request.payload, callContext, RawResponder(connection: connection, serial: serial))
        }
    }

    /// Several answers for this connection at once (see `RPCResponder.completeAll`): written with one flush.
    func completeBatch<Response: ProtoMessage>(_ answers: [(serial: UInt64, result: Result<Response, RPCError>)]) {
        let wasInBurst = self.outbound.beginBurst()
        for answer in answers {
            switch answer.result {
            case .success(let response): self.succeed(serial: answer.serial, response)
            case .failure(let error): self.complete(serial: answer.serial, .failure(error))
            }
        }
        if !wasInBurst, let context = self.context { context.write(batched: self.outbound.endBurst()) }
    }

    func complete(serial: UInt64, _ result: Result<ByteBuffer, RPCError>) {
        guard let callID = self.state.callFinished(serial: serial) else { return }  // answered already
        self.writeResponse(callID: callID, result)
        self.afterCompletion()
    }

    /// A successful answer completed on the loop: the response is serialized straight into the outgoing buffer.
    func succeed<Response: ProtoMessage>(serial: UInt64, _ response: Response) {
        guard let callID = self.state.callFinished(serial: serial) else { return }  // answered already
        self.appendResponse(callID: callID, status: 0, message: "") { response.serialize(into: &$0) }
        self.afterCompletion()
    }

    private func afterCompletion() {
        while let next = self.state.nextQueued() {
            self.start(next.request, arrival: next.arrival)
        }
        self.run(self.state.callsSettled())
    }

    private func writeResponse(callID: UInt64, _ result: Result<ByteBuffer, RPCError>) {
        switch result {
        case .success(let payload):
            self.appendResponse(callID: callID, status: 0, message: "") { $0.writeImmutableBuffer(payload) }
        case .failure(let error):
            self.appendResponse(callID: callID, status: error.code.rawValue, message: error.message) { _ in }
        }
    }

    private func appendResponse(callID: UInt64, status: Int32, message: String, payload: (inout ByteBuffer) -> Void) {
        guard self.isActive, let context = self.context else { return }
        let (output, scheduleFlush) = self.outbound.append(allocator: self.allocator) { buffer in
            Framing.writeFrame(into: &buffer) {
                WireEnvelope.writeResponse(into: &$0, callID: callID, status: status, message: message, payload: payload)
            }
        }
        context.write(batched: output)
        if scheduleFlush {
            let loopBoundSelf = self.connection?.handler
            context.eventLoop.execute {
                guard let handler = loopBoundSelf?.value, let context = handler.context else { return }
                context.write(batched: handler.outbound.scheduledFlush())
            }
        }
    }
}

/// The server's logger and the connection's peer, put together only when something is logged: a logger with the
/// peer as metadata, made when the connection opened, cost 0.58 KiB on every connection (its metadata dictionary
/// and the formatted address; `flashsale-bench edge-rss`), and connections rarely log.
struct ConnectionLogger: Sendable {
    let base: Logger
    var peer: SocketAddress?

    var logger: Logger {
        var logger = self.base
        if let peer = self.peer { logger[metadataKey: "peer"] = "\(peer)" }
        return logger
    }
}
