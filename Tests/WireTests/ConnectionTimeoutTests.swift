import Logging
import NIOCore
import NIOEmbedded
import Proto
import Synchronization
import Testing

@testable import Wire

/// Idle and slow connections are closed after their timeouts; time on the embedded loop is advanced by hand.
@Suite struct ConnectionTimeoutTests {
    let logger = Logger(label: "test")

    /// The server's pipeline as RPCServer builds it.
    private func makeChannel(
        idle: TimeAmount? = nil, frame: TimeAmount? = .seconds(2), maxCallsInFlight: Int = 1024, router: RPCRouter = RPCRouter(serviceName: "svc")
    ) throws -> EmbeddedChannel {
        let configuration = RPCServerConfiguration(
            maxCallsInFlightPerConnection: maxCallsInFlight, idleTimeout: idle, frameTimeout: frame)
        let channel = EmbeddedChannel()
        try RPCServer.addConnectionHandlers(to: channel, router: router, configuration: configuration, logger: logger)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    private func pingFrame(_ callID: UInt64) -> ByteBuffer {
        var buffer = ByteBuffer()
        Framing.writeFrame(into: &buffer) {
            WireRequest(callId: callID, method: CommonRPC.Ping.name, payload: WirePingRequest(data: ByteBuffer(bytes: [1, 2, 3])).serializedBuffer())
                .serialize(into: &$0)
        }
        return buffer
    }

    private func answers(_ channel: EmbeddedChannel) throws -> [UInt64] {
        channel.embeddedEventLoop.run()
        var ids: [UInt64] = []
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
            while let length = buffer.readInteger(as: UInt32.self) {
                ids.append(try WireResponse(decoding: buffer.readSlice(length: Int(length))!).callId)
            }
        }
        return ids
    }

    @Test func aPartialFrameHeldPastTheFrameTimeoutClosesTheConnection() throws {
        let channel = try makeChannel(frame: .seconds(2))
        var frame = pingFrame(1)
        try channel.writeInbound(frame.readSlice(length: 2)!)  // half a length header
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1_990))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(20))
        #expect(!channel.isActive, "closed 2 s after the frame started")
    }

    @Test func aFrameSentAByteAtATimeIsCutOffAtTheFrameTimeout() throws {
        let channel = try makeChannel(idle: .seconds(1), frame: .seconds(2))
        var frame = pingFrame(1)
        var elapsed = TimeAmount.zero
        // One byte every 300 ms: the idle timeout (1 s of silence) never fires, the frame timeout does.
        while channel.isActive, let byte = frame.readSlice(length: 1) {
            try channel.writeInbound(byte)
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(300))
            elapsed = elapsed + .milliseconds(300)
        }
        #expect(!channel.isActive)
        #expect(elapsed >= .seconds(2) && elapsed <= .milliseconds(2_400), "closed after \(elapsed)")
        #expect(try answers(channel).isEmpty, "the partial frame was never served")
    }

    @Test func framesThatCompleteInTimeKeepTheConnectionOpen() throws {
        let channel = try makeChannel(frame: .seconds(2))
        for id in 1...5 {
            // Each frame arrives in two halves 1.5 s apart: slow, but each one within the timeout.
            var frame = pingFrame(UInt64(id))
            try channel.writeInbound(frame.readSlice(length: 5)!)
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(1_500))
            try channel.writeInbound(frame)
        }
        channel.embeddedEventLoop.advanceTime(by: .seconds(10))  // nothing partial now: no timeout
        #expect(channel.isActive)
        #expect(try answers(channel) == [1, 2, 3, 4, 5])
    }

    @Test func aFrameCompletedTogetherWithTheStartOfTheNextRestartsTheClock() throws {
        let channel = try makeChannel(frame: .seconds(2))
        var stream = pingFrame(1)
        stream.writeImmutableBuffer(pingFrame(2))
        try channel.writeInbound(stream.readSlice(length: 5)!)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1_500))
        // The rest of frame 1 and the start of frame 2 in one read: frame 2's clock starts now.
        try channel.writeInbound(stream.readSlice(length: stream.readableBytes - 3)!)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1_500))
        #expect(channel.isActive, "frame 2 has been partial for 1.5 s only")
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(600))
        #expect(!channel.isActive)
        #expect(try answers(channel) == [1])
    }

    @Test func timeTheServerIsNotReadingDoesNotCount() throws {
        let held = Mutex<[RPCResponder<WirePingResponse>]>([])
        var router = RPCRouter(serviceName: "svc")
        router.register("Hold") { (_: WirePingRequest, _, responder: RPCResponder<WirePingResponse>) in
            held.withLock { $0.append(responder) }
        }
        let channel = try makeChannel(frame: .seconds(2), maxCallsInFlight: 1, router: router)
        var burst = ByteBuffer()
        Framing.writeFrame(into: &burst) { WireRequest(callId: 1, method: "Hold").serialize(into: &$0) }
        burst.writeBytes([0, 0])  // and the start of the next frame
        try channel.writeInbound(burst)
        channel.read()  // declined: at the cap
        channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        #expect(channel.isActive, "the client cannot finish its frame while we do not read")
        held.withLock { $0[0] }.succeed(WirePingResponse())
        channel.embeddedEventLoop.advanceTime(by: .seconds(3))
        #expect(!channel.isActive, "reading again: the partial frame times out")
    }

    @Test func anIdleConnectionIsClosedAfterTheIdleTimeout() throws {
        let channel = try makeChannel(idle: .seconds(3), frame: .seconds(2))
        try channel.writeInbound(pingFrame(1))
        #expect(try answers(channel) == [1])
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(2_900))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(200))
        #expect(!channel.isActive)
    }

    @Test func aConnectionWithACallInFlightIsNotIdle() throws {
        let held = Mutex<[RPCResponder<WirePingResponse>]>([])
        var router = RPCRouter(serviceName: "svc")
        router.register("Hold") { (_: WirePingRequest, _, responder: RPCResponder<WirePingResponse>) in
            held.withLock { $0.append(responder) }
        }
        let channel = try makeChannel(idle: .seconds(3), router: router)
        var frame = ByteBuffer()
        Framing.writeFrame(into: &frame) { WireRequest(callId: 1, method: "Hold").serialize(into: &$0) }
        try channel.writeInbound(frame)
        channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(channel.isActive, "a slow call is not an idle connection")
        held.withLock { $0[0] }.succeed(WirePingResponse())
        channel.embeddedEventLoop.advanceTime(by: .seconds(3))
        #expect(!channel.isActive, "idle once answered")
    }

    @Test func noFrameTimeoutConfiguredMeansNone() throws {
        let channel = try makeChannel(frame: nil)
        try channel.writeInbound(ByteBuffer(bytes: [0, 0]))
        channel.embeddedEventLoop.advanceTime(by: .hours(1))
        #expect(channel.isActive)
    }

    @Test func aClientThatDoesNotTakeItsAnswersIsNotRead() throws {
        let channel = try makeChannel()
        try channel.writeInbound(pingFrame(1))
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        let reads = ReadCounter()
        try channel.pipeline.syncOperations.addHandler(reads, position: .first)
        channel.read()
        #expect(reads.reads == 0, "no read while the answers are not taken")
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        #expect(reads.reads == 1, "the withheld read goes through once writable")
    }
}

private final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = Any
    var reads = 0
    func read(context: ChannelHandlerContext) {
        reads += 1
        context.read()
    }
}
