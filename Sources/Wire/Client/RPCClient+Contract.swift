import NIOCore
import Proto

/// Calls by the generated method table (`InventoryRPC.Purchase.self`): the wire name and the response type come
/// from proto/services.proto, and the request must be the method's.
extension RPCClient {
    public func call<M: RPCMethod>(
        _ method: M.Type, _ request: M.Input, timeout: TimeAmount? = nil, token: String? = nil
    ) async throws -> M.Output {
        try await self.call(M.name, request, as: M.Output.self, timeout: timeout, token: token)
    }

    /// The future-returning form, for callers on an event loop.
    public func callFuture<M: RPCMethod>(
        _ method: M.Type, _ request: M.Input, timeout: TimeAmount? = nil, token: String? = nil
    ) -> EventLoopFuture<M.Output> {
        self.callFuture(M.name, request, as: M.Output.self, timeout: timeout, token: token)
    }

    /// The callback form (see `RPCClient.call(_:_:as:timeout:token:completion:)`), for load generators.
    public func call<M: RPCMethod>(
        _ method: M.Type, _ request: M.Input, timeout: TimeAmount? = nil, token: String? = nil,
        completion: @escaping @Sendable (Result<M.Output, RPCError>) -> Void
    ) {
        self.call(M.name, request, as: M.Output.self, timeout: timeout, token: token, completion: completion)
    }
}
