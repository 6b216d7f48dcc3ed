import FlashSaleClient
import Proto
import QuotaContract
import Testing
import Wire
import ZooKeeperClient

@testable import EdgeCore

/// The edge's ZooKeeper protocol alone: events and call outcomes in, the next call out. No ZooKeeper, no sleeping.
@Suite struct EdgeQuotaWatchTests {
    typealias Action = EdgeQuotaWatch.Action
    let layout = QuotaLayout(root: "/fs")
    let t0 = ContinuousClock.now
    func at(_ ms: Int) -> ContinuousClock.Instant { t0 + .milliseconds(ms) }
    static let delay = Backoff(initial: .milliseconds(50), max: .seconds(1), jitter: 0)

    func watch(mayCreateLayout: Bool = true) -> EdgeQuotaWatch {
        EdgeQuotaWatch(layout: layout, mayCreateLayout: mayCreateLayout, retryDelay: Self.delay)
    }

    func grant(_ units: Int64) -> [UInt8] { QuotaGrant(granted: units).serializedBytes() }

    /// A watch registered as `edge-0000000007` with products read, idle.
    func registered(products: [String] = ["tv"]) -> EdgeQuotaWatch {
        var watch = watch()
        #expect(watch.start(now: at(0)) == .register(name: nil))
        #expect(watch.registered(name: "edge-0000000007") == .writeRegistration(name: "edge-0000000007"))
        #expect(watch.next() == .read(.shed))
        #expect(watch.read(.shed, .noNode) == .watchCreation(.shed))
        #expect(watch.watchedCreation(.shed, exists: false) == .listProducts)
        var action = watch.listed(.names(products))
        for product in products {
            #expect(action == .knowProduct(product))
            #expect(watch.next() == .read(.quota(product: product)))
            #expect(watch.read(.quota(product: product), .data(grant(10))) == .applyGrant(product: product, granted: 10))
            action = watch.next()
        }
        #expect(action == .announceRegistered(heardAt: at(0)))
        #expect(watch.next() == .none)
        #expect(watch.isIdle)
        return watch
    }

    // MARK: the first registration

    @Test func theFirstRegistrationReadsEverythingThenAnnounces() {
        let watch = registered(products: ["tv", "radio"])
        #expect(watch.name == "edge-0000000007")
        #expect(watch.products == ["tv", "radio"])
        #expect(watch.path(of: .quota(product: "tv")) == "/fs/quotas/tv/edge-0000000007")
    }

    @Test func registrationIsRetriedWithABackoffUntilItWorks() {
        var watch = watch()
        #expect(watch.start(now: at(0)) == .register(name: nil))
        #expect(watch.failed() == .sleep(.milliseconds(50)))
        #expect(watch.next() == .register(name: nil))
        #expect(watch.failed() == .sleep(.milliseconds(100)))
        #expect(watch.next() == .register(name: nil))
        #expect(watch.registered(name: "edge-0000000001") == .writeRegistration(name: "edge-0000000001"))
        // The write of the data fails: the name is ours already; the retry registers it again, no second number.
        #expect(watch.failed() == .sleep(.milliseconds(200)), "the same registration's backoff goes on")
        #expect(watch.next() == .register(name: "edge-0000000001"))
        #expect(watch.registered(name: "edge-0000000001") == .read(.shed))
    }

    @Test func aFailedFirstReadStillAnnouncesTheEdge() {
        var watch = watch()
        _ = watch.start(now: at(3))
        _ = watch.registered(name: "edge-0000000001")
        #expect(watch.next() == .read(.shed))
        #expect(watch.failed() == .announceRegistered(heardAt: at(3)))
        #expect(watch.next() == .none)
        #expect(watch.isIdle)
    }

    // MARK: what a node says

    @Test func garbageReadBackFromZooKeeperIsIgnored() {
        #expect(EdgeQuotaWatch.apply([0xff, 0xff, 0xff], of: .quota(product: "tv")) == .ignore(.quota(product: "tv"), .notAGrant))
        #expect(EdgeQuotaWatch.apply(grant(-1), of: .quota(product: "tv")) == .ignore(.quota(product: "tv"), .grantOutOfRange(-1)))
        let tooMany = QuotaLayout.maxUnits + 1
        #expect(EdgeQuotaWatch.apply(grant(tooMany), of: .quota(product: "tv")) == .ignore(.quota(product: "tv"), .grantOutOfRange(tooMany)))
        #expect(EdgeQuotaWatch.apply(grant(QuotaLayout.maxUnits), of: .quota(product: "tv")) == .applyGrant(product: "tv", granted: QuotaLayout.maxUnits))
        #expect(EdgeQuotaWatch.apply([0xff, 0x01], of: .shed) == .ignore(.shed, .notAShedConfig))
        #expect(EdgeQuotaWatch.apply(ShedConfig(keepPerMillion: 250_000).serializedBytes(), of: .shed) == .setKeep(perMillion: 250_000))

        // In a job: logged and skipped, the job goes on.
        var watch = registered()
        #expect(watch.received(.dataChanged(path: "/fs/quotas/tv/edge-0000000007"), ledgerSuspended: false, now: at(5))
            == .read(.quota(product: "tv")))
        #expect(watch.read(.quota(product: "tv"), .data([0x08])) == .ignore(.quota(product: "tv"), .notAGrant))
        #expect(watch.next() == .none)
        #expect(watch.isIdle)
    }

    // MARK: watches

    @Test func aWatchFiredOnOurQuotaNodeOrTheShedNodeReReadsIt() {
        var watch = registered()
        for (event, node) in [
            (ZooKeeperEvent.dataChanged(path: "/fs/quotas/tv/edge-0000000007"), EdgeQuotaWatch.Node.quota(product: "tv")),
            (.created(path: "/fs/quotas/radio/edge-0000000007"), .quota(product: "radio")),
            (.deleted(path: "/fs/quotas/tv/edge-0000000007"), .quota(product: "tv")),
            (.dataChanged(path: "/fs/config/shed"), .shed),
            (.created(path: "/fs/config/shed"), .shed),
        ] {
            #expect(watch.received(event, ledgerSuspended: false, now: at(1)) == .read(node), "\(event)")
            #expect(watch.read(node, .noNode) == .watchCreation(node))
            #expect(watch.watchedCreation(node, exists: false) == .none)
        }
    }

    @Test func pathsThatAreNotOursAreIgnored() {
        var watch = registered()
        for event in [
            ZooKeeperEvent.dataChanged(path: "/fs/quotas/tv/edge-0000000008"),
            .dataChanged(path: "/fs/quotas/tv"),
            .dataChanged(path: "/fs/quotas//edge-0000000007"),
            .dataChanged(path: "/fs/quotas/a/b/edge-0000000007"),
            .dataChanged(path: "/other/quotas/tv/edge-0000000007"),
            .childrenChanged(path: "/fs/quotas/tv"),
            .notWatching(path: "/fs/products"),
            .deleted(path: "/fs/edges/edge-0000000008"),
        ] {
            #expect(watch.received(event, ledgerSuspended: false, now: at(1)) == .none, "\(event)")
            #expect(watch.isIdle)
        }
        // Before the first registration no quota node is ours.
        let fresh = self.watch()
        #expect(fresh.node(at: "/fs/quotas/tv/edge-0000000007") == nil)
        #expect(fresh.node(at: "/fs/config/shed") == .shed)
    }

    @Test func aNodeCreatedBetweenTheReadAndTheWatchIsReadAgainOnce() {
        var watch = registered()
        let node = EdgeQuotaWatch.Node.quota(product: "tv")
        _ = watch.received(.deleted(path: "/fs/quotas/tv/edge-0000000007"), ledgerSuspended: false, now: at(1))
        #expect(watch.read(node, .noNode) == .watchCreation(node))
        #expect(watch.watchedCreation(node, exists: true) == .read(node))
        #expect(watch.read(node, .noNode) == .watchCreation(node))
        #expect(watch.watchedCreation(node, exists: true) == .none, "it keeps vanishing: its watch will say")
        #expect(watch.isIdle)
    }

    @Test func aNewProductIsKnownThenReadAndOldOnesAreNotReadAgain() {
        var watch = registered(products: ["tv"])
        #expect(watch.received(.childrenChanged(path: "/fs/products"), ledgerSuspended: false, now: at(1)) == .listProducts)
        #expect(watch.listed(.names(["tv", "radio"])) == .knowProduct("radio"))
        #expect(watch.next() == .read(.quota(product: "radio")))
        #expect(watch.read(.quota(product: "radio"), .data(grant(4))) == .applyGrant(product: "radio", granted: 4))
        #expect(watch.next() == .none)
        #expect(watch.products == ["tv", "radio"])
    }

    @Test func aMissingProductsNodeIsCreatedOnlyWhenTheEdgeMayCreateTheLayout() {
        var open = watch(mayCreateLayout: true)
        _ = open.start(now: at(0))
        _ = open.registered(name: "edge-0000000001")
        _ = open.next()
        _ = open.read(.shed, .data(ShedConfig(keepPerMillion: 1).serializedBytes()))
        #expect(open.next() == .listProducts)
        #expect(open.listed(.noNode) == .createProductsPath)
        #expect(open.next() == .listProducts)
        #expect(open.listed(.noNode) == .announceRegistered(heardAt: at(0)), "missing again: the read is given up")

        var enforced = watch(mayCreateLayout: false)
        _ = enforced.start(now: at(0))
        _ = enforced.registered(name: "edge-0000000001")
        _ = enforced.next()
        _ = enforced.read(.shed, .noNode)
        #expect(enforced.watchedCreation(.shed, exists: false) == .listProducts)
        #expect(enforced.listed(.noNode) == .announceRegistered(heardAt: at(0)), "the quota service makes the layout")
    }

    @Test func someoneDeletingOurNodeRegistersItAgain() {
        var watch = registered()
        #expect(watch.received(.deleted(path: "/fs/edges/edge-0000000007"), ledgerSuspended: false, now: at(1))
            == .register(name: "edge-0000000007"))
        #expect(watch.registered(name: "edge-0000000007") == .none)
        #expect(watch.isIdle)
        // Once: a failure waits for the next event.
        _ = watch.received(.deleted(path: "/fs/edges/edge-0000000007"), ledgerSuspended: false, now: at(2))
        #expect(watch.failed() == .none)
        #expect(watch.isIdle)
    }

    // MARK: the session

    @Test func aLostConnectionIsLoggedOnceAndTheReconnectReReadsEverything() {
        var watch = registered()
        #expect(watch.received(.session(.connecting), ledgerSuspended: false, now: at(1)) == .connectionLost)
        #expect(watch.next() == .none)
        #expect(watch.received(.session(.notConnected), ledgerSuspended: false, now: at(2)) == .none, "once")
        #expect(watch.disconnected)
        #expect(watch.received(.session(.connected), ledgerSuspended: false, now: at(9)) == .connectionBack)
        #expect(!watch.disconnected)
        #expect(watch.next() == .register(name: "edge-0000000007"))
        #expect(watch.registered(name: "edge-0000000007") == .read(.shed))
        #expect(watch.read(.shed, .data(ShedConfig(keepPerMillion: 9).serializedBytes())) == .setKeep(perMillion: 9))
        #expect(watch.next() == .listProducts)
        #expect(watch.listed(.names(["tv"])) == .knowProduct("tv"), "every product again")
        #expect(watch.next() == .read(.quota(product: "tv")))
        #expect(watch.read(.quota(product: "tv"), .data(grant(12))) == .applyGrant(product: "tv", granted: 12))
        #expect(watch.next() == .resumeSelling(heardAt: at(9)))
        #expect(watch.next() == .none)
    }

    @Test func aConnectedEventResyncsOnlyAfterTroubleOrWhileSuspended() {
        var watch = registered()
        #expect(watch.received(.session(.connected), ledgerSuspended: false, now: at(1)) == .none)
        #expect(watch.received(.session(.connectedReadOnly), ledgerSuspended: false, now: at(1)) == .none)
        #expect(watch.received(.session(.connected), ledgerSuspended: true, now: at(1)) == .connectionBack,
                "the session guard suspended the ledger")
        #expect(watch.next() == .register(name: "edge-0000000007"))
    }

    @Test func aResyncThatFailsDoesNotResumeSelling() {
        var watch = registered()
        _ = watch.received(.session(.connecting), ledgerSuspended: false, now: at(1))
        _ = watch.next()
        #expect(watch.received(.session(.connected), ledgerSuspended: true, now: at(2)) == .connectionBack)
        #expect(watch.next() == .register(name: "edge-0000000007"))
        #expect(watch.registered(name: "edge-0000000007") == .read(.shed))
        #expect(watch.failed() == .none, "no resume: still suspended")
        #expect(watch.isIdle)
        // The next trouble and connection try again.
        _ = watch.received(.session(.connecting), ledgerSuspended: true, now: at(3))
        _ = watch.next()
        #expect(watch.received(.session(.connected), ledgerSuspended: true, now: at(4)) == .connectionBack)
    }

    @Test func anExpiredSessionSuspendsReconnectsRegistersTheSameNameAndResumes() {
        var watch = registered()
        #expect(watch.received(.session(.expired), ledgerSuspended: false, now: at(1)) == .suspendUntilVouched)
        #expect(watch.next() == .reconnect)
        #expect(watch.failed() == .sleep(.milliseconds(50)))
        #expect(watch.next() == .reconnect)
        #expect(watch.failed() == .sleep(.milliseconds(100)))
        #expect(watch.next() == .reconnect)
        #expect(watch.reconnected(now: at(500)) == .register(name: "edge-0000000007"))
        #expect(watch.failed() == .sleep(.milliseconds(50)), "registration retried with a fresh backoff")
        #expect(watch.next() == .register(name: "edge-0000000007"))
        #expect(watch.registered(name: "edge-0000000007") == .read(.shed))
        #expect(watch.read(.shed, .noNode) == .watchCreation(.shed))
        #expect(watch.watchedCreation(.shed, exists: false) == .listProducts)
        #expect(watch.listed(.names([])) == .resumeSelling(heardAt: at(500)), "heard since the new session opened")
        #expect(watch.next() == .none)
        #expect(watch.name == "edge-0000000007")
    }

    @Test func anExpiryWhoseResyncFailsStaysSuspended() {
        var watch = registered()
        _ = watch.received(.session(.expired), ledgerSuspended: false, now: at(1))
        _ = watch.next()
        _ = watch.reconnected(now: at(2))
        _ = watch.registered(name: "edge-0000000007")
        #expect(watch.failed() == .none)
        #expect(watch.received(.session(.connected), ledgerSuspended: true, now: at(3)) == .connectionBack,
                "the next connected event tries again")
        #expect(watch.next() == .register(name: "edge-0000000007"))
    }

    // MARK: refills

    @Test func aGrantAnswer() {
        func usage(granted: Int64, available: Int64) -> QuotaLedger.Usage {
            QuotaLedger.Usage(product: "tv", granted: granted, used: granted - available, released: 0, available: available)
        }
        let none = usage(granted: 5, available: 0)
        #expect(RefillOutcome(grant: GrantMoreResponse(granted: 8), before: none, after: usage(granted: 8, available: 3)) == .granted)
        #expect(RefillOutcome(grant: GrantMoreResponse(granted: 8), before: usage(granted: 8, available: 0),
                              after: usage(granted: 8, available: 2)) == .granted, "the watch applied it first; units are there")
        #expect(RefillOutcome(grant: GrantMoreResponse(granted: 5, soldOut: true), before: none, after: none) == .soldOut)
        #expect(RefillOutcome(grant: GrantMoreResponse(granted: 5), before: none, after: none) == .nothingNow)
        #expect(RefillOutcome(grant: GrantMoreResponse(granted: 0), before: nil, after: nil) == .nothingNow)
    }
}
