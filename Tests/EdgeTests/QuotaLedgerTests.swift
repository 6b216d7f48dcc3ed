import Testing
import NIOCore

@testable import EdgeCore

@Suite struct QuotaLedgerTests {
    @Test func takesExactlyWhatWasGrantedUnderContention() async {
        let ledger = QuotaLedger()
        ledger.applyGrant("tv", granted: 1_000)
        let taken = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    var mine = 0
                    for _ in 0..<500 where ledger.take("tv") == .taken { mine += 1 }
                    return mine
                }
            }
            return await group.reduce(0, +)
        }
        #expect(taken == 1_000)
        #expect(ledger.take("tv") == .dry)
        #expect(ledger.usage(of: "tv") == .init(product: "tv", granted: 1_000, used: 1_000, released: 0, available: 0))
    }

    @Test func grantsOnlyGrowAndStaleWatchesChangeNothing() {
        let ledger = QuotaLedger()
        #expect(ledger.applyGrant("tv", granted: 10) == 10)
        #expect(ledger.applyGrant("tv", granted: 10) == 0)
        #expect(ledger.applyGrant("tv", granted: 7) == 0)
        #expect(ledger.applyGrant("tv", granted: 15) == 5)
        #expect(ledger.usage(of: "tv")?.available == 15)
    }

    @Test func givenBackUnitsCanBeSoldAgain() {
        let ledger = QuotaLedger()
        ledger.applyGrant("tv", granted: 1)
        #expect(ledger.take("tv") == .taken)
        #expect(ledger.take("tv") == .dry)
        ledger.giveBack("tv")
        #expect(ledger.take("tv") == .taken)
        #expect(ledger.usage(of: "tv")?.used == 1)
    }

    @Test func releaseHandsBackOnlyUnusedUnits() {
        let ledger = QuotaLedger()
        ledger.applyGrant("tv", granted: 10)
        for _ in 0..<4 { _ = ledger.take("tv") }
        #expect(ledger.release("tv", maxUnits: 100) == 6)
        #expect(ledger.release("tv", maxUnits: 100) == 0)
        #expect(ledger.take("tv") == .dry)
        let usage = ledger.usage(of: "tv")!
        #expect(usage.granted == usage.used + usage.released + usage.available)
    }

    @Test func soldOutUntilTheNextGrant() {
        let ledger = QuotaLedger()
        #expect(ledger.take("tv") == .unknownProduct)
        ledger.markSoldOut("tv")
        #expect(ledger.take("tv") == .soldOut)
        ledger.applyGrant("tv", granted: 1)
        #expect(ledger.take("tv") == .taken)
        #expect(ledger.take("tv") == .dry)
    }

    /// Cut off from ZooKeeper past its session's safe time (review finding 8): nothing is taken, and every unit
    /// that is not in use, or comes back, or is granted meanwhile, is handed back; selling resumes on `resume`.
    @Test func aSuspendedLedgerTakesNothingAndHandsEverythingBack() {
        let ledger = QuotaLedger()
        ledger.applyGrant("tv", granted: 10)
        for _ in 0..<3 { #expect(ledger.take("tv") == .taken) }
        #expect(ledger.suspend() == 7)
        #expect(ledger.take("tv") == .unavailable)
        ledger.giveBack("tv")  // an attempt that bought nothing
        #expect(ledger.applyGrant("tv", granted: 20) == 10)
        #expect(ledger.usage(of: "tv") == .init(product: "tv", granted: 20, used: 2, released: 18, available: 0))
        ledger.resume()
        #expect(ledger.take("tv") == .dry)
        ledger.applyGrant("tv", granted: 21)
        #expect(ledger.take("tv") == .taken)
    }

    /// After a session expiry the allotment may have been retired (never revived): the edge sells again only once
    /// a release meant for it arrives after it registered again, which the quota service sends to no retired edge.
    @Test func afterAnExpiryOnlyTheQuotaServicesReleaseLiftsTheSuspension() {
        let ledger = QuotaLedger()
        ledger.setHolder(edgeID: 3, session: 0x51)
        ledger.applyGrant("tv", granted: 4)
        #expect(ledger.suspendUntilVouched() == 4)
        #expect(ledger.session == 0)
        ledger.resume()  // registered again and resynced: not enough
        #expect(ledger.take("tv") == .unavailable)
        #expect(ledger.vouch() == 0)  // a probe while still cut off (no new session yet): vouches for none
        #expect(ledger.take("tv") == .unavailable)
        ledger.setHolder(edgeID: 3, session: 0x52)
        #expect(ledger.vouch() == 0x52)
        ledger.applyGrant("tv", granted: 5)
        #expect(ledger.take("tv") == .taken)
    }

    @Test func theFenceIsNoneUntilSetAndCountsDown() {
        let ledger = QuotaLedger()
        #expect(ledger.timeToFence() == nil)
        let now = ContinuousClock.now
        ledger.setFence(now + .seconds(2))
        #expect(ledger.timeToFence(now: now) == .seconds(2))
        #expect(ledger.timeToFence(now: now + .seconds(3)) == .seconds(-1))
    }

    @Test func aGrantOutOfRangeIsIgnored() {
        let ledger = QuotaLedger()
        ledger.applyGrant("tv", granted: 10)
        #expect(ledger.applyGrant("tv", granted: .max) == 0)
        #expect(ledger.applyGrant("tv", granted: -5) == 0)
        #expect(ledger.usage(of: "tv")?.available == 10)
    }

    @Test func theEdgeStopsAMarginBeforeItsSessionCanExpire() {
        let heard = ContinuousClock.now
        let timeout = Duration.seconds(4)
        #expect(SessionGuard.margin(sessionTimeout: timeout) == .milliseconds(500))
        #expect(!SessionGuard.mustSuspend(lastHeard: heard, now: heard + .milliseconds(3_499), sessionTimeout: timeout))
        #expect(SessionGuard.mustSuspend(lastHeard: heard, now: heard + .milliseconds(3_500), sessionTimeout: timeout))
        // Short timeouts keep a floor of 200 ms.
        #expect(SessionGuard.mustSuspend(lastHeard: heard, now: heard + .milliseconds(800), sessionTimeout: .seconds(1)))
        // A healthy connection is asked far more often than the limit.
        #expect(SessionGuard.heartbeat(sessionTimeout: timeout) * 5 < timeout - SessionGuard.margin(sessionTimeout: timeout))
    }
}
