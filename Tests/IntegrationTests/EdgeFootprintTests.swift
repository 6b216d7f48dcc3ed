import Cluster
import Testing

/// The edge keeps Foundation out of its process: its libraries' pages were 6 MiB of every edge's RSS, a tenth of
/// the 64 MiB budget for 10,000 connections (`flashsale-bench edge-rss`). FoundationEssentials, which
/// ArgumentParser needs, is allowed. An `import Foundation` anywhere in the edge's modules brings it back.
@Suite struct EdgeFootprintTests {
    @Test func theEdgeDoesNotLinkFoundation() async throws {
        let edge = try RepoPaths.executable("Edge").path
        let linked = try await runCommand("/usr/bin/ldd", [edge], timeout: .seconds(30))
        #expect(linked.status == 0)
        #expect(linked.output.contains("libswiftCore.so"), "ldd printed no Swift library: \(linked.output)")
        for library in ["libFoundation.so", "libFoundationInternationalization.so", "lib_FoundationICU.so"] {
            #expect(!linked.output.contains(library), "the edge links \(library)")
        }
    }
}
