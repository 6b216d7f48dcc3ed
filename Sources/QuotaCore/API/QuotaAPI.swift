import Logging
import Proto
import Wire
import ZooKeeperClient

/// The quota service's methods (`QuotaRPCServer`, generated from proto/services.proto). Every input is checked before
/// anything changes; ZooKeeper and inventory failures come back as UNAVAILABLE (nothing was decided) rather than
/// INTERNAL.
struct QuotaAPI: QuotaRPCServer {
    let coordinator: QuotaCoordinator


    func createProduct(_ request: CreateProductRequest, context: ServerCallContext) async throws -> ProductQuotas {
        try Self.checkProduct(request.productId)
        guard request.totalStock > 0 else { throw RPCError(.invalidArgument, "total_stock must be positive") }
        guard request.totalStock <= ProductRules.maxStock else { throw RPCError(.invalidArgument, "total_stock is absurdly large") }
        guard request.saleLimit >= 0 else { throw RPCError(.invalidArgument, "sale_limit is negative") }
        let outcome = try await coordinator.createProduct(request)
        return QuotaCoordinator.quotas(request.productId, outcome.balance)
    }

    func raiseStock(_ request: AdjustStockRequest, context: ServerCallContext) async throws -> ProductQuotas {
        try Self.checkProduct(request.productId)
        guard case .raiseBy(let units)? = request.change else { throw RPCError(.invalidArgument, "set raise_by") }
        guard units > 0 else { throw RPCError(.invalidArgument, "raise_by must be positive") }
        guard units <= ProductRules.maxStock else { throw RPCError(.invalidArgument, "raise_by is absurdly large") }
        // Passed on to the inventory, which applies a change id once: the operator's retry is safe.
        guard request.changeId != 0 else {
            throw RPCError(.invalidArgument, "change_id is missing (0): choose one per raise and reuse it to retry")
        }
        let outcome = try await coordinator.adjustStock(request)
        return QuotaCoordinator.quotas(request.productId, outcome.balance)
    }

    func limitStock(_ request: AdjustStockRequest, context: ServerCallContext) async throws -> ProductQuotas {
        try Self.checkProduct(request.productId)
        guard case .saleLimit(let limit)? = request.change else { throw RPCError(.invalidArgument, "set sale_limit") }
        guard limit >= 0 else { throw RPCError(.invalidArgument, "sale_limit is negative") }
        guard limit <= ProductRules.maxStock else { throw RPCError(.invalidArgument, "sale_limit is absurdly large") }
        let outcome = try await coordinator.adjustStock(request)
        return QuotaCoordinator.quotas(request.productId, outcome.balance)
    }

    func setShed(_ request: SetShedRequest, context: ServerCallContext) async throws -> QuotaStatusResponse {
        guard request.keepPerMillion <= 1_000_000 else {
            throw RPCError(.invalidArgument, "keep_per_million is above 1,000,000")
        }
        try await coordinator.store.setShed(request.keepPerMillion)
        return QuotaStatusResponse(keepPerMillion: request.keepPerMillion)
    }

    /// Service to service (the edges hold the token): a stranger must not move grants between edges.
    func grantMore(_ request: GrantMoreRequest, context: ServerCallContext) async throws -> GrantMoreResponse {
        try Self.checkProduct(request.productId)
        guard request.edgeId > 0 else { throw RPCError(.invalidArgument, "edge_id is missing (0)") }
        return try await coordinator.grantMore(edgeID: request.edgeId, product: request.productId)
    }

    func status(_ request: QuotaStatusRequest, context: ServerCallContext) async throws -> QuotaStatusResponse {
        if !request.productId.isEmpty { try Self.checkProduct(request.productId) }
        return try await coordinator.status(request.productId)
    }

    /// Product ids become node names (`ProductRules`).
    static func checkProduct(_ id: String) throws {
        if let problem = ProductRules.idProblem(id) { throw RPCError(.invalidArgument, problem.description) }
    }
}

/// ZooKeeper's errors as statuses: unreachable is UNAVAILABLE (retry), the rest INTERNAL.
extension ZooKeeperError: RPCErrorConvertible {
    public var rpcErrorCode: RPCError.Code { isUnreachable ? .unavailable : .internal }
    public var rpcErrorMessage: String { isUnreachable ? "ZooKeeper is unreachable" : "ZooKeeper refused a request" }
}
