// model: Sources/QuotaCore/Planning/QuotaProtocol.pml (in_doubt, lookup, settle). Update both together.
import Logging
import NIOCore
import Proto
import ServiceLifecycle
import Synchronization
import Wire

/// Forwarded purchases whose answer never came (timeout, dropped connection): the order may or may not have
/// committed. Each keeps its quota unit until the inventory says which (a lookup, which is definitive: it closes an
/// id without an order): no order, the unit goes back on the counter; an order, it stays used. So a fault strands
/// no stock on a live edge.
///
/// The decisions are `InDoubtTable`'s; this is its driver, a `Service` of the edge: one loop sends the lookups that
/// fall due, in batches, and ends with the service group (SIGTERM). The purchase path reserves, claims and ends
/// forwards through it on the event loops.
final class InDoubtResolver: Service, Sendable {
    private let ledger: QuotaLedger
    private let forwarder: any PurchaseForwarder
    private let logger: Logger
    private let lookupTimeout: TimeAmount
    /// How often the loop looks at the table while something is held (lookups are batched per look).
    private let tick: Duration
    private let table: Mutex<InDoubtTable>
    /// Mirrors of the table's counts, read without the lock on every attempt.
    private let held = Atomic<Int>(0)
    private let entries = Atomic<Int>(0)
    private let idle = IdleSignal()
    private let capacity: Int

    init(
        ledger: QuotaLedger, forwarder: any PurchaseForwarder, limits: InDoubtTable.Limits = .init(), lookupTimeout: TimeAmount = .seconds(5), tick: Duration = .milliseconds(50),
        logger: Logger
    ) {
        self.ledger = ledger
        self.forwarder = forwarder
        self.lookupTimeout = lookupTimeout
        self.tick = tick
        self.logger = logger
        self.table = Mutex(InDoubtTable(limits: limits))
        self.capacity = limits.capacity
    }

    /// Purchases held in doubt now.
    var pendingCount: Int { held.load(ordering: .relaxed) }
    /// Purchases holding a unit (in flight or in doubt).
    var trackedCount: Int { entries.load(ordering: .relaxed) }
    /// Past the cap: new forwards are refused before they take a unit. Lock-free (the reservation checks again).
    var isFull: Bool { trackedCount >= capacity }

    private func update<T>(_ body: (inout InDoubtTable) -> T) -> T {
        table.withLock { table in
            let result = body(&table)
            held.store(table.heldCount, ordering: .relaxed)
            entries.store(table.count, ordering: .relaxed)
            return result
        }
    }

    /// See `InDoubtTable.claim`. Lock-free when nothing is held, the common case (a purchase that goes in doubt
    /// just after this check is still found when the attempt reserves its unit).
    func claim(_ request: PurchaseRequest) -> InDoubtTable.Claim {
        guard pendingCount > 0 else { return .none }
        return update { $0.claim(PurchaseKey(request)) }
    }

    func reserve(_ request: PurchaseRequest) -> InDoubtTable.Reserve {
        update { $0.reserve(request) }
    }

    /// A forward of `request` (as sent) ended with `fate`; gives the unit back if the table says so (see
    /// `InDoubtTable.forwardEnded`), under the lock like a lookup's answer, so the counts never run ahead of it.
    func forwardEnded(_ request: PurchaseRequest, generation: UInt64, fate: UnitFate) {
        let wasIdle = update { table -> Bool in
            let before = table.heldCount
            let settled = table.forwardEnded(request, generation: generation, fate: fate, now: .now)
            if settled == .giveBack { self.ledger.giveBack(request.productId) }
            return before == 0 && table.heldCount > 0
        }
        if wasIdle { idle.wake() }
    }

    // MARK: - Service

    /// Until the service group shuts down (or the task is cancelled). Entries still held then keep their units:
    /// the edge's registration goes with it, and the quota service counts a gone edge's units from the orders.
    func run() async throws {
        await cancelWhenGracefulShutdown {
            await self.resolveUntilCancelled()
        }
    }

    private func resolveUntilCancelled() async {
        while !Task.isCancelled {
            let (due, next, busy) = update { table in
                let due = table.takeDue(now: .now)
                return (due, table.nextDue(), table.heldCount > 0 || table.lookupsOutstanding > 0)
            }
            for lookup in due { send(lookup) }
            if !busy {
                await idle.wait()  // nothing held: until an attempt goes in doubt
            } else {
                let now = ContinuousClock.now
                let wake = min(next ?? now + tick, now + tick)
                try? await Task.sleep(until: max(wake, now + .milliseconds(1)), clock: .continuous)
            }
        }
    }

    private func send(_ lookup: InDoubtTable.Lookup) {
        var request = lookup.request
        request.lookupOnly = true
        forwarder.forward(request, timeout: lookupTimeout).whenComplete { result in
            let answer = result.mapError(RPCError.wrapping)
            let fate = InDoubtTable.fate(ofLookup: answer, edgeID: lookup.request.edgeId)
            // The unit goes back under the lock, before the held count drops: whoever reads no purchase in doubt
            // (stats, a test) also reads the unit back. `giveBack` is two atomics and never calls back here.
            let end = self.update { table in
                let end = table.lookupAnswered(lookup.key, generation: lookup.generation, fate: fate, now: .now)
                if case .resolved(.giveBack) = end { self.ledger.giveBack(lookup.key.productID) }
                return end
            }
            switch end {
            case .resolved:
                break
            case .later:
                self.logger.debug("in-doubt purchase not resolved yet", metadata: ["request": "\(lookup.key.requestID)"])
            case .stale:
                break
            }
        }
    }
}

/// Wakes the resolver's loop from its idle wait (nothing held). One waiter, the loop; cancellation ends the wait.
private final class IdleSignal: Sendable {
    private struct State {
        var woken = false
        var cancelled = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    func wake() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            defer { state.waiter = nil }
            if state.waiter == nil { state.woken = true }
            return state.waiter
        }
        waiter?.resume()
    }

    func wait() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if state.woken || state.cancelled {
                        state.woken = false
                        return true
                    }
                    state.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                state.cancelled = true
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }
}
