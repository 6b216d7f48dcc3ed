import Logging
import NIOCore
import NIOPosix
import Proto
import Synchronization
import ServiceLifecycle
import Testing

@testable import Wire

/// A real server on loopback, run in a task of the test.
struct RunningServer {
    let server: RPCServer
    let port: Int
    let task: Task<Void, any Error>
    let group: ServiceGroup

    static func start(router: RPCRouter, configuration: RPCServerConfiguration = RPCServerConfiguration()) async throws -> RunningServer {
        var logger = Logger(label: "test-server")
        logger.logLevel = .warning
        let server = RPCServer(configuration: configuration, router: router, logger: logger)
        let group = ServiceGroup(services: [server], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)
        let task = Task { try await group.run() }
        let address = try await server.localAddress()
        return RunningServer(server: server, port: address.port!, task: task, group: group)
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }
}

/// Test methods: Echo answers at once, Sleep after `data[0]` x 10 ms, Count calls `counted` as each call starts.
func testRouter(counted: @escaping @Sendable () -> Void = {}) -> RPCRouter {
    var router = RPCRouter(serviceName: "test")
    router.register("Echo") { (request: WirePingRequest, _: ServerCallContext) async throws -> WirePingResponse in
        WirePingResponse(data: request.data)
    }
    router.register("Sleep") { (request: WirePingRequest, _: ServerCallContext) async throws -> WirePingResponse in
        let tens = request.data.getInteger(at: request.data.readerIndex, as: UInt8.self) ?? 0
        try await Task.sleep(for: .milliseconds(Int(tens) * 10))
        return WirePingResponse(data: request.data)
    }
    router.register("Count") { (request: WirePingRequest, _: ServerCallContext) async throws -> WirePingResponse in
        counted()
        return WirePingResponse(data: request.data)
    }
    return router
}

/// A hand-driven TCP peer for sending what no well-behaved client would.
struct RawPeer {
    static func with<T: Sendable>(
        port: Int, _ body: (inout NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator, NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws -> T
    ) async throws -> T {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            var iterator = inbound.makeAsyncIterator()
            return try await body(&iterator, outbound)
        }
    }

    /// Reads one response frame, or nil when the server closed the connection.
    static func readResponse(_ iterator: inout NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator, pending: inout ByteBuffer) async throws -> WireResponse? {
        while true {
            if let length = pending.getInteger(at: pending.readerIndex, as: UInt32.self),
               pending.readableBytes >= 4 + Int(length) {
                pending.moveReaderIndex(forwardBy: 4)
                return try WireResponse(decoding: pending.readSlice(length: Int(length))!)
            }
            guard var chunk = try await iterator.next() else { return nil }
            pending.writeBuffer(&chunk)
        }
    }

    static func frame(_ request: WireRequest) -> ByteBuffer {
        var buffer = ByteBuffer()
        Framing.writeFrame(into: &buffer) { request.serialize(into: &$0) }
        return buffer
    }
}

@Suite(.serialized) struct LoopbackTests {
    let logger = Logger(label: "test-client")

    private func client(port: Int, connections: Int = 1) -> RPCClient {
        RPCClient(configuration: RPCClientConfiguration(port: port, connections: connections), logger: logger)
    }

    private func echo(_ client: RPCClient, _ bytes: [UInt8], method: String = "Echo", timeout: TimeAmount? = nil) async throws -> [UInt8] {
        let response = try await client.call(method, WirePingRequest(data: ByteBuffer(bytes: bytes)), as: WirePingResponse.self, timeout: timeout)
        return Array(response.data.readableBytesView)
    }

    @Test func manyCallsInFlightOnOneConnectionCompleteOutOfOrder() async throws {
        let running = try await RunningServer.start(router: testRouter())
        let client = client(port: running.port)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<200 {
                group.addTask {
                    // Earlier calls sleep longer, so answers come back in the reverse order.
                    let delay = UInt8((199 - index) / 40)
                    let answer = try await self.echo(client, [delay, UInt8(index % 256)], method: "Sleep")
                    #expect(answer == [delay, UInt8(index % 256)])
                }
            }
            try await group.waitForAll()
        }
        await client.shutdown()
        await running.stop()
    }

    @Test func theCallbackFormAnswersOnTheConnectionsLoopWithTheResponseOrTheError() async throws {
        let running = try await RunningServer.start(router: testRouter())
        let client = client(port: running.port)
        let loop = client.eventLoop
        let outcomes = try await withThrowingTaskGroup(of: (method: String, onLoop: Bool, result: Result<WirePingResponse, RPCError>).self) { group in
            for method in ["Echo", "NoSuchMethod"] {
                group.addTask {
                    await withCheckedContinuation { continuation in
                        client.call(method, WirePingRequest(data: ByteBuffer(bytes: [7])), as: WirePingResponse.self) { result in
                            continuation.resume(returning: (method, loop.inEventLoop, result))
                        }
                    }
                }
            }
            return try await group.reduce(into: [:]) { $0[$1.method] = ($1.onLoop, $1.result) }
        }
        #expect(outcomes["Echo"]?.0 == true)
        #expect(try outcomes["Echo"]?.1.get().data == ByteBuffer(bytes: [7]))
        #expect(outcomes["NoSuchMethod"]?.0 == true)
        if case .failure(let error)? = outcomes["NoSuchMethod"]?.1 {
            #expect(error.code == .unimplemented)
        } else {
            Issue.record("an unknown method was answered: \(String(describing: outcomes["NoSuchMethod"]))")
        }
        await client.shutdown()
        await running.stop()
    }

    @Test func clientDeadlineFailsTheCallWithDeadlineExceeded() async throws {
        let running = try await RunningServer.start(router: testRouter())
        let client = client(port: running.port)
        await #expect {
            _ = try await self.echo(client, [20], method: "Sleep", timeout: .milliseconds(30))
        } throws: { ($0 as? RPCError)?.code == .deadlineExceeded }
        // The connection is still good for the next call.
        #expect(try await echo(client, [1, 2, 3]) == [1, 2, 3])
        await client.shutdown()
        await running.stop()
    }

    @Test func callThatExpiresWhileQueuedIsNotStarted() async throws {
        let started = Mutex(0)
        var configuration = RPCServerConfiguration()
        configuration.maxCallsInFlightPerConnection = 1
        let running = try await RunningServer.start(
            router: testRouter { started.withLock { $0 += 1 } }, configuration: configuration)
        let answers = try await RawPeer.with(port: running.port) { inbound, outbound in
            var both = RawPeer.frame(WireRequest(callId: 1, method: "Sleep", payload: WirePingRequest(data: ByteBuffer(bytes: [20])).serializedBuffer()))
            var second = RawPeer.frame(WireRequest(callId: 2, method: "Count", timeoutUs: 50_000, payload: WirePingRequest().serializedBuffer()))
            both.writeBuffer(&second)
            try await outbound.write(both)
            var pending = ByteBuffer()
            var answers: [UInt64: WireStatusCode] = [:]
            for _ in 0..<2 {
                if let response = try await RawPeer.readResponse(&inbound, pending: &pending) { answers[response.callId] = response.status }
            }
            return answers
        }
        #expect(answers == [1: .ok, 2: .deadlineExceeded])
        #expect(started.withLock { $0 } == 0)
        await running.stop()
    }

    @Test func inFlightCallsFailUnavailableWhenTheServerGoesAndTheClientReconnects() async throws {
        let first = try await RunningServer.start(router: testRouter())
        let port = first.port
        let client = client(port: port)
        #expect(try await echo(client, [1]) == [1])
        let slow = Task { try await self.echo(client, [100], method: "Sleep") }  // 1 s
        try await Task.sleep(for: .milliseconds(100))
        first.task.cancel()  // abrupt: connections torn down with the call in flight
        await #expect { _ = try await slow.value } throws: { ($0 as? RPCError)?.code == .unavailable }

        var configuration = RPCServerConfiguration()
        configuration.port = port
        let second = try await RunningServer.start(router: testRouter(), configuration: configuration)
        var answered = false
        for _ in 0..<100 where !answered {
            if let answer = try? await echo(client, [7]) { answered = answer == [7] } else { try await Task.sleep(for: .milliseconds(20)) }
        }
        #expect(answered, "client reconnected by itself")
        await client.shutdown()
        await second.stop()
    }

    @Test func connectingToNothingFailsUnavailable() async throws {
        let client = client(port: 1)  // nothing listens on port 1
        await #expect { _ = try await self.echo(client, [1]) } throws: { ($0 as? RPCError)?.code == .unavailable }
        await client.shutdown()
    }

    // MARK: bad input on a real socket; a bystander connection must not notice any of it

    private func withBystander(_ body: (Int) async throws -> Void) async throws {
        var configuration = RPCServerConfiguration()
        configuration.maxFrameSize = 4096
        let running = try await RunningServer.start(router: testRouter(), configuration: configuration)
        let bystander = client(port: running.port)
        #expect(try await echo(bystander, [1]) == [1])
        try await body(running.port)
        #expect(try await echo(bystander, [2]) == [2], "other connections are untouched")
        await bystander.shutdown()
        await running.stop()
    }

    @Test func truncatedFrameThenCloseLeavesTheServerServing() async throws {
        try await withBystander { port in
            try await RawPeer.with(port: port) { _, outbound in
                var partial = ByteBuffer()
                partial.writeInteger(UInt32(100))
                partial.writeBytes([1, 2, 3])
                try await outbound.write(partial)
            }
        }
    }

    @Test func oversizedLengthHeaderClosesTheConnectionWithoutReadingThePayload() async throws {
        try await withBystander { port in
            let closed = try await RawPeer.with(port: port) { inbound, outbound in
                var header = ByteBuffer()
                header.writeInteger(UInt32(64 << 20))  // 64 MiB announced, none sent
                try await outbound.write(header)
                var pending = ByteBuffer()
                return try await RawPeer.readResponse(&inbound, pending: &pending) == nil
            }
            #expect(closed)
        }
    }

    @Test func garbageUnknownMethodAndZeroLengthFramesGetErrorsAndTheConnectionStaysUsable() async throws {
        try await withBystander { port in
            let statuses = try await RawPeer.with(port: port) { inbound, outbound in
                var bytes = ByteBuffer()
                bytes.writeInteger(UInt32(7))
                bytes.writeBytes([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])  // not a valid envelope
                bytes.writeInteger(UInt32(0))  // zero-length frame
                var unknown = RawPeer.frame(WireRequest(callId: 5, method: "no.Such"))
                var missing = RawPeer.frame(WireRequest(callId: 6, method: "Echo", payload: ByteBuffer(bytes: [0x0a, 0x7f])))
                var ping = RawPeer.frame(WireRequest(callId: 7, method: "Echo", payload: WirePingRequest().serializedBuffer()))
                bytes.writeBuffer(&unknown)
                bytes.writeBuffer(&missing)
                bytes.writeBuffer(&ping)
                try await outbound.write(bytes)
                var pending = ByteBuffer()
                var statuses: [String] = []
                for _ in 0..<5 {
                    guard let response = try await RawPeer.readResponse(&inbound, pending: &pending) else { break }
                    statuses.append("\(response.callId):\(response.status)")
                }
                return statuses
            }
            #expect(statuses == ["0:invalidArgument", "0:invalidArgument", "5:unimplemented", "6:invalidArgument", "7:ok"])
        }
    }

    @Test func gracefulShutdownFinishesCallsInFlight() async throws {
        let running = try await RunningServer.start(router: testRouter())
        let client = client(port: running.port)
        let slow = Task { try await self.echo(client, [30], method: "Sleep") }  // 300 ms
        try await Task.sleep(for: .milliseconds(50))
        await running.group.triggerGracefulShutdown()
        #expect(try await slow.value == [30])
        _ = try? await running.task.value
        await client.shutdown()
    }

    /// A connection that made only event-loop calls holds no task (its group is made at its first async call):
    /// the server still drains it on graceful shutdown, and `run` returns once it has closed.
    @Test func gracefulShutdownClosesAnIdleConnectionAndReturns() async throws {
        let running = try await RunningServer.start(router: testRouter())
        let client = client(port: running.port)
        _ = try await client.call(CommonRPC.Ping.self, WirePingRequest())
        // The server counts a connection from its accept loop's task, which may run after the channel answered the
        // ping on its event loop (CI saw 0 here once).
        for _ in 0..<100 where running.server.connectionCount != 1 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(running.server.connectionCount == 1)
        await running.group.triggerGracefulShutdown()
        _ = try? await running.task.value
        #expect(running.server.connectionCount == 0)
        await client.shutdown()
    }

    /// The hard stop (the server's task cancelled) closes every connection, idle ones included, and returns.
    @Test func aHardStopClosesIdleConnectionsToo() async throws {
        let running = try await RunningServer.start(router: testRouter())
        let idle = client(port: running.port)
        let busy = client(port: running.port)
        _ = try await idle.call(CommonRPC.Ping.self, WirePingRequest())
        _ = try await self.echo(busy, [1])  // this connection has made its group
        running.task.cancel()
        _ = try? await running.task.value
        for _ in 0..<100 where running.server.connectionCount > 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(running.server.connectionCount == 0)
        await #expect(throws: RPCError.self) { _ = try await idle.call(CommonRPC.Ping.self, WirePingRequest(), timeout: .milliseconds(500)) }
        await idle.shutdown()
        await busy.shutdown()
    }
}
