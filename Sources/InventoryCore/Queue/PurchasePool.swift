import Foundation
import Logging
import Metrics
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
    fileprivate let metrics: PoolMetrics

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
            let consumer = Consumer(pool: self, logger: logger)
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
    fileprivate static let expired = RPCError(.deadlineExceeded, "the purchase waited past its deadline; nothing was bought")
    fileprivate static let expiredCall = RPCError(.deadlineExceeded, "the order call waited past its deadline; nothing was changed")

    /// What a consumer takes: a product's purchases, or order calls.
    fileprivate enum Work {
        case purchases(Batch<PendingPurchase>)
        case orders([PendingOrderCall])
    }

    // MARK: - Used by consumers

    /// Blocks until a batch is ready; nil once stopping and nothing is left.
    fileprivate func takeWork() -> Work? {
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

    fileprivate var isStopping: Bool { condition.withLock { stopping } }

    /// Stopping with nothing left to do: a consumer ends without (re)connecting.
    fileprivate var isFinished: Bool { condition.withLock { stopping && !lanes.hasWork && !orders.hasWork } }

    /// A consumer (re)connected: the pool accepts purchases; the result is the epoch its connection belongs to.
    fileprivate func consumerConnected() -> UInt64 {
        condition.withLock { link.connected() }
    }

    /// Whether a connection checked in `epoch` is still trusted (no consumer found the database gone since).
    fileprivate func isCurrent(epoch: UInt64) -> Bool {
        condition.withLock { link.epoch == epoch }
    }

    /// A consumer could not connect: the pool refuses purchases until one connects, and what is queued is answered
    /// UNAVAILABLE now (none of it was sent to the database, so nothing of it was bought).
    fileprivate func connectFailed() {
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

    fileprivate func requeue(_ calls: [PendingOrderCall]) {
        condition.withLock {
            orders.requeue(calls)
            condition.signal()
        }
    }

    fileprivate func requeue(_ purchases: [PendingPurchase], product: Int32) {
        condition.withLock {
            lanes.requeue(purchases, product: product)
            condition.signal()
        }
    }

    fileprivate func markSoldOut(product: Int32, generation: UInt64) -> Bool {
        condition.withLock { lanes.markSoldOut(product: product, generation: generation) }
    }

    fileprivate func soldOutLoaded(product: Int32, generation: UInt64, lookup: SoldOutLookup?) {
        condition.withLock { lanes.soldOutLoaded(product: product, generation: generation, lookup: lookup) }
    }

    fileprivate func soldOutLoadFailed(product: Int32, generation: UInt64) {
        condition.withLock { lanes.soldOutLoadFailed(product: product, generation: generation) }
    }

    fileprivate func record(batchSize: Int, purchased: Int, requeued: Int = 0, failed: Bool) {
        condition.withLock {
            statistics.requeued += requeued
            statistics.batches += 1
            statistics.purchases += batchSize
            statistics.purchased += purchased
            if failed { statistics.failedBatches += 1 }
        }
    }

    fileprivate func threadExited(consumer: Bool) {
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

/// One consumer thread and its connection: take a batch, one procedure call, answer every purchase of it.
private final class Consumer: @unchecked Sendable {
    // @unchecked: used by its own thread only after `start`.
    private let pool: PurchasePool
    private let logger: Logger
    private var connection: PostgresConnection?
    /// The hot pool's connection to the main database, for `bind` (closed with the consumer).
    private var binding: PostgresConnection?
    /// The pool epoch in which `connection` was last found working.
    private var epoch: UInt64?

    init(pool: PurchasePool, logger: Logger) {
        self.pool = pool
        self.logger = logger
    }

    func run() {
        defer {
            connection?.close()
            binding?.close()
            pool.threadExited(consumer: true)
        }
        // A working connection before taking a batch: no batch waits in a consumer's hand while it reconnects, so
        // none is bought long after its callers gave up (finding 17).
        while let connection = connectionForWork(), let work = pool.takeWork() {
            guard let epoch, pool.isCurrent(epoch: epoch), connection.isConnected else {
                // The connection went while this consumer waited for work: the batch goes back, first in line, and
                // this consumer reconnects (or finds the database gone, which answers it).
                self.epoch = nil
                switch work {
                case .purchases(let batch): pool.requeue(batch.purchases, product: batch.productKey)
                case .orders(let calls): pool.requeue(calls)
                }
                continue
            }
            switch work {
            case .purchases(let batch):
                let live = dropExpired(batch)
                guard !live.purchases.isEmpty else { continue }
                process(live, on: connection)
            case .orders(let calls):
                let now = NIODeadline.now()
                let live = calls.filter { call in
                    guard let deadline = call.deadline, deadline <= now else { return true }
                    call.responder.fail(PurchasePool.expiredCall)
                    return false
                }
                guard !live.isEmpty else { continue }
                settle(live, on: connection)
            }
        }
    }

    /// One batch of order calls: one `order_batch` call, one transaction, each call answered from its own row. A
    /// failed call changed nothing (the statement is its own transaction); after a lost connection the commit may
    /// or may not have happened, and the caller's retry (the calls are idempotent) gets the outcome.
    private func settle(_ calls: [PendingOrderCall], on connection: PostgresConnection) {
        var answers: [(responder: RPCResponder<Order>, result: Result<Order, RPCError>)] = []
        answers.reserveCapacity(calls.count)
        var releasedProducts: Set<Int32> = []
        do {
            let rows = try OrderBatch.rows(count: calls.count, call(OrderBatch.statement, OrderBatch.parameters(calls), on: connection).get())
            for (call, row) in zip(calls, rows) {
                let reply = call.action.reply(product: call.productName, row: row)
                if reply.releasedNow { releasedProducts.insert(call.productKey) }
                answers.append((call.responder, reply.result))
            }
        } catch {
            logger.error("order batch failed", metadata: ["size": "\(calls.count)", "error": "\(error)"])
            let code = (error as? PostgresError)?.rpcErrorCode ?? .internal
            let status = RPCError(code, "the order call failed; retry it (it is idempotent)", cause: error)
            answers = calls.map { ($0.responder, .failure(status)) }
        }
        // The units are back in their slots (committed): the products sell again before anyone hears of it.
        for product in releasedProducts { pool.stockChanged(product: product) }
        if !releasedProducts.isEmpty {
            logger.info("holds released", metadata: ["products": "\(releasedProducts.count)"])
        }
        RPCResponder.completeAll(answers)
    }

    /// A purchase whose caller gave up is not bought behind its back: it is answered DEADLINE_EXCEEDED unprocessed.
    /// Checked just before the procedure call, with nothing in between that waits on the network.
    private func dropExpired(_ batch: Batch<PendingPurchase>) -> Batch<PendingPurchase> {
        guard batch.purchases.contains(where: { $0.deadline != nil }) else { return batch }
        let now = NIODeadline.now()
        var live = batch
        live.purchases = batch.purchases.filter { purchase in
            guard let deadline = purchase.deadline, deadline <= now else { return true }
            purchase.responder.fail(PurchasePool.expired)
            return false
        }
        return live
    }

    /// The consumer's connection, checked, or (re)connected with backoff; each attempt is bounded by the connect
    /// timeout, and a failed one closes the pool (see `PurchasePool.connectFailed`). Nil once the pool is stopping
    /// and has nothing left, or cannot reach its database while stopping.
    private func connectionForWork() -> PostgresConnection? {
        var delays = pool.configuration.reconnectDelay.makeIterator()
        var attempts = 0
        while true {
            if pool.isFinished { return nil }
            if let connection, let epoch, pool.isCurrent(epoch: epoch), connection.isConnected { return connection }
            let resetting = connection != nil
            do {
                if let connection {
                    try connection.reset()
                } else {
                    connection = try PostgresConnection.connect(
                        pool.configuration.dsn, settings: pool.configuration.settings, logger: logger)
                }
                epoch = pool.consumerConnected()
                if resetting || attempts > 0 { logger.info("consumer reconnected", metadata: ["attempts": "\(attempts + 1)"]) }
                return connection
            } catch {
                attempts += 1
                epoch = nil
                if attempts == 1 || attempts % 20 == 0 {
                    logger.warning("consumer cannot reach the database", metadata: ["error": "\(error)", "attempts": "\(attempts)"])
                }
                pool.connectFailed()
                if pool.isStopping { return nil }
                pause(TimeAmount(delays.next()))
            }
        }
    }

    /// Sleeps `delay` in short steps, ending early once the pool stops.
    private func pause(_ delay: TimeAmount) {
        let end = NIODeadline.now() + delay
        while !pool.isStopping {
            let left = end - NIODeadline.now()
            if left <= .zero { return }
            usleep(UInt32(clamping: min(left, .milliseconds(50)).nanoseconds / 1000))
        }
    }

    /// The consumer's connection if it is usable now, without waiting (the sold-out lookup is skipped rather than
    /// hold the consumer).
    private func connectedConnection() -> PostgresConnection? {
        guard let connection, connection.isConnected else { return nil }
        return connection
    }

    private func process(_ batch: Batch<PendingPurchase>, on connection: PostgresConnection) {
        var batch = batch
        let later = Self.oneUserPerRequestId(&batch.purchases)
        // A copy of a request id sent by another user waits for the next batch, which finds the id bound.
        if !later.isEmpty { pool.requeue(later, product: batch.productKey) }
        if pool.configuration.bindingDSN != nil {
            guard let bound = bind(batch), !bound.purchases.isEmpty else { return }
            batch = bound
        }
        var buys = batch
        buys.purchases = batch.purchases.filter { !$0.lookupOnly }
        let lookups = batch.purchases.filter(\.lookupOnly)
        if !buys.purchases.isEmpty { buy(buys, on: connection) }
        // After the purchases: a lookup sees an order its own request's purchase made in this very batch.
        if !lookups.isEmpty { lookUp(lookups, product: batch.productKey, on: connection) }
    }

    /// Keeps each request id's first user in `purchases` (the procedures answer per request id) and returns the
    /// copies of a request id with another user.
    private static func oneUserPerRequestId(_ purchases: inout [PendingPurchase]) -> [PendingPurchase] {
        var users: [Int64: Int64] = [:]
        users.reserveCapacity(purchases.count)
        var later: [PendingPurchase] = []
        for purchase in purchases {
            if let user = users[purchase.requestId] {
                if user != purchase.userId { later.append(purchase) }
            } else {
                users[purchase.requestId] = purchase.userId
            }
        }
        if !later.isEmpty {
            purchases.removeAll { users[$0.requestId] != $0.userId }
        }
        return later
    }

    /// Hot products: the main database binds the batch's request ids first. Ids bound to another product or user are
    /// refused; if the binding fails, nothing was bought and the whole batch is answered UNAVAILABLE.
    private func bind(_ batch: Batch<PendingPurchase>) -> Batch<PendingPurchase>? {
        let purchases = batch.purchases
        do {
            let result = try call(
                "SELECT r_reused FROM bind_requests($1::integer, $2::bigint[], $3::bigint[])",
                [String(batch.productKey), PostgresArrays.text(count: purchases.count) { purchases[$0].requestId },
                 PostgresArrays.text(count: purchases.count) { purchases[$0].userId }],
                on: try bindingConnection()).get()
            guard let reused = result.string(0, 0).flatMap(PostgresArrays.integers) else {
                throw PostgresError(code: "XX000", message: "bind_requests returned no array")
            }
            guard !reused.isEmpty else { return batch }
            let refused = Set(reused)
            var replies = Replies()
            var live = batch
            live.purchases = purchases.filter { purchase in
                guard refused.contains(purchase.requestId) else { return true }
                replies.fail(purchase, RequestIds.reused)
                return false
            }
            replies.send()
            return live
        } catch {
            logger.error("binding request ids failed", metadata: ["size": "\(purchases.count)", "error": "\(error)"])
            let status = RPCError(.unavailable, "the request ids could not be bound; nothing was bought; retry")
            var replies = Replies()
            for purchase in purchases { replies.fail(purchase, status) }
            replies.send()
            return nil
        }
    }

    /// The connection to the binding (main) database, opened on first use and reset after a failure.
    private func bindingConnection() throws -> PostgresConnection {
        if let binding {
            if !binding.isConnected { try binding.reset() }
            return binding
        }
        let fresh = try PostgresConnection.connect(
            pool.configuration.bindingDSN!, settings: pool.configuration.settings, logger: logger)
        binding = fresh
        return fresh
    }

    /// Lookup-only requests (the edge resolving an attempt in doubt): the request id's order, or SOLD_OUT; nothing
    /// bought. Definitive: `lookup_batch` closes an id without an order (see Schema.requestIds).
    private func lookUp(_ lookups: [PendingPurchase], product: Int32, on connection: PostgresConnection) {
        let parameters = [
            String(product), PostgresArrays.text(count: lookups.count) { lookups[$0].requestId },
            PostgresArrays.text(count: lookups.count) { lookups[$0].userId },
        ]
        var replies = Replies()
        switch call(PurchaseBatch.lookup, parameters, on: connection) {
        case .success(let result):
            let outcomes = PurchaseBatch.lookups(of: lookups.map(\.requestId), PurchaseBatch.Rows(result))
            for (lookup, outcome) in zip(lookups, outcomes) {
                switch outcome {
                case .replayed(let order, let edge):
                    replies.succeed(lookup, SoldOutLookup.Order(id: order, edge: edge).replayed)
                case .closed:
                    replies.succeed(lookup, RequestIds.closed(lookupOnly: true))
                case .reused:
                    replies.fail(lookup, RequestIds.reused)
                default:
                    replies.fail(lookup, RPCError(.internal, "the lookup has no outcome"))
                }
            }
        case .failure(let error):
            logger.error("lookup failed", metadata: ["size": "\(lookups.count)", "error": "\(error)"])
            let status = RPCError(.unavailable, "the lookup could not be completed; retry")
            for lookup in lookups { replies.fail(lookup, status) }
        }
        replies.send()
    }

    /// One procedure call. A deadlock or serialization failure rolled the whole call back: running it again is safe.
    private func call(_ statement: String, _ parameters: [String?], on connection: PostgresConnection)
        -> Result<PostgresResult, PostgresError>
    {
        var failure = PostgresError(code: "XX000", message: "not run")
        for attempt in 1...2 {
            do {
                return .success(try connection.query(statement, parameters))
            } catch let error as PostgresError {
                failure = error
                if !(error.isRetryableTransactionFailure && attempt == 1) { break }
            } catch {
                return .failure(PostgresError(code: "XX000", message: "\(error)"))
            }
        }
        return .failure(failure)
    }

    private func buy(_ batch: Batch<PendingPurchase>, on connection: PostgresConnection) {
        let started = ContinuousClock.now
        defer { pool.metrics.commit.recordNanoseconds((ContinuousClock.now - started).nanoseconds) }
        pool.metrics.batchSize.record(batch.purchases.count)
        switch call(PurchaseBatch.purchase, Self.parameters(batch), on: connection) {
        case .success(let result): answer(batch, result)
        case .failure(let error): fail(batch, error)
        }
    }

    private static func parameters(_ batch: Batch<PendingPurchase>) -> [String?] {
        let purchases = batch.purchases
        return [
            String(batch.productKey),
            PostgresArrays.text(count: purchases.count) { purchases[$0].requestId },
            PostgresArrays.text(count: purchases.count) { purchases[$0].userId },
            PostgresArrays.text(count: purchases.count) { Int64(purchases[$0].edgeId) },
        ]
    }

    /// Nothing of the batch was committed (the statement is its own transaction): every purchase gets an error.
    /// After a lost connection the commit may or may not have happened; the caller's retry with the same request
    /// id then gets the first outcome.
    private func fail(_ batch: Batch<PendingPurchase>, _ error: PostgresError) {
        logger.error("batch failed", metadata: [
            "product": "\(batch.productKey)", "size": "\(batch.purchases.count)", "error": "\(error)",
        ])
        let status = RPCError(error.rpcErrorCode, "the purchase failed; retry with the same request id", cause: error)
        var replies = Replies()
        for purchase in batch.purchases { replies.fail(purchase, status) }
        replies.send()
        pool.record(batchSize: batch.purchases.count, purchased: 0, failed: true)
        pool.metrics.failedBatches.increment()
        pool.metrics.failed.increment(by: batch.purchases.count)
    }

    private func answer(_ batch: Batch<PendingPurchase>, _ result: PostgresResult) {
        let purchases = batch.purchases
        let outcomes = PurchaseBatch.outcomes(of: purchases.map(\.requestId), PurchaseBatch.Rows(result))
        // A new order of a product with a hold time is a hold: the buyer learns its pay-by time with the order.
        let payBy = result.int64(0, 4) ?? 0
        var replies = Replies(capacity: purchases.count)
        var retry: [PendingPurchase] = []
        var purchased = 0
        var replayed = 0
        var alreadyPurchased = 0
        var soldOut = 0
        var sawSoldOut = false
        for (purchase, outcome) in zip(purchases, outcomes) {
            switch outcome {
            case .purchased(let order, let edge):
                purchased += 1
                replies.succeed(purchase, PurchaseResponse(
                    outcome: .purchased, orderId: UInt64(order), edgeId: UInt32(truncatingIfNeeded: edge), payByUnixMs: payBy))
            case .replayed(let order, let edge):
                replayed += 1
                replies.succeed(purchase, SoldOutLookup.Order(id: order, edge: edge).replayed)
            case .alreadyPurchased(let order):
                alreadyPurchased += 1
                replies.succeed(purchase, PurchaseResponse(outcome: .alreadyPurchased, orderId: UInt64(order)))
            case .soldOut:
                sawSoldOut = true
                soldOut += 1
                replies.succeed(purchase, PurchaseResponse(outcome: .soldOut))
            case .closed:
                soldOut += 1
                replies.succeed(purchase, RequestIds.closed(lookupOnly: false))
            case .reused:
                replies.fail(purchase, RequestIds.reused)
            case .retry:
                retry.append(purchase)
            case .missing:
                replies.fail(purchase, RPCError(.internal, "the purchase has no outcome"))
            }
        }
        replies.send()
        pool.record(batchSize: purchases.count, purchased: purchased, requeued: retry.count, failed: false)
        pool.metrics.record(
            purchased: purchased, replayed: replayed, alreadyPurchased: alreadyPurchased, soldOut: soldOut, requeued: retry.count)
        if !retry.isEmpty {
            pool.requeue(retry, product: batch.productKey)
            // Every unit is locked by other batches: give them a moment to commit instead of spinning on the slots.
            if retry.count == purchases.count { usleep(1_000) }
        }
        if sawSoldOut && pool.markSoldOut(product: batch.productKey, generation: batch.generation) {
            loadSoldOutLookup(product: batch.productKey, generation: batch.generation)
        }
    }

    /// Every order of a sold-out product is committed by now (SOLD_OUT means no slot held a unit, committed or
    /// locked), so this read is complete until the stock changes.
    private func loadSoldOutLookup(product: Int32, generation: UInt64) {
        let limit = pool.configuration.soldOutLookupLimit
        do {
            guard let connection = connectedConnection() else {
                pool.soldOutLoadFailed(product: product, generation: generation)
                return
            }
            // Orders and closed request ids alike: both are settled for good.
            let result = try connection.query(
                "SELECT request_id, user_id, order_id, edge_id FROM requests WHERE product_id = $1 LIMIT $2",
                [String(product), String(limit + 1)])
            guard result.count <= limit else {
                logger.info("sold-out product too large to mirror", metadata: ["product": "\(product)"])
                pool.soldOutLoaded(product: product, generation: generation, lookup: nil)
                return
            }
            var lookup = SoldOutLookup()
            lookup.byRequest.reserveCapacity(result.count)
            for row in 0..<result.count {
                guard let request = result.int64(row, 0), let user = result.int64(row, 1) else { continue }
                let order = result.int64(row, 2).map { SoldOutLookup.Order(id: $0, edge: result.int64(row, 3) ?? 0) }
                lookup.byRequest[request] = SoldOutLookup.Settled(user: user, order: order)
            }
            pool.soldOutLoaded(product: product, generation: generation, lookup: lookup)
            logger.info("product sold out", metadata: ["product": "\(product)", "orders": "\(result.count)"])
        } catch {
            logger.warning("sold-out lookup failed", metadata: ["product": "\(product)", "error": "\(error)"])
            pool.soldOutLoadFailed(product: product, generation: generation)
        }
    }
}

/// A pool's Prometheus metrics (swift-metrics handles, made once): outcomes of bought purchases, batches, batch
/// sizes and the procedure call's latency (commit included), labelled with the database (`main` or `hot`).
struct PoolMetrics: Sendable {
    let purchased: Counter
    let replayed: Counter
    let alreadyPurchased: Counter
    let soldOut: Counter
    let requeued: Counter
    let failed: Counter
    let batches: Counter
    let failedBatches: Counter
    let batchSize: Recorder
    let commit: Timer

    init(database: String) {
        func outcome(_ name: String) -> Counter {
            Counter(label: "flashsale_inventory_purchases_total", dimensions: [("database", database), ("outcome", name)])
        }
        purchased = outcome("purchased")
        replayed = outcome("replayed")
        alreadyPurchased = outcome("already_purchased")
        soldOut = outcome("sold_out")
        requeued = outcome("requeued")
        failed = outcome("failed")
        batches = Counter(label: "flashsale_inventory_batches_total", dimensions: [("database", database), ("result", "ok")])
        failedBatches = Counter(label: "flashsale_inventory_batches_total", dimensions: [("database", database), ("result", "failed")])
        batchSize = Recorder(label: "flashsale_inventory_batch_size", dimensions: [("database", database)], aggregate: true)
        commit = Timer(label: "flashsale_inventory_commit_seconds", dimensions: [("database", database)])
    }

    func record(purchased: Int, replayed: Int, alreadyPurchased: Int, soldOut: Int, requeued: Int) {
        batches.increment()
        if purchased > 0 { self.purchased.increment(by: purchased) }
        if replayed > 0 { self.replayed.increment(by: replayed) }
        if alreadyPurchased > 0 { self.alreadyPurchased.increment(by: alreadyPurchased) }
        if soldOut > 0 { self.soldOut.increment(by: soldOut) }
        if requeued > 0 { self.requeued.increment(by: requeued) }
    }
}

extension Duration {
    /// The whole duration in nanoseconds (saturating).
    fileprivate var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds.multipliedReportingOverflow(by: 1_000_000_000).overflow
            ? .max : seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
