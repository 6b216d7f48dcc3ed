import ArgumentParser
import EdgeCore
import Foundation
import Logging
import NIOCore
import NIOEmbedded
import Proto
import Wire

/// `flashsale-bench calls`: the CPU a server spends on one call, without sockets or a load generator. One thread
/// pushes bursts of pre-encoded frames through a real server connection's handlers (`RPCServer.addConnectionHandlers`)
/// on an `EmbeddedChannel` and throws the answers away. Each scenario runs `rounds` times; the fastest round is
/// the figure (on a shared VM interference only ever adds time).
///
/// It exists because the socket benchmarks move 20-40 % between rounds on a 2-core VM, more than the few per cent
/// one change to the per-call path is worth, and `valgrind` (the usual instruction counter) crashes on these
/// binaries here. The scenarios are the sale's: the edge's purchase shed by the lottery, the purchase refused
/// sold out, and Ping (the wire's own floor, the anchor).
struct CallCostCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calls", abstract: "CPU per call of the server's per-call path, on an embedded channel.")

    @Option(help: "Calls per round.") var calls = 100_000
    @Option(help: "Rounds per scenario; the fastest is reported.") var rounds = 15
    @Option(help: "Frames per read (the sale's 16 in flight arrive together).") var burst = 16
    @Option(help: "Connections the bursts go round (the sale's 1,000 do not fit in the caches, one does).")
    var connections = 1

    enum Scenario: String, CaseIterable {
        case ping
        case purchaseShed = "purchase_shed"
        case purchaseSoldOut = "purchase_sold_out"
    }

    func run() throws {
        let loops = try Scenario.allCases.map { try ServerCallLoop(scenario: $0, burst: burst, connections: connections) }
        for loop in loops { try loop.verifyOneBurst() }
        // Rounds interleave the scenarios, so that a slow spell of the machine falls on all of them alike.
        var perCall = [[Double]](repeating: [], count: loops.count)
        for _ in 0..<rounds {
            for (index, loop) in loops.enumerated() { perCall[index].append(try loop.cpuNanos(calls: calls) / Double(calls)) }
        }
        var figures: [Scenario: Double] = [:]
        for (index, loop) in loops.enumerated() {
            let sorted = perCall[index].sorted()
            figures[loop.scenario] = sorted[0]
            print(String(format: "%@ %7.0f ns/call (fastest of %d rounds of %d calls, %d a burst, %d connections; median %.0f, slowest %.0f)",
                         loop.scenario.rawValue.padding(toLength: 18, withPad: " ", startingAt: 0), sorted[0], rounds,
                         calls, burst, connections, sorted[sorted.count / 2], sorted[sorted.count - 1]))
        }
        let ping = figures[.ping]!
        let shed = figures[.purchaseShed]!
        let soldOut = figures[.purchaseSoldOut]!
        print(String(format: "RESULT ping_ns=%.0f shed_ns=%.0f sold_out_ns=%.0f shed_vs_ping=%.2f sold_out_vs_ping=%.2f",
                     ping, shed, soldOut, shed / ping, soldOut / ping))
    }
}

/// Server connections on embedded channels, fed one pre-encoded burst of requests at a time, each in turn.
private final class ServerCallLoop {
    let channels: [EmbeddedChannel]
    let scenario: CallCostCommand.Scenario
    let burst: ByteBuffer
    let framesPerBurst: Int

    init(scenario: CallCostCommand.Scenario, burst framesPerBurst: Int, connections: Int) throws {
        self.scenario = scenario
        self.framesPerBurst = framesPerBurst
        let logger = Logger(label: "calls", factory: { _ in SwiftLogNoOpLogHandler() })
        var router = RPCRouter(serviceName: "calls")
        let method: String
        let payload: ByteBuffer
        switch scenario {
        case .ping:
            method = CommonRPC.Ping.name
            payload = WirePingRequest().serializedBuffer()
        case .purchaseShed, .purchaseSoldOut:
            let ledger = QuotaLedger()
            ledger.markSoldOut("p1")
            let path = PurchasePath(
                ledger: ledger, shedder: LoadShedder(keepPerMillion: scenario == .purchaseShed ? 0 : LoadShedder.million, seed: 1),
                forwarder: Unreachable(), refiller: Unreachable(), edgeID: { 1 }, logger: logger)
            EdgeAPI(purchases: path, ledger: ledger).register(into: &router)
            method = EdgeRPC.Purchase.name
            payload = PurchaseRequest(requestId: 1, userId: 42, productId: "p1").serializedBuffer()
        }
        var burst = ByteBuffer()
        for callID in 1...UInt64(framesPerBurst) {
            // A deadline, as every sale client sends: the admission reads the clock for it.
            Framing.writeFrame(into: &burst) {
                WireRequest(callId: callID, method: method, timeoutUs: 5_000_000, payload: payload).serialize(into: &$0)
            }
        }
        self.burst = burst
        self.channels = try (0..<max(1, connections)).map { _ in
            let channel = EmbeddedChannel()
            try RPCServer.addConnectionHandlers(
                to: channel, router: router, configuration: RPCServerConfiguration(idleTimeout: nil), logger: logger)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            return channel
        }
    }

    /// Runs one burst and checks every answer is the scenario's, so the loop cannot time a path it did not mean to.
    func verifyOneBurst() throws {
        for channel in channels { try verifyOneBurst(on: channel) }
    }

    private func verifyOneBurst(on channel: EmbeddedChannel) throws {
        try channel.writeInbound(burst)
        var answers = 0
        while var bytes = try channel.readOutbound(as: ByteBuffer.self) {
            while let length = bytes.readInteger(as: UInt32.self), let frame = bytes.readSlice(length: Int(length)) {
                let response = try WireResponse(decoding: frame)
                guard response.status == .ok else { throw ValidationError("\(scenario): status \(response.status) \(response.message)") }
                if scenario != .ping {
                    let outcome = try PurchaseResponse(decoding: response.payload).outcome
                    let expected: PurchaseOutcome = scenario == .purchaseShed ? .shed : .soldOut
                    guard outcome == expected else { throw ValidationError("\(scenario): outcome \(outcome)") }
                }
                answers += 1
            }
        }
        guard answers == framesPerBurst else { throw ValidationError("\(scenario): \(answers) answers to \(framesPerBurst) calls") }
    }

    /// This thread's CPU time for `calls` calls.
    func cpuNanos(calls: Int) throws -> Double {
        let start = Self.threadCPUNanos()
        for index in 0..<(calls / framesPerBurst) {
            let channel = channels[index % channels.count]
            try channel.writeInbound(burst)
            while try channel.readOutbound(as: ByteBuffer.self) != nil {}
        }
        return Double(Self.threadCPUNanos() - start)
    }

    private static func threadCPUNanos() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }
}

/// The inventory and the quota service, which a shed or sold-out attempt never reaches.
private struct Unreachable: PurchaseForwarder, QuotaRefiller {
    func forward(_ request: PurchaseRequest, timeout: TimeAmount) -> EventLoopFuture<PurchaseResponse> {
        fatalError("a shed or sold-out attempt forwarded")
    }

    func requestMore(product: String, on eventLoop: any EventLoop) -> EventLoopFuture<RefillOutcome> {
        fatalError("a sold-out attempt asked for a refill")
    }
}
