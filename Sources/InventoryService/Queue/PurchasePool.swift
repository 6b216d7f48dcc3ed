import Foundation
import Logging
import Metrics
import NIOCore
import PostgresClient
import Proto
import Wire

/// One database's purchase path: per-product queues and a pool of consumer threads, each with its own connection,
/// draining them one procedure call per batch. The main and the hot database each have a pool, so a hot product's
/// backlog never delays a cold product's batches.
///
/// `@unchecked Sendable`: all mutable state (`lanes`, `stopping`, `running`, statistics) is guarded by `condition`.
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
    private var stopping = false
    private var running = 0
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
    }

    // MARK: - The purchase path (any thread; never blocks beyond the lock)

    func submit(_ purchase: PendingPurchase, product: Int32) {
        condition.lock()
        let admission: PurchaseLanes<PendingPurchase>.Admission
        if stopping && running == 0 {
            admission = .rejected(RPCError(.unavailable, "the inventory service is shutting down"))
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

    /// After a stock change committed: the product sells again (or runs into its new limit) through the database.
    func stockChanged(product: Int32) {
        condition.withLock { lanes.stockChanged(product: product) }
    }

    var currentStatistics: Statistics { condition.withLock { statistics } }

    /// Purchases waiting in this pool's queues (for the queue depth gauge, read when metrics are scraped).
    var queuedCount: Int { condition.withLock { lanes.queuedCount } }

    // MARK: - Lifecycle

    func start() {
        condition.withLock { running = configuration.consumers }
        for index in 0..<configuration.consumers {
            var logger = self.logger
            logger[metadataKey: "consumer"] = "\(index)"
            let consumer = Consumer(pool: self, logger: logger)
            let thread = Thread { consumer.run() }
            thread.name = "\(configuration.role.rawValue)-consumer-\(index)"
            thread.start()
        }
    }

    /// Lets the consumers finish what is queued and in flight, then waits until every one has closed its connection.
    func stop() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            condition.lock()
            stopping = true
            if running == 0 {
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

    // MARK: - Used by consumers

    /// Blocks until a batch is ready; nil once stopping and nothing is left.
    fileprivate func takeBatch() -> Batch<PendingPurchase>? {
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let batch = lanes.nextBatch() {
                if lanes.hasWork { condition.signal() }  // more for another consumer
                return batch
            }
            if stopping { return nil }
            condition.wait()
        }
    }

    fileprivate var isStopping: Bool { condition.withLock { stopping } }

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

    /// A consumer that cannot reach the database while stopping fails what is left rather than hang the shutdown.
    fileprivate func failEverythingQueued(_ error: RPCError) {
        let purchases = condition.withLock { lanes.drainAll() }
        for purchase in purchases { purchase.responder.fail(error) }
    }

    fileprivate func consumerExited() {
        condition.lock()
        running -= 1
        let waiters = running == 0 ? stopped : []
        if running == 0 { stopped = [] }
        condition.unlock()
        for waiter in waiters { waiter.resume() }
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

    private static let statement =
        "SELECT r_requests, r_outcomes, r_orders, r_edges FROM purchase_batch($1::integer, $2::bigint[], $3::bigint[], $4::integer[])"
    private static let lookupStatement =
        "SELECT r_requests, r_outcomes, r_orders, r_edges FROM lookup_batch($1::integer, $2::bigint[], $3::bigint[])"

    init(pool: PurchasePool, logger: Logger) {
        self.pool = pool
        self.logger = logger
    }

    func run() {
        defer {
            connection?.close()
            pool.consumerExited()
        }
        while let batch = pool.takeBatch() {
            let live = dropExpired(batch)
            guard !live.purchases.isEmpty else { continue }
            guard let connection = connectedConnection() else {
                // Only while stopping: the database is gone, so nothing queued can be served.
                let error = RPCError(.unavailable, "the \(pool.configuration.role.rawValue) database is unreachable")
                for purchase in live.purchases { purchase.responder.fail(error) }
                pool.failEverythingQueued(error)
                continue
            }
            process(live, on: connection)
        }
    }

    /// A purchase whose caller gave up is not bought behind its back: it is answered DEADLINE_EXCEEDED unprocessed.
    private func dropExpired(_ batch: Batch<PendingPurchase>) -> Batch<PendingPurchase> {
        guard batch.purchases.contains(where: { $0.deadline != nil }) else { return batch }
        let now = NIODeadline.now()
        var live = batch
        live.purchases = batch.purchases.filter { purchase in
            guard let deadline = purchase.deadline, deadline <= now else { return true }
            purchase.responder.fail(RPCError(.deadlineExceeded, "the purchase waited past its deadline; nothing was bought"))
            return false
        }
        return live
    }

    /// The consumer's connection, (re)connected with backoff. Nil only when stopping and the database is unreachable.
    private func connectedConnection() -> PostgresConnection? {
        var delay: UInt32 = 50_000
        var attempts = 0
        while true {
            do {
                if let connection {
                    if connection.isConnected { return connection }
                    try connection.reset()
                    logger.info("consumer reconnected")
                    return connection
                }
                let fresh = try PostgresConnection.connect(pool.configuration.dsn, logger: logger)
                connection = fresh
                return fresh
            } catch {
                attempts += 1
                if attempts == 1 || attempts % 20 == 0 {
                    logger.warning("consumer cannot reach the database", metadata: ["error": "\(error)", "attempts": "\(attempts)"])
                }
                if pool.isStopping && attempts >= 5 { return nil }
                usleep(delay)
                delay = min(delay * 2, 1_000_000)
            }
        }
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
        let fresh = try PostgresConnection.connect(pool.configuration.bindingDSN!, logger: logger)
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
        switch call(Self.lookupStatement, parameters, on: connection) {
        case .success(let result):
            let outcomes = Self.outcomes(result)
            for lookup in lookups {
                switch outcomes[lookup.requestId]?.outcome {
                case Outcome.purchasedBefore?:
                    let found = outcomes[lookup.requestId]!
                    replies.succeed(lookup, SoldOutLookup.Order(id: found.order, edge: found.edge).replayed)
                case Outcome.soldOut?, Outcome.closed?:
                    replies.succeed(lookup, RequestIds.closed(lookupOnly: true))
                case Outcome.reused?:
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
        switch call(Self.statement, Self.parameters(batch), on: connection) {
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
        let status: RPCError
        if error.isConnectionFailure || error.isRetryableTransactionFailure || error.isQueryCanceled {
            status = RPCError(.unavailable, "the purchase could not be completed; retry with the same request id")
        } else {
            status = RPCError(.internal, "the purchase failed; retry with the same request id")
        }
        var replies = Replies()
        for purchase in batch.purchases { replies.fail(purchase, status) }
        replies.send()
        pool.record(batchSize: batch.purchases.count, purchased: 0, failed: true)
        pool.metrics.failedBatches.increment()
        pool.metrics.failed.increment(by: batch.purchases.count)
    }

    /// The procedures' outcome codes (Schema.procedures and Schema.requestIds).
    private enum Outcome {
        static let retry: Int64 = 0
        static let purchased: Int64 = 1
        static let soldOut: Int64 = 2
        static let alreadyPurchased: Int64 = 4
        static let purchasedBefore: Int64 = 5
        /// A closed request id: SOLD_OUT replayed.
        static let closed: Int64 = 6
        /// The request id is bound to another product or user.
        static let reused: Int64 = 7
    }

    private static func rank(_ outcome: Int64) -> Int {
        switch outcome {
        case Outcome.purchased: 4
        case Outcome.purchasedBefore: 3
        case Outcome.alreadyPurchased: 2
        case Outcome.soldOut, Outcome.closed, Outcome.reused: 1
        default: 0
        }
    }

    /// Each request id's outcome from the parallel arrays. A request id repeated across the procedure's chunks has an
    /// entry per chunk: the one that bought wins.
    private static func outcomes(_ result: PostgresResult) -> [Int64: (outcome: Int64, order: Int64, edge: Int64)] {
        let requests = result.string(0, 0).flatMap(PostgresArrays.integers) ?? []
        let codes = result.string(0, 1).flatMap(PostgresArrays.integers) ?? []
        let orders = result.string(0, 2).flatMap(PostgresArrays.integers) ?? []
        let edges = result.string(0, 3).flatMap(PostgresArrays.integers) ?? []
        var outcomes: [Int64: (outcome: Int64, order: Int64, edge: Int64)] = [:]
        outcomes.reserveCapacity(requests.count)
        for index in requests.indices where index < codes.count && index < orders.count && index < edges.count {
            let request = requests[index], outcome = codes[index]
            if let seen = outcomes[request], rank(seen.outcome) >= rank(outcome) { continue }
            outcomes[request] = (outcome, orders[index], edges[index])
        }
        return outcomes
    }

    private func answer(_ batch: Batch<PendingPurchase>, _ result: PostgresResult) {
        let requests = result.string(0, 0).flatMap(PostgresArrays.integers) ?? []
        let codes = result.string(0, 1).flatMap(PostgresArrays.integers) ?? []
        let orders = result.string(0, 2).flatMap(PostgresArrays.integers) ?? []
        let edges = result.string(0, 3).flatMap(PostgresArrays.integers) ?? []
        // The usual case: every purchase bought, answered in batch order; no lookup table needed.
        let purchases = batch.purchases
        if requests.count == purchases.count, codes.count == purchases.count, orders.count == purchases.count,
           edges.count == purchases.count,
           purchases.indices.allSatisfy({ requests[$0] == purchases[$0].requestId && codes[$0] == Outcome.purchased })
        {
            var replies = Replies(capacity: purchases.count)
            for index in purchases.indices {
                replies.succeed(purchases[index], PurchaseResponse(
                    outcome: .purchased, orderId: UInt64(orders[index]), edgeId: UInt32(truncatingIfNeeded: edges[index])))
            }
            replies.send()
            pool.record(batchSize: purchases.count, purchased: purchases.count, failed: false)
            pool.metrics.record(purchased: purchases.count, replayed: 0, alreadyPurchased: 0, soldOut: 0, requeued: 0)
            return
        }
        var outcomes = Self.outcomes(result)
        var replies = Replies()
        var retry: [PendingPurchase] = []
        var purchased = 0
        var replayed = 0
        var alreadyPurchased = 0
        var soldOut = 0
        var sawSoldOut = false
        for purchase in batch.purchases {
            guard let (outcome, order, edge) = outcomes[purchase.requestId] else {
                replies.fail(purchase, RPCError(.internal, "the purchase has no outcome"))
                continue
            }
            switch outcome {
            case Outcome.purchased:
                // A request id twice in one batch: the second copy took no unit, so it is a replay.
                purchased += 1
                outcomes[purchase.requestId] = (Outcome.purchasedBefore, order, edge)
                replies.succeed(purchase, PurchaseResponse(
                    outcome: .purchased, orderId: UInt64(order), edgeId: UInt32(truncatingIfNeeded: edge)))
            case Outcome.purchasedBefore:
                replayed += 1
                replies.succeed(purchase, SoldOutLookup.Order(id: order, edge: edge).replayed)
            case Outcome.alreadyPurchased:
                alreadyPurchased += 1
                replies.succeed(purchase, PurchaseResponse(outcome: .alreadyPurchased, orderId: UInt64(order)))
            case Outcome.soldOut:
                sawSoldOut = true
                soldOut += 1
                replies.succeed(purchase, PurchaseResponse(outcome: .soldOut))
            case Outcome.closed:
                soldOut += 1
                replies.succeed(purchase, RequestIds.closed(lookupOnly: false))
            case Outcome.reused:
                replies.fail(purchase, RequestIds.reused)
            case Outcome.retry:
                retry.append(purchase)
            default:
                replies.fail(purchase, RPCError(.internal, "the purchase has an unknown outcome"))
            }
        }
        replies.send()
        pool.record(batchSize: batch.purchases.count, purchased: purchased, requeued: retry.count, failed: false)
        pool.metrics.record(
            purchased: purchased, replayed: replayed, alreadyPurchased: alreadyPurchased, soldOut: soldOut, requeued: retry.count)
        if !retry.isEmpty {
            pool.requeue(retry, product: batch.productKey)
            // Every unit is locked by other batches: give them a moment to commit instead of spinning on the slots.
            if retry.count == batch.purchases.count { usleep(1_000) }
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
            guard let connection = connectedConnection() else { return }
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
