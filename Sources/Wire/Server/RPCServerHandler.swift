import Logging
import NIOCore
import Proto

/// Completes one server call from any thread by hopping to the connection's event loop.
struct RawResponder: Sendable {
    let handler: NIOLoopBound<RPCServerHandler>
    let serial: UInt64

    /// On the connection's loop the response is serialized straight into the connection's outgoing buffer
    /// (no intermediate buffer); from elsewhere it is serialized here, then handed over.
    func succeed<Response: ProtoMessage>(_ response: Response) {
        if self.handler.eventLoop.inEventLoop {
            self.handler.value.succeed(serial: self.serial, response)
        } else {
            self.complete(.success(response.serializedBuffer()))
        }
    }

    func complete(_ result: Result<ByteBuffer, RPCError>) {
        if self.handler.eventLoop.inEventLoop {
            self.handler.value.complete(serial: self.serial, result)
        } else {
            let handler = self.handler
            let serial = self.serial
            handler.eventLoop.execute { handler.value.complete(serial: serial, result) }
        }
    }
}

/// The server side of one connection: decodes request envelopes, dispatches them to the router, writes the
/// responses in whatever order they complete, and applies back-pressure by not reading past the in-flight cap.
final class RPCServerHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Never
    typealias OutboundOut = ByteBuffer

    /// Sent by the server on graceful shutdown: stop reading, finish the calls in flight, then close.
    struct Drain: Sendable {}

    private let router: RPCRouter
    private let configuration: RPCServerConfiguration
    private var logger: Logger
    private var context: ChannelHandlerContext?
    private var loopBoundSelf: NIOLoopBound<RPCServerHandler>?

    /// Calls started and not yet answered, by server-side serial (call ids are the client's and may repeat).
    private var inFlight: [UInt64: UInt64] = [:]
    private var nextSerial: UInt64 = 0
    /// Requests decoded while at the cap: at most what one read produced, since reading stops at the cap.
    private var queued = CircularBuffer<(WireRequest, NIODeadline)>()
    private var readPending = false
    private var inReadBurst = false
    private var needsFlush = false
    private var draining = false
    /// Since when the decoder holds a partial frame (nil: at a frame boundary), and the one timer that checks it.
    private var partialFrameSince: NIODeadline?
    private var frameTimer: Scheduled<Void>?
    /// The end of the last read, and the one timer that closes the connection once it is idle (`idleTimeout`).
    /// On the loop's clock, so that EmbeddedChannel tests can advance it (NIO's IdleStateHandler reads the real one).
    private var lastRead = NIODeadline.uptimeNanoseconds(0)
    private var idleTimer: Scheduled<Void>?
    /// Answers not yet handed to the channel: every answer of a read burst (or of a loop tick) is appended to
    /// one buffer and written with one write and one flush, rather than a buffer, a pipeline write and a
    /// pending-write node per answer (those showed up in `perf` profiles of `scripts/bench.sh wire`).
    private var pendingOut: ByteBuffer?
    /// Past this many bytes a burst's answers are written out (not yet flushed) and a new buffer started.
    private static let pendingOutLimit = 64 * 1024
    /// The route of the previous call: a connection nearly always calls the same few methods, and comparing a
    /// (usually small) string is cheaper than hashing it for the router's dictionary.
    private var lastMethod = ""
    private var lastRoute: RPCRouter.Route?

    init(router: RPCRouter, configuration: RPCServerConfiguration, logger: Logger) {
        self.router = router
        self.configuration = configuration
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
        if let remote = context.channel.remoteAddress {
            self.logger[metadataKey: "peer"] = "\(remote)"
        }
        if context.channel.isActive { self.startIdleTimer(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        self.startIdleTimer(context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.frameTimer?.cancel()
        self.frameTimer = nil
        self.idleTimer?.cancel()
        self.idleTimer = nil
        self.context = nil
        self.loopBoundSelf = nil
    }

    private var isAtCapacity: Bool {
        self.inFlight.count + self.queued.count >= self.configuration.maxCallsInFlightPerConnection
    }

    /// Reading stops while the connection is at its cap of calls, draining, or its answers are not being taken
    /// (a client that sends and never reads would otherwise make the server buffer its answers without bound).
    private func mayRead(_ context: ChannelHandlerContext) -> Bool {
        !self.isAtCapacity && !self.draining && context.channel.isWritable
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.inReadBurst = true
        self.partialFrameSince = nil
        let frame = Self.unwrapInboundIn(data)
        let request: WireRequest
        do {
            request = try WireEnvelope.decodeRequest(frame)
        } catch {
            // The frame boundary is intact, so the stream is still usable: answer with call id 0.
            self.writeResponse(callID: 0, .failure(RPCError(.invalidArgument, "frame is not a valid request envelope")))
            return
        }
        if self.inFlight.count >= self.configuration.maxCallsInFlightPerConnection {
            self.queued.append((request, NIODeadline.now()))
        } else {
            self.start(request, arrival: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.inReadBurst = false
        if self.idleTimer != nil { self.lastRead = context.eventLoop.now }
        self.flushIfNeeded()
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Framing errors break the stream: nothing after them can be trusted, so the connection closes.
        self.logger.debug("closing connection after stream error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.queued.removeAll()
        self.pendingOut = nil
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is FrameDecoder.PartialFrameStarted {
            if let timeout = self.configuration.frameTimeout {
                let now = context.eventLoop.now
                self.partialFrameSince = now
                if self.frameTimer == nil { self.armFrameTimer(context, at: now + timeout) }
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable && self.readPending && self.mayRead(context) {
            self.readPending = false
            context.read()
        }
        context.fireChannelWritabilityChanged()
    }

    // MARK: idle timeout

    private func startIdleTimer(_ context: ChannelHandlerContext) {
        guard let timeout = self.configuration.idleTimeout, self.idleTimer == nil else { return }
        self.lastRead = context.eventLoop.now
        self.armIdleTimer(context, at: self.lastRead + timeout)
    }

    private func armIdleTimer(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        let handler = self.loopBoundSelf
        self.idleTimer = context.eventLoop.scheduleTask(deadline: deadline) { handler?.value.idleTimerFired() }
    }

    /// Closes a connection with nothing read for `idleTimeout` and nothing in flight; otherwise checks again when
    /// it could next be idle that long.
    private func idleTimerFired() {
        guard let context = self.context, let timeout = self.configuration.idleTimeout else { return }
        let now = context.eventLoop.now
        if now - self.lastRead < timeout {
            self.armIdleTimer(context, at: self.lastRead + timeout)
        } else if self.inFlight.isEmpty && self.queued.isEmpty {
            self.idleTimer = nil
            self.logger.debug("closing idle connection")
            context.close(promise: nil)
        } else {
            self.armIdleTimer(context, at: now + timeout)
        }
    }

    // MARK: frame timeout

    private func armFrameTimer(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        let handler = self.loopBoundSelf
        self.frameTimer = context.eventLoop.scheduleTask(deadline: deadline) { handler?.value.frameTimerFired() }
    }

    /// One timer per connection, only while a partial frame is held: it re-arms for the partial frame held now.
    private func frameTimerFired() {
        self.frameTimer = nil
        guard let context = self.context, let since = self.partialFrameSince, let timeout = self.configuration.frameTimeout
        else { return }
        let now = context.eventLoop.now
        if self.readPending {
            // We are not reading this connection (back-pressure): the client cannot finish its frame. Start over.
            self.partialFrameSince = now
            self.armFrameTimer(context, at: now + timeout)
        } else if now - since >= timeout {
            self.logger.debug("closing connection: a partial frame held past the frame timeout")
            context.close(promise: nil)
        } else {
            self.armFrameTimer(context, at: since + timeout)
        }
    }

    // MARK: outbound

    func read(context: ChannelHandlerContext) {
        if self.mayRead(context) {
            context.read()
        } else {
            self.readPending = true
        }
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is Drain else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        self.draining = true
        self.closeIfDrained()
        promise?.succeed()
    }

    // MARK: calls

    /// `arrival` is set for a call that waited in the queue; its budget counts from when it was read.
    private func start(_ request: WireRequest, arrival: NIODeadline?) {
        guard request.callId != 0 else {
            return self.writeResponse(callID: 0, .failure(RPCError(.invalidArgument, "call_id is required")))
        }
        guard !request.method.isEmpty else {
            return self.writeResponse(callID: request.callId, .failure(RPCError(.invalidArgument, "method is required")))
        }
        let route: RPCRouter.Route
        if let last = self.lastRoute, request.method == self.lastMethod {
            route = last
        } else if let found = self.router.routes[request.method] {
            route = found
            self.lastMethod = request.method
            self.lastRoute = found
        } else {
            return self.writeResponse(
                callID: request.callId, .failure(RPCError(.unimplemented, "unknown method \(request.method)")))
        }
        if let refusal = self.configuration.credentials.refusal(route.access, token: request.token) {
            return self.writeResponse(callID: request.callId, .failure(refusal))
        }
        var deadline: NIODeadline?
        if request.timeoutUs < 0 {
            return self.writeResponse(callID: request.callId, .failure(RPCError(.deadlineExceeded, "deadline already passed")))
        } else if request.timeoutUs > 0 {
            let now = NIODeadline.now()
            let expiry = (arrival ?? now) + .microseconds(request.timeoutUs)
            guard expiry > now else {
                return self.writeResponse(
                    callID: request.callId, .failure(RPCError(.deadlineExceeded, "deadline passed before the call started")))
            }
            deadline = expiry
        }
        guard let context = self.context, let loopBoundSelf = self.loopBoundSelf else { return }
        let serial = self.nextSerial
        self.nextSerial &+= 1
        self.inFlight[serial] = request.callId
        let callContext = ServerCallContext(
            method: request.method, callID: request.callId, deadline: deadline,
            eventLoop: context.eventLoop, logger: self.logger)
        route.invoke(request.payload, callContext, RawResponder(handler: loopBoundSelf, serial: serial))
    }

    /// Several answers for this connection at once (see `RPCResponder.completeAll`): written with one flush.
    func completeBatch<Response: ProtoMessage>(_ answers: [(serial: UInt64, result: Result<Response, RPCError>)]) {
        let wasInBurst = self.inReadBurst
        self.inReadBurst = true
        for answer in answers {
            switch answer.result {
            case .success(let response): self.succeed(serial: answer.serial, response)
            case .failure(let error): self.complete(serial: answer.serial, .failure(error))
            }
        }
        self.inReadBurst = wasInBurst
        if !wasInBurst { self.flushIfNeeded() }
    }

    func complete(serial: UInt64, _ result: Result<ByteBuffer, RPCError>) {
        guard let callID = self.inFlight.removeValue(forKey: serial) else { return }  // answered already
        self.writeResponse(callID: callID, result)
        self.afterCompletion()
    }

    /// A successful answer completed on the loop: the response is serialized straight into the outgoing buffer.
    func succeed<Response: ProtoMessage>(serial: UInt64, _ response: Response) {
        guard let callID = self.inFlight.removeValue(forKey: serial) else { return }  // answered already
        self.appendResponse(callID: callID, status: 0, message: "") { response.serialize(into: &$0) }
        self.afterCompletion()
    }

    private func afterCompletion() {
        while self.inFlight.count < self.configuration.maxCallsInFlightPerConnection, let (request, arrival) = self.queued.popFirst() {
            self.start(request, arrival: arrival)
        }
        if self.readPending, let context = self.context, self.mayRead(context) {
            self.readPending = false
            context.read()
        }
        self.closeIfDrained()
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
        guard let context = self.context, context.channel.isActive else { return }
        if self.pendingOut == nil {
            self.pendingOut = context.channel.allocator.buffer(capacity: 512)
        }
        WireEnvelope.writeResponseFrame(into: &self.pendingOut!, callID: callID, status: status, message: message, payload: payload)
        if self.pendingOut!.readableBytes >= Self.pendingOutLimit {
            context.write(Self.wrapOutboundOut(self.pendingOut.take()!), promise: nil)
        }
        if self.inReadBurst {
            self.needsFlush = true  // flushed once at channelReadComplete: one syscall for a burst of answers
        } else if !self.needsFlush {
            // Answers completed from elsewhere (a queue's consumer answering a whole batch) come in bursts too:
            // one flush at the end of this loop tick rather than a syscall per answer.
            self.needsFlush = true
            let loopBoundSelf = self.loopBoundSelf
            context.eventLoop.execute { loopBoundSelf?.value.flushIfNeeded() }
        }
    }

    private func flushIfNeeded() {
        guard self.needsFlush else { return }
        self.needsFlush = false
        guard let context = self.context else { return }
        if let out = self.pendingOut.take() {
            context.write(Self.wrapOutboundOut(out), promise: nil)
        }
        context.flush()
    }

    private func closeIfDrained() {
        if self.draining && self.inFlight.isEmpty && self.queued.isEmpty {
            self.flushIfNeeded()
            self.context?.close(promise: nil)
        }
    }
}
