import InventoryDiscovery
import NIOCore
import Proto
import ServiceKit

/// Forwards purchases (and the in-doubt resolver's lookups) to the inventory replicas, each call on the replica
/// `InventoryReplicaSet` chooses. A lookup may land on another replica than its purchase did: they share the
/// database, where the request id's binding makes the lookup definitive and a retry never a second order.
public struct InventoryForwarder: PurchaseForwarder {
    let inventory: InventoryReplicas

    public init(replicas: InventoryReplicas) {
        self.inventory = replicas
    }

    public func forward(_ request: PurchaseRequest, timeout: TimeAmount) -> EventLoopFuture<PurchaseResponse> {
        self.inventory.callFuture(InventoryRPC.Purchase.self, request, timeout: timeout)
    }
}
