import NIOCore
import NIOEmbedded
import Testing
import Wire

@testable import EdgeCore

/// `RefillSharing` alone: who asks the quota service, who waits for which ask.
@Suite struct RefillSharingTests {
    @Test func concurrentCallersShareOneAsk() {
        var sharing = RefillSharing()
        #expect(sharing.asked() == .start)
        #expect(sharing.asked() == .joinCurrent)
        #expect(sharing.asked() == .joinCurrent)
        #expect(sharing.answered(.granted) == .done)
        #expect(sharing.phase == .idle)
        #expect(sharing.asked() == .start, "after a grant the next caller asks afresh")
        #expect(sharing.answered(.soldOut) == .done)
        #expect(sharing.phase == .idle)
    }

    @Test func afterNothingCallersWaitForTheAskThatFollowsTheHoldOff() {
        var sharing = RefillSharing()
        #expect(sharing.asked() == .start)
        #expect(sharing.answered(.nothingNow) == .holdOff)
        // During the hold-off nobody asks: they join the ask after it (not the answer they may just have had).
        #expect(sharing.asked() == .joinNext)
        #expect(sharing.asked() == .joinNext)
        #expect(sharing.holdOffEnded() == .askForTheJoined)
        #expect(sharing.phase == .asking)
        #expect(sharing.asked() == .joinCurrent)
        #expect(sharing.answered(.unavailable) == .holdOff, "no answer: a hold-off too (no call per dry attempt)")
        #expect(sharing.holdOffEnded() == .done, "nobody joined: no call")
        #expect(sharing.phase == .idle)
        #expect(sharing.asked() == .start)
    }
}

/// `SharedRefills`, the driver, on an `EmbeddedEventLoop` (one thread, time moved by hand) with asks the test answers.
@Suite struct SharedRefillsTests {
    /// The asks made so far, each answered by the test.
    final class Asks: @unchecked Sendable {
        let loop: EmbeddedEventLoop
        var made: [EventLoopPromise<RefillOutcome>] = []
        init(_ loop: EmbeddedEventLoop) { self.loop = loop }
        func ask() -> EventLoopFuture<RefillOutcome> {
            let promise = loop.makePromise(of: RefillOutcome.self)
            made.append(promise)
            return promise.futureResult
        }
    }

    final class Heard: @unchecked Sendable {
        var outcomes: [RefillOutcome] = []
    }

    func request(_ refills: SharedRefills, _ asks: Asks, _ heard: Heard, product: String = "tv") {
        refills.request(product) { asks.ask() }.whenSuccess { heard.outcomes.append($0) }
    }

    @Test func callersMeanwhileShareOneAskAndAGrantEndsIt() {
        let loop = EmbeddedEventLoop()
        let (refills, asks, heard) = (SharedRefills(eventLoop: loop), Asks(loop), Heard())
        for _ in 0..<3 { request(refills, asks, heard) }
        #expect(asks.made.count == 1)
        asks.made[0].succeed(.granted)
        #expect(heard.outcomes == [.granted, .granted, .granted])
        request(refills, asks, heard)
        #expect(asks.made.count == 2, "after a grant the next caller asks afresh")
        asks.made[1].succeed(.soldOut)
        #expect(heard.outcomes.last == .soldOut)
    }

    @Test func afterNothingTheCallersOfTheHoldOffHearTheAskThatFollowsIt() {
        let loop = EmbeddedEventLoop()
        let (refills, asks, heard) = (SharedRefills(eventLoop: loop), Asks(loop), Heard())
        request(refills, asks, heard)
        asks.made[0].succeed(.nothingNow)
        #expect(heard.outcomes == [.nothingNow])
        for _ in 0..<2 { request(refills, asks, heard) }
        loop.advanceTime(by: RefillSharing.holdOff - .milliseconds(1))
        #expect(asks.made.count == 1, "no call during the hold-off")
        loop.advanceTime(by: .milliseconds(1))
        #expect(asks.made.count == 2, "one call for all who joined")
        asks.made[1].succeed(.soldOut)
        #expect(heard.outcomes == [.nothingNow, .soldOut, .soldOut])
    }

    @Test func aHoldOffNobodyJoinedEndsWithoutACall() {
        let loop = EmbeddedEventLoop()
        let (refills, asks, heard) = (SharedRefills(eventLoop: loop), Asks(loop), Heard())
        request(refills, asks, heard)
        asks.made[0].fail(RPCError(.unavailable, "quota service away"))
        #expect(heard.outcomes == [.unavailable], "a failed ask is no answer")
        loop.advanceTime(by: RefillSharing.holdOff)
        #expect(asks.made.count == 1)
        request(refills, asks, heard)
        #expect(asks.made.count == 2, "after the hold-off the next caller asks at once")
        asks.made[1].succeed(.granted)
    }

    @Test func productsAreAskedForApart() {
        let loop = EmbeddedEventLoop()
        let (refills, asks, heard) = (SharedRefills(eventLoop: loop), Asks(loop), Heard())
        request(refills, asks, heard, product: "tv")
        request(refills, asks, heard, product: "radio")
        #expect(asks.made.count == 2)
        asks.made[0].succeed(.nothingNow)
        request(refills, asks, heard, product: "radio")
        #expect(asks.made.count == 2, "radio's ask is still in flight: joined")
        asks.made[1].succeed(.granted)
        #expect(heard.outcomes == [.nothingNow, .granted, .granted])
        loop.advanceTime(by: RefillSharing.holdOff)
        #expect(asks.made.count == 2)
    }
}
