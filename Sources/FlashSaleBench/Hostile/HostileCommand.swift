import ArgumentParser
import Cluster
import Foundation
import Histogram
import NIOCore
import NIOPosix
import Proto
import ServiceKit
import Synchronization
import Wire

/// `flashsale-bench hostile`: one real Edge process on loopback against hostile clients, beside a well-behaved one.
///
/// The probe (one connection, one Ping at a time) measures its latency alone first (baseline), then during the
/// hostile phase: idle connections (never a byte), slow clients (a frame a byte at a time), a flood of oversized
/// length headers, a connect-and-close storm, and clients that never read their answers. The edge runs with short
/// idle and frame timeouts so that the phase sees them fire. Checks: the edge never dies, its memory stays under a
/// bound, idle and slow connections are closed, oversized headers close their connection, the probe is served.
/// Last line: `RESULT connections=N probe_p99_ms=X baseline_p99_ms=X crashes=N`.
struct HostileCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hostile", abstract: "Hostile clients against a real Edge, beside a well-behaved probe.")

    @Option(help: "ZooKeeper the edge registers in.") var zookeeper: String
    @Option(help: "Idle connections opened (the hostile process holds them all: keep it under about 18,000).")
    var idleConnections = 10_000
    @Option(help: "Slow clients, each sending a frame a byte at a time.") var slowClients = 50
    @Option(help: "Milliseconds between two bytes of a slow client.") var slowIntervalMs = 250
    @Option(help: "Connections in a row sending oversized length headers.") var oversizedWorkers = 4
    @Option(help: "Connect-and-close storm: connections a second.") var stormRate = 500
    @Option(help: "Clients sending big requests and never reading the answers.") var nonReaders = 4
    @Option(help: "Seconds the probe runs alone first.") var baselineSeconds = 5.0
    @Option(help: "Seconds of hostile load (the probe runs throughout).") var seconds = 20.0
    @Option(help: "The edge's --idle-timeout, seconds.") var idleTimeout = 8.0
    @Option(help: "The edge's --frame-timeout, seconds.") var frameTimeout = 3.0
    @Option(help: "The edge's resident memory must stay under this (MiB).") var rssLimitMib = 1024.0
    @Option(help: "Event loop threads of the edge.") var edgeThreads = 2

    func validate() throws {
        guard idleTimeout + 2 < seconds else { throw ValidationError("--seconds must exceed --idle-timeout by 2 s or more") }
        guard frameTimeout * 2 < seconds else { throw ValidationError("--seconds must exceed twice --frame-timeout") }
        guard idleConnections + slowClients + oversizedWorkers + nonReaders + 1_000 < 19_000 else {
            throw ValidationError("too many connections for one process (20,000 open files)")
        }
    }

    func run() async throws {
        var arguments = EdgeArguments.standalone(zooKeeper: zookeeper, root: ZooKeeperRoot.unique("hostile"))
        arguments.logLevel = "error"
        arguments.threads = edgeThreads
        arguments.extra = ["--idle-timeout", "\(idleTimeout)", "--frame-timeout", "\(frameTimeout)"]
        let endpoint = try await ServiceEndpoint.start(
            arguments, environment: ["FLASHSALE_SERVICE_TOKEN": Platform.newSecret()], name: "edge-hostile")
        let edge = endpoint.process
        let (host, port) = (endpoint.host, endpoint.port)
        print("edge pid \(edge.pid) on \(host):\(port), idle timeout \(idleTimeout) s, frame timeout \(frameTimeout) s")

        let probeGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let hostileGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let probe = Probe(client: RPCClient(
            configuration: RPCClientConfiguration(host: host, port: port, connections: 1, defaultTimeout: .seconds(5)),
            group: probeGroup, logger: ServiceRuntime.makeLogger(label: "probe", level: .error)))
        let memory = MemoryWatch(pid: edge.pid)
        let memoryTask = Task { await memory.run() }

        // Baseline: the probe alone.
        let rssIdle = residentMiB(pid: edge.pid) ?? 0
        let baseline = await probe.run(for: .seconds(baselineSeconds))
        print("baseline: \(baseline.summary)")

        // Hostile phase, with the probe beside it.
        let clients = HostileClients(host: host, port: port, group: hostileGroup)
        let until = ContinuousClock.now + .seconds(seconds)
        let hostile = Task {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    let channels = await clients.openIdle(idleConnections, until: until)
                    print("idle: \(channels.count) connections open")
                    try? await Task.sleep(until: until)
                    for channel in channels where channel.isActive { channel.close(promise: nil) }
                }
                for _ in 0..<slowClients {
                    group.addTask { await clients.slowClient(interval: .milliseconds(slowIntervalMs), until: until) }
                }
                for _ in 0..<oversizedWorkers { group.addTask { await clients.oversizedFlood(until: until) } }
                group.addTask { await clients.storm(perSecond: stormRate, until: until) }
                for _ in 0..<nonReaders { group.addTask { await clients.nonReader(until: until) } }
            }
        }
        let loaded = await probe.run(for: .seconds(seconds))
        await hostile.value
        try? await Task.sleep(for: .milliseconds(500))
        memory.stop()
        await memoryTask.value
        let rssAfter = residentMiB(pid: edge.pid) ?? 0
        print("under load: \(loaded.summary)")

        let crashed = !edge.isRunning
        let exit = await edge.terminate(grace: .seconds(10))
        let crashes = crashed || exit != 0 ? 1 : 0
        await probe.client.shutdown()
        try? await hostileGroup.shutdownGracefully()
        try? await probeGroup.shutdownGracefully()

        let c = clients.counters
        let idleClosed = c.idleClosed.load(ordering: .relaxed)
        let slowStarted = c.slowStarted.load(ordering: .relaxed)
        let slowClosed = c.slowClosed.load(ordering: .relaxed)
        let oversizedSent = c.oversizedSent.load(ordering: .relaxed)
        let oversizedClosed = c.oversizedClosed.load(ordering: .relaxed)
        func mean(_ total: Int, _ count: Int) -> String { count == 0 ? "-" : format(Double(total) / Double(count) / 1000, decimals: 2) }
        let connections = c.opened.load(ordering: .relaxed)
        print("""

        hostile clients against one edge (\(format(seconds, decimals: 0)) s):
          connections opened     \(connections) (at most \(c.peakOpen.load(ordering: .relaxed)) open at once; \(c.connectFailures.load(ordering: .relaxed)) connects failed)
          idle                   \(idleClosed) of \(idleConnections) closed by the edge, after \(mean(c.idleLifetimeMsTotal.load(ordering: .relaxed), idleClosed)) s on average (idle timeout \(idleTimeout) s)
          slow (1 byte/\(slowIntervalMs) ms) \(slowClosed) of \(slowStarted) cut off, after \(mean(c.slowLifetimeMsTotal.load(ordering: .relaxed), slowClosed)) s on average (frame timeout \(frameTimeout) s); \(c.slowAnswered.load(ordering: .relaxed)) answered
          oversized headers      \(oversizedClosed) of \(oversizedSent) connections closed at once (\(c.oversizedNotClosed.load(ordering: .relaxed)) not within 2 s)
          connect-and-close      \(c.stormConnections.load(ordering: .relaxed)) connections
          non-readers            \(c.nonReaders.load(ordering: .relaxed)) connections got \(format(Double(c.nonReaderBytes.load(ordering: .relaxed)) / 1_048_576, decimals: 1)) MiB of requests out, read nothing; \(c.nonReadersClosed.load(ordering: .relaxed)) closed by the edge
          edge memory            \(format(rssIdle, decimals: 1)) MiB before, at most \(format(memory.peak, decimals: 1)) MiB, \(format(rssAfter, decimals: 1)) MiB after (limit \(format(rssLimitMib, decimals: 0)))
          probe alone            \(baseline.summary)
          probe under load       \(loaded.summary)
          edge                   \(crashed ? "DIED" : "alive"), exit status \(exit) after SIGTERM
        """)

        var failures: [String] = []
        if crashes > 0 { failures.append("the edge died or did not exit cleanly") }
        if memory.peak > rssLimitMib { failures.append("edge memory \(memory.peak) MiB over the limit") }
        if idleClosed < idleConnections * 99 / 100 { failures.append("idle connections not closed: \(idleClosed) of \(idleConnections)") }
        if slowClients > 0 && slowClosed == 0 { failures.append("no slow client was cut off") }
        if c.slowAnswered.load(ordering: .relaxed) > 0 { failures.append("slow frames were served") }
        if oversizedSent > 0 && oversizedClosed < oversizedSent * 99 / 100 { failures.append("oversized headers not refused") }
        if loaded.calls == 0 || loaded.errors > 0 { failures.append("the probe was not served: \(loaded.summary)") }
        for failure in failures { print("FAILED: \(failure)") }
        print("RESULT connections=\(connections) probe_p99_ms=\(format(loaded.p99Ms, decimals: 3)) baseline_p99_ms=\(format(baseline.p99Ms, decimals: 3)) crashes=\(crashes) idle_closed=\(idleClosed) slow_closed=\(slowClosed) oversized_refused=\(oversizedClosed) probe_errors=\(loaded.errors) edge_rss_max_mib=\(format(memory.peak, decimals: 1)) failures=\(failures.count)")
        if !failures.isEmpty { throw ExitCode(1) }
    }
}

/// The well-behaved client: one Ping at a time on one connection, latency of each.
struct Probe: Sendable {
    let client: RPCClient

    struct Figures: Sendable {
        var calls = 0
        var errors = 0
        var p50Ms = 0.0
        var p99Ms = 0.0
        var maxMs = 0.0
        var summary: String {
            "\(calls) calls, \(errors) errors, p50 \(format(p50Ms, decimals: 3)) ms, p99 \(format(p99Ms, decimals: 3)) ms, max \(format(maxMs, decimals: 1)) ms"
        }
    }

    func run(for duration: Duration) async -> Figures {
        var histogram = newLatencyHistogram()
        var figures = Figures()
        let end = ContinuousClock.now + duration
        let request = WirePingRequest(data: ByteBuffer(bytes: [1, 2, 3, 4]))
        while ContinuousClock.now < end {
            let start = ContinuousClock.now
            do {
                _ = try await client.call(CommonRPC.Ping.self, request)
                figures.calls += 1
            } catch {
                figures.errors += 1
            }
            let micros = (ContinuousClock.now - start) / .microseconds(1)
            histogram.record(UInt64(max(0, micros)))
            try? await Task.sleep(for: .milliseconds(2))  // a steady stream, not a flood: ~400 calls/s
        }
        figures.p50Ms = Double(histogram.valueAtPercentile(50)) / 1000
        figures.p99Ms = Double(histogram.valueAtPercentile(99)) / 1000
        figures.maxMs = Double(histogram.max) / 1000
        return figures
    }
}

/// Samples a process's resident memory every 100 ms and keeps the peak.
final class MemoryWatch: Sendable {
    let pid: Int32
    private let state = Mutex((peak: 0.0, stopped: false))

    init(pid: Int32) { self.pid = pid }

    var peak: Double { state.withLock { $0.peak } }
    func stop() { state.withLock { $0.stopped = true } }

    func run() async {
        while !state.withLock({ $0.stopped }) {
            if let rss = residentMiB(pid: pid) { state.withLock { $0.peak = max($0.peak, rss) } }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }
}
