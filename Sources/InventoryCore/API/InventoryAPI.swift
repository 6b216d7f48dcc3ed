import Logging
import Proto
import Wire

/// The service's methods (`InventoryRPCServer`, generated from proto/services.proto). Purchases take the event-loop
/// path (no task per call): validate, resolve the product in memory, queue; the consumer answers after the commit.
/// Order calls too (queued for a batch like purchases, `OrderQueue`). Everything else is an async handler on the
/// admin connections.
struct InventoryAPI: InventoryRPCServer {
    let inventory: Inventory
    let auditMetrics = AuditMetrics()

    func purchase(_ request: PurchaseRequest, context: ServerCallContext, responder: RPCResponder<PurchaseResponse>) {
        let inventory = self.inventory
        do {
            try Validation.purchase(request)
        } catch {
            responder.fail(RPCError.wrapping(error))
            return
        }
        guard let product = inventory.catalog.entry(named: request.productId) else {
            // Perhaps created on another replica since this one loaded its catalog: reloaded, then served.
            inventory.catalogRefresh.resolve(request.productId) { lookup in
                switch lookup {
                case .found(let product): Self.submit(request, product, context, responder, inventory)
                case .unknown: responder.fail(RPCError(.notFound, "unknown product"))
                case .unavailable: responder.fail(RPCError(.unavailable, "the catalog cannot be read; retry"))
                }
            }
            return
        }
        Self.submit(request, product, context, responder, inventory)
    }

    func createProduct(_ request: CreateProductRequest, context: ServerCallContext) async throws -> Product {
        let slots = try Validation.createProduct(request)
        return try await inventory.createProduct(request, slotCount: slots)
    }

    func getStock(_ request: ProductRequest, context: ServerCallContext) async throws -> Product {
        try Validation.productId(request.productId)
        return try await inventory.product(named: request.productId)
    }

    func listProducts(_ request: ListProductsRequest, context: ServerCallContext) async throws -> ProductList {
        ProductList(products: try await inventory.products())
    }

    func adjustStock(_ request: AdjustStockRequest, context: ServerCallContext) async throws -> Product {
        let (change, changeId) = try Validation.stockChange(request)
        return try await inventory.adjustStock(named: request.productId, change, changeId: changeId)
    }

    func soldCounts(_ request: SoldCountsRequest, context: ServerCallContext) async throws -> SoldCountsResponse {
        try Validation.optionalProductId(request.productId)
        return SoldCountsResponse(products: try await inventory.soldCounts(named: request.productId))
    }

    func audit(_ request: AuditRequest, context: ServerCallContext) async throws -> AuditResponse {
        try Validation.optionalProductId(request.productId)
        let products = try await inventory.audit(named: request.productId)
        auditMetrics.record(products)
        return AuditResponse(products: products, clean: products.allSatisfy(\.clean))
    }

    func confirmOrder(_ request: OrderRequest, context: ServerCallContext, responder: RPCResponder<Order>) {
        inventory.submitOrder(request, .confirm, context, responder)
    }

    func cancelOrder(_ request: OrderRequest, context: ServerCallContext, responder: RPCResponder<Order>) {
        inventory.submitOrder(request, .cancel, context, responder)
    }

    func getOrder(_ request: OrderRequest, context: ServerCallContext, responder: RPCResponder<Order>) {
        inventory.submitOrder(request, .read, context, responder)
    }

    private static func submit(
        _ request: PurchaseRequest, _ product: CatalogEntry, _ context: ServerCallContext,
        _ responder: RPCResponder<PurchaseResponse>, _ inventory: Inventory
    ) {
        if context.isExpired {
            responder.fail(RPCError(.deadlineExceeded, "the purchase arrived past its deadline"))
            return
        }
        let purchase = PendingPurchase(
            requestId: Int64(bitPattern: request.requestId), userId: Int64(bitPattern: request.userId),
            edgeId: Int32(request.edgeId), lookupOnly: request.lookupOnly, deadline: context.deadline,
            responder: responder)
        inventory.pool(for: product.role).submit(purchase, product: product.key)
    }
}
