import NIOCore
import Proto
import Wire

/// What the lanes need to know of a queued purchase (the rest travels along untouched).
protocol LaneItem: QueuedCall {
    var requestId: Int64 { get }
    var userId: Int64 { get }
    var lookupOnly: Bool { get }
}

/// A purchase waiting for its batch; answered through `responder` once its transaction committed (or failed).
struct PendingPurchase: LaneItem {
    let requestId: Int64
    let userId: Int64
    let edgeId: Int32
    /// The edge asks for this request id's existing outcome only: buy nothing.
    let lookupOnly: Bool
    let deadline: NIODeadline?
    let responder: RPCResponder<PurchaseResponse>
}

/// Taken by one consumer: purchases of one product, in arrival order, for one procedure call.
struct Batch<Item: LaneItem>: Sendable {
    let productKey: Int32
    /// The product's stock generation when the batch was taken: a SOLD_OUT seen by a batch that started before a
    /// stock raise must not mark the raised product sold out.
    let generation: UInt64
    var purchases: [Item]
}

/// What a sold-out product still knows, so that it answers the request ids it has settled without the database:
/// a retry or lookup of a request that bought gets its order, of a closed request id SOLD_OUT, and a request id
/// bound to another user is refused. Any other request id goes to the database, which binds or closes it.
struct SoldOutLookup: Sendable {
    /// An existing order and the edge whose purchase made it.
    struct Order: Sendable {
        var id: Int64
        var edge: Int64

        /// The answer to a retry or lookup of the request that made it.
        var replayed: PurchaseResponse {
            PurchaseResponse(outcome: .purchased, orderId: UInt64(bitPattern: id), replayed: true, edgeId: UInt32(truncatingIfNeeded: edge))
        }
    }

    /// A request id of this product: the user it is bound to and its order (nil: closed without one).
    struct Settled: Sendable {
        var user: Int64
        var order: Order?
    }

    var byRequest: [Int64: Settled] = [:]

    /// Nil when only the database can answer (a request id this product has not settled).
    func answer(requestId: Int64, userId: Int64, lookupOnly: Bool) -> Result<PurchaseResponse, RPCError>? {
        guard let settled = byRequest[requestId] else { return nil }
        guard settled.user == userId else { return .failure(RequestIds.reused) }
        if let order = settled.order { return .success(order.replayed) }
        return .success(RequestIds.closed(lookupOnly: lookupOnly))
    }
}

/// The answers every path gives about a request id's binding.
enum RequestIds {
    static var reused: RPCError { RPCError(.failedPrecondition, "request id reused with another product or user") }

    /// A closed request id (no order, and none can be made): SOLD_OUT; to a purchase, a replayed one.
    static func closed(lookupOnly: Bool) -> PurchaseResponse {
        PurchaseResponse(outcome: .soldOut, replayed: !lookupOnly)
    }
}

/// The per-product queues of one consumer pool and the round-robin list of products with queued work.
/// Pure state: not thread-safe by itself; `PurchasePool` guards it with its lock.
struct PurchaseLanes<Item: LaneItem> {
    enum SaleState {
        case selling
        /// A batch saw the stock gone; the lookup of its orders is being loaded. Purchases still go to the database.
        case soldOutLoading
        /// Too many orders to keep in memory: purchases still go to the database (which answers them correctly).
        case soldOutUncached
        case soldOut(SoldOutLookup)
    }

    /// A class, so that queue operations mutate in place (a struct copied out of the dictionary would copy the
    /// whole queue on every append).
    private final class Lane {
        var queue = CircularBuffer<Item>(initialCapacity: 64)
        var scheduled = false
        var state = SaleState.selling
        var generation: UInt64 = 0
    }

    enum Admission {
        case queued
        case answered(PurchaseResponse)
        case rejected(RPCError)
    }

    let queueLimit: Int
    let maxBatch: Int
    private var lanes: [Int32: Lane] = [:]
    private var ready = CircularBuffer<Int32>(initialCapacity: 16)
    private(set) var queuedCount = 0
    /// No queued item expires before this (it may be earlier than the earliest actual deadline: items taken since
    /// are not subtracted). Nil: nothing queued has a deadline.
    private(set) var earliestDeadline: NIODeadline?

    init(queueLimit: Int, maxBatch: Int) {
        self.queueLimit = queueLimit
        self.maxBatch = maxBatch
    }

    var hasWork: Bool { !ready.isEmpty }

    private mutating func lane(_ product: Int32) -> Lane {
        if let lane = lanes[product] { return lane }
        let lane = Lane()
        lanes[product] = lane
        return lane
    }

    /// Queues the purchase, or answers it at once (a request id a sold-out product settled), or refuses it (queue full,
    /// or a request id bound to another user).
    mutating func admit(_ purchase: Item, product: Int32) -> Admission {
        let lane = self.lane(product)
        if case .soldOut(let lookup) = lane.state,
           let known = lookup.answer(requestId: purchase.requestId, userId: purchase.userId, lookupOnly: purchase.lookupOnly)
        {
            switch known {
            case .success(let response): return .answered(response)
            case .failure(let error): return .rejected(error)
            }
        }
        guard lane.queue.count < queueLimit else {
            return .rejected(RPCError(.resourceExhausted, "too many purchases queued for this product; retry later"))
        }
        lane.queue.append(purchase)
        queuedCount += 1
        noteDeadline(purchase.deadline)
        if !lane.scheduled {
            lane.scheduled = true
            ready.append(product)
        }
        return .queued
    }

    /// The next product's batch (up to `maxBatch`, oldest first). A product with more queued goes back to the end
    /// of the list, so that another consumer can take its next batch at once and products share consumers fairly.
    mutating func nextBatch() -> Batch<Item>? {
        guard let product = ready.popFirst(), let lane = lanes[product] else { return nil }
        let count = min(maxBatch, lane.queue.count)
        var purchases: [Item] = []
        purchases.reserveCapacity(count)
        for _ in 0..<count { purchases.append(lane.queue.removeFirst()) }
        queuedCount -= count
        if lane.queue.isEmpty {
            lane.scheduled = false
        } else {
            ready.append(product)
        }
        return Batch(productKey: product, generation: lane.generation, purchases: purchases)
    }

    /// Puts purchases the database could not serve yet (their units were locked by other batches) back in front.
    mutating func requeue(_ purchases: [Item], product: Int32) {
        guard !purchases.isEmpty else { return }
        let lane = self.lane(product)
        for purchase in purchases.reversed() {
            lane.queue.prepend(purchase)
            noteDeadline(purchase.deadline)
        }
        queuedCount += purchases.count
        if !lane.scheduled {
            lane.scheduled = true
            ready.append(product)
        }
    }

    /// A batch of `generation` saw the product sold out. True when the caller should load the sold-out lookup.
    mutating func markSoldOut(product: Int32, generation: UInt64) -> Bool {
        guard let lane = lanes[product], lane.generation == generation, case .selling = lane.state else { return false }
        lane.state = .soldOutLoading
        return true
    }

    /// Installs the lookup loaded after `markSoldOut` (nil: too large to keep), unless the stock changed meanwhile.
    mutating func soldOutLoaded(product: Int32, generation: UInt64, lookup: SoldOutLookup?) {
        guard let lane = lanes[product], lane.generation == generation, case .soldOutLoading = lane.state else { return }
        lane.state = lookup.map { .soldOut($0) } ?? .soldOutUncached
    }

    /// The loading failed: back to the database path; a later SOLD_OUT tries again.
    mutating func soldOutLoadFailed(product: Int32, generation: UInt64) {
        guard let lane = lanes[product], lane.generation == generation, case .soldOutLoading = lane.state else { return }
        lane.state = .selling
    }

    /// Stock was raised or limited: forget what was known about its sale.
    mutating func stockChanged(product: Int32) {
        let lane = self.lane(product)
        lane.generation &+= 1
        lane.state = .selling
    }

    private mutating func noteDeadline(_ deadline: NIODeadline?) {
        earliestDeadline = earliestDeadline.earlier(deadline)
    }

    /// Removes every queued item whose deadline is at or before `now`, for the caller to answer: a queued purchase is
    /// answered at its deadline even while no consumer can take it (its database unreachable or slow). Cheap when
    /// nothing can have expired yet.
    mutating func expire(now: NIODeadline) -> [Item] {
        guard let earliest = earliestDeadline, earliest <= now else { return [] }
        var expired: [Item] = []
        var earliestLeft: NIODeadline?
        for (_, lane) in lanes where !lane.queue.isEmpty {
            earliestLeft = earliestLeft.earlier(lane.queue.removeExpired(now: now, into: &expired))
        }
        earliestDeadline = earliestLeft
        guard !expired.isEmpty else { return [] }
        queuedCount -= expired.count
        // Lanes emptied by expiry leave the ready list.
        var stillReady = CircularBuffer<Int32>(initialCapacity: ready.count)
        for product in ready {
            if let lane = lanes[product], !lane.queue.isEmpty {
                stillReady.append(product)
            } else {
                lanes[product]?.scheduled = false
            }
        }
        ready = stillReady
        return expired
    }

    /// Empties every queue (shutdown without a database): the caller fails them.
    mutating func drainAll() -> [Item] {
        var all: [Item] = []
        while let batch = nextBatch() { all.append(contentsOf: batch.purchases) }
        return all
    }
}
