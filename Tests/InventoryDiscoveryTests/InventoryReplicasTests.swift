import Addressing
import Logging
import NIOCore
import Proto
import Testing
import Wire

@testable import InventoryDiscovery

/// The driver of `InventoryReplicaSet`, against loopback ports nobody listens on (no server process).
@Suite struct InventoryReplicasTests {
    let logger = Logger(label: "replicas-test")

    /// A replica that refuses connections is put aside and the call goes to the next one; the client of a replica
    /// is closed once it has left the set for the grace.
    @Test func aDeadReplicaIsSkippedAndItsClientClosedOnceItLeaves() async throws {
        let dead = HostPort(host: "127.0.0.1", port: 1)
        let alsoDead = HostPort(host: "127.0.0.1", port: 2)
        let replicas = InventoryReplicas(
            listed: [], template: RPCClientConfiguration(port: 0, connectTimeout: .milliseconds(200)), logger: logger)
        defer { Task { await replicas.shutdown() } }
        await expectUnavailable(replicas)  // nothing known yet: refused before sending
        #expect(replicas.clientCount == 0)

        replicas.discovered([dead, alsoDead])
        await expectUnavailable(replicas)
        #expect(replicas.clientCount == 2, "a call that could not be sent went to the other replica at once")
        #expect(replicas.replicaSet.replicas.allSatisfy { $0.retryAt != nil && $0.inFlight == 0 }, "both put aside")
        replicas.discovered([])  // an empty set read back changes nothing
        #expect(replicas.addresses == [dead, alsoDead])

        replicas.discovered([alsoDead])
        await replicas.closeDeparted(grace: .seconds(60))
        #expect(replicas.clientCount == 2, "within the grace the departed replica's client stays")
        await replicas.closeDeparted(grace: .zero)
        #expect(replicas.clientCount == 1)
        #expect(replicas.addresses == [alsoDead])
    }

    private func expectUnavailable(_ replicas: InventoryReplicas) async {
        do {
            _ = try await replicas.call(InventoryRPC.GetStock.self, ProductRequest(productId: "p"), timeout: .seconds(1))
            Issue.record("a call to no live replica succeeded")
        } catch {
            #expect(RPCError.wrapping(error).code == .unavailable, "\(error)")
        }
    }
}
