import Histogram
import Logging
import NIOCore
import NIOPosix
import Proto
import Synchronization
import Wire

/// A crowd of buyers hitting the edges: `connections` connections spread over the edges, each keeping `depth`
/// attempts in flight, until `attempts` attempts have an outcome. A request whose outcome never arrives
/// (UNAVAILABLE, DEADLINE_EXCEEDED) is retried with the same request id and `retry`, as a careful client does;
/// it stays one attempt. Used by `flashsale sale`, the sale benchmark and the end-to-end tests; `Following` is the
/// same crowd for sales whose edges come and go.
public final class BuyerSwarm: Sendable {
    public struct Configuration: Sendable {
        public var edges: [(host: String, port: Int)]
        public var products: [String]
        public var attempts: Int
        /// Distinct buyers; attempts pick one at random, so a buyer may try more than once.
        public var users: Int
        public var connections: Int
        public var depth: Int
        public var seed: UInt64
        public var timeout: TimeAmount = .seconds(5)
        public var maxRetries: Int = 20
        /// Each chain of attempts waits this long before its next attempt: paces a sale to last (fault tests).
        public var pause: TimeAmount? = nil
        /// Request ids are `requestIDBase + attempt index`: distinct across runs against one database.
        public var requestIDBase: UInt64
        /// Where each completed attempt's latency also goes, for a sampler's view of the running sale (nil: nowhere).
        public var latencyWindow: LatencyWindow? = nil

        public init(edges: [(host: String, port: Int)], products: [String], attempts: Int, users: Int,
                    connections: Int, depth: Int, seed: UInt64 = UInt64.random(in: 1 ... .max)) {
            self.edges = edges
            self.products = products
            self.attempts = attempts
            self.users = max(1, users)
            self.connections = max(1, connections)
            self.depth = max(1, depth)
            self.seed = seed
            // Request ids are positive bigints in the database: keep below 2^63.
            self.requestIDBase = (UInt64.random(in: 1...0x7FFF_FFFF) << 32)
        }
    }

    public struct Purchase: Sendable, Hashable {
        public var requestID: UInt64
        public var userID: UInt64
        public var product: String
        public var orderID: UInt64

        public init(requestID: UInt64, userID: UInt64, product: String, orderID: UInt64) {
            self.requestID = requestID
            self.userID = userID
            self.product = product
            self.orderID = orderID
        }
    }

    public struct Result: Sendable {
        public var attempts = 0
        /// Follow mode: attempts still in doubt when the crowd stopped, or after every retry (their order may or may
        /// not exist).
        public var abandoned: [UInt64] = []
        public var purchased = 0
        public var soldOut = 0
        public var shed = 0
        public var alreadyPurchased = 0
        public var errors = 0
        public var retries = 0
        /// Of `retries`, how many followed each error (its code), e.g. `deadlineExceeded`: an attempt held to its
        /// deadline, where `unavailable` was answered at once.
        public var retriesByCode: [String: Int] = [:]
        public var errorsByCode: [String: Int] = [:]
        public var wallSeconds = 0.0
        /// Latency of each attempt from its first send to its outcome, in microseconds.
        public var latency = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
        /// The same, of PURCHASED answers alone: those wait on an inventory batch, every other answer is the edge's.
        public var purchasedLatency = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
        public var purchases: [Purchase] = []

        public init() {}

        public var attemptsPerSecond: Double { wallSeconds > 0 ? Double(attempts) / wallSeconds : 0 }

        public func latencyMs(percentile: Double) -> Double {
            Double(latency.valueAtPercentile(percentile)) / 1000
        }

        /// One attempt's answer (or failure), `micros` after it was sent: the one place an answer is counted.
        public mutating func record(
            _ outcome: Swift.Result<PurchaseResponse, any Error>,
            of attempt: (requestID: UInt64, userID: UInt64, product: String), micros: UInt64
        ) {
            attempts += 1
            latency.record(micros)
            switch outcome {
            case .success(let response):
                switch response.outcome {
                case .purchased:
                    purchased += 1
                    purchasedLatency.record(micros)
                    purchases.append(.init(
                        requestID: attempt.requestID, userID: attempt.userID, product: attempt.product, orderID: response.orderId))
                case .soldOut: soldOut += 1
                case .shed: shed += 1
                case .alreadyPurchased: alreadyPurchased += 1
                default:
                    errors += 1
                    errorsByCode["outcome \(response.outcome)", default: 0] += 1
                }
            case .failure(let error):
                errors += 1
                errorsByCode[Self.name(of: error), default: 0] += 1
            }
        }

        /// How `errorsByCode` and `retriesByCode` name an error: its status code, or the error itself.
        static func name(of error: any Error) -> String {
            (error as? RPCError).map { "\($0.code)" } ?? "\(error)"
        }

        public mutating func merge(_ other: Result) {
            attempts += other.attempts
            purchased += other.purchased
            soldOut += other.soldOut
            shed += other.shed
            alreadyPurchased += other.alreadyPurchased
            errors += other.errors
            retries += other.retries
            retriesByCode.merge(other.retriesByCode, uniquingKeysWith: +)
            errorsByCode.merge(other.errorsByCode, uniquingKeysWith: +)
            latency.add(other.latency)
            purchasedLatency.add(other.purchasedLatency)
            purchases += other.purchases
            abandoned += other.abandoned
        }
    }

    private let configuration: Configuration
    private let group: any EventLoopGroup
    private let logger: Logger
    private let nextAttempt = Atomic<Int>(0)
    private let finishedAttempts = Atomic<Int>(0)

    public init(configuration: Configuration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        self.configuration = configuration
        self.group = group
        self.logger = logger
    }

    /// Attempts with an outcome so far (for a progress bar).
    public var completed: Int { finishedAttempts.load(ordering: .relaxed) }

    public func run() async throws -> Result {
        // One client per connection and edge: a lane's own edge first; the others (connected only when needed)
        // take its retries when its edge is gone, as a client behind a load balancer would see.
        let edgeCount = configuration.edges.count
        var tallies: [ObjectIdentifier: LoopTally] = [:]
        let lanes = (0..<configuration.connections).map { index in
            // Every client of a lane lives on one event loop, so the lane's state needs no lock.
            let loop = group.next()
            let tally = tallies[ObjectIdentifier(loop)] ?? LoopTally(eventLoop: loop)
            tallies[ObjectIdentifier(loop)] = tally
            let clients = (0..<edgeCount).map { offset in
                let edge = configuration.edges[(index + offset) % edgeCount]
                return EdgeClient(
                    rpc: RPCClient(
                        configuration: RPCClientConfiguration(
                            host: edge.host, port: edge.port, connections: 1, connectTimeout: .seconds(1),
                            defaultTimeout: configuration.timeout, maxBackoff: .milliseconds(200)),
                        group: loop, logger: logger))
            }
            return (clients: clients, tally: tally)
        }
        // Connect before the clock starts: the sale measures purchases, not TCP handshakes.
        for chunk in stride(from: 0, to: lanes.count, by: 200) {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for lane in lanes[chunk..<min(chunk + 200, lanes.count)] {
                    tasks.addTask { _ = try await lane.clients[0].ping() }
                }
                try await tasks.waitForAll()
            }
        }
        let start = NIODeadline.now()
        await withDiscardingTaskGroup { tasks in
            for (index, lane) in lanes.enumerated() {
                tasks.addTask { await Lane(swarm: self, clients: lane.clients, tally: lane.tally, index: index).run() }
            }
        }
        let wallSeconds = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        var result = Result()
        for tally in tallies.values {
            result.merge(try await tally.eventLoop.submit { tally.result.value }.get())
        }
        result.wallSeconds = wallSeconds
        for lane in lanes {
            for client in lane.clients { await client.shutdown() }
        }
        return result
    }

    /// The attempt with index `index`, or nil when all are handed out.
    fileprivate func claimAttempt() -> (requestID: UInt64, userID: UInt64, product: String)? {
        let index = nextAttempt.wrappingAdd(1, ordering: .relaxed).oldValue
        guard index < configuration.attempts else { return nil }
        let draw = SplitMix64.mix(configuration.seed &+ UInt64(index))
        let user = 1 + draw % UInt64(configuration.users)
        let product = configuration.products[index % configuration.products.count]
        return (configuration.requestIDBase &+ UInt64(index), user, product)
    }

    fileprivate func attemptFinished() { finishedAttempts.wrappingAdd(1, ordering: .relaxed) }

    fileprivate var maxRetries: Int { configuration.maxRetries }
    fileprivate var pause: TimeAmount? { configuration.pause }
    fileprivate var depth: Int { configuration.depth }
    fileprivate var latencyWindow: LatencyWindow? { configuration.latencyWindow }

    /// The swarm's retry rule: an error that may leave the outcome unknown is asked again, with the same request id.
    static func inDoubt(_ error: any Error) -> Bool {
        (error as? RPCError)?.code.outcomeMayBeUnknown ?? false
    }

    /// Between asks of a purchase whose outcome may be unknown.
    static let retryDelay = Backoff(initial: .milliseconds(5), max: .milliseconds(200))

}

/// The outcomes of every lane on one event loop. The lanes of a loop share it rather than each keeping a `Result`:
/// a `Result` holds two histograms of ~150 KiB each, so 1,000 lanes held 300 MB (the load generator's RSS was
/// 346 MB at 1,000 connections; 51 MB now) and every attempt recorded was a cache miss in a histogram of its own.
/// Shared, the sale at 1 in flight did 47-53k attempts/s instead of 41-44k (three alternating runs each).
fileprivate final class LoopTally: Sendable {
    let eventLoop: any EventLoop
    let result: NIOLoopBoundBox<BuyerSwarm.Result>

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        self.result = .makeBoxSendingValue(BuyerSwarm.Result(), eventLoop: eventLoop)
    }
}

/// One connection's share of the crowd: `depth` chains of attempts, each starting the next on completion.
/// Confined to one event loop (its clients' loop): every completion runs there, so its counters take no lock.
fileprivate final class Lane: Sendable {
    private let swarm: BuyerSwarm
    /// The lane's own edge first, then the others, for retries; all on `eventLoop`.
    private let clients: [EdgeClient]
    private let eventLoop: any EventLoop
    private let state: NIOLoopBoundBox<State>
    /// Where the lane's outcomes are counted: its loop's.
    private let tally: LoopTally

    private struct State {
        var chainsRunning = 0
        var continuation: CheckedContinuation<Void, Never>?
    }

    /// This lane's shard of the swarm's latency window.
    private let shard: Int

    init(swarm: BuyerSwarm, clients: [EdgeClient], tally: LoopTally, index: Int) {
        self.swarm = swarm
        self.clients = clients
        self.tally = tally
        self.shard = index
        self.eventLoop = clients[0].rpc.eventLoop
        precondition(tally.eventLoop === self.eventLoop, "a lane counts on its own loop")
        self.state = .makeBoxSendingValue(State(), eventLoop: eventLoop)
    }

    func run() async {
        await withCheckedContinuation { continuation in
            eventLoop.execute {
                self.state.value.continuation = continuation
                self.state.value.chainsRunning = self.swarm.depth
                for _ in 0..<self.swarm.depth { self.next() }
            }
        }
    }

    /// `now`: when the previous attempt of this chain ended, if that was just now (one clock read per attempt).
    private func next(now: NIODeadline? = nil) {
        guard let attempt = swarm.claimAttempt() else {
            state.value.chainsRunning -= 1
            if state.value.chainsRunning == 0, let continuation = state.value.continuation {
                state.value.continuation = nil
                continuation.resume()
            }
            return
        }
        send(attempt, retry: false, tries: 0, started: now ?? .now())
    }

    private func send(
        _ attempt: (requestID: UInt64, userID: UInt64, product: String), retry: Bool, tries: Int, started: NIODeadline,
        delays: Backoff.Iterator? = nil
    ) {
        // Every other retry goes to the next edge: a dead edge must not keep a request in doubt forever.
        let client = clients[(tries / 2) % clients.count]
        client.purchase(requestID: attempt.requestID, userID: attempt.userID, product: attempt.product, retry: retry) { answer in
            let outcome = answer.mapError { $0 as any Error }
            if case .failure(let error) = outcome, BuyerSwarm.inDoubt(error), tries < self.swarm.maxRetries {
                // In doubt: ask again with the same request id; it can only ever make one order.
                self.tally.result.value.retries += 1
                self.tally.result.value.retriesByCode[BuyerSwarm.Result.name(of: error), default: 0] += 1
                // Made at the first retry, not per attempt: a Backoff's iterator converts Durations (Int128
                // arithmetic, ~1 % of the load generator when made for every attempt).
                var later = delays ?? BuyerSwarm.retryDelay.makeIterator()
                let delay = TimeAmount(later.next())
                client.rpc.eventLoop.scheduleTask(in: delay) { [later] in
                    self.send(attempt, retry: true, tries: tries + 1, started: started, delays: later)
                }
                return
            }
            let now = NIODeadline.now()
            let micros = UInt64(max(0, (now - started).nanoseconds / 1000))
            self.tally.result.value.record(outcome, of: attempt, micros: micros)
            self.swarm.latencyWindow?.record(micros, lane: self.shard)
            self.swarm.attemptFinished()
            if let pause = self.swarm.pause {
                client.rpc.eventLoop.scheduleTask(in: pause) { self.next() }
            } else {
                self.next(now: now)
            }
        }
    }

}

extension BuyerSwarm {
    /// Follow mode: buyers for a sale whose edges come and go. `workers` loops, each one attempt at a time (a new
    /// buyer each: the user id is the request id) to a random edge of those `edges` names now, at most `perSecond`
    /// attempts a second in all; until `stop()`. An attempt in doubt is retried by the swarm's rule (same request id,
    /// `retry`, every other try on another edge, up to `maxRetries`), and counted abandoned if it never settles.
    public final class Following: Sendable {
        private let product: String
        private let workers: Int
        private let perSecond: Double?
        private let maxRetries: Int
        private let timeout: TimeAmount
        private let logger: Logger
        private let source: (@Sendable () -> [(host: String, port: Int)])?
        private let followed = Mutex<[(host: String, port: Int)]>([])
        private let clients = Mutex<[String: EdgeClient]>([:])
        private let state = Mutex(Result())
        private let stopped = Atomic<Bool>(false)
        private let nextRequest: Atomic<UInt64>

        /// `edges` is asked before every try (the live edges of a test); without it the crowd buys through what
        /// `follow(_:)` last named. Request ids start after `requestIDBase`.
        public init(
            product: String, workers: Int, perSecond: Double? = nil, maxRetries: Int = 20, timeout: TimeAmount = .seconds(5),
            requestIDBase: UInt64 = UInt64.random(in: 1...0x7FFF_FFFF) << 32,
            edges: (@Sendable () -> [(host: String, port: Int)])? = nil, logger: Logger
        ) {
            self.product = product
            self.workers = max(1, workers)
            self.perSecond = perSecond
            self.maxRetries = maxRetries
            self.timeout = timeout
            self.source = edges
            self.nextRequest = Atomic(requestIDBase)
            self.logger = logger
        }

        /// Aims the crowd at these edges from now on.
        public func follow(_ edges: [(host: String, port: Int)]) {
            followed.withLock { $0 = edges }
        }

        public var result: Result { state.withLock { $0 } }
        public var purchased: Int { state.withLock { $0.purchased } }

        public func stop() { stopped.store(true, ordering: .relaxed) }

        /// Runs until `stop()`; then the tally.
        @discardableResult
        public func run() async -> Result {
            let pause = perSecond.map { Duration.seconds(Double(workers) / $0) }
            await withDiscardingTaskGroup { group in
                for _ in 0..<workers {
                    group.addTask {
                        while !self.stopped.load(ordering: .relaxed) {
                            let started = ContinuousClock.now
                            await self.attempt()
                            if let pause {
                                let left = pause - (ContinuousClock.now - started)
                                if left > .zero { try? await Task.sleep(for: left) }
                            }
                        }
                    }
                }
            }
            let all = clients.withLock { clients in
                defer { clients.removeAll() }
                return Array(clients.values)
            }
            for client in all { await client.shutdown() }
            return result
        }

        private func pickEdge() -> EdgeClient? {
            guard let edge = (source?() ?? followed.withLock { $0 }).randomElement() else { return nil }
            return clients.withLock { clients in
                let key = "\(edge.host):\(edge.port)"
                if let client = clients[key] { return client }
                let client = EdgeClient(host: edge.host, port: edge.port, timeout: timeout, logger: logger)
                clients[key] = client
                return client
            }
        }

        private func attempt() async {
            let requestID = nextRequest.wrappingAdd(1, ordering: .relaxed).newValue
            let userID = requestID  // a distinct buyer per attempt
            let started = ContinuousClock.now
            var edge = pickEdge()
            var tries = 0
            var delays = BuyerSwarm.retryDelay.makeIterator()
            while true {
                guard let client = edge else {
                    // No edge to buy through right now: wait for one, unless the crowd is stopping (an attempt never
                    // sent is not in doubt).
                    if stopped.load(ordering: .relaxed) {
                        if tries == 0 { return }
                        break
                    }
                    try? await Task.sleep(for: .milliseconds(50))
                    edge = pickEdge()
                    continue
                }
                do {
                    let response = try await client.purchase(requestID: requestID, userID: userID, product: product, retry: tries > 0)
                    tally(.success(response), requestID: requestID, started: started)
                    return
                } catch where BuyerSwarm.inDoubt(error) && tries < maxRetries {
                    // A stopping crowd gives up on an attempt still in doubt after a few tries: it is abandoned.
                    if stopped.load(ordering: .relaxed) && tries > 3 { break }
                    state.withLock { $0.retries += 1 }
                    try? await Task.sleep(for: delays.next())
                    tries += 1
                    if tries % 2 == 0 { edge = pickEdge() }
                } catch where BuyerSwarm.inDoubt(error) {
                    break
                } catch {
                    tally(.failure(error), requestID: requestID, started: started)
                    return
                }
            }
            state.withLock { $0.abandoned.append(requestID) }
        }

        private func tally(_ outcome: Swift.Result<PurchaseResponse, any Error>, requestID: UInt64, started: ContinuousClock.Instant) {
            let elapsed = (ContinuousClock.now - started).components
            let micros = UInt64(max(0, elapsed.seconds * 1_000_000 + elapsed.attoseconds / 1_000_000_000_000))
            state.withLock { result in
                result.record(outcome, of: (requestID, requestID, product), micros: micros)
            }
        }
    }
}
