import Logging
import NIOConcurrencyHelpers
import NIOCore
import Proto
import Testing

@testable import Wire

/// Async handlers are child tasks of their connection: cancelled at the call's deadline and when the connection
/// closes, not left running on their own.
@Suite(.serialized) struct AsyncCallTests {
    let logger = Logger(label: "test-client")

    /// "Wait" waits until it is cancelled (at most 10 s) and counts how it ended.
    private func waitingRouter(_ seen: NIOLockedValueBox<(started: Int, cancelled: Int)>) -> RPCRouter {
        var router = RPCRouter(serviceName: "test")
        router.register("Wait") { (request: WirePingRequest, _: ServerCallContext) async throws -> WirePingResponse in
            seen.withLockedValue { $0.started += 1 }
            do {
                try await Task.sleep(for: .seconds(10))
            } catch {
                seen.withLockedValue { $0.cancelled += 1 }
                throw error
            }
            return WirePingResponse(data: request.data)
        }
        return router
    }

    private func eventually(_ condition: () -> Bool) async throws -> Bool {
        for _ in 0..<300 {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return condition()
    }

    @Test func anAsyncHandlerIsCancelledAtTheCallsDeadline() async throws {
        let seen = NIOLockedValueBox((started: 0, cancelled: 0))
        let running = try await RunningServer.start(router: waitingRouter(seen))
        let client = RPCClient(configuration: RPCClientConfiguration(port: running.port), logger: logger)
        await #expect {
            _ = try await client.call("Wait", WirePingRequest(), as: WirePingResponse.self, timeout: .milliseconds(50))
        } throws: { ($0 as? RPCError)?.code == .deadlineExceeded }
        #expect(try await eventually { seen.withLockedValue { $0.cancelled } == 1 }, "the server gave up at the deadline too")
        await client.shutdown()
        await running.stop()
    }

    @Test func anAsyncHandlerIsCancelledWhenItsConnectionCloses() async throws {
        let seen = NIOLockedValueBox((started: 0, cancelled: 0))
        let running = try await RunningServer.start(router: waitingRouter(seen))
        let client = RPCClient(configuration: RPCClientConfiguration(port: running.port), logger: logger)
        let call = Task { try await client.call("Wait", WirePingRequest(), as: WirePingResponse.self) }
        #expect(try await eventually { seen.withLockedValue { $0.started } == 1 })
        await client.shutdown()
        await #expect { _ = try await call.value } throws: { ($0 as? RPCError)?.code == .unavailable }
        #expect(try await eventually { seen.withLockedValue { $0.cancelled } == 1 }, "nothing could take its answer")
        await running.stop()
    }

    @Test func withoutAServerACallIsStillCancelledAtItsDeadline() async throws {
        let cancelled = NIOLockedValueBox(false)
        ConnectionCalls.unowned.run(deadline: .now() + .milliseconds(20)) {
            do { try await Task.sleep(for: .seconds(10)) } catch { cancelled.withLockedValue { $0 = true } }
        }
        #expect(try await eventually { cancelled.withLockedValue { $0 } })
    }

    @Test func aCallWithoutADeadlineRunsToTheEnd() async throws {
        let finished = NIOLockedValueBox(false)
        ConnectionCalls.unowned.run(deadline: nil) {
            try? await Task.sleep(for: .milliseconds(20))
            finished.withLockedValue { $0 = !Task.isCancelled }
        }
        #expect(try await eventually { finished.withLockedValue { $0 } })
    }
}
