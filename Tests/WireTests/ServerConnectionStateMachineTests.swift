import NIOCore
import Proto
import Testing

@testable import Wire

/// The server connection's rules as plain function calls: no channel, no loop, times given by hand.
/// (`ServerHandlerTests` and `ConnectionTimeoutTests` check the same through the handler on an EmbeddedChannel.)
@Suite struct ServerConnectionStateMachineTests {
    typealias Machine = ServerConnectionStateMachine

    private func machine(cap: Int = 2, idle: TimeAmount? = nil, frame: TimeAmount? = nil) -> Machine {
        Machine(configuration: .init(maxCallsInFlight: cap, idleTimeout: idle, frameTimeout: frame))
    }

    private func at(_ seconds: Double) -> NIODeadline { .uptimeNanoseconds(UInt64(seconds * 1e9)) }

    private func request(_ callID: UInt64) -> WireRequest { WireRequest(callId: callID, method: "M") }

    @Test func callsStartUpToTheCapThenWaitAndReadingStops() {
        var m = machine(cap: 2)
        let v1 = m.readRequested()
        #expect(v1 == .read)
        let v2 = m.requestReceived(request(1), now: at(0))
        #expect(v2)
        _ = m.callStarted(callID: 1)
        let v3 = m.requestReceived(request(2), now: at(0))
        #expect(v3)
        _ = m.callStarted(callID: 2)
        let v4 = m.requestReceived(request(3), now: at(1))
        #expect(!v4, "at the cap: the third waits")
        #expect(m.callsQueued == 1)
        let v5 = m.readRequested()
        #expect(v5 == .none, "no read at the cap")
        let v6 = m.nextQueued()
        #expect(v6 == nil, "no free slot yet")
    }

    @Test func aFinishedCallStartsTheWaitingOneThenTheWithheldReadGoesThrough() {
        var m = machine(cap: 2)
        let first = m.callStarted(callID: 11)
        let second = m.callStarted(callID: 12)
        let v7 = m.requestReceived(request(13), now: at(5))
        #expect(!v7)
        let v8 = m.readRequested()
        #expect(v8 == .none)

        let v9 = m.callFinished(serial: first)
        #expect(v9 == 11)
        let next = m.nextQueued()
        #expect(next?.request.callId == 13)
        #expect(next?.arrival == at(5), "its budget counts from when it was read")
        _ = m.callStarted(callID: 13)
        let v10 = m.nextQueued()
        #expect(v10 == nil)
        let v11 = m.callsSettled()
        #expect(v11 == .none, "back at the cap: the read still waits")

        let v12 = m.callFinished(serial: second)
        #expect(v12 == 12)
        let v13 = m.nextQueued()
        #expect(v13 == nil, "nothing waits")
        let v14 = m.callsSettled()
        #expect(v14 == .read)
        let v15 = m.callsSettled()
        #expect(v15 == .none, "the withheld read goes through once")
    }

    @Test func aCallIsAnsweredOnce() {
        var m = machine()
        let serial = m.callStarted(callID: 7)
        let v16 = m.callFinished(serial: serial)
        #expect(v16 == 7)
        let v17 = m.callFinished(serial: serial)
        #expect(v17 == nil)
        #expect(m.callsInFlight == 0)
    }

    @Test func callIDsMayRepeatButSerialsDoNot() {
        var m = machine(cap: 4)
        let a = m.callStarted(callID: 1)
        let b = m.callStarted(callID: 1)
        #expect(a != b)
        let v18 = m.callFinished(serial: b)
        #expect(v18 == 1)
        let v19 = m.callFinished(serial: a)
        #expect(v19 == 1)
    }

    @Test func anUnwritableConnectionIsNotRead() {
        var m = machine()
        let v20 = m.writabilityChanged(isWritable: false)
        #expect(v20 == .none)
        let v21 = m.readRequested()
        #expect(v21 == .none)
        let v22 = m.writabilityChanged(isWritable: true)
        #expect(v22 == .read)
        let v23 = m.writabilityChanged(isWritable: true)
        #expect(v23 == .none, "nothing withheld any more")
    }

    @Test func drainClosesAtOnceWhenNothingIsInFlight() {
        var m = machine()
        let v24 = m.drain()
        #expect(v24 == .close(.drained))
    }

    @Test func drainFinishesTheCallsInFlightThenCloses() {
        var m = machine(cap: 1)
        let serial = m.callStarted(callID: 1)
        let v25 = m.requestReceived(request(2), now: at(0))
        #expect(!v25)
        let v26 = m.drain()
        #expect(v26 == .none)
        let v27 = m.readRequested()
        #expect(v27 == .none, "no read while draining")
        let v28 = m.callFinished(serial: serial)
        #expect(v28 == 1)
        let queued = m.nextQueued()
        #expect(queued?.request.callId == 2, "a call read before the drain still runs")
        let last = m.callStarted(callID: 2)
        let v29 = m.callsSettled()
        #expect(v29 == .none)
        let v30 = m.callFinished(serial: last)
        #expect(v30 == 2)
        let v31 = m.callsSettled()
        #expect(v31 == .close(.drained))
    }

    @Test func theIdleTimerIsArmedOnce() {
        var m = machine(idle: .seconds(3))
        let v32 = m.activated(now: at(1))
        #expect(v32 == .armIdleTimer(at: at(4)))
        let v33 = m.activated(now: at(2))
        #expect(v33 == .none)
        var idleless = machine(idle: nil)
        let v34 = idleless.activated(now: at(1))
        #expect(v34 == .none)
    }

    @Test func anIdleConnectionClosesAfterTheIdleTimeoutSinceItsLastRead() {
        var m = machine(idle: .seconds(3))
        _ = m.activated(now: at(0))
        m.readCompleted(now: at(2))
        let v35 = m.idleTimerFired(now: at(3))
        #expect(v35 == .armIdleTimer(at: at(5)), "read 1 s ago: check again at 2 + 3")
        let v36 = m.idleTimerFired(now: at(5))
        #expect(v36 == .close(.idle))
        let v37 = m.idleTimerFired(now: at(6))
        #expect(v37 == .none, "closed: the timer is not armed any more")
    }

    @Test func aConnectionWithACallInFlightIsNotIdle() {
        var m = machine(idle: .seconds(3))
        _ = m.activated(now: at(0))
        let serial = m.callStarted(callID: 1)
        let v38 = m.idleTimerFired(now: at(10))
        #expect(v38 == .armIdleTimer(at: at(13)))
        _ = m.callFinished(serial: serial)
        let v39 = m.idleTimerFired(now: at(13))
        #expect(v39 == .close(.idle))
    }

    @Test func aPartialFrameHeldPastTheFrameTimeoutCloses() {
        var m = machine(frame: .seconds(2))
        let v40 = m.partialFrameHeld(now: at(1))
        #expect(v40 == .armFrameTimer(at: at(3)))
        let v41 = m.frameTimerFired(now: at(3))
        #expect(v41 == .close(.partialFrameTimeout))
    }

    @Test func aFrameThatCompletesStopsTheClockAndTheNextStartsItAgain() {
        var m = machine(frame: .seconds(2))
        let v42 = m.partialFrameHeld(now: at(0))
        #expect(v42 == .armFrameTimer(at: at(2)))
        m.frameReceived()
        let v43 = m.partialFrameHeld(now: at(1.5))
        #expect(v43 == .none, "one timer per connection: armed already")
        let v44 = m.frameTimerFired(now: at(2))
        #expect(v44 == .armFrameTimer(at: at(3.5)), "re-armed for the frame held now")
        m.frameReceived()
        let v45 = m.frameTimerFired(now: at(3.5))
        #expect(v45 == .none, "nothing partial: the timer stops")
        let v46 = m.partialFrameHeld(now: at(4))
        #expect(v46 == .armFrameTimer(at: at(6)))
    }

    @Test func aFrameTricklingInKeepsItsFirstStart() {
        var m = machine(frame: .seconds(2))
        let first = m.partialFrameHeld(now: at(0))
        #expect(first == .armFrameTimer(at: at(2)))
        let again = m.partialFrameHeld(now: at(1.5))
        #expect(again == .none, "a byte more of the same frame")
        let fired = m.frameTimerFired(now: at(2))
        #expect(fired == .close(.partialFrameTimeout), "counted from its first byte, not its last")
    }

    @Test func timeTheServerIsNotReadingDoesNotCount() {
        var m = machine(cap: 1, frame: .seconds(2))
        let serial = m.callStarted(callID: 1)
        let v47 = m.partialFrameHeld(now: at(0))
        #expect(v47 == .armFrameTimer(at: at(2)))
        let v48 = m.readRequested()
        #expect(v48 == .none)
        let v49 = m.frameTimerFired(now: at(2))
        #expect(v49 == .armFrameTimer(at: at(4)), "not reading: start over")
        let v50 = m.frameTimerFired(now: at(4))
        #expect(v50 == .armFrameTimer(at: at(6)))
        _ = m.callFinished(serial: serial)
        let v51 = m.callsSettled()
        #expect(v51 == .read)
        let v52 = m.frameTimerFired(now: at(6))
        #expect(v52 == .close(.partialFrameTimeout), "reading again: the partial frame, counted from 4, times out")
    }

    @Test func noFrameTimeoutMeansNoTimer() {
        var m = machine(frame: nil)
        let v53 = m.partialFrameHeld(now: at(0))
        #expect(v53 == .none)
        let v54 = m.frameTimerFired(now: at(100))
        #expect(v54 == .none)
    }

    @Test func aClosedConnectionDropsWhatWaits() {
        var m = machine(cap: 1)
        _ = m.callStarted(callID: 1)
        let v55 = m.requestReceived(request(2), now: at(0))
        #expect(!v55)
        m.closed()
        #expect(m.callsQueued == 0)
    }

    @Test func theClockIsReadOnlyWhenNeeded() {
        var m = machine(cap: 1)
        var reads = 0
        func now() -> NIODeadline { reads += 1; return at(0) }
        let v56 = m.requestReceived(request(1), now: now())
        #expect(v56)
        m.readCompleted(now: now())
        #expect(reads == 0, "below the cap and without an idle timeout: no clock read")
        _ = m.callStarted(callID: 1)
        let v57 = m.requestReceived(request(2), now: now())
        #expect(!v57)
        #expect(reads == 1)
    }
}
