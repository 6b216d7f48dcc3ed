import Proto

/// Registration by the generated method table (`InventoryRPC.Purchase.self`): the wire name, the request and
/// response types and the access class come from proto/services.proto, so a server cannot register a method under
/// another name, with other types or with other access than the contract's.
extension RPCRouter {
    /// An async handler (see `register(_:access:_:)`).
    public mutating func register<M: RPCMethod>(
        _ method: M.Type, _ handler: @escaping @Sendable (M.Input, ServerCallContext) async throws -> M.Output
    ) {
        self.register(M.name, access: M.access, handler)
    }

    /// A handler on the connection's event loop (see `register(_:access:onEventLoop:)`).
    public mutating func register<M: RPCMethod>(
        _ method: M.Type, onEventLoop handler: @escaping @Sendable (M.Input, ServerCallContext, RPCResponder<M.Output>) -> Void
    ) {
        self.register(M.name, access: M.access, onEventLoop: handler)
    }

    /// Every method this router answers, with who may call it (Ping included): what the contract test compares with
    /// the generated descriptors.
    public var registrations: [String: RPCAccess] { self.routes.mapValues(\.access) }
}
