import Logging
import ServiceKit
import Testing

/// Which environments name a lifeline (its pipe, a stray descriptor and a killed sale: `ServiceLifelineTests`).
@Suite
struct ParentLifelineTests {
    let logger = Logger(label: "lifeline-test")

    @Test func noVariableOrAStrayOneIsNoLifeline() {
        #expect(ParentLifeline.services(environment: [:], logger: logger).isEmpty)
        for value in ["", "x", "-1", "0", "1", "2"] {
            #expect(ParentLifeline(environment: [ParentLifeline.environmentKey: value], logger: logger) == nil, "\(value)")
        }
    }
}
