import Logging
import NIOCore
import Proto
import Wire

/// A typed client of the inventory service: one method per call. Errors are thrown as `RPCError` with the
/// service's status (NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE, ...).
public struct InventoryClient: Sendable {
    /// The generated stub underneath (proto/services.proto's names and types); this type adds the conveniences.
    public let calls: InventoryRPCClient
    public var rpc: RPCClient { calls.rpc }

    public init(rpc: RPCClient) {
        self.calls = InventoryRPCClient(rpc)
    }

    /// A pool of `connections` to the service at host:port; `token` is the service token (needed by purchases,
    /// `createProduct` and `adjustStock`).
    public init(
        host: String = "127.0.0.1", port: Int, connections: Int = 1, token: String = "",
        group: (any EventLoopGroup)? = nil, logger: Logger
    ) {
        let configuration = RPCClientConfiguration(host: host, port: port, connections: connections, token: token)
        if let group {
            self.calls = InventoryRPCClient(RPCClient(configuration: configuration, group: group, logger: logger))
        } else {
            self.calls = InventoryRPCClient(RPCClient(configuration: configuration, logger: logger))  // the shared event loops
        }
    }

    // MARK: - Purchases

    /// Answered once the order committed (PURCHASED), or with SOLD_OUT / ALREADY_PURCHASED. Retrying with the same
    /// request id returns the first outcome, never a second order.
    public func purchase(_ request: PurchaseRequest, timeout: TimeAmount? = nil) async throws -> PurchaseResponse {
        try await calls.purchase(request, timeout: timeout)
    }

    /// The future form, for callers on an event loop (the edge forwarding purchases).
    public func purchaseFuture(_ request: PurchaseRequest, timeout: TimeAmount? = nil) -> EventLoopFuture<PurchaseResponse> {
        calls.purchaseFuture(request, timeout: timeout)
    }

    // MARK: - Products and stock

    /// Service token. ALREADY_EXISTS when the product id is taken.
    public func createProduct(_ request: CreateProductRequest, timeout: TimeAmount? = nil) async throws -> Product {
        try await calls.createProduct(request, timeout: timeout)
    }

    public func getStock(productId: String, timeout: TimeAmount? = nil) async throws -> Product {
        try await calls.getStock(ProductRequest(productId: productId), timeout: timeout)
    }

    public func listProducts(timeout: TimeAmount? = nil) async throws -> [Product] {
        try await calls.listProducts(ListProductsRequest(), timeout: timeout).products
    }

    /// Service token. Returns the product after the change.
    public func adjustStock(_ request: AdjustStockRequest, timeout: TimeAmount? = nil) async throws -> Product {
        try await calls.adjustStock(request, timeout: timeout)
    }

    /// Service token. Adds `units` (> 0) to the product's stock, once per `changeId`: a retry with the same change id
    /// (after a timeout, say) changes nothing more.
    public func raiseStock(
        productId: String, by units: Int64, changeId: UInt64 = StockChangeId.make(), timeout: TimeAmount? = nil
    ) async throws -> Product {
        try await adjustStock(
            AdjustStockRequest(productId: productId, changeId: changeId, change: .raiseBy(units)), timeout: timeout)
    }

    /// Service token. Stops the sale after `limit` units sold in total; a limit below what is sold already
    /// becomes what is sold (the returned product shows the limit in force).
    public func setSaleLimit(productId: String, limit: Int64, timeout: TimeAmount? = nil) async throws -> Product {
        try await adjustStock(AdjustStockRequest(productId: productId, change: .saleLimit(limit)), timeout: timeout)
    }

    // MARK: - Sold counts and audit

    /// Units sold per product and per forwarding edge; an empty product id means every product.
    public func soldCounts(productId: String = "", timeout: TimeAmount? = nil) async throws -> [ProductSold] {
        try await calls.soldCounts(SoldCountsRequest(productId: productId), timeout: timeout).products
    }

    /// Per product: remaining + orders == total stock and no slot negative; an empty product id means every product.
    public func audit(productId: String = "", timeout: TimeAmount? = nil) async throws -> AuditResponse {
        try await calls.audit(AuditRequest(productId: productId), timeout: timeout)
    }

    public func shutdown() async {
        await rpc.shutdown()
    }
}

/// Change ids for stock changes: random, non-zero. Keep one to retry the same change.
public enum StockChangeId {
    public static func make() -> UInt64 { UInt64.random(in: 1...UInt64.max) }
}
