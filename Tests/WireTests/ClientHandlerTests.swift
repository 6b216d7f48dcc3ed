import Logging
import NIOCore
import NIOEmbedded
import Proto
import Synchronization
import Testing

@testable import Wire

/// The client's connection handler on an EmbeddedChannel: what a server (or anyone on its port) that answers with
/// bytes that are not responses does to the calls in flight.
@Suite struct ClientHandlerTests {
    /// What the call's completion was given.
    private final class Outcomes: Sendable {
        let list = Mutex<[CallOutcome]>([])
        var count: Int { list.withLock { $0.count } }

        var failedUnavailable: Bool {
            list.withLock { outcomes in
                guard outcomes.count == 1, case .failure(let error) = outcomes[0] else { return false }
                return error.code == .unavailable
            }
        }
    }

    /// A connected channel with the client's handler, and one call in flight whose outcome is kept.
    private func callInFlight(maxFrameSize: Int = 1024) throws -> (EmbeddedChannel, Outcomes) {
        let channel = EmbeddedChannel()
        let handler = RPCClientHandler(maxFrameSize: maxFrameSize, logger: Logger(label: "test"))
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let outcomes = Outcomes()
        handler.send(method: CommonRPC.Ping.name, timeout: nil, token: "", complete: { outcome in
            outcomes.list.withLock { $0.append(outcome) }
        }) { _ in }
        return (channel, outcomes)
    }

    @Test func aFrameThatIsNotAResponseClosesTheConnectionAndFailsTheCalls() throws {
        let (channel, outcomes) = try callInFlight()
        var garbage = ByteBuffer()
        // Field 1 with wire type 7, which does not exist: no protobuf decoder accepts it.
        Framing.writeFrame(into: &garbage) { $0.writeBytes([0x0f, 0xff, 0xff]) }
        // A good response behind it is never read: the stream is not trusted after the garbage.
        Framing.writeFrame(into: &garbage) { WireResponse(callId: 1).serialize(into: &$0) }
        try channel.writeInbound(garbage)
        #expect(!channel.isActive)
        #expect(outcomes.failedUnavailable, "the call in flight fails UNAVAILABLE, not with the late answer")
    }

    @Test func anOversizedFrameClosesTheConnectionFromItsHeaderAlone() throws {
        let (channel, outcomes) = try callInFlight(maxFrameSize: 16)
        var header = ByteBuffer()
        header.writeInteger(UInt32(17))
        try channel.writeInbound(header)
        #expect(!channel.isActive)
        #expect(outcomes.failedUnavailable)
    }

    @Test func aResponseCutAcrossReadsIsAnsweredOnce() throws {
        let (channel, outcomes) = try callInFlight()
        var frame = ByteBuffer()
        Framing.writeFrame(into: &frame) { WireResponse(callId: 1).serialize(into: &$0) }
        try channel.writeInbound(frame.readSlice(length: 3)!)
        #expect(outcomes.count == 0)
        try channel.writeInbound(frame)
        #expect(outcomes.count == 1)
        #expect(channel.isActive)
        _ = try? channel.finish()
    }
}
