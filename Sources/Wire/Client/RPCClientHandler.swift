import Logging
import NIOCore
import Proto

/// How a call ends: the peer's response envelope, or an error raised on this side.
enum CallOutcome {
    case response(WireResponse)
    case failure(RPCError)
}

/// Completes one call with its outcome; built by `RPCClient.call`, which decodes the response type there.
typealias CallCompletion = @Sendable (CallOutcome) -> Void

/// One call on its way out from another thread (or before the connection is up): its payload is serialized
/// already; the connection handler gives it a call id.
struct OutgoingCall: Sendable {
    var method: String
    var payload: ByteBuffer
    var timeout: TimeAmount?
    var token: String
    var complete: CallCompletion
}

/// The client side of one connection: numbers the calls, cuts the byte stream into response frames and matches
/// them to the calls by call id (in any order),
/// fails a call at its deadline, and fails every call in flight with UNAVAILABLE when the connection drops.
///
/// Calls reach it through `send`, called directly by the connection on this event loop (not through the
/// pipeline: no `NIOAny` box per call). Requests are encoded into one outgoing buffer, written and flushed once
/// per read burst or loop tick.
final class RPCClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Calls in flight by call id (it numbers them).
    private var pending = PendingCalls<CallCompletion>()
    private let logger: Logger
    private var context: ChannelHandlerContext?
    private var loopBoundSelf: NIOLoopBound<RPCClientHandler>?

    /// Requests not yet handed to the channel.
    private var outbound = OutboundBatcher()
    private let frames: FrameReader
    /// The channel's, kept here as on the server (`RPCServerHandler.allocator`): no retain of the channel per call.
    private var allocator = ByteBufferAllocator()
    private var isActive = false

    /// Deadlines without a timer each. One `scheduleTask` per call cost an allocation of the task and its
    /// promise, and each cancellation (on every answer) is a linear search of the event loop's timer heap:
    /// with 16,000 calls in flight that search dominated the client's profile (`perf`, `scripts/bench.sh
    /// wire`, 16 in flight). Instead the deadlines of the calls in flight are kept in order (calls with the
    /// same timeout arrive in deadline order, so this is an append), answered calls are dropped lazily, and one
    /// timer per connection is armed for the earliest deadline.
    private var deadlines = CircularBuffer<(deadline: NIODeadline, callID: UInt64)>()
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    /// While a read burst is under way: the time its first call sent from a response's completion read, which the
    /// burst's other calls count their deadlines from. A load generator sends the next call from each answer, so
    /// reading the clock per call was ~2 % of its CPU at 16 in flight (`__vdso_clock_gettime`, `perf`); a deadline
    /// at most one burst (microseconds) early is harmless.
    private var burstClock: NIODeadline?

    init(maxFrameSize: Int, logger: Logger) {
        self.frames = FrameReader(maxFrameSize: maxFrameSize)
        self.logger = logger
    }

    var callsInFlight: Int { self.pending.count }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.allocator = context.channel.allocator
        self.isActive = context.channel.isActive
        self.loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.failAll()
        self.context = nil
        self.loopBoundSelf = nil
    }

    // MARK: sending

    /// Sends one call whose payload is written by `writePayload`, straight into the outgoing buffer.
    func send(
        method: String, timeout: TimeAmount?, token: String, complete: @escaping CallCompletion,
        writePayload: (inout ByteBuffer) -> Void
    ) {
        guard let context = self.context, self.isActive || self.becameActive(context) else {
            // Failed on the next tick, not from inside the call: a caller that retries at once must not recurse.
            let eventLoop = self.context?.eventLoop
            let failure = RPCError.notSent(.unavailable, "connection closed before the call was sent")
            if let eventLoop { eventLoop.execute { complete(.failure(failure)) } } else { complete(.failure(failure)) }
            return
        }
        var timeoutUs: Int64 = 0
        var deadline: NIODeadline?
        if let timeout {
            guard timeout.nanoseconds > 0 else {
                complete(.failure(RPCError.notSent(.deadlineExceeded, "deadline passed before the call was sent")))
                return
            }
            timeoutUs = max(1, timeout.nanoseconds / 1000)
            deadline = self.now() + timeout
        }
        let callID = self.pending.add(complete)
        if let deadline { self.track(deadline, callID: callID) }

        let (output, scheduleFlush) = self.outbound.append(allocator: self.allocator) { buffer in
            Framing.writeFrame(into: &buffer) {
                WireEnvelope.writeRequest(
                    into: &$0, callID: callID, method: method, timeoutUs: timeoutUs, token: token, payload: writePayload)
            }
        }
        context.write(batched: output)
        if scheduleFlush {
            let loopBoundSelf = self.loopBoundSelf
            context.eventLoop.execute {
                guard let handler = loopBoundSelf?.value, let context = handler.context else { return }
                context.write(batched: handler.outbound.scheduledFlush())
            }
        }
    }

    func send(_ call: OutgoingCall) {
        self.send(method: call.method, timeout: call.timeout, token: call.token, complete: call.complete) {
            $0.writeImmutableBuffer(call.payload)
        }
    }

    // MARK: deadlines

    private func now() -> NIODeadline {
        guard self.outbound.isInBurst else { return .now() }
        if let clock = self.burstClock { return clock }
        let clock = NIODeadline.now()
        self.burstClock = clock
        return clock
    }

    private func track(_ deadline: NIODeadline, callID: UInt64) {
        // Not `deadlines.last`: that generic accessor copied the element through value witnesses (`perf`).
        if !self.deadlines.isEmpty, deadline < self.deadlines[self.deadlines.index(before: self.deadlines.endIndex)].deadline {
            // A shorter timeout than a call before it: insert in order (rare; linear).
            let index = self.deadlines.firstIndex { $0.deadline > deadline } ?? self.deadlines.endIndex
            self.deadlines.insert((deadline, callID), at: index)
        } else {
            self.deadlines.append((deadline, callID))
        }
        // Answered calls are dropped lazily; keep the queue within a constant factor of the calls in flight.
        if self.deadlines.count > 2 * self.pending.count + 64 {
            self.deadlines.removeAll { !self.pending.contains($0.callID) }
        }
        if self.timerDeadline.map({ deadline < $0 }) ?? true {
            self.armTimer(at: deadline)
        }
    }

    private func armTimer(at deadline: NIODeadline) {
        guard let context = self.context, let loopBoundSelf = self.loopBoundSelf else { return }
        self.timer?.cancel()
        self.timerDeadline = deadline
        self.timer = context.eventLoop.scheduleTask(deadline: deadline) {
            loopBoundSelf.value.timerFired()
        }
    }

    private func timerFired() {
        self.timer = nil
        self.timerDeadline = nil
        let now = NIODeadline.now()
        while let first = self.deadlines.first {
            guard self.pending.contains(first.callID) else {
                self.deadlines.removeFirst()  // answered already
                continue
            }
            guard first.deadline <= now else { break }
            // Out of both tables before the caller hears of it (it may send again from its callback).
            // A late response for this id is dropped: the caller has its answer already.
            self.deadlines.removeFirst()
            let complete = self.pending.remove(first.callID)!
            complete(.failure(RPCError(.deadlineExceeded, "deadline exceeded")))
        }
        if let next = self.deadlines.first {
            self.armTimer(at: next.deadline)
        }
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.outbound.beginBurst()
        do {
            try self.frames.read(Self.unwrapInboundIn(data)) { self.responseReceived($0, context: context) }
        } catch {
            self.logger.debug("closing connection after stream error", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    /// False when the connection closes over it.
    private func responseReceived(_ frame: ByteBuffer, context: ChannelHandlerContext) -> Bool {
        let response: WireResponse
        do {
            response = try WireEnvelope.decodeResponse(frame)
        } catch {
            // Closing drops what the reader holds (channelInactive); false stops the read here.
            self.logger.warning("closing connection: peer sent a malformed response envelope")
            context.close(promise: nil)
            return false
        }
        guard let complete = self.pending.remove(response.callId) else {
            if response.callId == 0 {
                self.logger.warning("peer refused a request", metadata: ["status": "\(response.status)", "message": "\(response.message)"])
            }
            return true  // expired already
        }
        complete(.response(response))
        return true
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.burstClock = nil
        context.write(batched: self.outbound.endBurst())
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.logger.debug("closing connection after error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    func channelActive(context: ChannelHandlerContext) {
        self.isActive = true
        context.fireChannelActive()
    }

    /// NIO completes the connect promise before it fires `channelActive`, and calls waiting for the connection are
    /// sent from that promise's callback: until then the channel is asked.
    private func becameActive(_ context: ChannelHandlerContext) -> Bool {
        self.isActive = context.channel.isActive
        return self.isActive
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.isActive = false
        self.frames.discard()
        self.failAll()
        context.fireChannelInactive()
    }

    private func failAll() {
        self.timer?.cancel()
        self.timer = nil
        self.timerDeadline = nil
        self.deadlines.removeAll()
        self.outbound.discard()
        for complete in self.pending.removeAll() {
            complete(.failure(RPCError(.unavailable, "connection closed with the call in flight")))
        }
    }
}
