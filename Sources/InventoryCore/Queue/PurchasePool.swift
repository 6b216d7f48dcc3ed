import Foundation
import Logging
import NIOCore
import PostgresClient
import Proto
import Wire

/// One database's purchase path: per-product queues and a pool of consumer threads, each with its own connection,
/// draining them one procedure call per batch. The main and the hot database each have a pool, so a hot product's
/// backlog never delays a cold product's batches, and a hot database that is unreachable, blackholed or slow only
/// fails hot purchases: while no consumer can connect the pool refuses them UNAVAILABLE at once, and a queued purchase
/// is answered DEADLINE_EXCEEDED at its deadline (an expiry thread), never bought after it.
///
/// `@unchecked Sendable`: all mutable state (`lanes`, `link`, `stopping`, the thread counts, statistics) is guarded by
/// `condition`.
final class PurchasePool: @unchecked Sendable {
    struct Configuration: Sendable {
        var role: DatabaseRole
        var dsn: String
        var consumers: Int
        var maxBatch: Int
        var queueLimit: Int
        /// A sold-out product with more orders than this is not mirrored in memory (its purchases go to the database).
        var soldOutLookupLimit: Int = 1_000_000
        /// The hot pool: the main database, where each batch's request ids are bound before this database buys or
        /// looks them up, so that no request id has orders in both. Nil for the main pool.
        var bindingDSN: String? = nil
        /// The consumers' connection bounds (connect, keepalive, statement timeouts) and pinned server settings.
        var settings: PostgresSettings = .standard
        /// The longest a purchase that came without a deadline waits in a queue.
        var maxQueueWait: TimeAmount = .seconds(30)
        /// How often the queues are checked for purchases past their deadline.
        var expiryInterval: TimeAmount = .milliseconds(20)
        /// A consumer's pause between reconnect attempts: the first, doubling up to the longest.
        var reconnectDelay = Backoff(initial: .milliseconds(50), max: .seconds(1))
    }

    struct Statistics: Sendable {
        var batches = 0
        var purchases = 0
        var purchased = 0
        var failedBatches = 0
        /// Purchases queued again because every unit they could take was locked by other batches.
        var requeued = 0
    }

    let configuration: Configuration
    private let logger: Logger
    private let condition = NSCondition()
    private var lanes: PurchaseLanes<PendingPurchase>
    /// Order calls (read, confirm, cancel), batched by the same consumers: one `order_batch` call per batch.
    private var orders: OrderQueue<PendingOrderCall>
    /// Consumers alternate between the two queues while both have work, so neither starves the other.
    private var ordersNext = false
    private var link = PoolLink()
    private var stopping = false
    /// Consumer threads running, and every thread of the pool (the consumers and the expiry thread).
    private var consumersRunning = 0
    private var threadsRunning = 0
    private var stopped: [CheckedContinuation<Void, Never>] = []
    private var statistics = Statistics()
    /// Recorded by the consumers after each batch, outside `condition`.
    let metrics: PoolMetrics

    init(configuration: Configuration, logger: Logger) {
        self.metrics = PoolMetrics(database: configuration.role.rawValue)
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "pool"] = "\(configuration.role.rawValue)"
        self.logger = logger
        self.lanes = PurchaseLanes(queueLimit: configuration.queueLimit, maxBatch: configuration.maxBatch)
        self.orders = OrderQueue(queueLimit: configuration.queueLimit, maxBatch: configuration.maxBatch)
    }

    // MARK: - The purchase path (any thread; never blocks beyond the lock)

    func submit(_ purchase: PendingPurchase, product: Int32) {
        // Nothing waits without bound: a purchase without a deadline gets the longest queue wait as one.
        let purchase = purchase.deadline == nil ? purchase.expiring(at: .now() + configuration.maxQueueWait) : purchase
        condition.lock()
        let admission: PurchaseLanes<PendingPurchase>.Admission
        if stopping && consumersRunning == 0 {
            admission = .rejected(RPCError(.unavailable, "the inventory service is shutting down"))
        } else if !link.admits {
            admission = .rejected(RPCError(
                .unavailable, "the \(configuration.role.rawValue) database is unreachable; nothing was bought, retry later"))
        } else {
            admission = lanes.admit(purchase, product: product)
            if case .queued = admission { condition.signal() }
        }
        condition.unlock()
        switch admission {
        case .queued: break
        case .answered(let response): purchase.responder.succeed(response)
        case .rejected(let error): purchase.responder.fail(error)
        }
    }

    /// Queues an order call for the next order batch, or refuses it at once as a purchase would be refused.
    func submit(_ call: PendingOrderCall) {
        let call = call.deadline == nil ? call.expiring(at: .now() + configuration.maxQueueWait) : call
        let refusal: RPCError? = condition.withLock {
            if stopping && consumersRunning == 0 { return RPCError(.unavailable, "the inventory service is shutting down") }
            if !link.admits {
                return RPCError(.unavailable, "the \(configuration.role.rawValue) database is unreachable; nothing was changed, retry later")
            }
            guard orders.admit(call) else {
                return RPCError(.resourceExhausted, "too many order calls queued; retry later")
            }
            condition.signal()
            return nil
        }
        if let refusal { call.responder.fail(refusal) }
    }

    /// After a stock change committed: the product sells again (or runs into its new limit) through the database.
    func stockChanged(product: Int32) {
        condition.withLock { lanes.stockChanged(product: product) }
    }

    var currentStatistics: Statistics { condition.withLock { statistics } }

    /// Purchases waiting in this pool's queues (for the queue depth gauge, read when metrics are scraped).
    var queuedCount: Int { condition.withLock { lanes.queuedCount } }

    /// False before `start` and while no consumer can reach the database: purchases are refused UNAVAILABLE.
    var isAccepting: Bool { condition.withLock { link.admits } }

    // MARK: - Lifecycle

    /// Starts the consumers and the expiry thread. Until then (the hot database not brought up yet) purchases are
    /// refused. Does nothing once started or stopping.
    func start() {
        condition.lock()
        guard !stopping, link.start() else {
            condition.unlock()
            return
        }
        consumersRunning = configuration.consumers
        threadsRunning = configuration.consumers + 1
        condition.unlock()
        for index in 0..<configuration.consumers {
            var logger = self.logger
            logger[metadataKey: "consumer"] = "\(index)"
            let consumer = PoolConsumer(pool: self, logger: logger)
            let thread = Thread { consumer.run() }
            thread.name = "\(configuration.role.rawValue)-consumer-\(index)"
            thread.start()
        }
        let expiry = Thread { [self] in expireLoop() }
        expiry.name = "\(configuration.role.rawValue)-expiry"
        expiry.start()
    }

    /// Lets the consumers finish what is queued and in flight, then waits until every thread has ended (each
    /// consumer having closed its connection).
    func stop() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            condition.lock()
            stopping = true
            if threadsRunning == 0 {
                condition.unlock()
                continuation.resume()
                return
            }
            stopped.append(continuation)
            condition.broadcast()
            condition.unlock()
        }
        let statistics = currentStatistics
        logger.info("consumer pool stopped", metadata: [
            "batches": "\(statistics.batches)", "purchases": "\(statistics.purchases)",
            "purchased": "\(statistics.purchased)", "failed_batches": "\(statistics.failedBatches)", "requeued": "\(statistics.requeued)",
            "mean_batch": "\(statistics.batches == 0 ? 0 : statistics.purchases / statistics.batches)",
        ])
    }

    /// Answers queued purchases whose deadline passed, every `expiryInterval`, until the consumers have ended: no
    /// call stays in flight past its deadline while its database cannot take it.
    private func expireLoop() {
        defer { threadExited(consumer: false) }
        let pause = UInt32(clamping: max(1, configuration.expiryInterval.nanoseconds / 1000))
        while true {
            let (expired, expiredCalls, finished) = condition.withLock {
                (lanes.expire(now: .now()), orders.expire(now: .now()), stopping && consumersRunning == 0)
            }
            if !expired.isEmpty {
                var replies = Replies(capacity: expired.count)
                for purchase in expired { replies.fail(purchase, PurchasePool.expired) }
                replies.send()
            }
            if !expiredCalls.isEmpty {
                RPCResponder.completeAll(expiredCalls.map { ($0.responder, .failure(PurchasePool.expiredCall)) })
            }
            if finished { return }
            usleep(pause)
        }
    }

    /// The one answer to a purchase whose caller's deadline passed before a batch could take it.
    static let expired = RPCError(.deadlineExceeded, "the purchase waited past its deadline; nothing was bought")
    static let expiredCall = RPCError(.deadlineExceeded, "the order call waited past its deadline; nothing was changed")

    /// What a consumer takes: a product's purchases, or order calls.
    enum Work {
        case purchases(Batch<PendingPurchase>)
        case orders([PendingOrderCall])
    }

    // MARK: - Used by the consumers (`PoolConsumer`)

    /// Blocks until a batch is ready; nil once stopping and nothing is left.
    func takeWork() -> Work? {
        condition.lock()
        defer { condition.unlock() }
        while true {
            var work: Work?
            if orders.hasWork && (ordersNext || !lanes.hasWork) {
                work = .orders(orders.nextBatch())
                ordersNext = false
            } else if let batch = lanes.nextBatch() {
                work = .purchases(batch)
                ordersNext = true
            }
            if let work {
                if lanes.hasWork || orders.hasWork { condition.signal() }  // more for another consumer
                return work
            }
            if stopping { return nil }
            condition.wait()
        }
    }

    var isStopping: Bool { condition.withLock { stopping } }

    /// Stopping with nothing left to do: a consumer ends without (re)connecting.
    var isFinished: Bool { condition.withLock { stopping && !lanes.hasWork && !orders.hasWork } }

    /// A consumer (re)connected: the pool accepts purchases; the result is the epoch its connection belongs to.
    func consumerConnected() -> UInt64 {
        condition.withLock { link.connected() }
    }

    /// Whether a connection checked in `epoch` is still trusted (no consumer found the database gone since).
    func isCurrent(epoch: UInt64) -> Bool {
        condition.withLock { link.epoch == epoch }
    }

    /// A consumer could not connect: the pool refuses purchases until one connects, and what is queued is answered
    /// UNAVAILABLE now (none of it was sent to the database, so nothing of it was bought).
    func connectFailed() {
        let (drained, calls) = condition.withLock {
            if link.connectFailed() { logger.warning("purchase pool closed: its database is unreachable") }
            return (lanes.drainAll(), orders.drainAll())
        }
        if !calls.isEmpty {
            let error = RPCError(.unavailable, "the \(configuration.role.rawValue) database is unreachable; nothing was changed, retry later")
            RPCResponder.completeAll(calls.map { ($0.responder, .failure(error)) })
        }
        guard !drained.isEmpty else { return }
        let error = RPCError(.unavailable, "the \(configuration.role.rawValue) database is unreachable; nothing was bought, retry later")
        var replies = Replies(capacity: drained.count)
        for purchase in drained { replies.fail(purchase, error) }
        replies.send()
    }

    func requeue(_ calls: [PendingOrderCall]) {
        condition.withLock {
            orders.requeue(calls)
            condition.signal()
        }
    }

    func requeue(_ purchases: [PendingPurchase], product: Int32) {
        condition.withLock {
            lanes.requeue(purchases, product: product)
            condition.signal()
        }
    }

    func markSoldOut(product: Int32, generation: UInt64) -> Bool {
        condition.withLock { lanes.markSoldOut(product: product, generation: generation) }
    }

    func soldOutLoaded(product: Int32, generation: UInt64, lookup: SoldOutLookup?) {
        condition.withLock { lanes.soldOutLoaded(product: product, generation: generation, lookup: lookup) }
    }

    func soldOutLoadFailed(product: Int32, generation: UInt64) {
        condition.withLock { lanes.soldOutLoadFailed(product: product, generation: generation) }
    }

    func record(batchSize: Int, purchased: Int, requeued: Int = 0, failed: Bool) {
        condition.withLock {
            statistics.requeued += requeued
            statistics.batches += 1
            statistics.purchases += batchSize
            statistics.purchased += purchased
            if failed { statistics.failedBatches += 1 }
        }
    }

    func threadExited(consumer: Bool) {
        condition.lock()
        if consumer { consumersRunning -= 1 }
        threadsRunning -= 1
        let waiters = threadsRunning == 0 ? stopped : []
        if threadsRunning == 0 { stopped = [] }
        condition.unlock()
        for waiter in waiters { waiter.resume() }
    }
}

/// Whether a pool's database can be reached, as the consumers last found it: the pure decisions behind refusing
/// purchases while no consumer can connect, and behind every consumer checking its connection again once one found
/// the database gone.
struct PoolLink: Sendable, Equatable {
    enum State: Sendable, Equatable {
        /// Before `start` (the hot database not brought up yet): refuse.
        case notStarted
        /// Not known to be unreachable: accept.
        case open
        /// A consumer could not connect, and none has since: refuse.
        case down
    }

    private(set) var state = State.notStarted
    /// Bumped each time the pool goes down: a connection checked in an earlier epoch is checked again before use.
    private(set) var epoch: UInt64 = 0

    var admits: Bool { state == .open }

    /// True when this started the pool.
    mutating func start() -> Bool {
        guard state == .notStarted else { return false }
        state = .open
        return true
    }

    /// A consumer connected: the pool is open, and the connection belongs to the current epoch.
    mutating func connected() -> UInt64 {
        state = .open
        return epoch
    }

    /// A consumer could not connect. True when this closed the pool.
    mutating func connectFailed() -> Bool {
        guard state == .open else { return false }
        state = .down
        epoch &+= 1
        return true
    }
}

extension PendingPurchase {
    /// The same purchase with `deadline` as its deadline.
    fileprivate func expiring(at deadline: NIODeadline) -> PendingPurchase {
        PendingPurchase(
            requestId: requestId, userId: userId, edgeId: edgeId, lookupOnly: lookupOnly, deadline: deadline,
            responder: responder)
    }
}

extension PendingOrderCall {
    /// The same call with `deadline` as its deadline.
    fileprivate func expiring(at deadline: NIODeadline) -> PendingOrderCall {
        PendingOrderCall(
            productName: productName, productKey: productKey, key: key, action: action, deadline: deadline,
            responder: responder)
    }
}
