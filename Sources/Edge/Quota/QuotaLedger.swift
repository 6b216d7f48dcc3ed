// model: Sources/QuotaService/Planning/QuotaProtocol.pml (take -> EDGE_FORWARD; giveBack -> settle; applyGrant ->
// EDGE_APPLY; release -> QS_RELEASE, QS_PROBE; suspend/vouch -> FENCE, vouch). Update both together.
import Atomics
import NIOConcurrencyHelpers

/// The edge's local quota: per product, the units the quota service granted this edge minus the units it used
/// and the units it handed back. The purchase path takes a unit here before it forwards an attempt, so the
/// inventory only ever sees as many attempts as there is stock granted to this edge.
///
/// One atomic per product and no lock on the hot path: the product table is an immutable snapshot swapped
/// atomically when a product is added, so concurrent purchases of different products never contend.
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
    }

    private let table = ManagedAtomic(ProductTable(products: [:]))
    /// Serializes writers of the table (adding products); readers never take it.
    private let tableWriters = NIOLock()

    public init() {}

    public func take(_ product: String) -> Take {
        guard let quota = self.table.load(ordering: .acquiring).products[product] else { return .unknownProduct }
        return quota.take()
    }

    /// A unit taken for an attempt that bought nothing (ALREADY_PURCHASED, an error) goes back on the counter.
    public func giveBack(_ product: String) {
        self.table.load(ordering: .acquiring).products[product]?.giveBack()
    }

    /// Applies the total granted to this edge, as read from its quota node. Grants only grow; a smaller or
    /// equal total (a stale or repeated watch) changes nothing. Returns the units added.
    @discardableResult
    public func applyGrant(_ product: String, granted: Int64) -> Int64 {
        self.quota(for: product).applyGrant(granted)
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
        return self.tableWriters.withLock {
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
    let available = ManagedAtomic<Int64>(0)
    let granted = ManagedAtomic<Int64>(0)
    let used = ManagedAtomic<Int64>(0)
    let released = ManagedAtomic<Int64>(0)
    let soldOut = ManagedAtomic<Bool>(false)

    func take() -> QuotaLedger.Take {
        var current = self.available.load(ordering: .relaxed)
        while current > 0 {
            let (exchanged, original) = self.available.weakCompareExchange(
                expected: current, desired: current - 1, ordering: .acquiringAndReleasing)
            if exchanged {
                self.used.wrappingIncrement(ordering: .relaxed)
                return .taken
            }
            current = original
        }
        return self.soldOut.load(ordering: .acquiring) ? .soldOut : .dry
    }

    func giveBack() {
        self.used.wrappingDecrement(ordering: .relaxed)
        self.available.wrappingIncrement(ordering: .acquiringAndReleasing)
    }

    func applyGrant(_ newTotal: Int64) -> Int64 {
        var old = self.granted.load(ordering: .acquiring)
        while newTotal > old {
            let (exchanged, original) = self.granted.compareExchange(
                expected: old, desired: newTotal, ordering: .acquiringAndReleasing)
            if exchanged {
                self.available.wrappingIncrement(by: newTotal - old, ordering: .acquiringAndReleasing)
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
                self.released.wrappingIncrement(by: units, ordering: .relaxed)
                return units
            }
            current = original
        }
        return 0
    }
}
