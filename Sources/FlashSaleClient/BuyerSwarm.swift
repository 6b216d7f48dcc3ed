import Atomics
import Histogram
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Proto
import Wire

/// A crowd of buyers hitting the edges: `connections` connections spread over the edges, each keeping `depth`
/// attempts in flight, until `attempts` attempts have an outcome. A request whose outcome never arrives
/// (UNAVAILABLE, DEADLINE_EXCEEDED) is retried with the same request id and `retry`, as a careful client does;
/// it stays one attempt. Used by `flashsale sale`, the sale benchmark and the end-to-end tests.
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
    }

    public struct Result: Sendable {
        public var attempts = 0
        public var purchased = 0
        public var soldOut = 0
        public var shed = 0
        public var alreadyPurchased = 0
        public var errors = 0
        public var retries = 0
        public var errorsByCode: [String: Int] = [:]
        public var wallSeconds = 0.0
        /// Latency of each attempt from its first send to its outcome, in microseconds.
        public var latency = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
        public var purchases: [Purchase] = []

        public var attemptsPerSecond: Double { wallSeconds > 0 ? Double(attempts) / wallSeconds : 0 }

        public func latencyMs(percentile: Double) -> Double {
            Double(latency.valueAtPercentile(percentile)) / 1000
        }

        mutating func merge(_ other: Result) {
            attempts += other.attempts
            purchased += other.purchased
            soldOut += other.soldOut
            shed += other.shed
            alreadyPurchased += other.alreadyPurchased
            errors += other.errors
            retries += other.retries
            errorsByCode.merge(other.errorsByCode, uniquingKeysWith: +)
            latency.add(other.latency)
            purchases += other.purchases
        }
    }

    private let configuration: Configuration
    private let group: any EventLoopGroup
    private let logger: Logger
    private let nextAttempt = ManagedAtomic<Int>(0)
    private let finishedAttempts = ManagedAtomic<Int>(0)

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
        let lanes = (0..<configuration.connections).map { index in
            // Every client of a lane lives on one event loop, so the lane's state needs no lock.
            let loop = group.next()
            return (0..<edgeCount).map { offset in
                let edge = configuration.edges[(index + offset) % edgeCount]
                return EdgeClient(
                    rpc: RPCClient(
                        configuration: RPCClientConfiguration(
                            host: edge.host, port: edge.port, connections: 1, connectTimeout: .seconds(1),
                            defaultTimeout: configuration.timeout, maxBackoff: .milliseconds(200)),
                        group: loop, logger: logger))
            }
        }
        // Connect before the clock starts: the sale measures purchases, not TCP handshakes.
        for chunk in stride(from: 0, to: lanes.count, by: 200) {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for clients in lanes[chunk..<min(chunk + 200, lanes.count)] {
                    tasks.addTask { _ = try await clients[0].ping() }
                }
                try await tasks.waitForAll()
            }
        }
        let start = NIODeadline.now()
        let total = await withTaskGroup(of: Result.self) { tasks in
            for clients in lanes {
                tasks.addTask { await Lane(swarm: self, clients: clients).run() }
            }
            var total = Result()
            for await lane in tasks { total.merge(lane) }
            return total
        }
        var result = total
        result.wallSeconds = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        for clients in lanes {
            for client in clients { await client.shutdown() }
        }
        return result
    }

    /// The attempt with index `index`, or nil when all are handed out.
    fileprivate func claimAttempt() -> (requestID: UInt64, userID: UInt64, product: String)? {
        let index = nextAttempt.loadThenWrappingIncrement(ordering: .relaxed)
        guard index < configuration.attempts else { return nil }
        let draw = Self.splitMix64(configuration.seed &+ UInt64(index))
        let user = 1 + draw % UInt64(configuration.users)
        let product = configuration.products[index % configuration.products.count]
        return (configuration.requestIDBase &+ UInt64(index), user, product)
    }

    fileprivate func attemptFinished() { finishedAttempts.wrappingIncrement(ordering: .relaxed) }

    fileprivate var maxRetries: Int { configuration.maxRetries }
    fileprivate var pause: TimeAmount? { configuration.pause }
    fileprivate var depth: Int { configuration.depth }

    static func splitMix64(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// One connection's share of the crowd: `depth` chains of attempts, each starting the next on completion.
/// Confined to one event loop (its clients' loop): every completion runs there, so its counters take no lock.
private final class Lane: Sendable {
    private let swarm: BuyerSwarm
    /// The lane's own edge first, then the others, for retries; all on `eventLoop`.
    private let clients: [EdgeClient]
    private let eventLoop: any EventLoop
    private let state: NIOLoopBoundBox<State>

    private struct State {
        var result = BuyerSwarm.Result()
        var chainsRunning = 0
        var continuation: CheckedContinuation<BuyerSwarm.Result, Never>?
    }

    init(swarm: BuyerSwarm, clients: [EdgeClient]) {
        self.swarm = swarm
        self.clients = clients
        self.eventLoop = clients[0].rpc.eventLoop
        self.state = .makeBoxSendingValue(State(), eventLoop: eventLoop)
    }

    func run() async -> BuyerSwarm.Result {
        await withCheckedContinuation { continuation in
            eventLoop.execute {
                self.state.value.continuation = continuation
                self.state.value.chainsRunning = self.swarm.depth
                for _ in 0..<self.swarm.depth { self.next() }
            }
        }
    }

    private func next() {
        guard let attempt = swarm.claimAttempt() else {
            state.value.chainsRunning -= 1
            if state.value.chainsRunning == 0, let continuation = state.value.continuation {
                state.value.continuation = nil
                continuation.resume(returning: state.value.result)
            }
            return
        }
        send(attempt, retry: false, tries: 0, started: .now())
    }

    /// Between asks of a purchase whose outcome may be unknown.
    private static let retryDelay = Backoff(initial: .milliseconds(5), max: .milliseconds(200))

    private func send(
        _ attempt: (requestID: UInt64, userID: UInt64, product: String), retry: Bool, tries: Int, started: NIODeadline,
        delays: Backoff.Iterator = Lane.retryDelay.makeIterator()
    ) {
        // Every other retry goes to the next edge: a dead edge must not keep a request in doubt forever.
        let client = clients[(tries / 2) % clients.count]
        client.purchaseFuture(requestID: attempt.requestID, userID: attempt.userID, product: attempt.product, retry: retry)
            .whenComplete { outcome in
                if case .failure(let error) = outcome, let rpc = error as? RPCError,
                   rpc.code.outcomeMayBeUnknown, tries < self.swarm.maxRetries {
                    // In doubt: ask again with the same request id; it can only ever make one order.
                    self.state.value.result.retries += 1
                    var later = delays
                    let delay = TimeAmount(later.next())
                    client.rpc.eventLoop.scheduleTask(in: delay) { [later] in
                        self.send(attempt, retry: true, tries: tries + 1, started: started, delays: later)
                    }
                    return
                }
                let micros = UInt64(max(0, (NIODeadline.now() - started).nanoseconds / 1000))
                Self.tally(outcome, of: attempt, micros: micros, into: &self.state.value.result)
                self.swarm.attemptFinished()
                if let pause = self.swarm.pause {
                    client.rpc.eventLoop.scheduleTask(in: pause) { self.next() }
                } else {
                    self.next()
                }
            }
    }

    private static func tally(
        _ outcome: Swift.Result<PurchaseResponse, any Error>, of attempt: (requestID: UInt64, userID: UInt64, product: String),
        micros: UInt64, into result: inout BuyerSwarm.Result
    ) {
        result.attempts += 1
        result.latency.record(micros)
        switch outcome {
        case .success(let response):
            switch response.outcome {
            case .purchased:
                result.purchased += 1
                result.purchases.append(.init(
                    requestID: attempt.requestID, userID: attempt.userID, product: attempt.product, orderID: response.orderId))
            case .soldOut: result.soldOut += 1
            case .shed: result.shed += 1
            case .alreadyPurchased: result.alreadyPurchased += 1
            default:
                result.errors += 1
                result.errorsByCode["outcome \(response.outcome)", default: 0] += 1
            }
        case .failure(let error):
            result.errors += 1
            let code = (error as? RPCError).map { "\($0.code)" } ?? "\(error)"
            result.errorsByCode[code, default: 0] += 1
        }
    }
}
