import PostgresClient

/// The purchase path's statements and what their answers mean: the one place the SQL of the consumers (the calls
/// of `purchase_batch`, `lookup_batch` and `bind_requests`, and the sold-out read) and the procedures' outcome codes
/// are written in Swift (the procedures: `Schema`, migrations 2 and 4). Parameters and decoding are pure, so their
/// rules are unit-tested without a database; `run` is the one place a consumer sends a statement.
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
    /// The hot pool's first step, on the main database: binds the batch's request ids to the product and user, and
    /// answers those already bound to another (`reused`).
    static let bind = "SELECT r_reused FROM bind_requests($1::integer, $2::bigint[], $3::bigint[])"
    /// A sold-out product's settled request ids, orders and closed ids alike (`soldOutLookup`); one row past the
    /// limit tells that there are more.
    static let soldOut = "SELECT request_id, user_id, order_id, edge_id FROM requests WHERE product_id = $1 LIMIT $2"

    // MARK: - Parameters

    /// `purchase`'s: the product and the batch's request ids, users and edges, as arrays.
    static func purchaseParameters<P: PurchaseIdentity>(product: Int32, _ purchases: [P]) -> [String?] {
        [
            String(product),
            PostgresArrays.text(count: purchases.count) { purchases[$0].requestId },
            PostgresArrays.text(count: purchases.count) { purchases[$0].userId },
            PostgresArrays.text(count: purchases.count) { Int64(purchases[$0].edgeId) },
        ]
    }

    /// `lookup`'s and `bind`'s: the product and the request ids with their users.
    static func requestParameters<P: PurchaseIdentity>(product: Int32, _ purchases: [P]) -> [String?] {
        [
            String(product),
            PostgresArrays.text(count: purchases.count) { purchases[$0].requestId },
            PostgresArrays.text(count: purchases.count) { purchases[$0].userId },
        ]
    }

    /// `soldOut`'s: the product and one row more than `limit`.
    static func soldOutParameters(product: Int32, limit: Int) -> [String?] { [String(product), String(limit + 1)] }

    // MARK: - Answers

    /// `purchase`'s column 4: the pay-by time (Unix ms) of the batch's new orders; 0 when the product has no hold time.
    static func payBy(_ result: PostgresResult) -> Int64 { result.int64(0, 4) ?? 0 }

    /// `bind`'s answer: the request ids bound to another product or user. An answer without the array is an error
    /// (nothing is known to be bound).
    static func reused(_ result: PostgresResult) throws -> [Int64] {
        guard let reused = result.string(0, 0).flatMap(PostgresArrays.integers) else {
            throw PostgresError(code: "XX000", message: "bind_requests returned no array")
        }
        return reused
    }

    /// `soldOut`'s answer as the product's in-memory lookup; nil when the product has more than `limit` settled
    /// request ids (too large to mirror: its purchases keep going to the database). A row without a request id or
    /// user is skipped.
    static func soldOutLookup(_ result: PostgresResult, limit: Int) -> SoldOutLookup? {
        guard result.count <= limit else { return nil }
        var lookup = SoldOutLookup()
        lookup.byRequest.reserveCapacity(result.count)
        for row in 0..<result.count {
            guard let request = result.int64(row, 0), let user = result.int64(row, 1) else { continue }
            let order = result.int64(row, 2).map { SoldOutLookup.Order(id: $0, edge: result.int64(row, 3) ?? 0) }
            lookup.byRequest[request] = SoldOutLookup.Settled(user: user, order: order)
        }
        return lookup
    }

    // MARK: - Sending

    /// One statement on a consumer's connection. A deadlock or serialization failure rolled the whole call back:
    /// running it once more is safe. Any other failure is the answer.
    static func run(_ statement: String, _ parameters: [String?], on connection: PostgresConnection)
        -> Result<PostgresResult, PostgresError>
    {
        var failure = PostgresError(code: "XX000", message: "not run")
        for attempt in 1...2 {
            do {
                return .success(try connection.query(statement, parameters))
            } catch let error as PostgresError {
                failure = error
                if !(error.isRetryableTransactionFailure && attempt == 1) { break }
            } catch {
                return .failure(PostgresError(code: "XX000", message: "\(error)"))
            }
        }
        return .failure(failure)
    }

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

/// What the statements send of a purchase: its request id, user and edge.
protocol PurchaseIdentity {
    var requestId: Int64 { get }
    var userId: Int64 { get }
    var edgeId: Int32 { get }
}

extension PendingPurchase: PurchaseIdentity {}
