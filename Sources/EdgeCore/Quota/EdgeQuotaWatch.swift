// model: Sources/QuotaCore/Planning/QuotaProtocol.pml (EDGE_APPLY; fence and reconnect -> FENCE, HEAL, vouch).
// Update both together.
import FlashSaleClient
import Proto
import QuotaContract
import Wire
import ZooKeeperClient

/// The edge's ZooKeeper protocol, without I/O: which node to register, read and watch after each ZooKeeper event,
/// what a node's data means, when to suspend and when to sell again. Every input is a `mutating func` returning the
/// next `Action`; `EdgeQuotaAgent` carries it out (the ZooKeeper call, the ledger, the log) and feeds the outcome
/// back, one action at a time, as postgres-nio's `ConnectionStateMachine`. Tests are plain calls
/// (`EdgeQuotaWatchTests`).
///
/// Each event starts a job (a few steps: register, re-read the shed setting, list the products, read each quota
/// node with a watch) that ends before the next event is taken, as ZooKeeper delivers them in order. A failed call
/// ends the job: the `connected` event that follows connection trouble re-reads everything.
struct EdgeQuotaWatch {
    typealias Instant = ContinuousClock.Instant

    /// A node the edge reads and watches.
    enum Node: Hashable, Sendable {
        /// `config/shed`: the lottery's keep ratio.
        case shed
        /// `quotas/<product>/<our node>`: the units granted to this edge.
        case quota(product: String)
    }

    /// Why a node's data was ignored (a node no quota service wrote, or a writer gone wrong).
    enum Garbage: Equatable, Sendable {
        case notAGrant
        case grantOutOfRange(Int64)
        case notAShedConfig
    }

    enum Action: Equatable, Sendable {
        /// Nothing until the next event.
        case none
        /// Create our ephemeral node (a new sequence number when `name` is nil, else that name again, replacing one
        /// our previous session left), then `registered(name:)`; or `failed`.
        case register(name: String?)
        /// The node was created with a new sequence number: write its data again, now that it can name the edge id
        /// (the data written at creation could not), then `next()`; or `failed`.
        case writeRegistration(name: String)
        /// Read `node` with a watch, then `read(_:_:)`; or `failed`.
        case read(Node)
        /// The node does not exist: watch for its creation (`exists` with a watch), then `watchedCreation`.
        case watchCreation(Node)
        /// List the products with a watch, then `listed(_:)`; or `failed`.
        case listProducts
        /// The products' parent is missing and this edge may create the layout: create it, then `next()`.
        case createProductsPath
        /// A product exists: known from now on with no units yet (an attempt before the first grant is a dry
        /// counter, never NOT_FOUND), then `next()`.
        case knowProduct(String)
        /// Apply the total granted to this edge (`QuotaLedger.applyGrant`), then `next()`.
        case applyGrant(product: String, granted: Int64)
        /// Set the lottery's keep ratio, then `next()`.
        case setKeep(perMillion: UInt32)
        /// Log that `node` holds garbage (kept as it was), then `next()`.
        case ignore(Node, Garbage)
        /// The session expired: hand back every unit not in use and stop selling until vouched
        /// (`QuotaLedger.suspendUntilVouched`), then `next()`.
        case suspendUntilVouched
        /// Open a new session (`ZooKeeperClient.reconnect`), then `reconnected(now:)`; or `failed`.
        case reconnect
        /// Wait (a retry's backoff), then `next()`.
        case sleep(Duration)
        /// The connection is lost: log it (once per loss), then `next()`. The ledger serves what it holds until
        /// the session guard suspends it.
        case connectionLost
        /// The connection is back after trouble (or the ledger is suspended): log it, then `next()` registers and
        /// re-reads everything.
        case connectionBack
        /// Registered and re-read after a reconnect or an expiry: ZooKeeper heard us at `heardAt`; sell again (once
        /// vouched after an expiry). Then `next()`.
        case resumeSelling(heardAt: Instant)
        /// The first registration and read are done (the read may be partial): ZooKeeper heard us at `heardAt`;
        /// announce the edge. Then `next()`.
        case announceRegistered(heardAt: Instant)
    }

    /// What a read found.
    enum ReadResult: Equatable, Sendable {
        case data([UInt8])
        case noNode
    }

    enum Listing: Equatable, Sendable {
        case names([String])
        case noNode
    }

    private enum Step: Equatable {
        case register(untilDone: Bool)
        case reconnectUntilDone
        case suspendUntilVouched
        case read(Node)
        case refreshProducts(rereadAll: Bool)
        case knowAndRead(String)
        /// Where a job's steps after the resync begin: a failed resync in the first job skips to here.
        case announce
        case resume
    }

    private enum Pending: Equatable {
        case idle
        case registering(untilDone: Bool)
        case writingRegistration(untilDone: Bool)
        case reconnecting
        case reading(Node, tries: Int)
        case watching(Node, tries: Int)
        case listing(rereadAll: Bool, createdParent: Bool)
        case creatingParent(rereadAll: Bool)
        /// An action that needs no answer (apply, log, sleep): `next()` goes on.
        case effect
        /// After a sleep, the step to try again.
        case backingOff(Step)
    }

    let layout: QuotaLayout
    /// False when the edge authenticates (the quota service creates the layout; the edge never does).
    let mayCreateLayout: Bool
    private let retryDelay: Backoff

    /// Our node's name once registered, kept for the life of the process (orders record the edge id it holds).
    private(set) var name: String?
    /// Products seen in the listing (each read once, then on its watch).
    private(set) var products: Set<String> = []
    private(set) var disconnected = false

    private var steps: [Step] = []
    private var pending = Pending.idle
    /// When the job's registration began: ZooKeeper heard this session at or after it.
    private var heardAt: Instant?
    /// The first job goes on to announce the edge even if its read fails; the others stop.
    private var announcesAfterFailure = false
    private var delays: Backoff.Iterator

    init(layout: QuotaLayout, mayCreateLayout: Bool, retryDelay: Backoff) {
        self.layout = layout
        self.mayCreateLayout = mayCreateLayout
        self.retryDelay = retryDelay
        self.delays = retryDelay.makeIterator()
    }

    /// No job under way: the next event may be taken.
    var isIdle: Bool { pending == .idle && steps.isEmpty }

    // MARK: - Events

    /// The session is open: register until it works (ZooKeeper may be restarting), read everything, announce.
    mutating func start(now: Instant) -> Action {
        precondition(isIdle, "start while a job runs")
        heardAt = now
        announcesAfterFailure = true
        return begin([.register(untilDone: true), .read(.shed), .refreshProducts(rereadAll: true), .announce])
    }

    /// A ZooKeeper event (taken only when `isIdle`). `ledgerSuspended`: the session guard or an expiry stopped selling.
    mutating func received(_ event: ZooKeeperEvent, ledgerSuspended: Bool, now: Instant) -> Action {
        precondition(isIdle, "an event while a job runs")
        announcesAfterFailure = false
        switch event {
        case .session(.expired):
            // The new session registers the same name again; the quota service trusts it once vouched.
            return begin([.suspendUntilVouched, .reconnectUntilDone, .register(untilDone: true), .read(.shed),
                          .refreshProducts(rereadAll: true), .resume])
        case .session(.connected), .session(.connectedReadOnly):
            guard disconnected || ledgerSuspended else { return .none }
            disconnected = false
            heardAt = now
            steps = [.register(untilDone: false), .read(.shed), .refreshProducts(rereadAll: true), .resume]
            pending = .effect
            return .connectionBack
        case .session:
            guard !disconnected else { return .none }
            disconnected = true
            pending = .effect
            return .connectionLost
        case .childrenChanged(let path) where path == layout.products:
            return begin([.refreshProducts(rereadAll: false)])
        case .dataChanged(let path), .created(let path):
            guard let node = node(at: path) else { return .none }
            return begin([.read(node)])
        case .deleted(let path):
            // Someone removed our node: we are still here.
            if let name, path == layout.edge(name) { return begin([.register(untilDone: false)]) }
            guard let node = node(at: path) else { return .none }
            return begin([.read(node)])
        case .childrenChanged, .notWatching:
            return .none
        }
    }

    // MARK: - Outcomes

    /// The action that needed no answer is done.
    mutating func next() -> Action {
        switch pending {
        case .effect:
            return advance()
        case .writingRegistration:
            delays = retryDelay.makeIterator()
            return advance()
        case .backingOff(let step):
            return run(step)
        case .creatingParent(let rereadAll):
            pending = .listing(rereadAll: rereadAll, createdParent: true)
            return .listProducts
        default:
            preconditionFailure("next() while \(pending)")
        }
    }

    /// Our node exists under `name`. The first time, its data is written again (and a failure of that write still
    /// leaves the name ours: a retry registers the same name, never a second sequence number).
    mutating func registered(name: String) -> Action {
        guard case .registering(let untilDone) = pending else { preconditionFailure("registered while \(pending)") }
        let first = self.name == nil
        self.name = name
        if first {
            pending = .writingRegistration(untilDone: untilDone)
            return .writeRegistration(name: name)
        }
        delays = retryDelay.makeIterator()
        return advance()
    }

    mutating func reconnected(now: Instant) -> Action {
        precondition(pending == .reconnecting, "reconnected while \(pending)")
        disconnected = false
        heardAt = now
        delays = retryDelay.makeIterator()
        return advance()
    }

    mutating func read(_ node: Node, _ result: ReadResult) -> Action {
        guard case .reading(node, let tries) = pending else { preconditionFailure("read \(node) while \(pending)") }
        switch result {
        case .data(let bytes):
            pending = .effect
            return Self.apply(bytes, of: node)
        case .noNode:
            pending = .watching(node, tries: tries)
            return .watchCreation(node)
        }
    }

    /// A node that keeps vanishing between the read and the `exists` waits for its watch after this many reads.
    static let readsPerNode = 2

    /// `exists` with a watch: absent, the watch fires on its creation; created meanwhile, read it again (at most
    /// `readsPerNode` reads in all).
    mutating func watchedCreation(_ node: Node, exists: Bool) -> Action {
        guard case .watching(node, let tries) = pending else { preconditionFailure("watched \(node) while \(pending)") }
        guard exists, tries + 1 < Self.readsPerNode else { return advance() }
        pending = .reading(node, tries: tries + 1)
        return .read(node)
    }

    mutating func listed(_ listing: Listing) -> Action {
        guard case .listing(let rereadAll, let createdParent) = pending else { preconditionFailure("listed while \(pending)") }
        switch listing {
        case .noNode where mayCreateLayout && !createdParent:
            pending = .creatingParent(rereadAll: rereadAll)
            return .createProductsPath
        case .noNode:
            return failed()
        case .names(let names):
            var reads: [Step] = []
            for product in names where rereadAll || !products.contains(product) {
                reads.append(.knowAndRead(product))
            }
            steps.insert(contentsOf: reads, at: 0)
            return advance()
        }
    }

    /// The call of the pending action failed (connection trouble, or refused). A step that must get done is tried
    /// again after a backoff; otherwise the job ends (the first job still announces the edge).
    mutating func failed() -> Action {
        switch pending {
        case .registering(untilDone: true), .writingRegistration(untilDone: true):
            pending = .backingOff(.register(untilDone: true))
            return .sleep(delays.next())
        case .reconnecting:
            pending = .backingOff(.reconnectUntilDone)
            return .sleep(delays.next())
        case .idle, .effect, .backingOff:
            preconditionFailure("failed while \(pending)")
        default:
            if announcesAfterFailure, let announce = steps.firstIndex(of: .announce) {
                steps.removeFirst(announce)
                return advance()
            }
            steps = []
            pending = .idle
            return .none
        }
    }

    // MARK: - What a node says

    /// A node's data as an action: garbage (not the message, a grant out of 0...maxUnits) is ignored.
    static func apply(_ bytes: [UInt8], of node: Node) -> Action {
        switch node {
        case .quota(let product):
            guard let grant = try? QuotaGrant(decoding: bytes) else { return .ignore(node, .notAGrant) }
            guard (0...QuotaLayout.maxUnits).contains(grant.granted) else {
                return .ignore(node, .grantOutOfRange(grant.granted))
            }
            return .applyGrant(product: product, granted: grant.granted)
        case .shed:
            guard let config = try? ShedConfig(decoding: bytes) else { return .ignore(node, .notAShedConfig) }
            return .setKeep(perMillion: config.keepPerMillion)
        }
    }

    /// The node a watched path names: the shed setting, or our quota node of a product; nil for anything else.
    func node(at path: String) -> Node? {
        if path == layout.shed { return .shed }
        guard let name else { return nil }
        let prefix = layout.quotas + "/"
        let suffix = "/" + name
        guard path.hasPrefix(prefix), path.hasSuffix(suffix), path.count > prefix.count + suffix.count else { return nil }
        let product = path.dropFirst(prefix.count).dropLast(suffix.count)
        return product.contains("/") ? nil : .quota(product: String(product))
    }

    /// Where a node lives.
    func path(of node: Node) -> String? {
        switch node {
        case .shed: layout.shed
        case .quota(let product): name.map { layout.quota(product, edge: $0) }
        }
    }

    // MARK: - Steps

    private mutating func begin(_ steps: [Step]) -> Action {
        self.steps = steps
        return advance()
    }

    private mutating func advance() -> Action {
        guard !steps.isEmpty else {
            pending = .idle
            return .none
        }
        return run(steps.removeFirst())
    }

    private mutating func run(_ step: Step) -> Action {
        switch step {
        case .register(let untilDone):
            pending = .registering(untilDone: untilDone)
            return .register(name: name)
        case .reconnectUntilDone:
            pending = .reconnecting
            return .reconnect
        case .suspendUntilVouched:
            pending = .effect
            return .suspendUntilVouched
        case .read(let node):
            // Our quota nodes are named after our node: nothing to read before the first registration.
            guard path(of: node) != nil else { return advance() }
            pending = .reading(node, tries: 0)
            return .read(node)
        case .refreshProducts(let rereadAll):
            pending = .listing(rereadAll: rereadAll, createdParent: false)
            return .listProducts
        case .knowAndRead(let product):
            // Known once its read begins: a job that fails before leaves the rest to the next listing.
            products.insert(product)
            steps.insert(.read(.quota(product: product)), at: 0)
            pending = .effect
            return .knowProduct(product)
        case .announce:
            guard let heardAt else { preconditionFailure("announce before start") }
            pending = .effect
            return .announceRegistered(heardAt: heardAt)
        case .resume:
            guard let heardAt else { preconditionFailure("resume before a connection") }
            pending = .effect
            return .resumeSelling(heardAt: heardAt)
        }
    }
}
