import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// When a name the catalog does not know is worth a reload of the catalog from the database. With several
/// inventory replicas a product may have been created on another one after this one loaded its catalog, so a miss
/// is not the end: the database (the truth) is asked again. Reloads are coalesced, one at a time and at most one per
/// `minInterval` (a caller naming garbage cannot make the database do more), and a bounded number of callers wait.
/// A caller that missed while a reload was already reading waits for the next one (the product may be newer than
/// that read). Pure: `CatalogRefresher` drives it.
struct CatalogMisses<Waiter> {
    enum Action: Equatable {
        /// Reload now.
        case load
        /// A reload is running or due: wait for it.
        case wait
        /// Too many callers wait already: answer NOT_FOUND now.
        case refuse
    }

    let minInterval: TimeAmount
    let maxWaiting: Int
    private(set) var loading = false
    private var lastLoadStarted: NIODeadline?
    /// Waiting for the reload running now.
    private var current: [Waiter] = []
    /// Waiting for the next reload.
    private var next: [Waiter] = []

    init(minInterval: TimeAmount = .milliseconds(100), maxWaiting: Int = 10_000) {
        self.minInterval = minInterval
        self.maxWaiting = maxWaiting
    }

    var waitingCount: Int { current.count + next.count }

    mutating func miss(_ waiter: Waiter) -> Action {
        guard waitingCount < maxWaiting else { return .refuse }
        next.append(waiter)
        return loading || next.count > 1 ? .wait : .load
    }

    /// When the reload asked for may start (it is spaced `minInterval` from the last one's start).
    mutating func start(now: NIODeadline) -> TimeAmount {
        let due = lastLoadStarted.map { $0 + minInterval } ?? now
        let start = max(due, now)
        lastLoadStarted = start
        loading = true
        current = next
        next = []
        return start - now
    }

    /// The reload ended: its waiters are answered now; true in `again` when others missed meanwhile.
    mutating func loaded() -> (answer: [Waiter], again: Bool) {
        loading = false
        let answer = current
        current = []
        return (answer, !next.isEmpty)
    }

    /// No reload will come (shutdown): every waiter, to answer from what is known.
    mutating func drain() -> [Waiter] {
        defer {
            current = []
            next = []
            loading = false
        }
        return current + next
    }
}

/// What a miss learns.
enum CatalogLookup: Sendable, Equatable {
    case found(CatalogEntry)
    /// The database does not know the name either.
    case unknown
    /// The database could not be read: the product may exist.
    case unavailable
}

/// Reloads the catalog from the main database when a name misses (`CatalogMisses` decides when), as a `Service`
/// of the inventory's group: misses are handed to its loop, which reloads and answers each waiter with the entry
/// (`unknown` when the database does not know it either). While it is not running a miss is `unknown` at once, as
/// with one replica.
final class CatalogRefresher: Service, Sendable {
    typealias Waiter = @Sendable (CatalogLookup) -> Void

    private struct State {
        var misses = CatalogMisses<(name: String, answer: Waiter)>()
        var running = false
        var wake: AsyncStream<Void>.Continuation?
    }

    private let catalog: ProductCatalog
    private let load: @Sendable () async throws -> [CatalogEntry]
    private let logger: Logger
    private let state = Mutex(State())

    init(catalog: ProductCatalog, logger: Logger, load: @escaping @Sendable () async throws -> [CatalogEntry]) {
        self.catalog = catalog
        self.load = load
        self.logger = logger
    }

    /// Answers `answer` with the entry of `name` once the catalog was reloaded (at once when it is known now).
    func resolve(_ name: String, answer: @escaping Waiter) {
        if let entry = catalog.entry(named: name) {
            answer(.found(entry))
            return
        }
        let wake = state.withLock { state -> AsyncStream<Void>.Continuation?? in
            guard state.running else { return .none }
            switch state.misses.miss((name, answer)) {
            case .load: return .some(state.wake)
            case .wait: return .some(nil)
            case .refuse: return .none
            }
        }
        switch wake {
        case .none: answer(.unknown)
        case .some(let wake?): wake.yield()
        case .some(nil): break
        }
    }

    func resolve(_ name: String) async -> CatalogLookup {
        await withCheckedContinuation { continuation in resolve(name) { continuation.resume(returning: $0) } }
    }

    func run() async throws {
        let (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        state.withLock {
            $0.running = true
            $0.wake = wake
        }
        await cancelWhenGracefulShutdown {
            for await _ in wakes {
                var again = true
                while again {
                    let delay = self.state.withLock { $0.misses.start(now: .now()) }
                    if delay > .zero { try? await Task.sleep(for: .nanoseconds(delay.nanoseconds)) }
                    var failed = false
                    do {
                        for entry in try await self.load() { self.catalog.insert(entry) }
                    } catch {
                        failed = true
                        self.logger.warning("catalog reload failed", metadata: ["error": "\(error)"])
                    }
                    let (answer, more) = self.state.withLock { $0.misses.loaded() }
                    for waiter in answer { waiter.answer(self.lookup(waiter.name, reloadFailed: failed)) }
                    again = more
                }
            }
        }
        // Stopped: whoever still waits is answered from what is known.
        let left = state.withLock { state -> [(name: String, answer: Waiter)] in
            state.running = false
            state.wake = nil
            return state.misses.drain()
        }
        for waiter in left { waiter.answer(lookup(waiter.name, reloadFailed: false)) }
    }

    private func lookup(_ name: String, reloadFailed: Bool) -> CatalogLookup {
        if let entry = catalog.entry(named: name) { return .found(entry) }
        return reloadFailed ? .unavailable : .unknown
    }
}

extension CatalogEntry {
    init(row: ProductDatabase.CatalogRow) {
        self.init(key: row.key, name: row.name, role: row.role)
    }
}
