import FlashSaleClient
import NIOCore
import Proto

/// Forwards purchases to the inventory service over its pool of multiplexed connections.
public struct InventoryForwarder: PurchaseForwarder {
    let inventory: InventoryClient

    public init(client: InventoryClient) {
        self.inventory = client
    }

    public func forward(_ request: PurchaseRequest, timeout: TimeAmount) -> EventLoopFuture<PurchaseResponse> {
        self.inventory.purchaseFuture(request, timeout: timeout)
    }
}
