import Proto
import Wire

/// Input checks of the methods: every field a caller sends is checked before it reaches a queue or a statement.
enum Validation {
    static let maxProductIdBytes = 128
    /// Far beyond any sale, far below where sums of bigints could overflow.
    static let maxStock: Int64 = 1_000_000_000_000
    static let maxSlots: UInt32 = 64
    static let defaultSlots = 8

    static func productId(_ id: String) throws {
        guard !id.isEmpty else { throw RPCError(.invalidArgument, "product_id is empty") }
        guard id.utf8.count <= maxProductIdBytes else {
            throw RPCError(.invalidArgument, "product_id is longer than \(maxProductIdBytes) bytes")
        }
        // Printable ASCII (the usual case) needs no Unicode property lookups.
        let printableASCII = id.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F }
        guard printableASCII || !id.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw RPCError(.invalidArgument, "product_id contains control characters")
        }
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
        guard request.totalStock <= maxStock else { throw RPCError(.invalidArgument, "total_stock is absurdly large") }
        guard request.slotCount <= maxSlots else { throw RPCError(.invalidArgument, "slot_count is above \(maxSlots)") }
        guard request.saleLimit >= 0 else { throw RPCError(.invalidArgument, "sale_limit is negative") }
        guard request.saleLimit <= maxStock else { throw RPCError(.invalidArgument, "sale_limit is absurdly large") }
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
            guard units <= maxStock else { throw RPCError(.invalidArgument, "raise_by is absurdly large") }
            guard changeId != nil else {
                throw RPCError(.invalidArgument, "change_id is missing (0): choose one per raise and reuse it to retry")
            }
            return (.raise(units), changeId)
        case .saleLimit(let limit)?:
            guard limit >= 0 else { throw RPCError(.invalidArgument, "sale_limit is negative") }
            guard limit <= maxStock else { throw RPCError(.invalidArgument, "sale_limit is absurdly large") }
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
