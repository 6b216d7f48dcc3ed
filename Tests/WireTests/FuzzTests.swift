import Foundation
import Testing
import TestSupport

/// The libFuzzer harness (Fuzz/) for a CI-sized run: builds it if stale (swiftc, about 40 s), then 200,000 inputs over
/// the frame decoder and every message and method. A crash, leak or timeout fails the test; the failing input is
/// kept under .data/fuzz/artifacts/ (scripts/bench.sh fuzz runs 10 million).
@Suite(.timeLimit(.minutes(5)))
struct FuzzTests {
    @Test func twoHundredThousandInputsWithoutACrash() async throws {
        let script = RepoPaths.scripts.appendingPathComponent("fuzz.sh").path
        let result = try await runCommand("/bin/bash", [script, "200000"], timeout: .seconds(280))
        let summary = result.output.split(separator: "\n").last { $0.hasPrefix("FUZZ ") } ?? ""
        #expect(result.status == 0, "scripts/fuzz.sh failed:\n\(result.output.suffix(4000))")
        #expect(summary.contains("crashes=0"), "\(summary)")
        #expect(summary.contains("inputs=200000"), "\(summary)")
    }
}
