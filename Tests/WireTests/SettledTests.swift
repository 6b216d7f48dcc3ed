import Testing
import Wire

@Suite(.timeLimit(.minutes(1))) struct SettledTests {
    @Test func waitersGetTheFirstResultAndLaterOnesAtOnce() async throws {
        let settled = Settled<Int>()
        async let first = settled.value()
        try await Task.sleep(for: .milliseconds(20))
        settled.settle(.success(7))
        settled.settle(.success(8))  // changes nothing
        #expect(try await first == 7)
        #expect(try await settled.value() == 7)
    }

    @Test func aCancelledWaiterThrowsAtOnceAndTheOthersStillGetTheResult() async throws {
        let settled = Settled<Int>()
        let cancelled = Task { try await settled.value() }
        let waiting = Task { try await settled.value() }
        try await Task.sleep(for: .milliseconds(20))
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        settled.settle(.success(3))
        #expect(try await waiting.value == 3)
    }

    @Test func aWaiterCancelledBeforeItWaitsThrows() async throws {
        let settled = Settled<Int>()
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await settled.value()
        }
        await #expect(throws: CancellationError.self) { try await task.value }
    }
}
