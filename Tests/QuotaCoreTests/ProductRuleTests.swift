import Proto
import Testing
import Wire

@testable import QuotaCore

/// The quota service checks product ids by the contract's one rule (`ProductRules`), which is its own node-name rule.
@Suite struct ProductRuleTests {
    @Test func checkProductRefusesWhatTheRuleRefusesAsInvalidArgument() throws {
        try QuotaAPI.checkProduct("tv")
        try QuotaAPI.checkProduct("a.b_c-9")
        for id in ["", ".", "..", "../x", "a/b", "a b", "a\u{7}b", String(repeating: "x", count: 129)] {
            do {
                try QuotaAPI.checkProduct(id)
                Issue.record("\(id.debugDescription) was accepted")
            } catch let error as RPCError {
                #expect(error.code == .invalidArgument)
                #expect(error.message == ProductRules.idProblem(id)?.description)
            }
        }
    }
}
