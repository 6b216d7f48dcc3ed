import Cluster
import FlashSaleClient
import Foundation
import Logging
import PostgresClient
import Proto
import Synchronization
import Wire

/// The `holds` case (issue 14): a paced sale of a product with a short hold time. The case's own payment service
/// pays 70 % of the winners through `inventory.ConfirmOrder`; the others abandon their carts, so holds expire and
/// their units are resold all through the sale. Once holds are due, the inventory is killed (kill -9) with confirms
/// in flight and expiry batches running, and started again. After the sale every hold left is paid, and sweeps buy
/// what the expiries gave back until the whole stock is paid. It passes when the audit is clean (remaining + live
/// holds + paid = stock), every confirm answered OK ended paid, no PURCHASED reply lost, no request answered with two
/// orders, no buyer holding two live orders of the product, nothing oversold and nothing left unpaid.
extension FaultCase {
    /// Short enough that holds of the sale's start expire while it runs (it is paced to `pacedSeconds`).
    static let holdSeconds: UInt32 = 2

    /// Called by `sale` with its clients (it shuts them down).
    func holdSale(
        platform: Platform, databases: RunDatabases, secrets: FaultSecrets, quota: QuotaClient, inventory: InventoryClient,
        row: inout FaultRow
    ) async throws {
        let product = "f1"
        row.stock = stock
        try await SaleDriver.prepare(
            quota: quota, products: [(product, stock, false)], keepPerMillion: 1_000_000, edges: [],
            holdSeconds: Self.holdSeconds, logger: logger)
        let live = LiveEdges(platform.edges)
        let monitor = GroundTruthMonitor(products: [product], live: live, inventory: inventory, secrets: secrets, logger: logger)
        let sampling = Task { await monitor.run() }
        defer { sampling.cancel() }
        let payer = FaultPayer(dsn: databases.main.dsn, inventory: inventory, logger: logger)
        let paying = Task { await payer.run() }
        defer { paying.cancel() }

        let total = Int(stock)
        let configuration = pacedCrowd(
            edges: platform.edges, products: [product], attempts: total * 3, stock: total, seed: 1_414)
        let swarm = BuyerSwarm(configuration: configuration, logger: logger)
        let sale = Task { try await swarm.run() }
        let third = configuration.attempts / 3
        try await waitUntil(timeout: .seconds(60), what: "a third of the attempts") { swarm.completed >= third }
        // The kill lands among expiries and confirms: holds are due (or already released) and the payer is paying.
        try await waitUntil(timeout: .seconds(20), what: "holds to fall due") {
            try await FaultPayer.count(databases.main.dsn, "state = 'released' OR (state = 'held' AND pay_by <= now())") > 0
        }
        row.completedAtFault = swarm.completed
        say("  \(fault.rawValue): kill -9 of the inventory mid-expiry, \(payer.tally.paid) paid so far")
        try await platform.crashAndRestartInventory()
        let result = try await sale.value

        do {
            try await settle(live: live.all, quota: quota, secrets: secrets, timeout: .seconds(60))
        } catch {
            row.failures.append("settle: \(error)")
        }
        // Every hold from now on is paid, so that the sweeps' orders end the sale: all the stock paid.
        payer.payAll()
        var sweeps: [BuyerSwarm.Result] = []
        let deadline = ContinuousClock.now + .seconds(90)
        while ContinuousClock.now < deadline {
            // Wait for the live holds to end (paid, or released by expiry: their units back on sale).
            try await waitUntil(timeout: .seconds(30), what: "the live holds to end") {
                (try? await inventory.audit(productId: product).products.first?.held) == 0
            }
            let left = try await retryingUnavailable { try await inventory.audit(productId: product) }.products.first?.remaining ?? 0
            if left == 0 { break }
            var sweep = BuyerSwarm.Configuration(
                edges: live.all.map { ($0.host, $0.port) }, products: [product], attempts: Int(left) * 4,
                users: total * 200, connections: 8, depth: 4, seed: 7_777 &+ UInt64(sweeps.count))
            sweep.requestIDBase = configuration.requestIDBase &+ UInt64(sweeps.count + 1) << 31
            sweeps.append(try await BuyerSwarm(configuration: sweep, logger: logger).run())
            // Released units reach the edges through the quota service's next grant.
            try await Task.sleep(for: .milliseconds(500))
        }
        paying.cancel()
        _ = await paying.value
        sampling.cancel()
        _ = await sampling.value
        row.groundTruth = monitor.result

        let audit = try await retryingUnavailable { try await inventory.audit(productId: product) }
        let line = audit.products.first
        row.attempts = result.attempts
        row.retries = result.retries + sweeps.reduce(0) { $0 + $1.retries }
        row.errors = result.errors + sweeps.reduce(0) { $0 + $1.errors }
        row.auditClean = audit.clean && line.map { $0.remaining + $0.held + $0.paid == $0.totalStock } == true
        row.orders = line?.paid ?? 0
        row.oversold = (line.map { max(0, $0.held + $0.paid - stock) + $0.negativeSlots }) ?? 0
        row.stranded = line.map { $0.remaining + $0.held } ?? stock

        // A request answered with two orders; a buyer with two live or paid orders of the product (one whose hold
        // was released may buy again).
        var orderOfRequest: [UInt64: UInt64] = [:]
        var firstReplies: [BuyerSwarm.Purchase] = []
        for purchase in result.purchases + sweeps.flatMap(\.purchases) {
            if let earlier = orderOfRequest[purchase.requestID] {
                if earlier != purchase.orderID { row.duplicated += 1 }
                continue
            }
            orderOfRequest[purchase.requestID] = purchase.orderID
            firstReplies.append(purchase)
        }
        row.duplicated += try await FaultPayer.count(
            databases.main.dsn, "state <> 'released' GROUP BY product_id, user_id HAVING count(*) > 1")
        row.lost += try await SaleDriver.purchasesWithoutOrder(firstReplies, inventory: inventory).count

        let tally = payer.tally
        let endedPaid = try await FaultPayer.requests(databases.main.dsn, "state = 'paid'")
        let unpaid = tally.confirmed.subtracting(endedPaid).count
        if unpaid > 0 { row.failures.append("\(unpaid) confirms answered OK did not end paid") }
        if let line, line.invalidOrders > 0 { row.failures.append("\(line.invalidOrders) orders in no valid state") }
        let expired = try await FaultPayer.count(databases.main.dsn, "state = 'released' AND release_reason = 'expired'")
        row.notes.append("holds: \(line?.paid ?? 0) paid, \(expired) expired and resold, \(tally.refused) late payments refused, "
            + "\(tally.retried) confirms retried, \(sweeps.count) sweeps")
        let status = try? await retryingUnavailable { try await quota.status() }
        row.quotaInvariant = status?.products.allSatisfy { $0.grantedUnused <= $0.sellable } ?? false
    }
}

/// The `holds` case's payment service: watches the database for new holds and pays a share of them through
/// `inventory.ConfirmOrder` (the real call, with the service token), or every one after `payAll`. A confirm that
/// fails otherwise than FAILED_PRECONDITION (the inventory killed, restarting) is tried again on the next pass: it
/// is idempotent. Runs until cancelled.
final class FaultPayer: Sendable {
    struct Tally: Sendable {
        var paid = 0
        /// Answered FAILED_PRECONDITION (the hold was released first): a refund.
        var refused = 0
        var retried = 0
        /// Request ids whose confirm was answered OK: each must end paid.
        var confirmed: Set<UInt64> = []
    }

    private let dsn: String
    private let inventory: InventoryClient
    private let logger: Logger
    private let state = Mutex(Tally())
    /// Request ids paid, refused or abandoned: not looked at again.
    private let decided = Mutex(Set<UInt64>())
    private let everyone = Atomic(false)

    init(dsn: String, inventory: InventoryClient, logger: Logger) {
        self.dsn = dsn
        self.inventory = inventory
        self.logger = logger
    }

    var tally: Tally { state.withLock { $0 } }

    func payAll() { everyone.store(true, ordering: .relaxed) }

    /// Seven of ten request ids (the swarm's ids are consecutive), until every hold is to be paid.
    private func pays(_ request: UInt64) -> Bool { everyone.load(ordering: .relaxed) || request % 10 < 7 }

    func run() async {
        while !Task.isCancelled {
            do {
                let held = try await Self.requests(dsn, "state = 'held'")
                let fresh = decided.withLock { decided in held.filter { !decided.contains($0) } }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    var inFlight = 0
                    // The others are abandoned carts (payAll may still pay them while they are held).
                    for request in fresh where pays(request) {
                        if inFlight >= 32 {
                            try await group.next()
                            inFlight -= 1
                        }
                        group.addTask { await self.confirm(request) }
                        inFlight += 1
                    }
                    try await group.waitForAll()
                }
            } catch is CancellationError {
                return
            } catch {
                logger.warning("payer pass failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    private func confirm(_ request: UInt64) async {
        do {
            _ = try await inventory.confirmOrder(.byRequest("f1", request))
            decided.withLock { _ = $0.insert(request) }
            state.withLock {
                $0.paid += 1
                $0.confirmed.insert(request)
            }
        } catch {
            if RPCError.wrapping(error).code == .failedPrecondition {
                decided.withLock { _ = $0.insert(request) }
                state.withLock { $0.refused += 1 }
            } else {
                state.withLock { $0.retried += 1 }
            }
        }
    }

    /// Request ids of the orders matching `condition` (SQL over the `orders` view).
    static func requests(_ dsn: String, _ condition: String) async throws -> Set<UInt64> {
        let connection = try await PostgresConnection.connect(dsn)
        defer { connection.close() }
        let result = try await connection.query("SELECT request_id FROM orders WHERE \(condition)")
        return Set((0..<result.count).compactMap { result.int64($0, 0).map { UInt64(bitPattern: $0) } })
    }

    /// Rows of the `orders` view matching `condition` (which may group: then the groups are counted).
    static func count(_ dsn: String, _ condition: String) async throws -> Int {
        let connection = try await PostgresConnection.connect(dsn)
        defer { connection.close() }
        let result = try await connection.query("SELECT count(*) FROM (SELECT 1 FROM orders WHERE \(condition)) matching")
        return Int(result.int64(0, 0) ?? 0)
    }
}
