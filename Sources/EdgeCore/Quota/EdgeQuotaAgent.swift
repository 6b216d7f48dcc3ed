// model: Sources/QuotaCore/Planning/QuotaProtocol.pml (apply(quota:), askForMore -> EDGE_APPLY; edge.ReleaseQuota
// -> QS_RELEASE, QS_PROBE; fence and reconnect (recoverFromExpiry) -> FENCE, HEAL, vouch). Update both together.
import Addressing
import FlashSaleClient
import Logging
import NIOCore
import Proto
import ServiceKit
import ServiceLifecycle
import Synchronization
import Wire
import ZooKeeperClient

/// The edge's side of the quotas, as a `Service`: registers the edge in ZooKeeper (`edges/edge-NNNNNNNNNN`,
/// ephemeral, with its address and usage), watches its quota node of every product and `config/shed`, and applies
/// changes to the `QuotaLedger` and the `LoadShedder` as they come, without a restart. It asks the quota service for
/// more when a product runs dry (`requestMore`) and answers the quota service's `edge.ReleaseQuota`.
///
/// ZooKeeper unreachable: the ledger keeps serving what was granted while the node is surely still ours, and every
/// watch is re-read when the connection is back. The server expires the session one session timeout after it last
/// heard from us, and the quota service then gives our unsold units to others; we cannot see that happen while cut
/// off, so past the session timeout minus a margin since ZooKeeper last answered (`SessionGuard`) the ledger is
/// suspended: takes answer UNAVAILABLE and every unit not in use is handed back, until the edge has registered again
/// and re-read its quotas. Session expired: the same, then the node is created again under the same name by the
/// new session, which the quota service trusts once this edge names it in a ReleaseQuota answer; the edge sells
/// again only once such a release came (a retired allotment gets none: it is never revived).
public final class EdgeQuotaAgent: Service, QuotaRefiller, Sendable {
    public let layout: QuotaLayout
    private let resolveAddress: @Sendable () async throws -> String
    private let advertised = Mutex("")
    private let zooKeeper: String
    fileprivate let access: ZooKeeperAccess
    fileprivate let ledger: QuotaLedger
    private let shedder: LoadShedder
    private let quota: QuotaClient
    private let logger: Logger
    private let sessionTimeout: Duration
    private let reportInterval: Duration

    /// Our node's name once registered. Kept for the life of the process: see `register`.
    private let name = Mutex<String?>(nil)
    private let registration = Mutex(RegistrationState.pending([]))
    private let refills = Mutex<[String: EventLoopFuture<RefillOutcome>]>([:])
    /// The ZooKeeper client of the running session, for the metrics' session state.
    private let client = Mutex<ZooKeeperClient?>(nil)
    /// When a call that ZooKeeper answered was sent: the server heard from our session at or after it.
    private let lastHeard = Mutex(ContinuousClock.now)

    private enum RegistrationState {
        case pending([CheckedContinuation<UInt32, any Error>])
        case registered(UInt32)
        case failed(any Error)
    }

    /// - Parameters:
    ///   - zooKeeper: connection string, `host:port[,host:port...]`.
    ///   - root: the flash sale's root node (default `/flashsale`).
    ///   - address: `host:port` where this edge answers (purchases and `edge.ReleaseQuota`); asked for once, when
    ///     `run` starts, so a server bound to port 0 can tell it (`{ try await server.localAddress() ... }`).
    ///   - quotaService: `host:port` of the quota service.
    ///   - serviceToken: sent with calls to the quota service (`quota.GrantMore` needs it).
    ///   - access: the edges' ZooKeeper identity: with a secret, the edge authenticates, registers with an ACL and
    ///     never creates the layout (the quota service does).
    ///   - sessionTimeout: how long ZooKeeper keeps our node after it last heard from us (a killed edge's units are
    ///     reclaimed after this); 4 s is the least a default server grants.
    public init(
        zooKeeper: String, root: String = QuotaLayout.defaultRoot, address: @escaping @Sendable () async throws -> String,
        ledger: QuotaLedger,
        shedder: LoadShedder, quotaService: String, serviceToken: String? = nil, access: ZooKeeperAccess = .open,
        logger: Logger, sessionTimeout: Duration = .seconds(4), reportInterval: Duration = .milliseconds(100)
    ) {
        self.zooKeeper = zooKeeper
        self.access = access
        self.layout = QuotaLayout(root: root)
        self.resolveAddress = address
        self.ledger = ledger
        self.shedder = shedder
        self.logger = logger
        self.sessionTimeout = sessionTimeout
        self.reportInterval = reportInterval
        let (host, port) = Self.hostPort(quotaService) ?? ("127.0.0.1", 0)
        self.quota = QuotaClient(
            rpc: RPCClient(
                configuration: RPCClientConfiguration(
                    host: host, port: port, connectTimeout: .seconds(1), defaultTimeout: .seconds(3),
                    token: serviceToken ?? ""),
                logger: logger))
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
        try await withCheckedThrowingContinuation { continuation in
            registration.withLock { state in
                switch state {
                case .pending(var waiters):
                    waiters.append(continuation)
                    state = .pending(waiters)
                case .registered(let id):
                    continuation.resume(returning: id)
                case .failed(let error):
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    // MARK: - Service

    public func run() async throws {
        defer { finishRegistration(.failure(CancellationError())) }
        try await cancelWhenGracefulShutdown {
            let address = try await self.resolveAddress()
            self.advertised.withLock { $0 = address }
            let zk = try await self.connect()
            self.client.withLock { $0 = zk }
            defer { self.client.withLock { $0 = nil } }
            let events = zk.events()  // before any watch is set
            var session = AgentSession(agent: self, zk: zk)
            do {
                let before = ContinuousClock.now
                try await session.registerUntilDone()
                await session.resync()
                self.heard(at: before)
                self.finishRegistration(.success(self.edgeID))
                self.logger.info("edge registered", metadata: ["edge": "\(self.edgeID)", "address": "\(self.address)"])
                await withDiscardingTaskGroup { group in
                    group.addTask { await self.reportUsage(zk) }
                    group.addTask { await self.heartbeat(zk) }
                    group.addTask { await self.watchSession(zk) }
                    for await event in events {
                        await session.handle(event)
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
        await quota.shutdown()
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

    private func finishRegistration(_ result: Result<UInt32, any Error>) {
        let waiters = registration.withLock { state -> [CheckedContinuation<UInt32, any Error>] in
            guard case .pending(let waiters) = state else { return [] }
            switch result {
            case .success(let id): state = .registered(id)
            case .failure(let error): state = .failed(error)
            }
            return waiters
        }
        for waiter in waiters { waiter.resume(with: result) }
    }

    // MARK: - Usage reports

    /// What the quota service reads to know how many units we handed back (and how many we used).
    fileprivate func registrationData() -> [UInt8] {
        EdgeRegistration(
            edgeId: edgeID, address: address,
            usage: ledger.usage().map {
                ProductUsage(productId: $0.product, used: $0.used, released: $0.released, granted: $0.granted)
            }
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

    fileprivate func heard(at instant: ContinuousClock.Instant) {
        let latest = lastHeard.withLock { heard in
            heard = max(heard, instant)
            return heard
        }
        let timeout = client.withLock { $0 }.map(effectiveTimeout) ?? sessionTimeout
        ledger.setFence(SessionGuard.fence(lastHeard: latest, sessionTimeout: timeout))
    }

    /// Registered again and re-read: sell again (after an expiry, once the quota service took the new session).
    fileprivate func resumeSelling(heardAt instant: ContinuousClock.Instant) {
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

    /// Asks the quota service for more units of `product`. One request per product is in flight at a time:
    /// concurrent callers share its outcome (a burst of dry attempts costs one call, and no task each). When the
    /// quota service says the product is sold out everywhere, the ledger is marked so (until the next grant).
    public func requestMore(product: String, on eventLoop: any EventLoop) -> EventLoopFuture<RefillOutcome> {
        let (future, starts) = refills.withLock { refills -> (EventLoopFuture<RefillOutcome>, EventLoopPromise<RefillOutcome>?) in
            if let running = refills[product] { return (running, nil) }
            let promise = quota.rpc.eventLoop.makePromise(of: RefillOutcome.self)
            refills[product] = promise.futureResult
            return (promise.futureResult, promise)
        }
        if let starts {
            askForMore(product).whenComplete { result in
                guard case .success(let outcome) = result, outcome != .unavailable else {
                    // Nothing to be had just now (or no quota service): dry attempts in the next moment share this
                    // answer instead of each asking again.
                    starts.completeWith(result)
                    self.quota.rpc.eventLoop.scheduleTask(in: Self.refillHoldOff) { self.refills.withLock { $0[product] = nil } }
                    return
                }
                self.refills.withLock { $0[product] = nil }
                starts.completeWith(result)
            }
        }
        return future.hop(to: eventLoop)
    }

    private static let refillHoldOff = TimeAmount.milliseconds(50)

    /// Between attempts to reach ZooKeeper, register, or open a new session (it may be restarting).
    static let retryDelay = Backoff(initial: .milliseconds(50), max: .seconds(1))

    private func askForMore(_ product: String) -> EventLoopFuture<RefillOutcome> {
        let edgeID = self.edgeID
        guard edgeID != 0 else { return quota.rpc.eventLoop.makeSucceededFuture(.unavailable) }
        let before = ledger.usage(of: product)
        let request = GrantMoreRequest(edgeId: edgeID, productId: product, used: before?.used ?? 0)
        return quota.rpc.callFuture(QuotaRPC.GrantMore.self, request).map { response in
            self.ledger.applyGrant(product, granted: response.granted)
            let after = self.ledger.usage(of: product)
            // The quota node's watch may have applied the grant first: compare with what we had before the call.
            if (after?.granted ?? 0) > (before?.granted ?? 0) || (after?.available ?? 0) > 0 { return .granted }
            if response.soldOut {
                self.ledger.markSoldOut(product)
                return .soldOut
            }
            return .unavailable
        }.recover { error in
            self.logger.warning("quota refill failed", metadata: ["product": "\(product)", "error": "\(error)"])
            return .unavailable
        }
    }

    // MARK: - Calls from the quota service

    /// Adds the edge's quota methods: `edge.ReleaseQuota` (service token: hands back up to `max_units` not yet
    /// used) and `edge.QuotaUsage` (read only: the counters as applied now).
    public func register(into router: inout RPCRouter) {
        Self.registerMethods(into: &router, ledger: self.ledger)
    }

    /// The same, before the agent exists: the edge registers its methods before it binds, and the agent needs
    /// the bound address. Both methods only need the ledger.
    public static func registerMethods(into router: inout RPCRouter, ledger: QuotaLedger) {
        router.register(EdgeRPC.ReleaseQuota.self) {
            (request: ReleaseQuotaRequest, _: ServerCallContext) async throws -> ReleaseQuotaResponse in
            guard !request.productId.isEmpty else { throw RPCError(.invalidArgument, "product_id is empty") }
            guard request.maxUnits >= 0 else { throw RPCError(.invalidArgument, "max_units is negative") }
            // An edge is an identity, not an address: a release meant for an edge that used to listen here (or
            // for any edge while this one is not registered yet) is not ours to answer.
            let holder = ledger.edgeID
            guard holder != 0, request.edgeId == holder else {
                throw RPCError(.failedPrecondition, "this is edge \(holder), not edge \(request.edgeId)")
            }
            let released = ledger.release(request.productId, maxUnits: request.maxUnits)
            // After a session expiry: the allotment is not retired, so sell again. The answer names the session
            // vouched for (the quota service trusts its registration from then on), never one set after it.
            let session = ledger.vouch()
            return ReleaseQuotaResponse(
                released: released, releasedTotal: ledger.usage(of: request.productId)?.released ?? 0, session: session)
        }
        // On the event loop: a few atomic loads, no reason for a task hop (the quota benchmark polls it).
        router.register(EdgeRPC.QuotaUsage.self, onEventLoop: {
            (request: QuotaStatusRequest, _: ServerCallContext, responder: RPCResponder<EdgeRegistration>) in
            let usage = request.productId.isEmpty ? ledger.usage() : ledger.usage(of: request.productId).map { [$0] } ?? []
            responder.succeed(EdgeRegistration(
                usage: usage.map { ProductUsage(productId: $0.product, used: $0.used, released: $0.released, granted: $0.granted) }))
        })
    }

    // MARK: - Applying what ZooKeeper says

    fileprivate func apply(quota data: [UInt8], product: String) {
        guard let grant = try? QuotaGrant(decoding: data) else {
            logger.warning("quota node holds no grant", metadata: ["product": "\(product)"])
            return
        }
        guard (0...QuotaLayout.maxUnits).contains(grant.granted) else {
            logger.warning("quota node holds a grant out of range; ignored", metadata: [
                "product": "\(product)", "granted": "\(grant.granted)",
            ])
            return
        }
        let added = ledger.applyGrant(product, granted: grant.granted)
        if added > 0 {
            logger.debug("quota applied", metadata: ["product": "\(product)", "granted": "\(grant.granted)", "added": "\(added)"])
        }
    }

    fileprivate func apply(shed data: [UInt8]) {
        guard let config = try? ShedConfig(decoding: data) else {
            logger.warning("shed node holds no keep ratio")
            return
        }
        shedder.setKeepPerMillion(config.keepPerMillion)
    }

    fileprivate func adopt(name: String, session: Int64) {
        self.name.withLock { $0 = name }
        if let id = QuotaLayout.edgeID(name: name) { ledger.setHolder(edgeID: id, session: session) }
    }

    fileprivate var nodeName: String? { name.withLock { $0 } }
    fileprivate var log: Logger { logger }

    static func hostPort(_ text: String) -> (String, Int)? {
        HostPort(text, defaultHost: "127.0.0.1").map { ($0.host, $0.port) }
    }
}

/// The watch loop's state, owned by the one task that runs it.
private struct AgentSession {
    let agent: EdgeQuotaAgent
    let zk: ZooKeeperClient
    var products: Set<String> = []
    var disconnected = false

    init(agent: EdgeQuotaAgent, zk: ZooKeeperClient) {
        self.agent = agent
        self.zk = zk
    }

    var layout: QuotaLayout { agent.layout }

    mutating func handle(_ event: ZooKeeperEvent) async {
        do {
            switch event {
            case .session(.expired):
                try await recoverFromExpiry()
            case .session(.connected), .session(.connectedReadOnly):
                if disconnected || agent.ledger.isSuspended {
                    disconnected = false
                    agent.log.info("zookeeper connection back: resyncing")
                    let before = ContinuousClock.now
                    try await ensureRegistered()
                    try await resyncOrThrow()
                    agent.resumeSelling(heardAt: before)
                }
            case .session:
                if !disconnected {
                    disconnected = true
                    agent.log.warning("zookeeper connection lost: serving from the local counters")
                }
            case .childrenChanged(let path) where path == layout.products:
                try await refreshProducts(rereadAll: false)
            case .dataChanged(let path), .created(let path):
                try await reread(path)
            case .deleted(let path):
                if let name = agent.nodeName, path == layout.edge(name) {
                    try await ensureRegistered()  // someone removed our node: we are still here
                } else {
                    try await reread(path)
                }
            default:
                break
            }
        } catch {
            // Connection trouble: the `connected` event that follows resyncs everything.
            agent.log.debug("zookeeper read failed", metadata: ["error": "\(error)"])
        }
    }

    private mutating func reread(_ path: String) async throws {
        if path == layout.shed {
            try await readShed()
        } else if let product = product(ofQuotaPath: path) {
            try await readQuota(product)
        }
    }

    private func product(ofQuotaPath path: String) -> String? {
        guard let name = agent.nodeName else { return nil }
        let prefix = layout.quotas + "/"
        let suffix = "/" + name
        guard path.hasPrefix(prefix), path.hasSuffix(suffix), path.count > prefix.count + suffix.count else { return nil }
        let product = path.dropFirst(prefix.count).dropLast(suffix.count)
        return product.contains("/") ? nil : String(product)
    }

    /// Registers until it works (ZooKeeper may be restarting).
    mutating func registerUntilDone() async throws {
        var delays = EdgeQuotaAgent.retryDelay.makeIterator()
        while true {
            try Task.checkCancellation()
            do {
                try await ensureRegistered()
                return
            } catch {
                agent.log.warning("registration failed; retrying", metadata: ["error": "\(error)"])
                try await Task.sleep(for: delays.next())
            }
        }
    }

    /// The first registration takes a sequence number (our edge id). Later ones (after a session expiry) create the
    /// same name again as a plain ephemeral node: orders record the edge id and the quota service reclaims a dead
    /// edge's units from the orders of that id, so an edge must keep one id for the life of its process. Sequence
    /// numbers are never handed out twice under one parent, so no other edge can hold the name meanwhile.
    private func ensureRegistered() async throws {
        let data = agent.registrationData()
        guard let name = agent.nodeName else {
            let path = try await zk.create(
                layout.edges + "/" + QuotaLayout.edgePrefix, data: data, mode: .ephemeralSequential,
                acl: agent.access.registration, createParents: !agent.access.edgeEnforces)
            let name = String(path.split(separator: "/").last ?? "")
            agent.adopt(name: name, session: zk.sessionID)
            // The data written at creation could not hold the id yet.
            try await zk.set(path, data: agent.registrationData(), version: 0)
            return
        }
        let path = layout.edge(name)
        do {
            try await zk.create(
                path, data: data, mode: .ephemeral, acl: agent.access.registration, createParents: !agent.access.edgeEnforces)
        } catch let error as ZooKeeperError where error.code == .nodeExists {
            if let stat = try await zk.exists(path), stat.ephemeralOwner != zk.sessionID {
                // Left by our previous session, which the server has not expired yet (or made by someone else):
                // replace it.
                try await zk.delete(path, version: stat.version)
                try await zk.create(path, data: data, mode: .ephemeral, acl: agent.access.registration)
            }
        }
        // The quota service trusts the registration of the session this edge names in its ReleaseQuota answers.
        agent.ledger.setHolder(edgeID: agent.edgeID, session: zk.sessionID)
    }

    private mutating func recoverFromExpiry() async throws {
        agent.log.warning("zookeeper session expired: handing back unsold units and registering again")
        agent.ledger.suspendUntilVouched()
        var delays = EdgeQuotaAgent.retryDelay.makeIterator()
        while true {
            try Task.checkCancellation()
            do {
                try await zk.reconnect()
                break
            } catch {
                agent.log.warning("zookeeper reconnect failed; retrying", metadata: ["error": "\(error)"])
                try await Task.sleep(for: delays.next())
            }
        }
        disconnected = false
        let before = ContinuousClock.now
        try await registerUntilDone()
        try await resyncOrThrow()
        agent.resumeSelling(heardAt: before)
    }

    /// Re-reads (and re-watches) the shed setting, the product list and every quota node of ours.
    mutating func resync() async {
        do {
            try await resyncOrThrow()
        } catch {
            agent.log.debug("resync incomplete", metadata: ["error": "\(error)"])
        }
    }

    /// The same; a suspended edge sells again only once this succeeded (else the next `connected` event retries).
    mutating func resyncOrThrow() async throws {
        try await readShed()
        try await refreshProducts(rereadAll: true)
    }

    private mutating func refreshProducts(rereadAll: Bool) async throws {
        let names: [String]
        do {
            names = try await zk.children(layout.products, watch: true)
        } catch let error as ZooKeeperError where error.code == .noNode && !agent.access.edgeEnforces {
            try await zk.ensurePath(layout.products)
            names = try await zk.children(layout.products, watch: true)
        }
        for product in names where rereadAll || !products.contains(product) {
            products.insert(product)
            // Known from now on, with no units yet: an attempt before this edge's first grant arrives is answered
            // as a dry counter (ask for more, else SOLD_OUT), never NOT_FOUND for a product that exists.
            agent.ledger.applyGrant(product, granted: 0)
            try await readQuota(product)
        }
    }

    /// Reads our quota node of `product` with a watch; when it does not exist yet, watches for its creation.
    private func readQuota(_ product: String) async throws {
        guard let name = agent.nodeName else { return }
        let path = layout.quota(product, edge: name)
        for _ in 0..<2 {
            do {
                agent.apply(quota: try await zk.get(path, watch: true).data, product: product)
                return
            } catch let error as ZooKeeperError where error.code == .noNode {
                if try await zk.exists(path, watch: true) == nil { return }
            }
        }
    }

    private func readShed() async throws {
        for _ in 0..<2 {
            do {
                agent.apply(shed: try await zk.get(layout.shed, watch: true).data)
                return
            } catch let error as ZooKeeperError where error.code == .noNode {
                if try await zk.exists(layout.shed, watch: true) == nil { return }
            }
        }
    }
}

/// When an edge cut off from ZooKeeper must stop selling, pure: the server expires a session one session timeout
/// after it last heard from it (never earlier: it rounds expiry up to its next tick), and `lastHeard` is when a call
/// it answered was sent, so the session lives at least until `lastHeard + sessionTimeout`. The edge stops a margin
/// before that: an eighth of the timeout, at least 200 ms (the watch's granularity, scheduling, a slow answer).
enum SessionGuard {
    static func margin(sessionTimeout: Duration) -> Duration { max(sessionTimeout / 8, .milliseconds(200)) }

    /// The instant the edge fences itself. Every forward must end by then (`QuotaLedger.fence`): the inventory buys
    /// nothing past a forward's deadline, so no purchase of this edge commits once its session could expire
    /// (timing rule T1 of the model; the margin also covers the forward's time on the wire).
    static func fence(lastHeard: ContinuousClock.Instant, sessionTimeout: Duration) -> ContinuousClock.Instant {
        lastHeard + sessionTimeout - margin(sessionTimeout: sessionTimeout)
    }

    static func mustSuspend(lastHeard: ContinuousClock.Instant, now: ContinuousClock.Instant, sessionTimeout: Duration) -> Bool {
        now >= fence(lastHeard: lastHeard, sessionTimeout: sessionTimeout)
    }

    /// How often to make sure ZooKeeper still answers: often enough that a healthy connection is never near the limit.
    static func heartbeat(sessionTimeout: Duration) -> Duration { max(sessionTimeout / 10, .milliseconds(50)) }
}
