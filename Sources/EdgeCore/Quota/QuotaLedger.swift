// model: Sources/QuotaCore/Planning/QuotaProtocol.pml (take -> EDGE_FORWARD; giveBack -> settle; applyGrant ->
// EDGE_APPLY; release -> QS_RELEASE, QS_PROBE; suspend/vouch -> FENCE, vouch). Update both together.
// swift-atomics only for the product table's reference swap (`AtomicReference`): Synchronization has no atomic
// strong reference, and a lock there would put one on every take.
import Atomics
import FlashSaleClient
import NIOCore
import QuotaContract
import Synchronization

/// The edge's local quota: per product, the units the quota service granted this edge minus the units it used
/// and the units it handed back. The purchase path takes a unit here before it forwards an attempt, so the
/// inventory only ever sees as many attempts as there is stock granted to this edge.
///
/// One atomic per product and no lock on the hot path: the product table is an immutable snapshot swapped
/// atomically when a product is added, so concurrent purchases of different products never contend.
///
/// The ledger also says whose quota it is (the edge id and the ZooKeeper session that registered it: a release
/// meant for another edge is refused) and whether the edge may sell from it now: `suspend` stops every take when
/// the edge can no longer vouch that its quota is still its own (cut off from ZooKeeper past its session's safe
/// time), and hands back every unit not in use.
public final class QuotaLedger: Sendable {
    public enum Take: Equatable, Sendable {
        /// A unit is reserved for this attempt: forward it, and give it back if the inventory refuses.
        case taken
        /// Nothing left on this edge; more may be granted (ask the quota service).
        case dry
        /// The quota service said the whole product is sold out: answer SOLD_OUT at once.
        case soldOut
        /// No quota was ever granted for this product on this edge.
        case unknownProduct
        /// The edge is suspended (`suspend`): answer UNAVAILABLE, the client retries (elsewhere, or here later).
        case unavailable
    }

    private let table = ManagedAtomic(ProductTable(products: [:]))
    private let suspended = Atomic(false)
    /// Set by `suspendUntilVouched`: only `vouch` lifts the suspension.
    private let awaitingVouch = Atomic(false)
    private let holderID = Atomic<UInt32>(0)
    private let holderSession = Atomic<Int64>(0)
    /// The fence instant (`SessionGuard.fence`), as nanoseconds since `Self.epoch`; none until the agent sets one.
    private let fenceNanos = Atomic<Int64>(.max)
    private static let epoch = ContinuousClock.now
    /// Serializes writers of the table (adding products); readers never take it.
    private let tableWriters = Mutex(())

    public init() {}

    public func take(_ product: String) -> Take {
        guard let quota = self.table.load(ordering: .acquiring).products[product] else { return .unknownProduct }
        if self.suspended.load(ordering: .acquiring) { return .unavailable }
        return quota.take()
    }

    /// A unit taken for an attempt that bought nothing (ALREADY_PURCHASED, an error) goes back on the counter
    /// (and is handed back at once while suspended).
    public func giveBack(_ product: String) {
        guard let quota = self.table.load(ordering: .acquiring).products[product] else { return }
        quota.giveBack()
        if self.suspended.load(ordering: .acquiring) { _ = quota.release(1) }
    }

    /// Applies the total granted to this edge, as read from its quota node. Grants only grow; a smaller or
    /// equal total (a stale or repeated watch) changes nothing, and so does one out of 0...maxUnits (a node no
    /// quota service wrote). Returns the units added (handed back at once while suspended).
    @discardableResult
    public func applyGrant(_ product: String, granted: Int64) -> Int64 {
        guard granted <= QuotaLayout.maxUnits else { return 0 }
        let quota = self.quota(for: product)
        let added = quota.applyGrant(granted)
        if added > 0 && self.suspended.load(ordering: .acquiring) { _ = quota.release(Int64.max) }
        return added
    }

    // MARK: - Whose quota, and whether it may be sold now

    /// The edge this quota was granted to (0 until registered).
    public var edgeID: UInt32 { self.holderID.load(ordering: .acquiring) }

    /// The ZooKeeper session of the edge's registration now (0 until registered).
    public var session: Int64 { self.holderSession.load(ordering: .acquiring) }

    /// Set when the edge (re-)registers: its id never changes, its session does after an expiry.
    public func setHolder(edgeID: UInt32, session: Int64) {
        self.holderID.store(edgeID, ordering: .releasing)
        self.holderSession.store(session, ordering: .releasing)
    }

    public var isSuspended: Bool { self.suspended.load(ordering: .acquiring) }

    /// When the edge will fence itself unless ZooKeeper answers again (moved on by every answer).
    public func setFence(_ instant: ContinuousClock.Instant) {
        let (seconds, attoseconds) = (instant - Self.epoch).components
        self.fenceNanos.store(seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000, ordering: .releasing)
    }

    /// How long a forward may still run: it must end before the fence (the model's T1), so that nothing this edge
    /// forwarded can commit after its session may have expired and its units been granted again. Nil until the
    /// edge has heard from ZooKeeper.
    public func timeToFence(now: ContinuousClock.Instant = .now) -> TimeAmount? {
        let fence = self.fenceNanos.load(ordering: .acquiring)
        guard fence != .max else { return nil }
        let (seconds, attoseconds) = (now - Self.epoch).components
        return .nanoseconds(fence &- (seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000))
    }

    /// Stops every take (`.unavailable`) and hands back every unit not in use; units that come back while
    /// suspended are handed back too. Returns the units handed back now.
    @discardableResult
    public func suspend() -> Int64 {
        self.suspended.store(true, ordering: .sequentiallyConsistent)
        return self.releaseEverything()
    }

    /// Takes work again (the edge is connected again with its session, registered and re-read its quotas); not
    /// while a vouch is awaited.
    public func resume() {
        guard !self.awaitingVouch.load(ordering: .sequentiallyConsistent) else { return }
        self.suspended.store(false, ordering: .sequentiallyConsistent)
    }

    /// After a session expiry: suspended, with no session, until the quota service has taken the edge's new one.
    /// It may have retired the allotment meanwhile (then it never revives it, and no more units may be sold here);
    /// a release meant for this edge after it registered again (`vouch`) says it did not.
    @discardableResult
    public func suspendUntilVouched() -> Int64 {
        self.awaitingVouch.store(true, ordering: .sequentiallyConsistent)
        self.holderSession.store(0, ordering: .sequentiallyConsistent)
        return self.suspend()
    }

    /// A release meant for this edge arrived: if it came after the edge registered again (it has a session), the
    /// quota service holds an allotment for it that is not retired: sell again. Returns the session the edge sells
    /// under now (0: none yet), read once, so that the answer names exactly the session this call vouched for.
    @discardableResult
    public func vouch() -> Int64 {
        let session = self.session
        guard session != 0 else { return 0 }
        if self.awaitingVouch.exchange(false, ordering: .sequentiallyConsistent) {
            self.suspended.store(false, ordering: .sequentiallyConsistent)
        }
        return session
    }

    /// Hands back every unit not in use, of every product. Returns how many.
    @discardableResult
    public func releaseEverything() -> Int64 {
        self.table.load(ordering: .acquiring).products.values.reduce(Int64(0)) { $0 &+ $1.release(Int64.max) }
    }

    /// Hands back up to `maxUnits` not yet used (the quota service reclaiming them). Returns what was released.
    public func release(_ product: String, maxUnits: Int64) -> Int64 {
        guard maxUnits > 0, let quota = self.table.load(ordering: .acquiring).products[product] else { return 0 }
        return quota.release(maxUnits)
    }

    /// The quota service's word that nothing is left anywhere; cleared by the next grant that adds units.
    public func markSoldOut(_ product: String) {
        self.quota(for: product).soldOut.store(true, ordering: .releasing)
    }

    public struct Usage: Equatable, Sendable {
        public var product: String
        public var granted: Int64
        public var used: Int64
        public var released: Int64
        public var available: Int64
    }

    /// What this edge reports to the quota service (in its registration node).
    public func usage() -> [Usage] {
        self.table.load(ordering: .acquiring).products.map { product, quota in
            Usage(
                product: product,
                granted: quota.granted.load(ordering: .relaxed),
                used: quota.used.load(ordering: .relaxed),
                released: quota.released.load(ordering: .relaxed),
                available: quota.available.load(ordering: .relaxed))
        }.sorted { $0.product < $1.product }
    }

    public func usage(of product: String) -> Usage? {
        self.usage().first { $0.product == product }
    }

    private func quota(for product: String) -> ProductQuota {
        if let quota = self.table.load(ordering: .acquiring).products[product] { return quota }
        return self.tableWriters.withLock { _ in
            let current = self.table.load(ordering: .acquiring)
            if let quota = current.products[product] { return quota }
            let quota = ProductQuota()
            var products = current.products
            products[product] = quota
            self.table.store(ProductTable(products: products), ordering: .releasing)
            return quota
        }
    }
}

private final class ProductTable: AtomicReference, Sendable {
    let products: [String: ProductQuota]
    init(products: [String: ProductQuota]) { self.products = products }
}

/// One product's counters. `available` is the only one the hot path decrements; the others are for reporting.
/// Invariant once every operation has returned: available == granted - used - released.
private final class ProductQuota: Sendable {
    let available = Atomic<Int64>(0)
    let granted = Atomic<Int64>(0)
    let used = Atomic<Int64>(0)
    let released = Atomic<Int64>(0)
    let soldOut = Atomic<Bool>(false)

    func take() -> QuotaLedger.Take {
        var current = self.available.load(ordering: .relaxed)
        while current > 0 {
            let (exchanged, original) = self.available.weakCompareExchange(
                expected: current, desired: current - 1, ordering: .acquiringAndReleasing)
            if exchanged {
                self.used.wrappingAdd(1, ordering: .relaxed)
                return .taken
            }
            current = original
        }
        return self.soldOut.load(ordering: .acquiring) ? .soldOut : .dry
    }

    func giveBack() {
        self.used.wrappingSubtract(1, ordering: .relaxed)
        self.available.wrappingAdd(1, ordering: .acquiringAndReleasing)
    }

    func applyGrant(_ newTotal: Int64) -> Int64 {
        var old = self.granted.load(ordering: .acquiring)
        while newTotal > old {
            let (exchanged, original) = self.granted.compareExchange(
                expected: old, desired: newTotal, ordering: .acquiringAndReleasing)
            if exchanged {
                self.available.wrappingAdd(newTotal - old, ordering: .acquiringAndReleasing)
                self.soldOut.store(false, ordering: .releasing)
                return newTotal - old
            }
            old = original
        }
        return 0
    }

    func release(_ maxUnits: Int64) -> Int64 {
        var current = self.available.load(ordering: .relaxed)
        while current > 0 {
            let units = min(current, maxUnits)
            let (exchanged, original) = self.available.weakCompareExchange(
                expected: current, desired: current - units, ordering: .acquiringAndReleasing)
            if exchanged {
                self.released.wrappingAdd(units, ordering: .relaxed)
                return units
            }
            current = original
        }
        return 0
    }
}
