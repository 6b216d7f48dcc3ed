import FlashSaleClient
import Histogram
import Logging
import NIOCore
import NIOPosix
import Proto
import Wire

/// Purchase attempts at a fixed rate, whatever the replies do (open loop, as wrk2 drives HTTP): attempt `i` is due
/// at `start + i / rate`, and its latency runs from that intended time, not from when it was sent, so a stalled
/// server is charged for every attempt it held up (coordinated omission corrected). Each event loop of the
/// generator paces its share and sends on its own connections; nothing is retried.
///
/// A loop wakes at most every `tick` and sends everything due by then: a send is up to one tick late, and that
/// lateness is in the figures (charged to the platform, so the error is pessimistic by at most one tick).
final class OpenLoopLoad: Sendable {
    struct Configuration: Sendable {
        var edges: [(host: String, port: Int)]
        var products: [String]
        var users: Int
        var rate: Double
        var duration: TimeAmount
        var connections: Int
        /// An attempt not answered in this time counts as timed out (its latency is recorded too).
        var timeout: TimeAmount = .seconds(2)
        /// Past this many unanswered attempts on one connection a due attempt is dropped (counted, never sent).
        var maxOutstandingPerConnection = 2_000
        var tick: TimeAmount = .microseconds(100)
        var spread: Spread = .tick
        var requestIDBase: UInt64
        var seed: UInt64
    }

    /// How a loop's attempts go round its connections.
    enum Spread: String, Sendable, CaseIterable {
        /// The attempts due in one tick go out together on the loop's next connection (`perConnection` at most,
        /// then the next), as a caller that multiplexes its users' requests on a few connections (a gateway, an
        /// internal service's client) sends what arrived together: one write for them, and the edge reads them in
        /// one burst. The cap spreads the catch-up after a late tick instead of piling it on one connection.
        case tick
        /// Each attempt on the next connection: at these rates, one write and one read per attempt on every side.
        case attempt
    }

    /// With `Spread.tick`: attempts of one tick on one connection, at most. A tick at 200k/s holds 20; a tick late
    /// by 10 ms, 2,000, which on one connection would pass `maxOutstandingPerConnection` and be dropped.
    static let perConnection = 64

    struct Result: Sendable {
        var due = 0
        var sent = 0
        var dropped = 0
        /// Answers counted as the closed-loop swarm counts them; latency from each attempt's intended send time.
        var answers = BuyerSwarm.Result()
        /// Of `answers.errors`, those that hit the attempt's timeout.
        var timedOut = 0
        var wallSeconds = 0.0
        /// Every answer's intended send time and latency, for `phases()`.
        var timeline: [Answered] = []

        struct Answered: Sendable {
            var intended: NIODeadline
            var micros: UInt32
            var purchased: Bool
        }

        /// Latency (microseconds) of the attempts meant for while the stock still sold (up to the last PURCHASED
        /// attempt's intended time) and of those after: the selling phase shares the machine with the inventory's
        /// batches and PostgreSQL's commits, the sold-out phase is the edges' counters alone.
        func phases() -> (selling: Histogram<UInt64>, soldOut: Histogram<UInt64>, sellingSeconds: Double) {
            var selling = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
            var soldOut = selling
            let first = timeline.lazy.map(\.intended).min()
            guard let first, let lastSale = timeline.lazy.filter(\.purchased).map(\.intended).max() else {
                for answer in timeline { _ = selling.record(UInt64(answer.micros)) }
                return (selling, soldOut, 0)
            }
            for answer in timeline {
                if answer.intended <= lastSale { _ = selling.record(UInt64(answer.micros)) } else { _ = soldOut.record(UInt64(answer.micros)) }
            }
            return (selling, soldOut, Double((lastSale - first).nanoseconds) / 1e9)
        }

        var purchases: [BuyerSwarm.Purchase] { answers.purchases }
        /// Errors other than timeouts.
        var errors: Int { answers.errors - timedOut }
        func latencyMs(_ percentile: Double) -> Double { answers.latencyMs(percentile: percentile) }
        var maxMs: Double { Double(answers.latency.max) / 1000 }

        mutating func merge(_ other: Result) {
            due += other.due
            sent += other.sent
            dropped += other.dropped
            timedOut += other.timedOut
            answers.merge(other.answers)
            timeline += other.timeline
        }
    }

    private let configuration: Configuration
    private let pacers: [Pacer]

    /// Connects `connections` clients (spread over the edges and over `group`'s loops) before the clock starts.
    static func connect(
        _ configuration: Configuration, group: MultiThreadedEventLoopGroup, logger: Logger
    ) async throws -> OpenLoopLoad {
        let loops = Array(group.makeIterator())
        var clientsByLoop = Array(repeating: [EdgeClient](), count: loops.count)
        for index in 0..<max(1, configuration.connections) {
            let edge = configuration.edges[index % configuration.edges.count]
            let loop = index % loops.count
            clientsByLoop[loop].append(EdgeClient(rpc: RPCClient(
                configuration: RPCClientConfiguration(
                    host: edge.host, port: edge.port, connections: 1, defaultTimeout: configuration.timeout),
                group: loops[loop], logger: logger)))
        }
        let all = clientsByLoop.flatMap { $0 }
        for chunk in stride(from: 0, to: all.count, by: 100) {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for client in all[chunk..<min(chunk + 100, all.count)] { tasks.addTask { _ = try await client.ping() } }
                try await tasks.waitForAll()
            }
        }
        let pacers = clientsByLoop.filter { !$0.isEmpty }.map { clients in
            Pacer(configuration: configuration, clients: clients)
        }
        return OpenLoopLoad(configuration: configuration, pacers: pacers)
    }

    private init(configuration: Configuration, pacers: [Pacer]) {
        self.configuration = configuration
        self.pacers = pacers
    }

    /// Runs the load for `duration`, then waits for the answers of what was sent (or their timeouts).
    func run() async -> Result {
        let start = NIODeadline.now() + .milliseconds(20)
        let total = Int(configuration.rate * Double(configuration.duration.nanoseconds) / 1e9)
        var result = Result()
        await withTaskGroup(of: Result.self) { tasks in
            for (index, pacer) in pacers.enumerated() {
                let plan = Pacer.Plan(start: start, rate: configuration.rate, total: total, lane: index, lanes: pacers.count)
                tasks.addTask { await pacer.run(plan) }
            }
            for await part in tasks { result.merge(part) }
        }
        result.wallSeconds = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        return result
    }

    func shutdown() async {
        for pacer in pacers { await pacer.shutdown() }
    }
}

/// One event loop's share of an open-loop load: attempts `lane`, `lane + lanes`, ... each at its intended time,
/// round-robin over the loop's connections. Confined to its loop: its state takes no lock.
private final class Pacer: Sendable {
    struct Plan: Sendable {
        var start: NIODeadline
        var rate: Double
        var total: Int
        var lane: Int
        var lanes: Int

        /// The intended send time of the lane's `k`-th attempt.
        func due(_ k: Int) -> NIODeadline { start + .nanoseconds(Int64(Double(k * lanes + lane) * 1e9 / rate)) }
        /// How many of this lane's attempts are due by `now`.
        func dueCount(by now: NIODeadline) -> Int {
            guard now >= start else { return 0 }
            let global = Int(Double((now - start).nanoseconds) * rate / 1e9) + 1
            let mine = global > lane ? (global - lane + lanes - 1) / lanes : 0
            return min(mine, (total - lane + lanes - 1) / lanes)
        }
    }

    private struct State {
        var plan: Plan?
        var sent = 0
        var dueSoFar = 0
        var answered = 0
        var next = 0
        var outstanding: [Int]
        var result = OpenLoopLoad.Result()
        var continuation: CheckedContinuation<OpenLoopLoad.Result, Never>?
    }

    private let configuration: OpenLoopLoad.Configuration
    private let clients: [EdgeClient]
    private let loop: any EventLoop
    private let state: NIOLoopBoundBox<State>

    init(configuration: OpenLoopLoad.Configuration, clients: [EdgeClient]) {
        self.configuration = configuration
        self.clients = clients
        self.loop = clients[0].rpc.eventLoop
        self.state = .makeBoxSendingValue(State(outstanding: Array(repeating: 0, count: clients.count)), eventLoop: loop)
    }

    func run(_ plan: Plan) async -> OpenLoopLoad.Result {
        await withCheckedContinuation { continuation in
            self.loop.execute {
                self.state.value = State(outstanding: Array(repeating: 0, count: self.clients.count))
                self.state.value.plan = plan
                self.state.value.result.timeline.reserveCapacity((plan.total + plan.lanes - 1) / plan.lanes)
                self.state.value.continuation = continuation
                self.loop.scheduleTask(deadline: plan.start) { self.tick() }
            }
        }
    }

    private func tick() {
        guard let plan = state.value.plan else { return }
        let now = NIODeadline.now()
        let due = plan.dueCount(by: now)
        let perConnection = configuration.spread == .tick ? OpenLoopLoad.perConnection : 1
        var onThisConnection = perConnection
        while state.value.dueSoFar < due {
            let k = state.value.dueSoFar
            state.value.dueSoFar += 1
            if onThisConnection == perConnection {
                moveToNextConnection()
                onThisConnection = 0
            }
            onThisConnection += 1
            send(k, plan: plan, on: state.value.next)
        }
        let laneTotal = (plan.total - plan.lane + plan.lanes - 1) / plan.lanes
        if state.value.dueSoFar < laneTotal {
            let next = max(plan.due(state.value.dueSoFar), now + configuration.tick)
            loop.scheduleTask(deadline: next) { self.tick() }
        } else {
            finishIfDone()
        }
    }

    /// `state.next` becomes the connection after the last one used.
    private func moveToNextConnection() {
        state.value.next = (state.value.next + 1) % clients.count
    }

    private func send(_ k: Int, plan: Plan, on connection: Int) {
        state.value.result.due += 1
        guard state.value.outstanding[connection] < configuration.maxOutstandingPerConnection else {
            state.value.result.dropped += 1
            return
        }
        state.value.outstanding[connection] += 1
        state.value.sent += 1
        state.value.result.sent += 1
        let index = k * plan.lanes + plan.lane
        let intended = plan.due(k)
        let draw = SplitMix64.mix(configuration.seed &+ UInt64(index))
        let user = 1 + draw % UInt64(max(1, configuration.users))
        let product = configuration.products[index % configuration.products.count]
        let requestID = configuration.requestIDBase &+ UInt64(index)
        clients[connection].purchase(requestID: requestID, userID: user, product: product) { answer in
            let outcome = answer.mapError { $0 as any Error }
            let micros = UInt64(max(0, (NIODeadline.now() - intended).nanoseconds / 1000))
            self.state.value.outstanding[connection] -= 1
            self.state.value.answered += 1
            self.state.value.result.answers.record(outcome, of: (requestID, user, product), micros: micros)
            let purchased = if case .success(let response) = answer { response.outcome == .purchased } else { false }
            self.state.value.result.timeline.append(.init(intended: intended, micros: UInt32(min(micros, UInt64(UInt32.max))), purchased: purchased))
            if case .failure(let error) = outcome, (error as? RPCError)?.code == .deadlineExceeded {
                self.state.value.result.timedOut += 1
            }
            self.finishIfDone()
        }
    }

    private func finishIfDone() {
        guard let plan = state.value.plan else { return }
        let laneTotal = (plan.total - plan.lane + plan.lanes - 1) / plan.lanes
        guard state.value.dueSoFar == laneTotal, state.value.answered == state.value.sent,
              let continuation = state.value.continuation else { return }
        state.value.continuation = nil
        state.value.plan = nil
        continuation.resume(returning: state.value.result)
    }

    func shutdown() async {
        for client in clients { await client.shutdown() }
    }
}
