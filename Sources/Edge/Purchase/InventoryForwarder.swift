import NIOCore
import Proto
import Wire

/// Forwards purchases to the inventory service over the pool of multiplexed connections.
public struct InventoryForwarder: PurchaseForwarder {
    let client: RPCClient

    public init(client: RPCClient) {
        self.client = client
    }

    public func forward(_ request: PurchaseRequest, timeout: TimeAmount) -> EventLoopFuture<PurchaseResponse> {
        self.client.callFuture("inventory.Purchase", request, as: PurchaseResponse.self, timeout: timeout)
    }
}
