import Cluster
import Foundation
import Logging
import Testing

@testable import QuotaCore

/// The quota service's clients of the edges, against sockets of the test's own (no server process).
@Suite struct EdgeReleaserTests {
    /// Finding 18: a client per dead edge's address kept reconnecting forever. Now a client whose connection broke
    /// is dropped at once, and one unused for a while (an edge that stopped answering) soon after.
    @Test func releaseClientsOfGoneEdgesAreDropped() async throws {
        let releaser = EdgeReleaser(serviceToken: "t", timeout: .milliseconds(300), logger: Logger(label: "releaser-test"))
        let nobody = "127.0.0.1:\(LocalPorts.free())"
        #expect(await releaser.release(product: "tv", units: 1, edgeID: 7, address: nobody) == .unreachable)
        #expect(releaser.clientCount == 0)
        // A port that accepts connections (the kernel's backlog) but never answers: the call times out.
        let silent = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(silent) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(silent, $0, length) == 0 && listen(silent, 8) == 0 && getsockname(silent, $0, &length) == 0 }
        }
        #expect(bound)
        let mute = "127.0.0.1:\(UInt16(bigEndian: address.sin_port))"
        #expect(await releaser.release(product: "tv", units: 1, edgeID: 7, address: mute) == .unreachable)
        #expect(releaser.clientCount == 1)
        await releaser.forgetIdle(now: .now + .seconds(5))
        #expect(releaser.clientCount == 1)
        await releaser.forgetIdle(now: .now + .seconds(31))
        #expect(releaser.clientCount == 0)
        await releaser.shutdown()
    }
}
