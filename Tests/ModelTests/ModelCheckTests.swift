import Cluster
import Foundation
import Testing

/// The quota and in-doubt protocol's model (Sources/QuotaCore/Planning/QuotaProtocol.pml), checked exhaustively
/// with spin through scripts/model-check.sh, one case per test. Each test reads pan's own report
/// (.data/model-check/<case>/pan.log), not the script's verdict: the protocol as built must give no error in a
/// complete search, and each old behaviour switched back on must give a counterexample (a violated assertion).
@Suite(.timeLimit(.minutes(10)))
struct ModelCheckTests {
    /// The model's switches for the behaviours of eaaa7e6 (and one gap found by the model itself).
    static let oldBehaviours = [
        "BUG_LEAK_SECOND_INDOUBT", "BUG_MADE_HERE_BY_EDGE_ID", "BUG_NONFENCING_LOOKUP", "BUG_NO_PARTITION_FENCE",
        "BUG_RELEASE_BY_ADDRESS", "BUG_REVIVE", "BUG_LATE_COMMIT",
    ]

    /// Safety after every step, and nothing stranded once the sale is over, in every reachable state.
    @Test func theProtocolHoldsInEveryReachableState() async throws {
        let pan = try await Self.check("fixed")
        #expect(pan.errors == 0, "\(pan.log)")
        #expect(pan.complete, "\(pan.log)")
        #expect(pan.states > 100_000, "the model shrank to \(pan.states) states: \(pan.log)")
    }

    /// No cycle in the state graph (non-progress cycle search, no progress label): every run reaches an end state,
    /// so the end-state check of "nothing stranded" covers every run.
    @Test func everyRunOfTheModelEnds() async throws {
        let pan = try await Self.check("terminates")
        #expect(pan.errors == 0, "\(pan.log)")
        #expect(pan.complete, "\(pan.log)")
    }

    @Test(arguments: oldBehaviours)
    func eachOldBehaviourGivesACounterexample(_ bug: String) async throws {
        let pan = try await Self.check(bug)
        #expect(pan.errors >= 1, "\(bug) gave no counterexample: \(pan.log)")
        #expect(pan.log.contains("assertion violated"), "\(bug) failed for another reason than a property: \(pan.log)")
    }

    struct PanReport {
        var errors: Int
        var states: Int
        var complete: Bool
        var log: String
    }

    static func check(_ name: String) async throws -> PanReport {
        let script = RepoPaths.scripts.appendingPathComponent("model-check.sh").path
        let result = try await runCommand("/bin/bash", [script, name], timeout: .seconds(540))
        let logURL = RepoPaths.root.appendingPathComponent(".data/model-check/\(name)/pan.log")
        guard let log = try? String(contentsOf: logURL, encoding: .utf8) else {
            Issue.record("no pan report for \(name): \(result.output.suffix(4000))")
            return PanReport(errors: -1, states: 0, complete: false, log: result.output)
        }
        return PanReport(
            errors: log.firstMatch(of: /errors: (\d+)/).flatMap { Int($0.1) } ?? -1,
            states: log.firstMatch(of: /(\d+) states, stored/).flatMap { Int($0.1) } ?? 0,
            complete: !log.contains("Search not completed") && !log.contains("max search depth too small")
                && !log.contains("out of memory"),
            log: log)
    }
}
