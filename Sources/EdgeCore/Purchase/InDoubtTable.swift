// model: Sources/QuotaCore/Planning/QuotaProtocol.pml (in_doubt, lookup, settle: one order keeps one unit, as
// `kept` does here; EDGE_RESOLVE). Update both together.
import Proto
import Wire

/// What identifies one purchase to the edge: a request id bound to its product and buyer. A retry naming another
/// product or user is another purchase (the inventory refuses the reuse), so it never claims this one's unit.
struct PurchaseKey: Hashable, Sendable {
    var requestID: UInt64
    var productID: String
    var userID: UInt64

    init(_ request: PurchaseRequest) {
        self.requestID = request.requestId
        self.productID = request.productId
        self.userID = request.userId
    }
}

/// What becomes of the unit a forward (or the in-doubt attempt a lookup asked about) took.
enum UnitFate: Equatable, Sendable {
    /// An order of this edge's own came of it: the unit stays used.
    case sold
    /// Nothing was bought with it: back on the counter.
    case giveBack
    /// Nobody knows yet: keep it and ask the inventory later.
    case inDoubt
}

/// The edge's purchases that hold a unit, from the moment a forward takes one until its outcome is known: in flight
/// (`forwarding`), or in doubt (the answer never came) and waiting for a lookup. Pure: inputs in, decisions out; the
/// `InDoubtResolver` does the I/O and the timers.
///
/// Every entry holds exactly one unit, and a key has at most one entry: one owner per purchase. So a second forward
/// of a key already in flight is refused before it takes a unit (it could only duplicate the first one's
/// bookkeeping), a retry of a key in doubt takes the held unit over instead of a new one, and a key has at most one
/// lookup outstanding however often the client retries. The table is capped; past the cap new forwards are refused.
struct InDoubtTable {
    typealias Instant = ContinuousClock.Instant

    struct Limits: Sendable {
        /// Entries (in flight plus in doubt) at most; new forwards are refused past it.
        var capacity: Int = 10_000
        /// Lookups outstanding at once, over every key: when the inventory comes back it is not hit by all at once.
        var lookupsInFlight: Int = 256
        /// Before the first lookup: long enough for a purchase still queued or committing to settle.
        var settle: Duration = .seconds(1)
        /// Between lookups that failed (the inventory still unreachable).
        var backoff = Backoff(initial: .seconds(1), max: .seconds(10))
        /// Lookups due within this window of one another go out together (the inventory batches them).
        var batchWindow: Duration = .milliseconds(20)
    }

    enum State: Equatable {
        case forwarding
        case waiting(due: Instant)
        case lookingUp
    }

    struct Entry {
        /// As forwarded (with this edge's id).
        var request: PurchaseRequest
        /// Changes each time the entry changes hands, so a lookup's late answer never settles a later forward.
        var generation: UInt64
        var state: State
        var backoff: Backoff.Iterator
        /// A lookup of this key is on its way (perhaps of an older generation): never two at once.
        var lookupOutstanding = false
    }

    /// A lookup to send: its answer comes back to `lookupAnswered` with the same key and generation.
    struct Lookup: Equatable {
        var key: PurchaseKey
        var generation: UInt64
        var request: PurchaseRequest
    }

    enum Claim: Equatable {
        /// The held unit is the caller's now: forward with it.
        case claimed(generation: UInt64)
        /// A forward of this purchase is on its way: refuse the attempt without a unit.
        case inFlight
        /// Not held here.
        case none
    }

    enum Reserve: Equatable {
        /// The caller's unit is tracked from now: forward.
        case reserved(generation: UInt64)
        /// Held in doubt meanwhile: give the new unit back and forward with the held one.
        case claimed(generation: UInt64)
        /// Give the unit back and refuse (UNAVAILABLE).
        case inFlight
        case full
    }

    enum LookupEnd: Equatable {
        /// Settled: remove done; apply the fate to the unit.
        case resolved(UnitFate)
        /// Still unknown: asked again after a backoff.
        case later
        /// Claimed or settled meanwhile: the answer is not about the unit held now.
        case stale
    }

    let limits: Limits
    private(set) var entries: [PurchaseKey: Entry] = [:]
    /// Entries in doubt (waiting or looking up), for `edge.Stats` and the purchase path's lock-free check.
    private(set) var heldCount = 0
    private(set) var lookupsOutstanding = 0
    private var nextGeneration: UInt64 = 1
    /// Purchases whose order kept one of this edge's units. One order uses one unit: an answer naming that order
    /// again (a repeat of a bought request id that went in doubt, then was looked up or replayed) keeps no second
    /// unit. Found by the model (QuotaProtocol.pml, BUG_MADE_HERE_BY_EDGE_ID). At most one entry per unit this edge
    /// was granted, so bounded by its quota.
    private(set) var kept: Set<PurchaseKey> = []

    init(limits: Limits = Limits()) {
        self.limits = limits
    }

    var count: Int { entries.count }
    var isFull: Bool { entries.count >= limits.capacity }

    private mutating func generation() -> UInt64 {
        defer { nextGeneration &+= 1 }
        return nextGeneration
    }

    /// An attempt for a key held in doubt takes its unit over (whether or not it says `retry`: it is the same
    /// purchase, and a second unit for it could be kept twice).
    mutating func claim(_ key: PurchaseKey) -> Claim {
        guard var entry = entries[key] else { return .none }
        if entry.state == .forwarding { return .inFlight }
        heldCount -= 1
        entry.state = .forwarding
        entry.generation = generation()
        entries[key] = entry
        return .claimed(generation: entry.generation)
    }

    /// The caller took a unit for `request` and wants to forward it.
    mutating func reserve(_ request: PurchaseRequest) -> Reserve {
        let key = PurchaseKey(request)
        switch claim(key) {
        case .claimed(let generation): return .claimed(generation: generation)
        case .inFlight: return .inFlight
        case .none: break
        }
        guard !isFull else { return .full }
        let generation = generation()
        entries[key] = Entry(
            request: request, generation: generation, state: .forwarding, backoff: limits.backoff.makeIterator())
        return .reserved(generation: generation)
    }

    /// A forward ended. `inDoubt`: its unit is held until a lookup settles it; otherwise the entry goes. Returns the
    /// fate the caller applies: `sold` becomes `giveBack` when that order already kept a unit here.
    /// `request` is what was forwarded (the lookup asks about exactly that).
    @discardableResult
    mutating func forwardEnded(_ request: PurchaseRequest, generation: UInt64, fate: UnitFate, now: Instant) -> UnitFate {
        let key = PurchaseKey(request)
        let fate = keepOnce(key, fate)
        guard var entry = entries[key], entry.generation == generation, entry.state == .forwarding else { return fate }
        guard fate == .inDoubt else {
            entries[key] = nil
            return fate
        }
        entry.request = request
        entry.state = .waiting(due: now + limits.settle)
        entries[key] = entry
        heldCount += 1
        return fate
    }

    /// `sold` once per order: the first answer naming it keeps the unit, any later one gives its unit back.
    private mutating func keepOnce(_ key: PurchaseKey, _ fate: UnitFate) -> UnitFate {
        guard fate == .sold else { return fate }
        return kept.insert(key).inserted ? .sold : .giveBack
    }

    /// Lookups due by `now` (within the batch window), as many as the in-flight bound allows; each is marked sent.
    mutating func takeDue(now: Instant) -> [Lookup] {
        var room = limits.lookupsInFlight - lookupsOutstanding
        guard room > 0 else { return [] }
        let horizon = now + limits.batchWindow
        var due: [Lookup] = []
        for (key, entry) in entries where !entry.lookupOutstanding {
            guard case .waiting(let at) = entry.state, at <= horizon else { continue }
            due.append(Lookup(key: key, generation: entry.generation, request: entry.request))
            room -= 1
            if room == 0 { break }
        }
        for lookup in due {
            entries[lookup.key]?.state = .lookingUp
            entries[lookup.key]?.lookupOutstanding = true
        }
        lookupsOutstanding += due.count
        return due
    }

    /// When the next lookup falls due; nil when none can (nothing waits, or the in-flight bound is reached: an
    /// answer frees room).
    func nextDue() -> Instant? {
        guard lookupsOutstanding < limits.lookupsInFlight else { return nil }
        var next: Instant?
        for entry in entries.values where !entry.lookupOutstanding {
            if case .waiting(let at) = entry.state, next.map({ at < $0 }) ?? true { next = at }
        }
        return next
    }

    /// A lookup came back; `fate` is what its answer says of the attempt's unit (`InDoubtTable.fate(ofLookup:)`).
    mutating func lookupAnswered(_ key: PurchaseKey, generation: UInt64, fate: UnitFate, now: Instant) -> LookupEnd {
        lookupsOutstanding -= 1
        guard var entry = entries[key] else { return .stale }
        entry.lookupOutstanding = false
        guard entry.generation == generation, entry.state == .lookingUp else {
            entries[key] = entry
            return .stale
        }
        guard fate == .inDoubt else {
            entries[key] = nil
            heldCount -= 1
            return .resolved(keepOnce(key, fate))
        }
        entry.state = .waiting(due: now + entry.backoff.next())
        entries[key] = entry
        return .later
    }

    // MARK: - What an answer says

    /// A forward's answer. `carriesInDoubtUnit`: the unit is one an earlier forward of the same purchase left in
    /// doubt, so a replayed order made through this edge is that forward's order, and an answer that says nothing
    /// about the purchase leaves it in doubt still.
    static func fate(
        ofForward result: Result<PurchaseResponse, RPCError>, carriesInDoubtUnit: Bool, edgeID: UInt32
    ) -> UnitFate {
        switch result {
        case .success(let response):
            let madeHere = response.outcome == .purchased
                && (!response.replayed || (carriesInDoubtUnit && response.edgeId == edgeID))
            return madeHere ? .sold : .giveBack
        case .failure(let error):
            // The request id belongs to another product or buyer: no attempt of this purchase can have bought.
            if error.code == .failedPrecondition { return .giveBack }
            if carriesInDoubtUnit { return .inDoubt }
            if error.wasNotSent { return .giveBack }
            return error.code.outcomeMayBeUnknown ? .inDoubt : .giveBack
        }
    }

    /// A lookup's answer (lookups are definitive: an id without an order is closed, so none can commit later). The
    /// unit stays used only if the order is this edge's own: a retry through another edge may have made it.
    static func fate(ofLookup result: Result<PurchaseResponse, RPCError>, edgeID: UInt32) -> UnitFate {
        switch result {
        case .success(let response):
            return response.outcome == .purchased && response.edgeId == edgeID ? .sold : .giveBack
        case .failure(let error):
            switch error.code {
            case .failedPrecondition, .invalidArgument, .notFound: return .giveBack
            default: return .inDoubt
            }
        }
    }
}
