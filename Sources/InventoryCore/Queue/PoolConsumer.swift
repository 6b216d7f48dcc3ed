import Foundation
import Logging
import NIOCore
import PostgresClient
import Proto
import Wire

/// One consumer thread of a `PurchasePool` and its connection: take a batch, one procedure call, answer every
/// purchase of it. The statements and the decoding of their answers are `PurchaseBatch`'s.
final class PoolConsumer: @unchecked Sendable {
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
            let rows = try OrderBatch.rows(count: calls.count, PurchaseBatch.run(OrderBatch.statement, OrderBatch.parameters(calls), on: connection).get())
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

    /// After a batch whose every purchase was told "retry" (each unit it could take locked by another batch of the
    /// product, in flight on another consumer): a pause before the next batch instead of spinning on the locked
    /// slots. A sleep, not a wait on the pool's condition for that batch's end: the condition carries the "work
    /// queued" signals, and a consumer waiting on it for something else could swallow one. 1 ms is of the order of
    /// one small batch's procedure call on a local database (the commit histogram's lower buckets), the time
    /// another batch holds the locks; a longer pause only delays the requeued purchases.
    static let lockedPause = TimeAmount.milliseconds(1)

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
            let result = try PurchaseBatch.run(
                PurchaseBatch.bind, PurchaseBatch.requestParameters(product: batch.productKey, purchases),
                on: try bindingConnection()).get()
            let reused = try PurchaseBatch.reused(result)
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
        var replies = Replies()
        switch PurchaseBatch.run(PurchaseBatch.lookup, PurchaseBatch.requestParameters(product: product, lookups), on: connection) {
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

    private func buy(_ batch: Batch<PendingPurchase>, on connection: PostgresConnection) {
        let started = ContinuousClock.now
        defer { pool.metrics.recordCommit(since: started) }
        pool.metrics.batchSize.record(batch.purchases.count)
        switch PurchaseBatch.run(
            PurchaseBatch.purchase, PurchaseBatch.purchaseParameters(product: batch.productKey, batch.purchases), on: connection)
        {
        case .success(let result): answer(batch, result)
        case .failure(let error): fail(batch, error)
        }
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
        let payBy = PurchaseBatch.payBy(result)
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
            if retry.count == purchases.count { pause(Self.lockedPause) }
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
            let result = try connection.query(
                PurchaseBatch.soldOut, PurchaseBatch.soldOutParameters(product: product, limit: limit))
            guard let lookup = PurchaseBatch.soldOutLookup(result, limit: limit) else {
                logger.info("sold-out product too large to mirror", metadata: ["product": "\(product)"])
                pool.soldOutLoaded(product: product, generation: generation, lookup: nil)
                return
            }
            pool.soldOutLoaded(product: product, generation: generation, lookup: lookup)
            logger.info("product sold out", metadata: ["product": "\(product)", "orders": "\(result.count)"])
        } catch {
            logger.warning("sold-out lookup failed", metadata: ["product": "\(product)", "error": "\(error)"])
            pool.soldOutLoadFailed(product: product, generation: generation)
        }
    }
}
