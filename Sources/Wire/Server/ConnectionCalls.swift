import NIOCore
import Synchronization

/// Where a connection's async handlers run: a task group of the connection's own, so a handler is a child task of
/// its connection (as grpc-swift-2 runs them) and, through `RPCServer`'s group, of the server's `ServiceGroup`:
/// cancelled when the connection closes or the server is stopped hard, and at the call's deadline (its caller has
/// given up then). Event-loop handlers (`register(_:onEventLoop:)`) never come here.
///
/// The group is made at the connection's first async call, not when it is accepted. An idle connection, or one
/// that only calls event-loop methods (the edge's purchases), then holds no task, no group and no stream: a task
/// group per accepted connection cost 3.4 KiB each (the edge's RSS with 10,000 idle connections went from 114.1 to
/// 147.4 MiB, `flashsale-bench edge-rss --connections 10000`).
///
/// A handler put in a pipeline by hand (unit tests) has no server: `.unowned` runs each call in a task of its own,
/// still cancelled at its deadline.
final class ConnectionCalls: Sendable {
    typealias Job = @Sendable () async -> Void

    private enum State {
        case idle
        case running(AsyncStream<Job>.Continuation)
        case closed
    }

    /// Starts a job in the server's task group; nil: no server (`.unowned`).
    private let spawn: (@Sendable (@escaping Job) -> Void)?
    private let state = Mutex(State.idle)

    static let unowned = ConnectionCalls(spawn: nil)

    /// The calls of one connection of a server whose task group starts what `spawn` is given.
    init(spawn: (@Sendable (@escaping Job) -> Void)?) {
        self.spawn = spawn
    }

    /// The connection closed: later calls are not started (nothing could take their answers), and the group, if
    /// any, cancels the calls still running.
    func finish() {
        let running: AsyncStream<Job>.Continuation? = self.state.withLock { state in
            defer { state = .closed }
            if case .running(let continuation) = state { return continuation }
            return nil
        }
        running?.finish()
    }

    func run(deadline: NIODeadline?, _ job: @escaping Job) {
        let call: Job = { await Self.cancelling(job, at: deadline) }
        guard let spawn = self.spawn else {
            Task(operation: call)
            return
        }
        let started: AsyncStream<Job>? = self.state.withLock { state in
            switch state {
            case .idle:
                let (jobs, continuation) = AsyncStream.makeStream(of: Job.self)
                continuation.yield(call)
                state = .running(continuation)
                return jobs
            case .running(let continuation):
                continuation.yield(call)
                return nil
            case .closed:
                return nil
            }
        }
        if let started { spawn { await Self.serve(started) } }
    }

    /// The connection's group: runs its calls until it closes, then cancels those still running.
    private static func serve(_ jobs: AsyncStream<Job>) async {
        await withDiscardingTaskGroup { group in
            for await call in jobs { group.addTask(operation: call) }
            group.cancelAll()
        }
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
