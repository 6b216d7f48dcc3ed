import Testing

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
