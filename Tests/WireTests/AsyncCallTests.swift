import Logging
import NIOCore
import Proto
import Synchronization
import Testing

@testable import Wire

/// Async handlers are child tasks of their connection: cancelled at the call's deadline and when the connection
/// closes, not left running on their own.
@Suite(.serialized) struct AsyncCallTests {
    let logger = Logger(label: "test-client")

    /// "Wait" waits until it is cancelled (at most 10 s) and says how it went: `seen(false)` when it starts,
    /// `seen(true)` when it is cancelled.
    private func waitingRouter(_ seen: @escaping @Sendable (_ cancelled: Bool) -> Void) -> RPCRouter {
        var router = RPCRouter(serviceName: "test")
        router.register("Wait") { (request: WirePingRequest, _: ServerCallContext) async throws -> WirePingResponse in
            seen(false)
            do {
                try await Task.sleep(for: .seconds(10))
            } catch {
                seen(true)
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
        let seen = Mutex((started: 0, cancelled: 0))
        let running = try await RunningServer.start(router: waitingRouter { cancelled in
            seen.withLock { if cancelled { $0.cancelled += 1 } else { $0.started += 1 } }
        })
        let client = RPCClient(configuration: RPCClientConfiguration(port: running.port), logger: logger)
        await #expect {
            _ = try await client.call("Wait", WirePingRequest(), as: WirePingResponse.self, timeout: .milliseconds(50))
        } throws: { ($0 as? RPCError)?.code == .deadlineExceeded }
        #expect(try await eventually { seen.withLock { $0.cancelled } == 1 }, "the server gave up at the deadline too")
        await client.shutdown()
        await running.stop()
    }

    @Test func anAsyncHandlerIsCancelledWhenItsConnectionCloses() async throws {
        let seen = Mutex((started: 0, cancelled: 0))
        let running = try await RunningServer.start(router: waitingRouter { cancelled in
            seen.withLock { if cancelled { $0.cancelled += 1 } else { $0.started += 1 } }
        })
        let client = RPCClient(configuration: RPCClientConfiguration(port: running.port), logger: logger)
        let call = Task { try await client.call("Wait", WirePingRequest(), as: WirePingResponse.self) }
        #expect(try await eventually { seen.withLock { $0.started } == 1 })
        await client.shutdown()
        await #expect { _ = try await call.value } throws: { ($0 as? RPCError)?.code == .unavailable }
        #expect(try await eventually { seen.withLock { $0.cancelled } == 1 }, "nothing could take its answer")
        await running.stop()
    }

    @Test func withoutAServerACallIsStillCancelledAtItsDeadline() async throws {
        let cancelled = Mutex(false)
        ConnectionCalls.unowned.run(deadline: .now() + .milliseconds(20)) {
            do { try await Task.sleep(for: .seconds(10)) } catch { cancelled.withLock { $0 = true } }
        }
        #expect(try await eventually { cancelled.withLock { $0 } })
    }

    @Test func aCallWithoutADeadlineRunsToTheEnd() async throws {
        let finished = Mutex(false)
        ConnectionCalls.unowned.run(deadline: nil) {
            try? await Task.sleep(for: .milliseconds(20))
            finished.withLock { $0 = !Task.isCancelled }
        }
        #expect(try await eventually { finished.withLock { $0 } })
    }
}
