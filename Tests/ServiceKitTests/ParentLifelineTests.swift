import ServiceKit
import Testing

/// Which environments name a lifeline (its pipe, a stray descriptor and a killed sale: `ServiceLifelineTests`).
@Suite
struct ParentLifelineTests {
    @Test func noVariableOrAStrayOneIsNoLifeline() {
        #expect(ParentLifeline.descriptor(in: [:]) == nil)
        for value in ["", "x", "-1", "0", "1", "2"] {
            #expect(ParentLifeline.descriptor(in: [ParentLifeline.environmentKey: value]) == nil, "\(value)")
        }
        #expect(ParentLifeline.descriptor(in: [ParentLifeline.environmentKey: "3"]) == 3)
    }
}
