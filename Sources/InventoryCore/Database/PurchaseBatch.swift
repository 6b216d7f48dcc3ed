import PostgresClient

/// The purchase path's statements and what their answers mean: the one place the calls of `purchase_batch` and
/// `lookup_batch` and their outcome codes are written in Swift (the procedures: `Schema`, migrations 2 and 4).
/// Decoding is pure, so its rules are unit-tested without a database.
enum PurchaseBatch {
    /// Column 4: a hold's pay_by (Unix ms) for the batch's new orders, NULL when the product has no hold time:
    /// `purchase_batch` set it to now() + the hold, and now() is the same in this statement's transaction.
    static let purchase = """
        SELECT r_requests, r_outcomes, r_orders, r_edges,
               (SELECT (extract(epoch FROM now() + make_interval(secs => p.hold_seconds)) * 1000)::bigint
                  FROM products p WHERE p.id = $1 AND p.hold_seconds > 0)
          FROM purchase_batch($1::integer, $2::bigint[], $3::bigint[], $4::integer[])
        """
    static let lookup =
        "SELECT r_requests, r_outcomes, r_orders, r_edges FROM lookup_batch($1::integer, $2::bigint[], $3::bigint[])"

    /// The procedures' outcome codes.
    enum Code: Int64 {
        /// Not served yet (every unit locked by other batches): queue it again.
        case retry = 0
        /// A new order.
        case purchased = 1
        case soldOut = 2
        /// The buyer's existing order of the product.
        case alreadyPurchased = 4
        /// The request id's existing order: no unit taken.
        case purchasedBefore = 5
        /// A closed request id: SOLD_OUT replayed.
        case closed = 6
        /// The request id is bound to another product or user.
        case reused = 7

        /// Which entry wins when a request id appears more than once (across the procedure's chunks).
        var rank: Int {
            switch self {
            case .purchased: 4
            case .purchasedBefore: 3
            case .alreadyPurchased: 2
            case .soldOut, .closed, .reused: 1
            case .retry: 0
            }
        }
    }

    /// What one purchase of a batch gets.
    enum Outcome: Equatable, Sendable {
        case purchased(order: Int64, edge: Int64)
        case replayed(order: Int64, edge: Int64)
        case alreadyPurchased(order: Int64)
        case soldOut
        case closed
        case reused
        case retry
        /// The answer names no outcome (or one no procedure has) for it: an error.
        case missing
    }

    /// An answer: parallel arrays, one entry per request id and chunk.
    struct Rows: Equatable, Sendable {
        var requests: [Int64] = []
        var codes: [Int64] = []
        var orders: [Int64] = []
        var edges: [Int64] = []

        init(requests: [Int64], codes: [Int64], orders: [Int64], edges: [Int64]) {
            (self.requests, self.codes, self.orders, self.edges) = (requests, codes, orders, edges)
        }

        init(_ result: PostgresResult) {
            self.init(
                requests: result.string(0, 0).flatMap(PostgresArrays.integers) ?? [],
                codes: result.string(0, 1).flatMap(PostgresArrays.integers) ?? [],
                orders: result.string(0, 2).flatMap(PostgresArrays.integers) ?? [],
                edges: result.string(0, 3).flatMap(PostgresArrays.integers) ?? [])
        }

        /// Each request id's entry; of a request id's several entries, the one that bought wins.
        func byRequest() -> [Int64: (code: Code?, order: Int64, edge: Int64)] {
            var entries: [Int64: (code: Code?, order: Int64, edge: Int64)] = [:]
            entries.reserveCapacity(requests.count)
            for index in requests.indices where index < codes.count && index < orders.count && index < edges.count {
                let code = Code(rawValue: codes[index])
                if let seen = entries[requests[index]], (seen.code?.rank ?? -1) >= (code?.rank ?? -1) { continue }
                entries[requests[index]] = (code, orders[index], edges[index])
            }
            return entries
        }
    }

    /// Each purchase's outcome, in batch order (`requestIDs`). A request id twice in one batch: the copy that bought
    /// is PURCHASED, every other copy a replay (it took no unit).
    static func outcomes(of requestIDs: [Int64], _ rows: Rows) -> [Outcome] {
        // The usual case: every purchase bought, answered in batch order; no table needed.
        let count = requestIDs.count
        if rows.requests.count == count, rows.codes.count == count, rows.orders.count == count, rows.edges.count == count,
           requestIDs.indices.allSatisfy({ rows.requests[$0] == requestIDs[$0] && rows.codes[$0] == Code.purchased.rawValue })
        {
            return requestIDs.indices.map { .purchased(order: rows.orders[$0], edge: rows.edges[$0]) }
        }
        var entries = rows.byRequest()
        return requestIDs.map { request -> Outcome in
            guard let entry = entries[request], let code = entry.code else { return .missing }
            switch code {
            case .purchased:
                entries[request] = (.purchasedBefore, entry.order, entry.edge)
                return .purchased(order: entry.order, edge: entry.edge)
            case .purchasedBefore: return .replayed(order: entry.order, edge: entry.edge)
            case .alreadyPurchased: return .alreadyPurchased(order: entry.order)
            case .soldOut: return .soldOut
            case .closed: return .closed
            case .reused: return .reused
            case .retry: return .retry
            }
        }
    }

    /// A lookup's outcome per request id: its order (replayed), closed (SOLD_OUT), reused, or missing.
    static func lookups(of requestIDs: [Int64], _ rows: Rows) -> [Outcome] {
        let entries = rows.byRequest()
        return requestIDs.map { request -> Outcome in
            guard let entry = entries[request] else { return .missing }
            switch entry.code {
            case .purchasedBefore?: return .replayed(order: entry.order, edge: entry.edge)
            case .soldOut?, .closed?: return .closed
            case .reused?: return .reused
            default: return .missing
            }
        }
    }
}
