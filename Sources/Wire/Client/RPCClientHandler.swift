import Logging
import NIOCore
import Proto

/// One call on its way out: the connection handler gives it a call id and remembers its promise.
struct OutgoingCall: Sendable {
    var method: String
    var payload: ByteBuffer
    var timeout: TimeAmount?
    var token: String
    var promise: EventLoopPromise<WireResponse>
}

/// The client side of one connection: numbers the calls, matches responses to them by call id (in any order),
/// fails a call at its deadline, and fails every call in flight with UNAVAILABLE when the connection drops.
final class RPCClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = OutgoingCall
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        var promise: EventLoopPromise<WireResponse>
        var timer: Scheduled<Void>?
    }

    private var pending: [UInt64: Pending] = [:]
    private var nextCallID: UInt64 = 1
    private let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    var callsInFlight: Int { self.pending.count }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let call = Self.unwrapOutboundIn(data)
        var timeoutUs: Int64 = 0
        if let timeout = call.timeout {
            guard timeout.nanoseconds > 0 else {
                call.promise.fail(RPCError(.deadlineExceeded, "deadline passed before the call was sent"))
                promise?.succeed()
                return
            }
            timeoutUs = max(1, timeout.nanoseconds / 1000)
        }
        let callID = self.nextCallID
        self.nextCallID &+= 1
        var timer: Scheduled<Void>?
        if let timeout = call.timeout {
            let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
            timer = context.eventLoop.scheduleTask(in: timeout) {
                loopBound.value.expire(callID: callID)
            }
        }
        self.pending[callID] = Pending(promise: call.promise, timer: timer)
        let request = WireRequest(
            callId: callID, method: call.method, timeoutUs: timeoutUs, token: call.token, payload: call.payload)
        var buffer = context.channel.allocator.buffer(capacity: 32 + call.method.utf8.count + call.payload.readableBytes)
        Framing.writeFrame(into: &buffer) { request.serialize(into: &$0) }
        context.write(Self.wrapOutboundOut(buffer), promise: promise)
    }

    private func expire(callID: UInt64) {
        // A late response for this id is dropped: the caller has its answer already.
        self.pending.removeValue(forKey: callID)?.promise.fail(RPCError(.deadlineExceeded, "deadline exceeded"))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let response: WireResponse
        do {
            response = try WireResponse(decoding: Self.unwrapInboundIn(data))
        } catch {
            self.logger.warning("closing connection: peer sent a malformed response envelope")
            context.close(promise: nil)
            return
        }
        guard let call = self.pending.removeValue(forKey: response.callId) else {
            if response.callId == 0 {
                self.logger.warning("peer refused a request", metadata: ["status": "\(response.status)", "message": "\(response.message)"])
            }
            return  // expired already
        }
        call.timer?.cancel()
        call.promise.succeed(response)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.logger.debug("closing connection after error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let calls = self.pending
        self.pending.removeAll()
        for (_, call) in calls {
            call.timer?.cancel()
            call.promise.fail(RPCError(.unavailable, "connection closed with the call in flight"))
        }
        context.fireChannelInactive()
    }
}
