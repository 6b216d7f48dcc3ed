import FlashSaleClient
import Logging
import Proto
import Wire
import ZooKeeperClient

/// The quota service's methods. Every input is checked before anything changes; ZooKeeper and inventory failures
/// come back as UNAVAILABLE (nothing was decided) rather than INTERNAL.
struct QuotaAPI: Sendable {
    let coordinator: QuotaCoordinator

    /// Far beyond any sale, far below where sums of units could overflow.
    static let maxUnits: Int64 = 1_000_000_000_000

    func register(into router: inout RPCRouter) {
        let coordinator = self.coordinator
        router.register(QuotaRPC.CreateProduct.self) {
            (request: CreateProductRequest, _: ServerCallContext) async throws -> ProductQuotas in
            try Self.checkProduct(request.productId)
            guard request.totalStock > 0 else { throw RPCError(.invalidArgument, "total_stock must be positive") }
            guard request.totalStock <= Self.maxUnits else { throw RPCError(.invalidArgument, "total_stock is absurdly large") }
            guard request.saleLimit >= 0 else { throw RPCError(.invalidArgument, "sale_limit is negative") }
            let outcome = try await coordinator.createProduct(request)
            return QuotaCoordinator.quotas(request.productId, outcome.balance)
        }
        router.register(QuotaRPC.RaiseStock.self) {
            (request: AdjustStockRequest, _: ServerCallContext) async throws -> ProductQuotas in
            try Self.checkProduct(request.productId)
            guard case .raiseBy(let units)? = request.change else { throw RPCError(.invalidArgument, "set raise_by") }
            guard units > 0 else { throw RPCError(.invalidArgument, "raise_by must be positive") }
            guard units <= Self.maxUnits else { throw RPCError(.invalidArgument, "raise_by is absurdly large") }
            // Passed on to the inventory, which applies a change id once: the operator's retry is safe.
            guard request.changeId != 0 else {
                throw RPCError(.invalidArgument, "change_id is missing (0): choose one per raise and reuse it to retry")
            }
            let outcome = try await coordinator.adjustStock(request)
            return QuotaCoordinator.quotas(request.productId, outcome.balance)
        }
        router.register(QuotaRPC.LimitStock.self) {
            (request: AdjustStockRequest, _: ServerCallContext) async throws -> ProductQuotas in
            try Self.checkProduct(request.productId)
            guard case .saleLimit(let limit)? = request.change else { throw RPCError(.invalidArgument, "set sale_limit") }
            guard limit >= 0 else { throw RPCError(.invalidArgument, "sale_limit is negative") }
            guard limit <= Self.maxUnits else { throw RPCError(.invalidArgument, "sale_limit is absurdly large") }
            let outcome = try await coordinator.adjustStock(request)
            return QuotaCoordinator.quotas(request.productId, outcome.balance)
        }
        router.register(QuotaRPC.SetShed.self) {
            (request: SetShedRequest, _: ServerCallContext) async throws -> QuotaStatusResponse in
            guard request.keepPerMillion <= 1_000_000 else {
                throw RPCError(.invalidArgument, "keep_per_million is above 1,000,000")
            }
            try await coordinator.store.setShed(request.keepPerMillion)
            return QuotaStatusResponse(keepPerMillion: request.keepPerMillion)
        }
        // Service to service (the edges hold the token): a stranger must not move grants between edges.
        router.register(QuotaRPC.GrantMore.self) {
            (request: GrantMoreRequest, _: ServerCallContext) async throws -> GrantMoreResponse in
            try Self.checkProduct(request.productId)
            guard request.edgeId > 0 else { throw RPCError(.invalidArgument, "edge_id is missing (0)") }
            return try await coordinator.grantMore(edgeID: request.edgeId, product: request.productId)
        }
        router.register(QuotaRPC.Status.self) {
            (request: QuotaStatusRequest, _: ServerCallContext) async throws -> QuotaStatusResponse in
            if !request.productId.isEmpty { try Self.checkProduct(request.productId) }
            return try await coordinator.status(request.productId)
        }
    }

    static func checkProduct(_ id: String) throws {
        guard !id.isEmpty else { throw RPCError(.invalidArgument, "product_id is empty") }
        guard QuotaLayout.isValidProductID(id) else {
            throw RPCError(.invalidArgument, "product_id must be 1-128 letters, digits, '.', '_' or '-'")
        }
    }
}

/// ZooKeeper's errors as statuses: unreachable is UNAVAILABLE (retry), the rest INTERNAL.
extension ZooKeeperError: RPCErrorConvertible {
    public var rpcErrorCode: RPCError.Code { isUnreachable ? .unavailable : .internal }
    public var rpcErrorMessage: String { isUnreachable ? "ZooKeeper is unreachable" : "ZooKeeper refused a request" }
}
