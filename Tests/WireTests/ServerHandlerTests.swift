import Logging
import NIOCore
import NIOEmbedded
import Proto
import Synchronization
import Testing

@testable import Wire

/// Counts the reads the server handler lets through, to observe its back-pressure.
private final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = Any
    var reads = 0
    func read(context: ChannelHandlerContext) {
        reads += 1
        context.read()
    }
}

/// The server's connection handler on an EmbeddedChannel: every envelope path, without sockets.
@Suite struct ServerHandlerTests {
    let logger = Logger(label: "test")

    private func makeChannel(
        router: RPCRouter, configuration: RPCServerConfiguration = RPCServerConfiguration()
    ) throws -> (EmbeddedChannel, ReadCounter) {
        let channel = EmbeddedChannel()
        let counter = ReadCounter()
        try channel.pipeline.syncOperations.addHandler(counter)
        try channel.pipeline.syncOperations.addHandler(
            RPCServerHandler(router: router, configuration: configuration, logger: logger))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, counter)
    }

    private func send(_ channel: EmbeddedChannel, _ request: WireRequest) throws {
        var buffer = ByteBuffer()
        Framing.writeFrame(into: &buffer) { request.serialize(into: &$0) }
        try channel.writeInbound(buffer)
    }

    private func sendRaw(_ channel: EmbeddedChannel, payload: [UInt8]) throws {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(payload.count))
        buffer.writeBytes(payload)
        try channel.writeInbound(buffer)
    }

    private func responses(_ channel: EmbeddedChannel) throws -> [WireResponse] {
        // Answers completed outside a read are flushed at the end of the loop tick: run it.
        channel.embeddedEventLoop.run()
        var out: [WireResponse] = []
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
            while let length = buffer.readInteger(as: UInt32.self) {
                out.append(try WireResponse(decoding: buffer.readSlice(length: Int(length))!))
            }
        }
        return out
    }

    private func ping(_ callID: UInt64, _ data: [UInt8] = [1]) -> WireRequest {
        WireRequest(callId: callID, method: CommonRPC.Ping.name, payload: WirePingRequest(data: ByteBuffer(bytes: data)).serializedBuffer())
    }

    @Test func answersPing() throws {
        let (channel, _) = try makeChannel(router: RPCRouter(serviceName: "svc"))
        try send(channel, ping(5, [4, 2]))
        let response = try #require(try responses(channel).first)
        #expect(response.callId == 5)
        #expect(response.status == .ok)
        let pong = try WirePingResponse(decoding: response.payload)
        #expect(pong.data == ByteBuffer(bytes: [4, 2]))
        #expect(pong.service == "svc")
    }

    @Test func unknownMethodIsUnimplementedAndTheConnectionStaysUsable() throws {
        let (channel, _) = try makeChannel(router: RPCRouter(serviceName: "svc"))
        try send(channel, WireRequest(callId: 1, method: "no.Such"))
        try send(channel, ping(2))
        let answers = try responses(channel)
        #expect(answers.map(\.callId) == [1, 2])
        #expect(answers[0].status == .unimplemented)
        #expect(answers[0].message.contains("no.Such"))
        #expect(answers[1].status == .ok)
        #expect(channel.isActive)
    }

    @Test func missingFieldsAreInvalidArgument() throws {
        let (channel, _) = try makeChannel(router: RPCRouter(serviceName: "svc"))
        try send(channel, WireRequest(callId: 3, method: ""))
        try send(channel, WireRequest(callId: 0, method: CommonRPC.Ping.name))
        let answers = try responses(channel)
        #expect(answers.map(\.status) == [.invalidArgument, .invalidArgument])
        #expect(answers.map(\.callId) == [3, 0])
        #expect(channel.isActive)
    }

    @Test func zeroLengthFrameIsAnEnvelopeWithoutFields() throws {
        let (channel, _) = try makeChannel(router: RPCRouter(serviceName: "svc"))
        try sendRaw(channel, payload: [])
        let answers = try responses(channel)
        #expect(answers.count == 1)
        #expect(answers[0].status == .invalidArgument)
        #expect(channel.isActive)
    }

    @Test func garbageEnvelopeIsRefusedWithCallIDZero() throws {
        let (channel, _) = try makeChannel(router: RPCRouter(serviceName: "svc"))
        try sendRaw(channel, payload: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])
        try send(channel, ping(9))
        let answers = try responses(channel)
        #expect(answers.map(\.callId) == [0, 9])
        #expect(answers[0].status == .invalidArgument)
        #expect(answers[1].status == .ok)
    }

    @Test func payloadThatIsNotTheMethodsMessageIsInvalidArgument() throws {
        let (channel, _) = try makeChannel(router: RPCRouter(serviceName: "svc"))
        try send(channel, WireRequest(callId: 4, method: CommonRPC.Ping.name, payload: ByteBuffer(bytes: [0x0a, 0x7f])))
        let answers = try responses(channel)
        #expect(answers.first?.status == .invalidArgument)
        #expect(answers.first?.callId == 4)
    }

    @Test func oversizedFrameClosesTheConnection() throws {
        var configuration = RPCServerConfiguration()
        configuration.maxFrameSize = 64
        let (channel, _) = try makeChannel(router: RPCRouter(serviceName: "svc"), configuration: configuration)
        var header = ByteBuffer()
        header.writeInteger(UInt32(1 << 30))
        _ = try? channel.writeInbound(header)
        #expect(!channel.isActive)
    }

    /// Each kind of method takes its own token only: none is UNAUTHENTICATED; a wrong one, or the other kind's, is
    /// PERMISSION_DENIED; public methods ignore tokens.
    @Test func eachMethodTakesItsOwnKindOfToken() throws {
        var router = RPCRouter(serviceName: "svc")
        for (method, access) in [("op.Do", RPCAccess.operator), ("svc.Do", .service), ("pub.Do", .public)] {
            router.register(method, access: access) { (_: WirePingRequest, _, responder: RPCResponder<WirePingResponse>) in
                responder.succeed(WirePingResponse(service: "done"))
            }
        }
        var configuration = RPCServerConfiguration()
        configuration.credentials = RPCCredentials(operatorToken: "operator-secret", serviceToken: "service-secret")
        let (channel, _) = try makeChannel(router: router, configuration: configuration)
        var callID: UInt64 = 0
        var expected: [WireStatusCode] = []
        for (method, right, other) in [("op.Do", "operator-secret", "service-secret"), ("svc.Do", "service-secret", "operator-secret")] {
            for (token, status) in [("", WireStatusCode.unauthenticated), ("wrong", .permissionDenied), (other, .permissionDenied), (right, .ok)] {
                callID += 1
                try send(channel, WireRequest(callId: callID, method: method, token: token))
                expected.append(status)
            }
        }
        for token in ["", "wrong", "operator-secret", "service-secret"] {
            callID += 1
            try send(channel, WireRequest(callId: callID, method: "pub.Do", token: token))
            expected.append(.ok)
        }
        let answers = try responses(channel)
        #expect(answers.map(\.status) == expected)
        #expect(answers[0].message == "this method needs the operator token")
        #expect(answers[6].message == "the service token was refused")
    }

    @Test func aServerWithoutATokenOfAKindRefusesEveryTokenForIt() throws {
        let refused = RPCCredentials(serviceToken: "service-secret").refusal(.operator, token: "service-secret")
        #expect(refused?.code == .permissionDenied)
        #expect(RPCCredentials().refusal(.service, token: "")?.code == .unauthenticated)
        #expect(RPCCredentials().refusal(.public, token: "") == nil)
    }

    @Test func expiredCallIsNotStarted() throws {
        let started = Mutex(0)
        var router = RPCRouter(serviceName: "svc")
        router.register("Count") { (_: WirePingRequest, _, responder: RPCResponder<WirePingResponse>) in
            started.withLock { $0 += 1 }
            responder.succeed(WirePingResponse())
        }
        let (channel, _) = try makeChannel(router: router)
        try send(channel, WireRequest(callId: 1, method: "Count", timeoutUs: -1))
        try send(channel, WireRequest(callId: 2, method: "Count", timeoutUs: 5_000_000))
        let answers = try responses(channel)
        #expect(answers.map(\.status) == [.deadlineExceeded, .ok])
        #expect(started.withLock { $0 } == 1)
    }

    @Test func answersInWhateverOrderCallsComplete() throws {
        let held = Mutex<[RPCResponder<WirePingResponse>]>([])
        var router = RPCRouter(serviceName: "svc")
        router.register("Hold") { (_: WirePingRequest, _, responder: RPCResponder<WirePingResponse>) in
            held.withLock { $0.append(responder) }
        }
        let (channel, _) = try makeChannel(router: router)
        for id in 1...3 { try send(channel, WireRequest(callId: UInt64(id), method: "Hold")) }
        #expect(try responses(channel).isEmpty)
        let responders = held.withLock { $0 }
        responders[2].succeed(WirePingResponse(service: "3"))
        responders[0].succeed(WirePingResponse(service: "1"))
        responders[0].succeed(WirePingResponse(service: "1 again"))  // ignored: a call completes once
        responders[1].fail(RPCError(.notFound, "two"))
        let answers = try responses(channel)
        #expect(answers.map(\.callId) == [3, 1, 2])
        #expect(answers.map(\.status) == [.ok, .ok, .notFound])
    }

    @Test func stopsReadingAtTheInFlightCapAndResumesBelowIt() throws {
        let held = Mutex<[RPCResponder<WirePingResponse>]>([])
        var router = RPCRouter(serviceName: "svc")
        router.register("Hold") { (_: WirePingRequest, _, responder: RPCResponder<WirePingResponse>) in
            held.withLock { $0.append(responder) }
        }
        var configuration = RPCServerConfiguration()
        configuration.maxCallsInFlightPerConnection = 2
        let (channel, counter) = try makeChannel(router: router, configuration: configuration)
        // Three calls in one read: two start, the third waits in the handler.
        var burst = ByteBuffer()
        for id in 1...3 {
            Framing.writeFrame(into: &burst) { WireRequest(callId: UInt64(id), method: "Hold").serialize(into: &$0) }
        }
        try channel.writeInbound(burst)
        #expect(held.withLock { $0.count } == 2)
        let readsBefore = counter.reads
        channel.read()
        #expect(counter.reads == readsBefore, "no read while at the cap")
        held.withLock { $0[0] }.succeed(WirePingResponse())
        #expect(held.withLock { $0.count } == 3, "the queued call starts once a slot frees")
        held.withLock { $0[1] }.succeed(WirePingResponse())
        #expect(counter.reads == readsBefore + 1, "the withheld read goes through below the cap")
        held.withLock { $0[2] }.succeed(WirePingResponse())
        #expect(try responses(channel).map(\.callId) == [1, 2, 3])
    }

    @Test func drainFinishesCallsInFlightThenCloses() throws {
        let held = Mutex<[RPCResponder<WirePingResponse>]>([])
        var router = RPCRouter(serviceName: "svc")
        router.register("Hold") { (_: WirePingRequest, _, responder: RPCResponder<WirePingResponse>) in
            held.withLock { $0.append(responder) }
        }
        let (channel, _) = try makeChannel(router: router)
        try send(channel, WireRequest(callId: 1, method: "Hold"))
        channel.pipeline.triggerUserOutboundEvent(RPCServerHandler.Drain(), promise: nil)
        #expect(channel.isActive)
        held.withLock { $0[0] }.succeed(WirePingResponse())
        #expect(try responses(channel).map(\.status) == [.ok])
        #expect(!channel.isActive)
    }
}
