import Logging
import NIOCore
import NIOPosix
import Proto
import Wire

/// The public purchase API of an edge, for client services, the `flashsale` tool and the tests.
public struct EdgeClient: Sendable {
    public let rpc: RPCClient

    public init(host: String, port: Int, connections: Int = 1, timeout: TimeAmount = .seconds(10),
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        self.rpc = RPCClient(
            configuration: RPCClientConfiguration(host: host, port: port, connections: connections, defaultTimeout: timeout),
            group: group, logger: logger)
    }

    public init(rpc: RPCClient) {
        self.rpc = rpc
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
        self.rpc.callFuture(
            EdgeRPC.Purchase.self, PurchaseRequest(requestId: requestID, userId: userID, productId: product, retry: retry),
            timeout: timeout)
    }

    public func stats() async throws -> EdgeStatsResponse {
        try await self.rpc.call(EdgeRPC.Stats.self, EdgeStatsRequest())
    }

    public func ping() async throws -> String {
        try await self.rpc.call(CommonRPC.Ping.self, WirePingRequest()).service
    }

    public func shutdown() async {
        await self.rpc.shutdown()
    }
}
