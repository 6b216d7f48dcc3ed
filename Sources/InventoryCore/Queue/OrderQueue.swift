import NIOCore
import PostgresClient
import Proto
import Wire

/// An order call (`inventory.GetOrder`, `ConfirmOrder`, `CancelOrder`) waiting for its batch; answered through
/// `responder` once its transaction committed (or failed).
struct PendingOrderCall: QueuedCall {
    /// The product as the caller named it (for the reply) and its key in its database.
    let productName: String
    let productKey: Int32
    let key: OrderKey
    let action: OrderAction
    /// Past it the caller has given up: the call is answered and dropped, never run.
    let deadline: NIODeadline?
    let responder: RPCResponder<Order>
}

/// The order calls of one consumer pool, in arrival order. Unlike purchases they share one queue across products: a
/// batch of order calls may name any products of the database (`order_batch` takes each entry's product), and no
/// product's calls need a lane of their own (there is no sold-out state to mirror). Pure state: not thread-safe by
/// itself; `PurchasePool` guards it with its lock.
struct OrderQueue<Call: QueuedCall> {
    let queueLimit: Int
    let maxBatch: Int
    private var queue = CircularBuffer<Call>(initialCapacity: 64)
    /// No queued call expires before this (calls taken since are not subtracted), so that the expiry thread's
    /// check is cheap while nothing can have expired. Nil: no queued call has a deadline.
    private var earliestDeadline: NIODeadline?

    init(queueLimit: Int, maxBatch: Int) {
        self.queueLimit = queueLimit
        self.maxBatch = maxBatch
    }

    var hasWork: Bool { !queue.isEmpty }
    var count: Int { queue.count }

    /// Queues the call; false when the queue is full.
    mutating func admit(_ call: Call) -> Bool {
        guard queue.count < queueLimit else { return false }
        queue.append(call)
        earliestDeadline = earliestDeadline.earlier(call.deadline)
        return true
    }

    /// The oldest calls, up to `maxBatch`.
    mutating func nextBatch() -> [Call] {
        let count = min(maxBatch, queue.count)
        var calls: [Call] = []
        calls.reserveCapacity(count)
        for _ in 0..<count { calls.append(queue.removeFirst()) }
        return calls
    }

    /// Puts calls back in front (a consumer that found its connection gone before running them).
    mutating func requeue(_ calls: [Call]) {
        for call in calls.reversed() {
            queue.prepend(call)
            earliestDeadline = earliestDeadline.earlier(call.deadline)
        }
    }

    /// Removes every queued call whose deadline is at or before `now`, for the caller to answer.
    mutating func expire(now: NIODeadline) -> [Call] {
        guard let earliest = earliestDeadline, earliest <= now else { return [] }
        var expired: [Call] = []
        earliestDeadline = queue.removeExpired(now: now, into: &expired)
        return expired
    }

    /// Empties the queue (shutdown, or the database unreachable): the caller fails the calls.
    mutating func drainAll() -> [Call] {
        defer { queue.removeAll() }
        return Array(queue)
    }
}

/// The statement of one batch of order calls and what its answer means: the one place `order_batch` (Schema,
/// migration 7) is called from Swift. Decoding is pure, so it is unit-tested without a database.
enum OrderBatch {
    static let statement = """
        SELECT r_index, r_outcome, r_request, r_order, r_user, r_state, r_pay_by_ms, r_ended_ms, r_reason
        FROM order_batch($1::integer[], $2::bigint[], $3::bigint[], $4::smallint[])
        """

    static func parameters(_ calls: [PendingOrderCall]) -> [String?] {
        func array(_ value: (PendingOrderCall) -> Int64) -> String {
            PostgresArrays.text(count: calls.count) { value(calls[$0]) }
        }
        return [
            array { Int64($0.productKey) },
            array { if case .request(let id) = $0.key { id } else { 0 } },
            array { if case .order(let id) = $0.key { id } else { 0 } },
            array { Int64($0.action.rawValue) },
        ]
    }

    /// Each entry's row (nil: it names no order of its product), in entry order, out of the procedure's rows (one
    /// per entry that names an order, with the entry's 1-based index).
    static func rows(count: Int, _ rows: [(index: Int64, row: OrderAction.Row)]) -> [OrderAction.Row?] {
        var byEntry = [OrderAction.Row?](repeating: nil, count: count)
        for (index, row) in rows where index >= 1 && index <= Int64(count) { byEntry[Int(index - 1)] = row }
        return byEntry
    }

    static func rows(count: Int, _ result: PostgresResult) throws -> [OrderAction.Row?] {
        var rows: [(index: Int64, row: OrderAction.Row)] = []
        rows.reserveCapacity(result.count)
        for index in 0..<result.count {
            guard let entry = result.int64(index, 0), let outcome = result.int64(index, 1),
                  let requestId = result.int64(index, 2), let orderId = result.int64(index, 3),
                  let user = result.int64(index, 4), let state = result.string(index, 5)
            else { throw PostgresError(code: "XX000", message: "order_batch returned an incomplete row") }
            rows.append((entry, OrderAction.Row(
                outcome: outcome, requestId: requestId, orderId: orderId, userId: user, state: state,
                payByUnixMs: result.int64(index, 6), endedUnixMs: result.int64(index, 7), reason: result.string(index, 8))))
        }
        return Self.rows(count: count, rows)
    }
}
