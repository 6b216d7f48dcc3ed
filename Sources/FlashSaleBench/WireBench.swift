import ArgumentParser
import Histogram
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Proto
import ServiceLifecycle
import Wire

/// `flashsale-bench wire-server`: an RPCServer answering only Ping, the load target of the wire benchmark.
struct WireServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "wire-server", abstract: "Serve Ping for the wire benchmark.")

    @Option var host = "127.0.0.1"
    @Option var port = 0
    @Option(help: "Event loop threads.") var threads = System.coreCount

    func run() async throws {
        let logger = ServiceRuntime.makeLogger(label: "wire-server", level: .warning)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let server = RPCServer(
            configuration: RPCServerConfiguration(host: host, port: port, maxCallsInFlightPerConnection: 64, idleTimeout: nil),
            router: RPCRouter(serviceName: "wire-bench"), group: group, logger: logger)
        let services = ServiceGroup(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        async let running: Void = services.run()
        ServiceRuntime.announceReady(service: "wire-server", address: try await server.localAddress())
        try await running
    }
}

/// `flashsale-bench wire`: Ping calls per second through the wire runtime (RPCClient -> RPCServer) over loopback,
/// with `connections` connections each keeping `depth` calls in flight.
struct WireLoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "wire", abstract: "Drive Ping calls at a wire server.")

    @Option var host = "127.0.0.1"
    @Option var port: Int
    @Option var connections = 1000
    @Option(help: "Calls in flight per connection.") var depth = 1
    @Option(help: "Seconds of measured load (after one second of warm-up).") var seconds = 5.0
    @Option(help: "Event loop threads.") var threads = System.coreCount

    func run() async throws {
        let logger = ServiceRuntime.makeLogger(label: "wire-load", level: .warning)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let clients = (0..<connections).map { _ in
            RPCClient(
                configuration: RPCClientConfiguration(host: host, port: port, connections: 1, defaultTimeout: .seconds(30)),
                group: group, logger: logger)
        }
        // Connect every client before measuring.
        for chunk in stride(from: 0, to: clients.count, by: 100) {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for client in clients[chunk..<min(chunk + 100, clients.count)] {
                    tasks.addTask { _ = try await client.call("Ping", WirePingRequest(), as: WirePingResponse.self) }
                }
                try await tasks.waitForAll()
            }
        }
        let recorder = LoadRecorder()
        let phase = NIOLockedValueBox(Phase.warmUp)
        let drivers = clients.map { PingDriver(client: $0, depth: depth, phase: phase, recorder: recorder) }
        for driver in drivers { driver.start() }
        try await Task.sleep(for: .seconds(1))
        phase.withLockedValue { $0 = .measuring }
        let start = NIODeadline.now()
        try await Task.sleep(for: .milliseconds(Int64(seconds * 1000)))
        phase.withLockedValue { $0 = .stopped }
        let elapsed = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        for driver in drivers { await driver.finished() }
        let rate = Double(recorder.completed) / elapsed
        print("wire connections=\(connections) depth=\(depth) calls=\(recorder.completed) failed=\(recorder.failed) seconds=\(format(elapsed)) calls_per_s=\(Int(rate)) p50_ms=\(format(recorder.percentileMs(50), decimals: 3)) p99_ms=\(format(recorder.percentileMs(99), decimals: 3))")
        for client in clients { await client.shutdown() }
        try await group.shutdownGracefully()
    }
}

enum Phase: Sendable { case warmUp, measuring, stopped }

/// Keeps `depth` Ping calls in flight on one client until the phase is `stopped`.
final class PingDriver: Sendable {
    private let client: RPCClient
    private let depth: Int
    private let phase: NIOLockedValueBox<Phase>
    private let recorder: LoadRecorder
    private let local = NIOLockedValueBox(State())

    private struct State {
        var histogram = newLatencyHistogram()
        var completed = 0
        var failed = 0
        var running = 0
        var done = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    init(client: RPCClient, depth: Int, phase: NIOLockedValueBox<Phase>, recorder: LoadRecorder) {
        self.client = client
        self.depth = depth
        self.phase = phase
        self.recorder = recorder
    }

    func start() {
        local.withLockedValue { $0.running = depth }
        for _ in 0..<depth { self.next() }
    }

    private func next() {
        let current = phase.withLockedValue { $0 }
        guard current != .stopped else {
            let finished = local.withLockedValue { state -> Bool in
                state.running -= 1
                return state.running == 0
            }
            if finished { self.finish() }
            return
        }
        let start = NIODeadline.now()
        client.callFuture("Ping", WirePingRequest(), as: WirePingResponse.self).whenComplete { result in
            if current == .measuring {
                let micros = UInt64(max(0, (NIODeadline.now() - start).nanoseconds / 1000))
                self.local.withLockedValue { state in
                    switch result {
                    case .success: state.completed += 1; state.histogram.record(micros)
                    case .failure: state.failed += 1
                    }
                }
            }
            self.next()
        }
    }

    private func finish() {
        let snapshot = local.withLockedValue { $0 }
        recorder.merge(snapshot.histogram, completed: snapshot.completed, failed: snapshot.failed)
        let waiters = local.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            state.done = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func finished() async {
        await withCheckedContinuation { continuation in
            let alreadyDone = local.withLockedValue { state -> Bool in
                if state.done { return true }
                state.waiters.append(continuation)
                return false
            }
            if alreadyDone { continuation.resume() }
        }
    }
}
