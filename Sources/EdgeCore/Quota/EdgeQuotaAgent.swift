// model: Sources/QuotaCore/Planning/QuotaProtocol.pml (apply(quota:), askForMore -> EDGE_APPLY; edge.ReleaseQuota
// -> QS_RELEASE, QS_PROBE; fence and reconnect (recoverFromExpiry) -> FENCE, HEAL, vouch). Update both together.
import FlashSaleClient
import Logging
import NIOCore
import Proto
import QuotaContract
import ServiceKit
import ServiceLifecycle
import Synchronization
import Wire
import ZooKeeperClient

/// The edge's side of the quotas, as a `Service`: registers the edge in ZooKeeper (`edges/edge-NNNNNNNNNN`,
/// ephemeral, with its address and usage), watches its quota node of every product and `config/shed`, and applies
/// them to the `QuotaLedger` and the `LoadShedder` live. `EdgeQuotaWatch` decides which call comes next; this is its
/// driver (the ZooKeeper calls, the ledger, the log), plus the usage reports, the refills (`requestMore`, through
/// the quota clients it is given) and the session guard. The guard's decisions are `SessionGuard`'s, and it runs
/// beside the watch, not as one of its inputs: the watch's driver waits on one ZooKeeper call at a time, and the
/// guard must suspend the ledger precisely while such a call hangs.
///
/// Cut off from ZooKeeper, the ledger serves what was granted while the node is surely still ours: past the session
/// timeout minus a margin since ZooKeeper last answered (`SessionGuard`) it is suspended (takes answer UNAVAILABLE,
/// unused units are handed back) until the edge has registered again and re-read its quotas. After an expiry the
/// node is created again under the same name, and the edge sells again only once the quota service names it in a
/// ReleaseQuota (a retired allotment gets none: it is never revived).
public final class EdgeQuotaAgent: Service, QuotaRefiller, Sendable {
    public let layout: QuotaLayout
    private let resolveAddress: @Sendable () async throws -> String
    private let advertised = Mutex("")
    private let zooKeeper: String
    private let access: ZooKeeperAccess
    let ledger: QuotaLedger
    private let shedder: LoadShedder
    /// The quota services this edge may ask for more (`--quota a:1,b:2`): all answer GrantMore (every write is a
    /// compare-and-set in ZooKeeper), so a refill goes to the one that last answered, and to the next in the list
    /// once that one cannot be reached (a killed leader: its standby takes over, and this edge with it).
    private let quotas: [QuotaClient]
    private let askedQuota = Atomic<Int>(0)
    private var quota: QuotaClient { quotas[askedQuota.load(ordering: .relaxed) % quotas.count] }
    private let logger: Logger
    private let sessionTimeout: Duration
    private let reportInterval: Duration

    /// Our node's name once registered. Kept for the life of the process: see `register`.
    private let name = Mutex<String?>(nil)
    private let registration = Settled<UInt32>()
    private let sharedRefills: SharedRefills
    /// The ZooKeeper client of the running session, for the metrics' session state.
    private let client = Mutex<ZooKeeperClient?>(nil)
    /// When a call that ZooKeeper answered was sent: the server heard from our session at or after it.
    private let lastHeard = Mutex(ContinuousClock.now)

    /// - Parameters:
    ///   - zooKeeper: connection string, `host:port[,host:port...]`.
    ///   - root: the flash sale's root node (default `/flashsale`).
    ///   - address: `host:port` where this edge answers (purchases and `edge.ReleaseQuota`); asked for once, when
    ///     `run` starts, so a server bound to port 0 can tell it (`{ try await server.localAddress() ... }`).
    ///   - quotas: clients of the quota services this edge asks for more (`quota.GrantMore`; at least one; see
    ///     `quotaClients`). The agent shuts them down when `run` ends.
    ///   - access: the edges' ZooKeeper identity: with a secret, the edge authenticates, registers with an ACL and
    ///     never creates the layout (the quota service does).
    ///   - sessionTimeout: how long ZooKeeper keeps our node after it last heard from us (a killed edge's units are
    ///     reclaimed after this); 4 s is the least a default server grants.
    public init(
        zooKeeper: String, root: String = QuotaLayout.defaultRoot, address: @escaping @Sendable () async throws -> String,
        ledger: QuotaLedger, shedder: LoadShedder, quotas: [QuotaClient], access: ZooKeeperAccess = .open,
        logger: Logger, sessionTimeout: Duration = .seconds(4), reportInterval: Duration = .milliseconds(100)
    ) {
        precondition(!quotas.isEmpty, "an edge needs a quota service to ask for more")
        self.zooKeeper = zooKeeper
        self.access = access
        self.layout = QuotaLayout(root: root)
        self.resolveAddress = address
        self.ledger = ledger
        self.shedder = shedder
        self.logger = logger
        self.sessionTimeout = sessionTimeout
        self.reportInterval = reportInterval
        self.quotas = quotas
        self.sharedRefills = SharedRefills(eventLoop: quotas[0].rpc.eventLoop)
    }

    /// The same, with clients of `quotaService` (`host:port[,host:port...]`: `quotaClients`).
    public convenience init(
        zooKeeper: String, root: String = QuotaLayout.defaultRoot, address: @escaping @Sendable () async throws -> String,
        ledger: QuotaLedger,
        shedder: LoadShedder, quotaService: String, serviceToken: String? = nil, access: ZooKeeperAccess = .open,
        logger: Logger, sessionTimeout: Duration = .seconds(4), reportInterval: Duration = .milliseconds(100)
    ) {
        self.init(
            zooKeeper: zooKeeper, root: root, address: address, ledger: ledger, shedder: shedder,
            quotas: Self.quotaClients(quotaService, serviceToken: serviceToken, logger: logger), access: access,
            logger: logger, sessionTimeout: sessionTimeout, reportInterval: reportInterval)
    }

    /// The same, with an address known up front.
    public convenience init(
        zooKeeper: String, root: String = QuotaLayout.defaultRoot, address: String, ledger: QuotaLedger,
        shedder: LoadShedder, quotaService: String, serviceToken: String? = nil, access: ZooKeeperAccess = .open,
        logger: Logger, sessionTimeout: Duration = .seconds(4), reportInterval: Duration = .milliseconds(100)
    ) {
        self.init(
            zooKeeper: zooKeeper, root: root, address: { address }, ledger: ledger, shedder: shedder,
            quotaService: quotaService, serviceToken: serviceToken, access: access, logger: logger,
            sessionTimeout: sessionTimeout, reportInterval: reportInterval)
    }

    /// `host:port` this edge advertises in its registration ("" until `run` resolved it).
    public var address: String { advertised.withLock { $0 } }

    /// This edge's id (the sequence number of its node; orders record it). 0 until registered.
    public var edgeID: UInt32 { ledger.edgeID }

    /// The ZooKeeper session's state (nil before `run` connected and after it closed the session).
    public var zooKeeperState: ZooKeeperSessionState? { client.withLock { $0?.sessionState } }

    /// Waits until the edge is registered in ZooKeeper and returns its id. Throws if `run` ended before.
    public func registered() async throws -> UInt32 {
        try await registration.value()
    }

    // MARK: - Service

    public func run() async throws {
        defer { registration.settle(.failure(CancellationError())) }
        try await cancelWhenGracefulShutdown {
            let address = try await self.resolveAddress()
            self.advertised.withLock { $0 = address }
            let zk = try await self.connect()
            self.client.withLock { $0 = zk }
            defer { self.client.withLock { $0 = nil } }
            let events = zk.events()  // before any watch is set
            var watch = EdgeQuotaWatch(layout: self.layout, mayCreateLayout: !self.access.edgeEnforces, retryDelay: Self.retryDelay)
            do {
                // Registers until it works (ZooKeeper may be restarting), reads, announces the edge.
                try await self.drive(watch.start(now: .now), &watch, zk)
                await withDiscardingTaskGroup { group in
                    group.addTask { await self.reportUsage(zk) }
                    group.addTask { await self.heartbeat(zk) }
                    group.addTask { await self.watchSession(zk) }
                    for await event in events {
                        let action = watch.received(event, ledgerSuspended: self.ledger.isSuspended, now: .now)
                        // Only a cancelled backoff throws: the service is stopping.
                        do { try await self.drive(action, &watch, zk) } catch { break }
                    }
                    group.cancelAll()
                }
            } catch {
                await zk.close()
                throw error
            }
            // Closing ends the session at once: the quota service sees the node go and asks for our units.
            await zk.close()
        }
        for quota in quotas { await quota.shutdown() }
    }

    /// Retries until ZooKeeper answers (it may start after us, or be restarting).
    private func connect() async throws -> ZooKeeperClient {
        var delays = Self.retryDelay.makeIterator()
        while true {
            try Task.checkCancellation()
            do {
                let zk = try await ZooKeeperClient.connect(
                    hosts: zooKeeper, sessionTimeout: sessionTimeout, connectTimeout: .seconds(5), logger: logger)
                try await access.authenticateEdge(zk)
                return zk
            } catch {
                logger.warning("zookeeper unreachable; retrying", metadata: ["hosts": "\(zooKeeper)", "error": "\(error)"])
                try await Task.sleep(for: delays.next())
            }
        }
    }

    // MARK: - Usage reports

    /// What the quota service reads to know how many units we handed back (and how many we used).
    private func registrationData() -> [UInt8] {
        EdgeRegistration(
            edgeId: edgeID, address: address,
            usage: ledger.usage().map(\.message)
        ).serializedBytes()
    }

    /// Rewrites our node's data when the usage changed, every `reportInterval`.
    private func reportUsage(_ zk: ZooKeeperClient) async {
        var last: [UInt8] = []
        while !Task.isCancelled {
            try? await Task.sleep(for: reportInterval)
            guard let name = name.withLock({ $0 }) else { continue }
            let data = registrationData()
            guard data != last else { continue }
            let path = layout.edge(name)
            do {
                // Only this edge writes its node; the version still guards against writing over a node that was
                // re-created meanwhile by a registration of ours (then the next tick writes again).
                let stat = try await zk.get(path).stat
                try await zk.set(path, data: data, version: stat.version)
                last = data
            } catch {
                logger.debug("usage report failed", metadata: ["error": "\(error)"])
            }
        }
    }

    // MARK: - Session safety

    /// A cheap call every tenth of the session timeout, so that `lastHeard` is never older than that while
    /// ZooKeeper answers.
    private func heartbeat(_ zk: ZooKeeperClient) async {
        while !Task.isCancelled {
            let sent = ContinuousClock.now
            if (try? await zk.exists(layout.edges)) != nil { heard(at: sent) }
            try? await Task.sleep(for: SessionGuard.heartbeat(sessionTimeout: effectiveTimeout(zk)))
        }
    }

    /// Suspends the ledger once the session may be about to expire (`SessionGuard`).
    private func watchSession(_ zk: ZooKeeperClient) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(50))
            let heard = lastHeard.withLock { $0 }
            guard !ledger.isSuspended,
                SessionGuard.mustSuspend(lastHeard: heard, now: .now, sessionTimeout: effectiveTimeout(zk))
            else { continue }
            let released = ledger.suspend()
            logger.warning("zookeeper silent past the session's safe time: selling stops until registered again", metadata: [
                "silent": "\(ContinuousClock.now - heard)",
                "released": "\(released)",
            ])
        }
    }

    /// The timeout the server granted (it clamps the one asked for), or the one asked for before it answered.
    private func effectiveTimeout(_ zk: ZooKeeperClient) -> Duration {
        let negotiated = zk.negotiatedSessionTimeout
        return negotiated > .zero ? negotiated : sessionTimeout
    }

    private func heard(at instant: ContinuousClock.Instant) {
        let latest = lastHeard.withLock { heard in
            heard = max(heard, instant)
            return heard
        }
        let timeout = client.withLock { $0 }.map(effectiveTimeout) ?? sessionTimeout
        ledger.setFence(SessionGuard.fence(lastHeard: latest, sessionTimeout: timeout))
    }

    /// Registered again and re-read: sell again (after an expiry, once the quota service took the new session).
    private func resumeSelling(heardAt instant: ContinuousClock.Instant) {
        heard(at: instant)
        guard ledger.isSuspended else { return }
        ledger.resume()
        if ledger.isSuspended {
            logger.info("registered again: selling once the quota service has taken the new session")
        } else {
            logger.info("registered and resynced: selling again")
        }
    }

    // MARK: - Refills

    /// Asks the quota service for more units of `product`, as `RefillSharing` decides (`SharedRefills`): concurrent
    /// callers share one request (a burst of dry attempts costs one call, and no task each), and after an answer of
    /// nothing those who ask during the hold-off share the next one. When the quota service says the product is sold
    /// out everywhere, the ledger is marked so (until the next grant).
    public func requestMore(product: String, on eventLoop: any EventLoop) -> EventLoopFuture<RefillOutcome> {
        sharedRefills.request(product) { self.askForMore(product) }.hop(to: eventLoop)
    }

    /// Between attempts to reach ZooKeeper, register, or open a new session (it may be restarting).
    static let retryDelay = Backoff(initial: .milliseconds(50), max: .seconds(1))

    private func askForMore(_ product: String) -> EventLoopFuture<RefillOutcome> {
        let edgeID = self.edgeID
        guard edgeID != 0 else { return quota.rpc.eventLoop.makeSucceededFuture(.unavailable) }
        let before = ledger.usage(of: product)
        let request = GrantMoreRequest(edgeId: edgeID, productId: product, used: before?.used ?? 0)
        let asked = askedQuota.load(ordering: .relaxed)
        return quotas[asked % quotas.count].rpc.callFuture(QuotaRPC.GrantMore.self, request).map { response in
            self.ledger.applyGrant(product, granted: response.granted)
            let outcome = RefillOutcome(grant: response, before: before, after: self.ledger.usage(of: product))
            if outcome == .soldOut { self.ledger.markSoldOut(product) }
            return outcome
        }.recover { error in
            // Unreachable (not sent, or the connection lost): the next refill asks the next quota service.
            if (error as? RPCError)?.code == .unavailable, self.quotas.count > 1 {
                _ = self.askedQuota.compareExchange(expected: asked, desired: asked &+ 1, ordering: .relaxed)
            }
            self.logger.warning("quota refill failed", metadata: ["product": "\(product)", "error": "\(error)"])
            return .unavailable
        }
    }

    // MARK: - The watch's driver

    /// Carries out `EdgeQuotaWatch`'s actions, feeding each outcome back, until it waits for the next event.
    /// Throws only when a backoff's sleep is cancelled.
    private func drive(_ first: EdgeQuotaWatch.Action, _ watch: inout EdgeQuotaWatch, _ zk: ZooKeeperClient) async throws {
        var action = first
        while true {
            switch action {
            case .none:
                return
            case .register(let name):
                action = await outcome(of: action, &watch) { watch in try await watch.registered(name: self.register(zk, name: name)) }
            case .writeRegistration(let name):
                action = await outcome(of: action, &watch) { watch in
                    try await zk.set(self.layout.edge(name), data: self.registrationData(), version: 0)
                    return watch.next()
                }
            case .read(let node):
                action = await outcome(of: action, &watch) { watch in
                    // The watch asks only for nodes it can name; were it not so, the job ends as after a failed call.
                    guard let path = watch.path(of: node) else { return watch.failed() }
                    do {
                        return watch.read(node, .data(try await zk.get(path, watch: true).data))
                    } catch let error as ZooKeeperError where error.code == .noNode {
                        return watch.read(node, .noNode)
                    }
                }
            case .watchCreation(let node):
                action = await outcome(of: action, &watch) { watch in
                    // The watch asks only for nodes it can name; were it not so, the job ends as after a failed call.
                    guard let path = watch.path(of: node) else { return watch.failed() }
                    return watch.watchedCreation(node, exists: try await zk.exists(path, watch: true) != nil)
                }
            case .listProducts:
                action = await outcome(of: action, &watch) { watch in
                    do {
                        return watch.listed(.names(try await zk.children(self.layout.products, watch: true)))
                    } catch let error as ZooKeeperError where error.code == .noNode {
                        return watch.listed(.noNode)
                    }
                }
            case .createProductsPath:
                action = await outcome(of: action, &watch) { watch in
                    try await zk.ensurePath(self.layout.products)
                    return watch.next()
                }
            case .knowProduct(let product):
                ledger.applyGrant(product, granted: 0)
                action = watch.next()
            case .applyGrant(let product, let granted):
                let added = ledger.applyGrant(product, granted: granted)
                if added > 0 {
                    logger.debug("quota applied", metadata: ["product": "\(product)", "granted": "\(granted)", "added": "\(added)"])
                }
                action = watch.next()
            case .setKeep(let perMillion):
                shedder.setKeepPerMillion(perMillion)
                action = watch.next()
            case .ignore(let node, let garbage):
                logger.warning("zookeeper node holds garbage; ignored", metadata: ["node": "\(node)", "garbage": "\(garbage)"])
                action = watch.next()
            case .suspendUntilVouched:
                logger.warning("zookeeper session expired: handing back unsold units and registering again")
                ledger.suspendUntilVouched()
                action = watch.next()
            case .reconnect:
                action = await outcome(of: action, &watch) { watch in
                    try await zk.reconnect()
                    return watch.reconnected(now: .now)
                }
            case .sleep(let delay):
                try await Task.sleep(for: delay)
                action = watch.next()
            case .connectionLost:
                logger.warning("zookeeper connection lost: serving from the local counters")
                action = watch.next()
            case .connectionBack:
                logger.info("zookeeper connection back: resyncing")
                action = watch.next()
            case .resumeSelling(let heardAt):
                resumeSelling(heardAt: heardAt)
                action = watch.next()
            case .announceRegistered(let heardAt):
                heard(at: heardAt)
                registration.settle(.success(edgeID))
                logger.info("edge registered", metadata: ["edge": "\(edgeID)", "address": "\(address)"])
                action = watch.next()
            }
        }
    }

    /// One ZooKeeper call of the watch: its outcome, or `failed` (logged: a warning when it is retried).
    private func outcome(
        of action: EdgeQuotaWatch.Action, _ watch: inout EdgeQuotaWatch,
        _ call: (inout EdgeQuotaWatch) async throws -> EdgeQuotaWatch.Action
    ) async -> EdgeQuotaWatch.Action {
        do {
            return try await call(&watch)
        } catch {
            let next = watch.failed()
            if case .sleep = next {
                logger.warning("zookeeper call failed; retrying", metadata: ["call": "\(action)", "error": "\(error)"])
            } else {
                // Connection trouble: the `connected` event that follows re-reads everything.
                logger.debug("zookeeper call failed", metadata: ["call": "\(action)", "error": "\(error)"])
            }
            return next
        }
    }

    /// The first registration takes a sequence number (our edge id). Later ones (after a session expiry) create the
    /// same name again as a plain ephemeral node: orders record the edge id and the quota service reclaims a dead
    /// edge's units from the orders of that id, so an edge must keep one id for the life of its process. Sequence
    /// numbers are never handed out twice under one parent, so no other edge can hold the name meanwhile.
    private func register(_ zk: ZooKeeperClient, name: String?) async throws -> String {
        let data = registrationData()
        guard let name else {
            let path = try await zk.create(
                layout.edges + "/" + QuotaLayout.edgePrefix, data: data, mode: .ephemeralSequential,
                acl: access.registration, createParents: !access.edgeEnforces)
            let name = String(path.split(separator: "/").last ?? "")
            self.name.withLock { $0 = name }
            if let id = QuotaLayout.edgeID(name: name) { ledger.setHolder(edgeID: id, session: zk.sessionID) }
            return name
        }
        let path = layout.edge(name)
        do {
            try await zk.create(
                path, data: data, mode: .ephemeral, acl: access.registration, createParents: !access.edgeEnforces)
        } catch let error as ZooKeeperError where error.code == .nodeExists {
            if let stat = try await zk.exists(path), stat.ephemeralOwner != zk.sessionID {
                // Left by our previous session, which the server has not expired yet (or made by someone else):
                // replace it.
                try await zk.delete(path, version: stat.version)
                try await zk.create(path, data: data, mode: .ephemeral, acl: access.registration)
            }
        }
        // The quota service trusts the registration of the session this edge names in its ReleaseQuota answers.
        ledger.setHolder(edgeID: edgeID, session: zk.sessionID)
        return name
    }
}

extension RefillOutcome {
    /// What a `quota.GrantMore` answer brought, from the product's usage before the call and after its grant was
    /// applied. The quota node's watch may have applied the grant first: compared with what we had before the call.
    init(grant: GrantMoreResponse, before: QuotaLedger.Usage?, after: QuotaLedger.Usage?) {
        if (after?.granted ?? 0) > (before?.granted ?? 0) || (after?.available ?? 0) > 0 {
            self = .granted
        } else {
            self = grant.soldOut ? .soldOut : .nothingNow
        }
    }
}
