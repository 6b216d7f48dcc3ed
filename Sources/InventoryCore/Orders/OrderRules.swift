import Proto
import Wire

/// What a call does to an order, and what the database's answer means: the one place `order_batch`'s codes are
/// read in Swift (the procedure: `Schema.orderBatches`, which decides under the order row's lock). Pure, so its rules are
/// unit-tested without a database (OrderRulesTests).
enum OrderAction: Int16, Sendable {
    case read = 0
    case confirm = 1
    case cancel = 2

    /// One order as `order_batch` answers it (one row per call).
    struct Row: Sendable, Equatable {
        var outcome: Int64
        var requestId: Int64
        var orderId: Int64
        var userId: Int64
        var state: String
        var payByUnixMs: Int64?
        var endedUnixMs: Int64?
        var reason: String?
    }

    /// The reply, and whether this call put a unit back on sale (so the product's sold-out state is forgotten).
    struct Reply: Sendable {
        var result: Result<Order, RPCError>
        var releasedNow: Bool
    }

    /// `row` nil: the product has no such order.
    func reply(product: String, row: Row?) -> Reply {
        guard let row else { return Reply(result: .failure(RPCError(.notFound, "no such order of the product")), releasedNow: false) }
        guard let state = Self.state(row.state), (row.reason == nil) == (state != .released) else {
            return Reply(result: .failure(RPCError(.internal, "the database answered an order in no valid state")), releasedNow: false)
        }
        var order = Order(
            productId: product, requestId: UInt64(bitPattern: row.requestId), orderId: UInt64(bitPattern: row.orderId),
            userId: UInt64(bitPattern: row.userId), state: state, payByUnixMs: row.payByUnixMs ?? 0,
            endedUnixMs: row.endedUnixMs ?? 0, reason: Self.reason(row.reason))
        switch (self, row.outcome) {
        case (_, 1):
            return Reply(result: .success(order), releasedNow: self == .cancel)
        case (.confirm, 2), (.cancel, 2):
            order.replayed = true
            return Reply(result: .success(order), releasedNow: false)
        case (.confirm, 3):
            let why = order.reason == .cancelled ? "cancelled" : "expired"
            return Reply(result: .failure(RPCError(.failedPrecondition, "the hold was released (\(why)): refund the payment")), releasedNow: false)
        case (.confirm, 4):
            return Reply(result: .failure(RPCError(.failedPrecondition, "the hold was released (expired: pay_by has passed): refund the payment")), releasedNow: true)
        case (.cancel, 3):
            return Reply(result: .failure(RPCError(.failedPrecondition, "the order is paid: it cannot be cancelled")), releasedNow: false)
        default:
            return Reply(result: .failure(RPCError(.internal, "the database answered an unknown order outcome")), releasedNow: false)
        }
    }

    static func state(_ text: String) -> OrderState? {
        switch text {
        case "held": .held
        case "paid": .paid
        case "released": .released
        default: nil
        }
    }

    static func reason(_ text: String?) -> ReleaseReason {
        switch text {
        case "cancelled": .cancelled
        case "expired": .expired
        default: .unspecified
        }
    }
}

/// Which order a call names: by the request id that made it, or by its order id.
enum OrderKey: Sendable, Equatable {
    case request(Int64)
    case order(Int64)
}

extension Validation {
    /// Hold times up to a day: beyond any checkout.
    static let maxHoldSeconds: UInt32 = 86_400

    static func holdSeconds(_ seconds: UInt32) throws {
        guard seconds <= maxHoldSeconds else {
            throw RPCError(.invalidArgument, "hold_seconds is above \(maxHoldSeconds) (a day)")
        }
    }

    /// The product and the order key. Request ids are any non-zero uint64 (bit pattern); order ids come from a
    /// bigint sequence, so one above 2^63 - 1 names no order.
    static func order(_ request: OrderRequest) throws -> OrderKey {
        try productId(request.productId)
        switch request.key {
        case .requestId(let id)?:
            guard id != 0 else { throw RPCError(.invalidArgument, "request_id is missing (0)") }
            return .request(Int64(bitPattern: id))
        case .orderId(let id)?:
            guard id != 0 else { throw RPCError(.invalidArgument, "order_id is missing (0)") }
            guard id <= UInt64(Int64.max) else { throw RPCError(.invalidArgument, "order_id is out of range") }
            return .order(Int64(id))
        case nil:
            throw RPCError(.invalidArgument, "set request_id or order_id")
        }
    }
}
