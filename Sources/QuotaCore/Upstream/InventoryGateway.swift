import InventoryDiscovery
import Logging
import NIOCore
import Proto
import ServiceKit
import Wire

/// What the quota service needs from the inventory service (the database is the truth for stock and sales).
/// A protocol so that the quota logic does not depend on how the inventory is reached.
protocol InventoryGateway: Sendable {
    func createProduct(_ request: CreateProductRequest) async throws -> Product
    func product(_ productID: String) async throws -> Product
    func adjustStock(_ request: AdjustStockRequest) async throws -> Product
    func soldCounts(_ productID: String) async throws -> ProductSold
}

/// The inventory service over the wire, with the service token (CreateProduct and AdjustStock need it), each call
/// on one of its replicas (any may answer: they share the databases).
struct RemoteInventory: InventoryGateway {
    let rpc: InventoryReplicas
    let timeout: TimeAmount

    init(replicas: InventoryReplicas, timeout: TimeAmount = .seconds(5)) {
        self.rpc = replicas
        self.timeout = timeout
    }

    func createProduct(_ request: CreateProductRequest) async throws -> Product {
        try await rpc.call(InventoryRPC.CreateProduct.self, request, timeout: timeout)
    }

    func product(_ productID: String) async throws -> Product {
        try await rpc.call(InventoryRPC.GetStock.self, ProductRequest(productId: productID), timeout: timeout)
    }

    func adjustStock(_ request: AdjustStockRequest) async throws -> Product {
        try await rpc.call(InventoryRPC.AdjustStock.self, request, timeout: timeout)
    }

    func soldCounts(_ productID: String) async throws -> ProductSold {
        let response = try await rpc.call(
            InventoryRPC.SoldCounts.self, SoldCountsRequest(productId: productID), timeout: timeout)
        guard let sold = response.products.first(where: { $0.productId == productID }) else {
            throw RPCError(.notFound, "the inventory does not know the product")
        }
        return sold
    }
}
