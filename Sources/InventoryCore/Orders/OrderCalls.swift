import Proto
import Wire

extension ProductDatabase {
    /// One call of `order_action` (Schema.holds): reads, confirms or cancels one order of the product, deciding under
    /// the order row's lock. Nil: the product has no such order here.
    func orderAction(product: Int32, _ key: OrderKey, _ action: OrderAction) async throws -> OrderAction.Row? {
        let (request, order): (String?, String?)
        switch key {
        case .request(let id): (request, order) = (String(id), nil)
        case .order(let id): (request, order) = (nil, String(id))
        }
        let result = try await run(
            """
            SELECT r_outcome, r_request, r_order, r_user, r_state, r_pay_by_ms, r_ended_ms, r_reason
            FROM order_action($1::integer, $2::bigint, $3::bigint, $4::smallint)
            """,
            [String(product), request, order, String(action.rawValue)])
        guard !result.isEmpty else { return nil }
        guard let outcome = result.int64(0, 0), let requestId = result.int64(0, 1), let orderId = result.int64(0, 2),
              let user = result.int64(0, 3), let state = result.string(0, 4)
        else { throw RPCError(.internal, "order_action returned an incomplete row") }
        return OrderAction.Row(
            outcome: outcome, requestId: requestId, orderId: orderId, userId: user, state: state,
            payByUnixMs: result.int64(0, 5), endedUnixMs: result.int64(0, 6), reason: result.string(0, 7))
    }

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
    /// `inventory.ConfirmOrder`, `CancelOrder` and `GetOrder`: the order's database decides; a unit released by the
    /// call makes the product's lane forget it was sold out.
    func order(_ request: OrderRequest, _ action: OrderAction) async throws -> Order {
        let key = try Validation.order(request)
        guard let entry = catalog.entry(named: request.productId) else { throw RPCError(.notFound, "unknown product") }
        let row = try await database(for: entry.role).orderAction(product: entry.key, key, action)
        let reply = action.reply(product: request.productId, row: row)
        if reply.releasedNow {
            pool(for: entry.role).stockChanged(product: entry.key)
            logger.info("hold released", metadata: ["product": "\(request.productId)", "action": "\(action)"])
        }
        return try reply.result.get()
    }
}
