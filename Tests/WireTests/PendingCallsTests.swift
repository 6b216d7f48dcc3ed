import Testing

@testable import Wire

/// The table of calls in flight (the client's by call id, the server's by serial), against a dictionary doing the same.
@Suite struct PendingCallsTests {
    @Test func idsCountFromOneAndAnswersComeInAnyOrder() {
        var calls = PendingCalls<String>()
        #expect(calls.add("a") == 1)
        #expect(calls.add("b") == 2)
        #expect(calls.add("c") == 3)
        #expect(calls.remove(2) == "b")
        #expect(calls.remove(2) == nil, "answered twice: the second is dropped")
        #expect(calls.contains(1) && !calls.contains(2) && calls.contains(3))
        #expect(calls.remove(1) == "a")
        #expect(calls.ringSlots == 1, "answered slots at the front go")
        #expect(calls.remove(3) == "c")
        #expect(calls.count == 0 && calls.ringSlots == 0)
        #expect(calls.add("d") == 4)
    }

    /// The server's tables start with one slot (one per connection, most idle) and grow as calls pile up.
    @Test func aRingOfOneSlotGrowsWithTheCallsInFlight() {
        var calls = PendingCalls<UInt64>(initialCapacity: 1)
        let ids = (0..<40).map { calls.add(UInt64($0)) }
        #expect(ids == Array(1...40) && calls.count == 40 && calls.ringSlots == 40)
        for (value, id) in ids.enumerated().reversed() { #expect(calls.remove(id) == UInt64(value)) }
        #expect(calls.count == 0 && calls.ringSlots == 0)
        #expect(calls.add(7) == 41)
    }

    @Test func idsThatWereNeverHandedOutAreNotFound() {
        var calls = PendingCalls<String>()
        _ = calls.add("a")
        for id: UInt64 in [0, 2, 99, .max] {
            #expect(!calls.contains(id))
            #expect(calls.remove(id) == nil, "id \(id)")
        }
        #expect(calls.count == 1)
    }

    /// A call that is never answered cannot make the ring grow with every later call.
    @Test func anUnansweredCallMovesAsideOnceTheRingSpansItsWindow() {
        var calls = PendingCalls<Int>(window: 8)
        let stuck = calls.add(-1)
        for value in 0..<1_000 {
            let id = calls.add(value)
            #expect(calls.remove(id) == value)
            #expect(calls.ringSlots <= 8)
        }
        #expect(calls.count == 1)
        #expect(calls.contains(stuck))
        #expect(calls.remove(stuck) == -1, "a late answer still finds its call")
        #expect(calls.count == 0)
    }

    @Test func removeAllHandsOverEveryCallAndIdsGoOn() {
        var calls = PendingCalls<Int>(window: 4)
        for value in 0..<10 { _ = calls.add(value) }
        #expect(calls.remove(8) == 7, "ids count from 1")
        #expect(Set(calls.removeAll()) == Set([0, 1, 2, 3, 4, 5, 6, 8, 9]))
        #expect(calls.count == 0 && calls.ringSlots == 0)
        #expect(!calls.contains(3))
        #expect(calls.add(10) == 11)
    }

    @Test func randomAddsAndAnswersAgreeWithADictionary() {
        var generator = SystemRandomNumberGenerator()
        for window in [1, 3, 16, 4_096] {
            var calls = PendingCalls<UInt64>(window: window)
            var model: [UInt64: UInt64] = [:]
            var handedOut: UInt64 = 0
            for _ in 0..<20_000 {
                if Bool.random(using: &generator) || model.isEmpty {
                    let value = UInt64.random(in: 0...UInt64.max, using: &generator)
                    let id = calls.add(value)
                    handedOut += 1
                    #expect(id == handedOut)
                    model[id] = value
                } else {
                    // Mostly calls in flight, sometimes ids answered already or never handed out.
                    let id = Int.random(in: 0..<4, using: &generator) == 0
                        ? UInt64.random(in: 0...handedOut + 2, using: &generator) : model.keys.randomElement(using: &generator)!
                    #expect(calls.contains(id) == (model[id] != nil))
                    #expect(calls.remove(id) == model.removeValue(forKey: id))
                }
                #expect(calls.count == model.count)
                #expect(calls.ringSlots <= window)
            }
            #expect(Set(calls.removeAll()) == Set(model.values))
        }
    }
}
