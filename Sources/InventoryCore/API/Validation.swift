import Proto
import Wire

/// Input checks of the methods: every field a caller sends is checked before it reaches a queue or a statement.
enum Validation {
    static let maxSlots: UInt32 = 64
    static let defaultSlots = 8

    /// `ProductRules`, the quota service's rule: no product can have an id it refuses.
    static func productId(_ id: String) throws {
        if let problem = ProductRules.idProblem(id) { throw RPCError(.invalidArgument, problem.description) }
    }

    /// Request and user ids are any non-zero uint64 (the proto's range); the database keeps their bit pattern in a
    /// bigint.
    static func purchase(_ request: PurchaseRequest) throws {
        guard request.requestId != 0 else { throw RPCError(.invalidArgument, "request_id is missing (0)") }
        guard request.userId != 0 else { throw RPCError(.invalidArgument, "user_id is missing (0)") }
        guard request.edgeId <= UInt32(Int32.max) else { throw RPCError(.invalidArgument, "edge_id is out of range") }
        try productId(request.productId)
    }

    /// The slot count to use (0 means the default).
    static func createProduct(_ request: CreateProductRequest) throws -> Int {
        try productId(request.productId)
        guard request.totalStock > 0 else { throw RPCError(.invalidArgument, "total_stock must be positive") }
        guard request.totalStock <= ProductRules.maxStock else { throw RPCError(.invalidArgument, "total_stock is absurdly large") }
        guard request.slotCount <= maxSlots else { throw RPCError(.invalidArgument, "slot_count is above \(maxSlots)") }
        guard request.saleLimit >= 0 else { throw RPCError(.invalidArgument, "sale_limit is negative") }
        guard request.saleLimit <= ProductRules.maxStock else { throw RPCError(.invalidArgument, "sale_limit is absurdly large") }
        try holdSeconds(request.holdSeconds)
        return request.slotCount == 0 ? defaultSlots : Int(request.slotCount)
    }

    /// The change and its change id (bit pattern; nil: none). A raise needs one, so that a retry applies it once.
    static func stockChange(_ request: AdjustStockRequest) throws -> (ProductDatabase.StockChange, changeId: Int64?) {
        try productId(request.productId)
        let changeId = request.changeId == 0 ? nil : Int64(bitPattern: request.changeId)
        switch request.change {
        case .raiseBy(let units)?:
            guard units > 0 else { throw RPCError(.invalidArgument, "raise_by must be positive") }
            guard units <= ProductRules.maxStock else { throw RPCError(.invalidArgument, "raise_by is absurdly large") }
            guard changeId != nil else {
                throw RPCError(.invalidArgument, "change_id is missing (0): choose one per raise and reuse it to retry")
            }
            return (.raise(units), changeId)
        case .saleLimit(let limit)?:
            guard limit >= 0 else { throw RPCError(.invalidArgument, "sale_limit is negative") }
            guard limit <= ProductRules.maxStock else { throw RPCError(.invalidArgument, "sale_limit is absurdly large") }
            return (.saleLimit(limit), changeId)
        case nil:
            throw RPCError(.invalidArgument, "set raise_by or sale_limit")
        }
    }

    /// Empty means every product; otherwise it must be a valid id.
    static func optionalProductId(_ id: String) throws {
        if !id.isEmpty { try productId(id) }
    }
}
