import NIOCore

/// Where a connection's async handlers run. `RPCServer` gives each connection a task group fed from here, so a
/// handler is a child task of its connection (as grpc-swift-2 runs them), owned by the server's `ServiceGroup`:
/// cancelled when the connection closes or the server is stopped hard, and at the call's deadline (its caller has
/// given up then). A handler put in a pipeline by hand (unit tests) has no such group: `.unowned` runs each call
/// in a task of its own, still cancelled at its deadline. Event-loop handlers (`register(_:onEventLoop:)`) never
/// come here.
struct ConnectionCalls: Sendable {
    typealias Job = @Sendable () async -> Void

    private let continuation: AsyncStream<Job>.Continuation?

    static let unowned = ConnectionCalls(continuation: nil)

    /// The calls of one connection, and the stream its task group takes them from.
    static func makeStream() -> (calls: ConnectionCalls, jobs: AsyncStream<Job>) {
        let (jobs, continuation) = AsyncStream.makeStream(of: Job.self)
        return (ConnectionCalls(continuation: continuation), jobs)
    }

    /// The connection closed: later calls are not started (nothing could take their answers).
    func finish() {
        self.continuation?.finish()
    }

    func run(deadline: NIODeadline?, _ job: @escaping Job) {
        let call: Job = { await Self.cancelling(job, at: deadline) }
        guard let continuation = self.continuation else {
            Task(operation: call)
            return
        }
        _ = continuation.yield(call)
    }

    private static func cancelling(_ job: @escaping Job, at deadline: NIODeadline?) async {
        guard let deadline else { return await job() }
        await withTaskGroup(of: Void.self) { group in
            group.addTask(operation: job)
            group.addTask {
                let left = deadline - .now()
                if left > .zero { try? await Task.sleep(nanoseconds: UInt64(left.nanoseconds)) }
            }
            _ = await group.next()
            group.cancelAll()
        }
    }
}
