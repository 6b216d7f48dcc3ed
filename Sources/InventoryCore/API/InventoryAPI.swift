import Logging
import Proto
import Wire

/// The service's methods over the wire runtime. Purchases take the event-loop path (no task per call): validate,
/// resolve the product in memory, queue; the consumer answers after the commit. Everything else is an async handler
/// on the admin connections.
struct InventoryAPI: Sendable {
    let inventory: Inventory

    func register(into router: inout RPCRouter) {
        let inventory = self.inventory
        router.register(InventoryRPC.Purchase.self, onEventLoop: {
            (request: PurchaseRequest, context: ServerCallContext, responder: RPCResponder<PurchaseResponse>) in
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
        })

        router.register(InventoryRPC.CreateProduct.self) {
            (request: CreateProductRequest, _: ServerCallContext) async throws -> Product in
            let slots = try Validation.createProduct(request)
            return try await inventory.createProduct(request, slotCount: slots)
        }

        router.register(InventoryRPC.GetStock.self) { (request: ProductRequest, _: ServerCallContext) async throws -> Product in
            try Validation.productId(request.productId)
            return try await inventory.product(named: request.productId)
        }

        router.register(InventoryRPC.ListProducts.self) {
            (_: ListProductsRequest, _: ServerCallContext) async throws -> ProductList in
            ProductList(products: try await inventory.products())
        }

        router.register(InventoryRPC.AdjustStock.self) {
            (request: AdjustStockRequest, _: ServerCallContext) async throws -> Product in
            let (change, changeId) = try Validation.stockChange(request)
            return try await inventory.adjustStock(named: request.productId, change, changeId: changeId)
        }

        router.register(InventoryRPC.SoldCounts.self) {
            (request: SoldCountsRequest, _: ServerCallContext) async throws -> SoldCountsResponse in
            try Validation.optionalProductId(request.productId)
            return SoldCountsResponse(products: try await inventory.soldCounts(named: request.productId))
        }

        // Order calls take the event-loop path too: queued for a batch like purchases (`OrderQueue`).
        router.register(InventoryRPC.ConfirmOrder.self, onEventLoop: {
            (request: OrderRequest, context: ServerCallContext, responder: RPCResponder<Order>) in
            inventory.submitOrder(request, .confirm, context, responder)
        })

        router.register(InventoryRPC.CancelOrder.self, onEventLoop: {
            (request: OrderRequest, context: ServerCallContext, responder: RPCResponder<Order>) in
            inventory.submitOrder(request, .cancel, context, responder)
        })

        router.register(InventoryRPC.GetOrder.self, onEventLoop: {
            (request: OrderRequest, context: ServerCallContext, responder: RPCResponder<Order>) in
            inventory.submitOrder(request, .read, context, responder)
        })

        let auditMetrics = AuditMetrics()
        router.register(InventoryRPC.Audit.self) { (request: AuditRequest, _: ServerCallContext) async throws -> AuditResponse in
            try Validation.optionalProductId(request.productId)
            let products = try await inventory.audit(named: request.productId)
            auditMetrics.record(products)
            return AuditResponse(products: products, clean: products.allSatisfy(\.clean))
        }
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
