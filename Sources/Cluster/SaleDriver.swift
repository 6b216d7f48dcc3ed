import FlashSaleClient
import Logging
import Proto
import Wire

/// What every sale (the tests, `flashsale sale`, the fault suite) does around its buyers: before, wait until the
/// edges hold the whole stock and the lottery's ratio; after, check that every PURCHASED reply has its order.
public enum SaleDriver {
    /// Sets the lottery's ratio, creates `products` (id, stock, hot) through the quota service, and waits until
    /// `edges` hold them (see `waitUntilEdgesHold`).
    public static func prepare(
        quota: QuotaClient, products: [(id: String, stock: Int64, hot: Bool)], keepPerMillion: UInt32,
        edges: [ServiceEndpoint], edgeCount: Int? = nil, holdSeconds: UInt32 = 0, timeout: Duration = .seconds(30),
        logger: Logger
    ) async throws {
        try await quota.setShed(keepPerMillion: keepPerMillion)
        for product in products {
            _ = try await quota.createProduct(CreateProductRequest(
                productId: product.id, totalStock: product.stock, hot: product.hot, holdSeconds: holdSeconds))
        }
        try await waitUntilEdgesHold(
            quota: quota, stock: Dictionary(uniqueKeysWithValues: products.map { ($0.id, $0.stock) }),
            keepPerMillion: keepPerMillion, edges: edges, edgeCount: edgeCount, timeout: timeout, logger: logger)
    }

    /// Until the quota service lists exactly the products of `stock`, each granted in full (in sum over the edges,
    /// spread over `edgeCount` edges when given), and each of `edges` applies `keepPerMillion` (when given). Before
    /// that an edge would answer SOLD_OUT or keep every attempt.
    public static func waitUntilEdgesHold(
        quota: QuotaClient, stock: [String: Int64], keepPerMillion: UInt32? = nil, edges: [ServiceEndpoint] = [],
        edgeCount: Int? = nil, timeout: Duration = .seconds(30), logger: Logger
    ) async throws {
        let clients = edges.map { EdgeClient(host: $0.host, port: $0.port, logger: logger) }
        let held: @Sendable () async throws -> Bool = {
            let status = try await quota.status()
            guard status.products.count == stock.count else { return false }
            let granted = status.products.allSatisfy { product in
                (edgeCount.map { product.edges.count == $0 } ?? true)
                    && product.edges.reduce(0) { $0 + $1.granted } == stock[product.productId]
            }
            guard granted else { return false }
            if let keepPerMillion {
                for edge in clients where try await edge.stats().keepPerMillion != keepPerMillion { return false }
            }
            return true
        }
        do {
            try await waitUntil(timeout: timeout, what: "every edge to hold its quotas and the shed ratio", held)
        } catch {
            for client in clients { await client.shutdown() }
            throw error
        }
        for client in clients { await client.shutdown() }
    }

    /// The purchases whose order the inventory does not hold (with that order id, for that buyer): each request id
    /// looked up, buying nothing; a lookup is a read, so it is asked again while its answer may be unknown (a service
    /// reconnecting after a fault).
    public static func purchasesWithoutOrder(
        _ purchases: [BuyerSwarm.Purchase], inventory: InventoryClient
    ) async throws -> [BuyerSwarm.Purchase] {
        var missing: [BuyerSwarm.Purchase] = []
        for purchase in purchases {
            let answer = try await retryingUnavailable(idempotent: true) {
                try await inventory.purchase(PurchaseRequest(
                    requestId: purchase.requestID, userId: purchase.userID, productId: purchase.product, lookupOnly: true))
            }
            if answer.outcome != .purchased || answer.orderId != purchase.orderID { missing.append(purchase) }
        }
        return missing
    }
}

/// Runs `call` again while it fails with a status worth asking again (`RPCError.mayRetry(idempotent:)`: UNAVAILABLE,
/// a service reconnecting; any outcome in doubt too when `idempotent`, a read or a change carrying its idempotency
/// key), after each failure the next of `backoff`'s delays, for at most `patience`; then its last answer or error
/// stands.
public func retryingUnavailable<T: Sendable>(
    patience: Duration = .seconds(10), backoff: Backoff = Backoff(initial: .milliseconds(250), max: .seconds(1)),
    idempotent: Bool = false, _ call: @Sendable () async throws -> T
) async throws -> T {
    let deadline = ContinuousClock.now + patience
    var delays = backoff.makeIterator()
    while true {
        do {
            return try await call()
        } catch let error as RPCError where error.mayRetry(idempotent: idempotent) && ContinuousClock.now < deadline {
            // The last try comes at the deadline, not a whole delay after it.
            try await Task.sleep(for: min(delays.next(), deadline - .now))
        }
    }
}

/// The same, backing off from `pause`.
public func retryingUnavailable<T: Sendable>(
    patience: Duration = .seconds(10), pause: Duration, idempotent: Bool = false, _ call: @Sendable () async throws -> T
) async throws -> T {
    try await retryingUnavailable(
        patience: patience, backoff: Backoff(initial: pause, max: max(pause, .seconds(1))), idempotent: idempotent, call)
}

extension BuyerSwarm.Following {
    /// Aims the crowd at these edges from now on.
    public func follow(_ edges: [ServiceEndpoint]) {
        follow(edges.map { ($0.host, $0.port) })
    }
}
