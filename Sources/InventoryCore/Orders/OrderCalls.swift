import Proto
import Wire

extension ProductDatabase {
    /// One batch of `expire_holds`: releases up to `limit` due holds in one transaction. Returns the products (keys)
    /// that got units back, with how many.
    func expireHolds(limit: Int) async throws -> [(product: Int32, units: Int64)] {
        let result = try await run("SELECT r_products, r_counts FROM expire_holds($1::integer)", [String(limit)])
        let products = result.string(0, 0).flatMap(PostgresArrays.integers) ?? []
        let counts = result.string(0, 1).flatMap(PostgresArrays.integers) ?? []
        guard products.count == counts.count else { throw RPCError(.internal, "expire_holds returned arrays of different lengths") }
        return zip(products, counts).map { (Int32(truncatingIfNeeded: $0), $1) }
    }
}

extension Inventory {
    /// `inventory.GetOrder`, `ConfirmOrder` and `CancelOrder`: queued for the product's database's next order batch
    /// (`OrderQueue`, run by the purchase pool's consumers), which decides and answers. A unit the batch released
    /// makes the product's lane forget it was sold out.
    func submitOrder(_ request: OrderRequest, _ action: OrderAction, _ context: ServerCallContext, _ responder: RPCResponder<Order>) {
        let key: OrderKey
        do {
            key = try Validation.order(request)
        } catch {
            responder.fail(RPCError.wrapping(error))
            return
        }
        // A product created on another replica since this one loaded its catalog is reloaded, as for purchases.
        catalogRefresh.resolve(request.productId) { lookup in
            switch lookup {
            case .found(let entry): self.submitOrder(request, key, entry, action, context, responder)
            case .unknown: responder.fail(RPCError(.notFound, "unknown product"))
            case .unavailable: responder.fail(RPCError(.unavailable, "the catalog cannot be read; retry"))
            }
        }
    }

    private func submitOrder(
        _ request: OrderRequest, _ key: OrderKey, _ entry: CatalogEntry, _ action: OrderAction, _ context: ServerCallContext,
        _ responder: RPCResponder<Order>
    ) {
        if context.isExpired {
            responder.fail(RPCError(.deadlineExceeded, "the order call arrived past its deadline"))
            return
        }
        pool(for: entry.role).submit(PendingOrderCall(
            productName: request.productId, productKey: entry.key, key: key, action: action, deadline: context.deadline,
            responder: responder))
    }
}
