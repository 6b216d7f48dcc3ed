import ArgumentParser
import Foundation
import Histogram
import Logging
import NIOCore
import NIOPosix
import Proto
import ServiceKit
import ServiceLifecycle
import Synchronization
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
        ReadyAnnouncer.announce(service: "wire-server", address: try await server.localAddress())
        try await running
    }
}

/// `flashsale-bench wire`: Ping calls per second through the wire runtime (RPCClient -> RPCServer) over loopback,
/// with `connections` connections each keeping `depth` calls in flight.
///
/// Lean on purpose (it shares the machine with the server it measures, as redis-benchmark does with Redis):
/// each connection's driver lives on its connection's event loop, so a call costs the client library plus a
/// histogram record, with no lock or thread hop. It also reports CPU time per call of itself and, given
/// `--server-pid`, of the server: on a shared machine that is steadier than calls/s.
struct WireLoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "wire", abstract: "Drive Ping calls at a wire server.")

    @Option var host = "127.0.0.1"
    @Option var port: Int
    @Option var connections = 1000
    @Option(help: "Calls in flight per connection.") var depth = 1
    @Option(help: "Seconds of measured load (after one second of warm-up).") var seconds = 5.0
    @Option(help: "Event loop threads.") var threads = System.coreCount
    @Option(help: "The server's process id, to report its CPU time per call (Linux /proc).") var serverPid: Int?

    func run() async throws {
        let logger = ServiceRuntime.makeLogger(label: "wire-load", level: .warning)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let loops = (0..<connections).map { _ in group.next() }
        let clients = loops.map { loop in
            RPCClient(
                configuration: RPCClientConfiguration(host: host, port: port, connections: 1, defaultTimeout: .seconds(30)),
                group: loop, logger: logger)
        }
        // Connect every client before measuring.
        for chunk in stride(from: 0, to: clients.count, by: 100) {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for client in clients[chunk..<min(chunk + 100, clients.count)] {
                    tasks.addTask { _ = try await client.call(CommonRPC.Ping.self, WirePingRequest()) }
                }
                try await tasks.waitForAll()
            }
        }
        let phase = SharedPhase()
        let drivers = zip(clients, loops).map { PingDriver(client: $0, loop: $1, depth: depth, phase: phase) }
        for driver in drivers { driver.start() }
        try await Task.sleep(for: .seconds(1))
        phase.set(.measuring)
        let start = NIODeadline.now()
        let clientCPUBefore = CPUTime.ofThisProcess()
        let serverCPUBefore = serverPid.flatMap(CPUTime.ofProcess)
        try await Task.sleep(for: .milliseconds(Int64(seconds * 1000)))
        phase.set(.stopped)
        let elapsed = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        let clientCPU = CPUTime.ofThisProcess() - clientCPUBefore
        let serverCPU = serverPid.flatMap(CPUTime.ofProcess).flatMap { after in serverCPUBefore.map { after - $0 } }
        let recorder = LoadRecorder()
        for driver in drivers {
            let result = try await driver.finished()
            recorder.merge(result.histogram, completed: result.completed, failed: result.failed)
        }
        let calls = max(recorder.completed, 1)
        let rate = Double(recorder.completed) / elapsed
        var line = "wire connections=\(connections) depth=\(depth) calls=\(recorder.completed) failed=\(recorder.failed) seconds=\(format(elapsed)) calls_per_s=\(Int(rate)) p50_ms=\(format(recorder.percentileMs(50), decimals: 3)) p99_ms=\(format(recorder.percentileMs(99), decimals: 3))"
        line += " client_cpu_us_per_call=\(format(clientCPU * 1e6 / Double(calls), decimals: 2))"
        if let serverCPU { line += " server_cpu_us_per_call=\(format(serverCPU * 1e6 / Double(calls), decimals: 2))" }
        print(line)
        for client in clients { await client.shutdown() }
        try await group.shutdownGracefully()
    }
}

enum Phase: UInt8, Sendable { case warmUp, measuring, stopped }

/// The benchmark's phase, read by every driver after each call.
final class SharedPhase: Sendable {
    private let raw = Atomic(Phase.warmUp.rawValue)

    var current: Phase { Phase(rawValue: raw.load(ordering: .relaxed)) ?? .stopped }
    func set(_ phase: Phase) { raw.store(phase.rawValue, ordering: .relaxed) }
}

/// CPU seconds (user + system) of a process.
enum CPUTime {
    static func ofThisProcess() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    /// From /proc/PID/stat (utime and stime, in clock ticks).
    static func ofProcess(_ pid: Int) -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let afterName = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: afterName)...].split(separator: " ")
        // Fields after the name start at field 3 (state); utime and stime are fields 14 and 15.
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Every running process of that name on this machine (`/proc/PID/comm`), summed: PostgreSQL's postmaster and
    /// backends (a benchmark runs alone). A backend that ends within a span takes its CPU with it: the span's
    /// figure can only be low.
    static func ofProcesses(named name: String) -> Double {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.reduce(0) { total, entry in
            guard let pid = Int(entry),
                  let comm = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8),
                  comm.trimmingCharacters(in: .newlines) == name else { return total }
            return total + (ofProcess(pid) ?? 0)
        }
    }
}

/// Keeps `depth` Ping calls in flight on one client until the phase is `stopped`. Its state belongs to the
/// client's event loop, where every completion runs.
final class PingDriver: Sendable {
    struct Result: Sendable {
        var histogram = newLatencyHistogram()
        var completed = 0
        var failed = 0
    }

    private let client: RPCClient
    private let loop: any EventLoop
    private let depth: Int
    private let phase: SharedPhase
    private let state: NIOLoopBoundBox<(result: Result, running: Int)>
    private let done: EventLoopPromise<Result>

    init(client: RPCClient, loop: any EventLoop, depth: Int, phase: SharedPhase) {
        self.client = client
        self.loop = loop
        self.depth = depth
        self.phase = phase
        self.state = .makeBoxSendingValue((Result(), 0), eventLoop: loop)
        self.done = loop.makePromise()
    }

    func start() {
        self.loop.execute {
            self.state.value.running = self.depth
            for _ in 0..<self.depth { self.next() }
        }
    }

    private func next() {
        let current = self.phase.current
        guard current != .stopped else {
            self.state.value.running -= 1
            if self.state.value.running == 0 { self.done.succeed(self.state.value.result) }
            return
        }
        let measuring = current == .measuring
        let start = measuring ? NIODeadline.now() : .uptimeNanoseconds(0)
        self.client.call(CommonRPC.Ping.self, WirePingRequest()) { result in
            if measuring {
                switch result {
                case .success:
                    self.state.value.result.completed += 1
                    self.state.value.result.histogram.record(UInt64(max(0, (NIODeadline.now() - start).nanoseconds / 1000)))
                case .failure:
                    self.state.value.result.failed += 1
                }
            }
            self.next()
        }
    }

    func finished() async throws -> Result {
        try await self.done.futureResult.get()
    }
}
