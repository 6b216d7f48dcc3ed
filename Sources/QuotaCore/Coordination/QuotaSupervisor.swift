import Logging
import QuotaContract
import ServiceLifecycle
import Synchronization
import Wire
import ZooKeeperClient

/// The background side of the quota service, as a `Service`: keeps the ZooKeeper session (a new one after an
/// expiry), holds the leader lock when it can, and as leader watches `edges/`: a joining edge gets its share (units
/// taken back from the others if needed); an edge whose node went away is asked for its units and, if it does not
/// answer, retired (its unsold units go back to the pool from the database's sold counts). Every few hundred
/// milliseconds it also settles each product (hands out the pool, takes back what a lowered limit left over).
///
/// A second quota service process waits for the lock; it still answers calls, and every write it makes is a
/// compare-and-set, so two at once cannot corrupt a quota, only retry.
final class QuotaSupervisor: Service, Sendable {
    private let coordinator: QuotaCoordinator
    private let advertisedAddress: @Sendable () -> String
    private let settleInterval: Duration
    private let logger: Logger
    private let edgesChanged = Atomic<Bool>(true)
    private let sessionExpired = Atomic<Bool>(false)
    private let leading = Atomic<Bool>(false)
    /// After a failed pass (ZooKeeper or the inventory unreachable, say): back off, and start again from the
    /// first delay after a pass that succeeds.
    static let retryDelay = Backoff(initial: .milliseconds(200), max: .seconds(2))

    init(
        coordinator: QuotaCoordinator, advertisedAddress: @escaping @Sendable () -> String,
        settleInterval: Duration = .milliseconds(500), logger: Logger
    ) {
        self.coordinator = coordinator
        self.advertisedAddress = advertisedAddress
        self.settleInterval = settleInterval
        self.logger = logger
    }

    var isLeader: Bool { leading.load(ordering: .relaxed) }
    private var zk: ZooKeeperClient { coordinator.store.zk }
    private var layout: QuotaLayout { coordinator.store.layout }

    func run() async throws {
        let events = zk.events()
        await withDiscardingTaskGroup { group in
            group.addTask { await self.consume(events) }
            group.addTask {
                await cancelWhenGracefulShutdown { await self.lead() }
                await self.zk.close()  // ends the event stream, and the consumer with it
            }
        }
    }

    private func consume(_ events: AsyncStream<ZooKeeperEvent>) async {
        for await event in events {
            switch event {
            case .childrenChanged(let path) where path == layout.edges:
                edgesChanged.store(true, ordering: .relaxed)
            case .deleted(let path) where path == layout.leader:
                edgesChanged.store(true, ordering: .relaxed)  // wakes a waiting standby
            case .session(.expired):
                sessionExpired.store(true, ordering: .relaxed)
            case .session(.connected):
                edgesChanged.store(true, ordering: .relaxed)  // re-read: events may have been missed
            default:
                break
            }
        }
    }

    /// Until cancelled: be the leader, or wait to become it.
    private func lead() async {
        var knownEdges: Set<String> = []
        var lastSettle = ContinuousClock.now - settleInterval
        var lastAttempt = ContinuousClock.now - .seconds(1)
        var delays = Self.retryDelay.makeIterator()
        while !Task.isCancelled {
            do {
                if sessionExpired.exchange(false, ordering: .relaxed) {
                    leading.store(false, ordering: .relaxed)
                    logger.warning("zookeeper session expired: opening a new one")
                    try await zk.reconnect()
                    edgesChanged.store(true, ordering: .relaxed)
                }
                // A standby tries again when the leader node goes (its watch fires) or once a second.
                if !isLeader && (edgesChanged.exchange(false, ordering: .relaxed) || ContinuousClock.now - lastAttempt >= .seconds(1)) {
                    lastAttempt = .now
                    if try await acquireLeadership() {
                        leading.store(true, ordering: .relaxed)
                        knownEdges = []
                        edgesChanged.store(true, ordering: .relaxed)
                        logger.info("leading: watching edges")
                        try await coordinator.store.ensureLayout()
                    }
                }
                if isLeader {
                    let edgeTrigger = edgesChanged.exchange(false, ordering: .relaxed)
                    if edgeTrigger || knownEdges.isEmpty {
                        let edges = Set(try await coordinator.store.edgeNames(watch: true))
                        let joined = edges.subtracting(knownEdges)
                        knownEdges = edges
                        if !joined.isEmpty {
                            logger.info("edges joined", metadata: ["edges": "\(joined.sorted())"])
                            try await forEachProduct { try await self.coordinator.round($0, .fill(joined), probe: .absent) }
                        }
                    }
                    if edgeTrigger || ContinuousClock.now - lastSettle >= settleInterval {
                        lastSettle = .now
                        try await forEachProduct { try await self.coordinator.round($0, .settle, probe: .absent) }
                        await coordinator.releaser.forgetIdle()
                    }
                }
                delays = Self.retryDelay.makeIterator()
            } catch is CancellationError {
                return
            } catch {
                let delay = delays.next()
                logger.warning("quota supervision failed; retrying", metadata: ["error": "\(error)", "delay": "\(delay)"])
                try? await Task.sleep(for: delay)
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// One product's failure (the inventory does not know it yet, say) does not hold up the others.
    private func forEachProduct(_ body: @Sendable (String) async throws -> Void) async throws {
        for product in try await coordinator.store.productIDs() {
            do {
                try await body(product)
            } catch let error as ZooKeeperError where error.isUnreachable {
                throw error
            } catch {
                logger.warning("rebalancing failed", metadata: ["product": "\(product)", "error": "\(error)"])
            }
        }
    }

    /// Creates the ephemeral `leader` node, or watches it when another process holds it.
    private func acquireLeadership() async throws -> Bool {
        // The node names the leader's address (how an operator, or a test, tells which process leads): not before
        // the server has bound.
        guard !advertisedAddress().isEmpty else { return false }
        do {
            try await zk.create(
                layout.leader, data: Array(advertisedAddress().utf8), mode: .ephemeral,
                acl: coordinator.store.access.quotaOwned, createParents: true)
            return true
        } catch let error as ZooKeeperError where error.code == .nodeExists {
            // Ours from before a lost connection (same session)? Otherwise wait for its deletion event.
            if let stat = try await zk.exists(layout.leader, watch: true) {
                return stat.ephemeralOwner == zk.sessionID
            }
            return false
        }
    }
}
