import NIOCore
import Proto
import Wire

/// Orders of products with a hold time (service token): pay, give up, read.
extension InventoryClient {
    /// Marks the hold paid; FAILED_PRECONDITION when it was released (refund the payment).
    public func confirmOrder(_ request: OrderRequest, timeout: TimeAmount? = nil) async throws -> Order {
        try await calls.confirmOrder(request, timeout: timeout)
    }

    /// Releases the hold (its unit goes back on sale); FAILED_PRECONDITION when it is paid.
    public func cancelOrder(_ request: OrderRequest, timeout: TimeAmount? = nil) async throws -> Order {
        try await calls.cancelOrder(request, timeout: timeout)
    }

    public func getOrder(_ request: OrderRequest, timeout: TimeAmount? = nil) async throws -> Order {
        try await calls.getOrder(request, timeout: timeout)
    }
}

extension OrderRequest {
    /// The order the request id `requestId` made.
    public static func byRequest(_ product: String, _ requestId: UInt64) -> OrderRequest {
        var request = OrderRequest(productId: product)
        request.key = .requestId(requestId)
        return request
    }

    public static func byOrder(_ product: String, _ orderId: UInt64) -> OrderRequest {
        var request = OrderRequest(productId: product)
        request.key = .orderId(orderId)
        return request
    }
}
