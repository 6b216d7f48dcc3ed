import Logging
import NIOCore
import NIOPosix
import Proto
import Wire

/// The public purchase API of an edge, for client services, the `flashsale` tool and the tests.
public struct EdgeClient: Sendable {
    /// The generated stub underneath (proto/services.proto's names and types); this type adds the conveniences.
    public let calls: EdgeRPCClient
    public var rpc: RPCClient { calls.rpc }

    public init(host: String, port: Int, connections: Int = 1, timeout: TimeAmount = .seconds(10),
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        self.calls = EdgeRPCClient(RPCClient(
            configuration: RPCClientConfiguration(host: host, port: port, connections: connections, defaultTimeout: timeout),
            group: group, logger: logger))
    }

    public init(rpc: RPCClient) {
        self.calls = EdgeRPCClient(rpc)
    }

    /// One purchase attempt. Retry a request whose outcome never arrived with the same request id and
    /// `retry: true`: it returns the first outcome and never makes a second order.
    public func purchase(
        requestID: UInt64, userID: UInt64, product: String, retry: Bool = false, timeout: TimeAmount? = nil
    ) async throws -> PurchaseResponse {
        try await self.purchaseFuture(requestID: requestID, userID: userID, product: product, retry: retry, timeout: timeout).get()
    }

    public func purchaseFuture(
        requestID: UInt64, userID: UInt64, product: String, retry: Bool = false, timeout: TimeAmount? = nil
    ) -> EventLoopFuture<PurchaseResponse> {
        self.calls.purchaseFuture(Self.request(requestID, userID, product, retry), timeout: timeout)
    }

    /// The callback form, for load generators on the client's event loop (see `RPCClient.call(_:_:timeout:token:completion:)`).
    public func purchase(
        requestID: UInt64, userID: UInt64, product: String, retry: Bool = false, timeout: TimeAmount? = nil,
        completion: @escaping @Sendable (Result<PurchaseResponse, RPCError>) -> Void
    ) {
        self.rpc.call(EdgeRPC.Purchase.self, Self.request(requestID, userID, product, retry), timeout: timeout, completion: completion)
    }

    private static func request(_ requestID: UInt64, _ userID: UInt64, _ product: String, _ retry: Bool) -> PurchaseRequest {
        PurchaseRequest(requestId: requestID, userId: userID, productId: product, retry: retry)
    }

    public func stats() async throws -> EdgeStatsResponse {
        try await self.calls.stats(EdgeStatsRequest())
    }

    public func ping() async throws -> String {
        try await CommonRPCClient(self.rpc).ping(WirePingRequest()).service
    }

    public func shutdown() async {
        await self.rpc.shutdown()
    }
}
