import Foundation
import Testing
import TestSupport

/// The fault suite's PostgreSQL HA cases at a small size, on a real primary and synchronous standby under Patroni
/// (one cluster for the run, on its own ZooKeeper, in its run folder), the inventory following Patroni's leader: the
/// primary's postmaster killed mid-sale (the sale goes on on the promoted standby), the same with the old primary
/// rejoining mid-sale, Patroni alone killed on the primary (its orphaned PostgreSQL must not hold a purchase past its
/// deadline), and the standby lost (the primary acknowledges alone). Nothing lost, duplicated, oversold or stranded,
/// the ground truth held, in each. It runs in the test run's lane 2, beside the other suites (scripts/test.sh).
@Suite(.serialized, .timeLimit(.minutes(9)))
struct PatroniFaultTests {
    @Test func nothingLostDuplicatedOversoldOrStrandedThroughPostgresFailover() async throws {
        let bench = try RepoPaths.executable("flashsale-bench")
        let run = try await runCommand(
            bench.path,
            ["faults", "--cases", "pgfailover,pgrejoin,pgorphan,pgstandby", "--stock", "200", "--connections", "16", "--depth", "4"],
            timeout: .seconds(480))
        let result = run.output.split(separator: "\n").last { $0.hasPrefix("RESULT ") }.map(String.init) ?? ""
        #expect(run.status == 0, "Patroni fault cases failed:\n\(run.output)")
        #expect(result == "RESULT cases=4 hostile_cases=0 lost=0 duplicated=0 oversold=0 stranded=0 failed_cases=0", "\(run.output)")
        #expect(run.output.contains("pgfailover: failover_s="), "\(run.output)")
    }
}
