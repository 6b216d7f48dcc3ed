import Foundation
import Testing
import TestSupport

/// The fault suite (`scripts/bench.sh faults` at full size) at a small size: each case runs a sale on 3 edges and
/// injects its fault (or a hostile client's load) mid-sale, against the suite's own PostgreSQL, ZooKeeper and
/// 3-node ensemble (restarting them cannot disturb other tests). The promises must hold in every case, the
/// ground-truth invariant at every sample, and each hostile case must get the answers it expects.
@Suite(.serialized, .timeLimit(.minutes(9)))
struct FaultSuiteTests {
    @Test func nothingLostDuplicatedOversoldOrStrandedThroughEveryFault() async throws {
        let bench = try RepoPaths.executable("flashsale-bench")
        let run = try await runCommand(
            bench.path, ["faults", "--stock", "300", "--connections", "24", "--depth", "4"], timeout: .seconds(480))
        let result = run.output.split(separator: "\n").last { $0.hasPrefix("RESULT ") }.map(String.init) ?? ""
        #expect(run.status == 0, "fault suite failed:\n\(run.output)")
        #expect(result == "RESULT cases=17 hostile_cases=9 lost=0 duplicated=0 oversold=0 stranded=0 failed_cases=0", "\(run.output)")
    }
}
