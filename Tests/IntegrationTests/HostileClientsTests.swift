import Foundation
import Testing
import TestSupport

/// The hostile-client program (`flashsale-bench hostile`, scripts/bench.sh hostile) at CI size: one real Edge,
/// 1,000 idle connections, a few slow clients, oversized headers, a connect-and-close storm and non-readers beside a
/// probe, about 15 s. The program checks its own rules (edge alive, memory bounded, idle and slow connections closed
/// by their timeouts, oversized headers refused, probe served) and exits non-zero when one breaks.
@Suite(.timeLimit(.minutes(2)))
struct HostileClientsTests {
    @Test func theEdgeSurvivesHostileClientsAndKeepsServingTheProbe() async throws {
        let zooKeeper = try await TestServers.zooKeeperHosts()
        let bench = try RepoPaths.executable("flashsale-bench")
        let result = try await runCommand(
            bench.path,
            ["hostile", "--zookeeper", zooKeeper, "--idle-connections", "1000", "--slow-clients", "5",
             "--oversized-workers", "2", "--storm-rate", "200", "--non-readers", "2", "--baseline-seconds", "2",
             "--seconds", "8", "--idle-timeout", "3", "--frame-timeout", "1", "--rss-limit-mib", "512"],
            timeout: .seconds(90))
        let summary = result.output.split(separator: "\n").last { $0.hasPrefix("RESULT ") }.map(String.init) ?? ""
        #expect(result.status == 0, "flashsale-bench hostile failed:\n\(result.output.suffix(3000))")
        #expect(summary.contains(" crashes=0"), "\(summary)")
        #expect(summary.contains(" idle_closed=1000"), "\(summary)")
        #expect(summary.contains(" probe_errors=0"), "\(summary)")
        #expect(summary.contains(" failures=0"), "\(summary)")
    }
}
