import Logging
import NIOCore
import Proto
import Wire

/// A typed client of the quota service. Errors are thrown as `RPCError` with the service's status
/// (NOT_FOUND for an unknown product, INVALID_ARGUMENT, FAILED_PRECONDITION, UNAVAILABLE, ...).
public struct QuotaClient: Sendable {
    /// The generated stub underneath (proto/services.proto's names and types); this type adds the conveniences.
    public let calls: QuotaRPCClient
    public var rpc: RPCClient { calls.rpc }

    public init(rpc: RPCClient) {
        self.calls = QuotaRPCClient(rpc)
    }

    /// A client of the service at host:port; `token` is the operator token (operator methods) or, for an edge, the
    /// service token (`grantMore`).
    public init(host: String = "127.0.0.1", port: Int, token: String = "", logger: Logger) {
        self.calls = QuotaRPCClient(
            RPCClient(configuration: RPCClientConfiguration(host: host, port: port, token: token), logger: logger))
    }

    /// Operator only. Creates the product in the inventory and splits its stock over the live edges.
    /// Returns the product's quotas after the split.
    public func createProduct(_ request: CreateProductRequest, timeout: TimeAmount? = nil) async throws -> ProductQuotas {
        try await calls.createProduct(request, timeout: timeout)
    }

    /// Operator only. Adds `units` to the product's stock (database first), then grants them to the edges. The
    /// database applies one `changeId` once: retry a raise that failed or timed out with the same one.
    public func raiseStock(
        productId: String, by units: Int64, changeId: UInt64 = StockChangeId.make(), timeout: TimeAmount? = nil
    ) async throws -> ProductQuotas {
        try await calls.raiseStock(
            AdjustStockRequest(productId: productId, changeId: changeId, change: .raiseBy(units)), timeout: timeout)
    }

    /// Operator only. Stops the sale after `limit` sold in total (database first), then takes the surplus back from
    /// the edges. FAILED_PRECONDITION when more than `limit` are sold already.
    public func limitStock(productId: String, to limit: Int64, timeout: TimeAmount? = nil) async throws -> ProductQuotas {
        try await calls.limitStock(AdjustStockRequest(productId: productId, change: .saleLimit(limit)), timeout: timeout)
    }

    /// Operator only. Every edge keeps `keepPerMillion` of each million attempts (1,000,000 keeps all).
    public func setShed(keepPerMillion: UInt32, timeout: TimeAmount? = nil) async throws {
        _ = try await calls.setShed(SetShedRequest(keepPerMillion: keepPerMillion), timeout: timeout)
    }

    /// What an edge calls when it runs dry: the edge's new total grant, or sold out.
    public func grantMore(_ request: GrantMoreRequest, timeout: TimeAmount? = nil) async throws -> GrantMoreResponse {
        try await calls.grantMore(request, timeout: timeout)
    }

    /// Per product (or the one named): sellable units, units outstanding on edges, and each edge's grant, use and sales.
    public func status(productId: String = "", timeout: TimeAmount? = nil) async throws -> QuotaStatusResponse {
        try await calls.status(QuotaStatusRequest(productId: productId), timeout: timeout)
    }

    public func shutdown() async {
        await rpc.shutdown()
    }
}
