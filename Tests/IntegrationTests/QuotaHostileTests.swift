import Cluster
import FlashSaleClient
import Foundation
import Logging
import Proto
import QuotaContract
import TestSupport
import Testing
import Wire
import ZooKeeperClient

/// Untrusted ZooKeeper data, an edge's identity and an edge cut off from ZooKeeper (review findings 4, 7, 8, 14),
/// against real ZooKeeper, real PostgreSQL and the real executables. Each reproduces the review's scenario.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct QuotaHostileTests {
    /// Finding 4: `released = Int64.min` in a registration trapped the quota service (`0 - Int64.min`), which then
    /// crash-looped while the node lived. Finding 14: anyone who may create under `edges/` could forge a
    /// registration. Now each is logged and ignored, the process stays up and the sale sells exactly its stock.
    @Test func poisonedRegistrationsNeitherCrashTheQuotaServiceNorChangeTheSale() async throws {
        try await QuotaCluster.with(edges: 2) { cluster in
            try await cluster.createProduct("p1", stock: 200)
            try await cluster.waitForGrants("p1", [100, 100])
            let live = cluster.edges[0]
            let poison: (String) -> [UInt8] = { address in
                EdgeRegistration(
                    edgeId: 100_000, address: address,
                    usage: [ProductUsage(productId: "p1", used: .max, released: .min, granted: .max)]
                ).serializedBytes()
            }
            let forger = try await ZooKeeperClient.connect(hosts: cluster.zkHosts)
            do {
                // The review's node: a name ZooKeeper never handed out.
                try await forger.create(cluster.layout.edge("edge-0000099999"), data: poison("127.0.0.1:1"), mode: .ephemeral)
                // Names a sequential create did hand out: one nobody answers for, one at a live edge's address.
                let prefix = cluster.layout.edges + "/" + QuotaLayout.edgePrefix
                let nowhere = try await forger.create(prefix, data: poison("127.0.0.1:1"), mode: .ephemeralSequential)
                let elsewhere = try await forger.create(prefix, data: poison(live.address), mode: .ephemeralSequential)
                // And one that is no session's.
                try await forger.create(prefix, data: poison("127.0.0.1:1"), mode: .persistentSequential)
                let forgedIDs = [nowhere, elsewhere].compactMap { QuotaLayout.edgeID(name: String($0.split(separator: "/").last ?? "")) }
                #expect(forgedIDs.count == 2)

                // The forged names are probed, by id, and found to be no edge: retired for good, so their names are
                // below the record's watermark and out of it.
                try await cluster.waitUntil("the forged registrations to be retired") {
                    let record = try #require(try await cluster.record("p1"))
                    return record.maxEdgeId >= forgedIDs.max() ?? .max
                        && !record.allotments.contains { forgedIDs.contains($0.edgeId) }
                }
                for quota in cluster.quotaEndpoints { #expect(quota.process.isRunning, "\(quota.name) exited: \(quota.process.tail())") }
                #expect(cluster.quotaEndpoints[0].process.log().contains("registration not trusted"))
                let status = try await cluster.status("p1")
                #expect(status.edges.map(\.edgeId).sorted() == cluster.edgeIDs.sorted())
                #expect(status.grantedUnused == status.sellable)

                // The forged nodes still live, and the sale sells exactly what there is.
                #expect(try await cluster.sell("p1", until: 200) == 200)
                for quota in cluster.quotaEndpoints { #expect(quota.process.isRunning) }
                try await cluster.checkInvariants(expectOrders: ["p1": 200])
            } catch {
                await forger.close()
                throw error
            }
            await forger.close()
        }
    }

    /// Finding 7: releases and probes named an edge by address. A new edge on a dead edge's port answered the dead
    /// edge's probes: it was drained every settle round, and the dead edge was never retired. Now a release names
    /// the edge's id, the new edge refuses it (FAILED_PRECONDITION), and the prober takes that as "gone".
    @Test func anEdgeOnADeadEdgesPortIsNeitherDrainedNorCreditedToIt() async throws {
        try await QuotaCluster.with(edges: 1) { cluster in
            let port = LocalPorts.free()
            let first = try await cluster.addEdge(port: port)
            let firstName = QuotaLayout.edgeName(id: cluster.edgeIDs[1])
            try await cluster.createProduct("tv", stock: 1_000)
            try await cluster.waitForGrants("tv", [500, 500])
            #expect(try await cluster.buy("tv", through: [first], count: 10) == 10)
            await first.process.kill9()
            let second = try await cluster.addEdge(port: port)

            // The dead edge is retired (out of the record) and its 490 unsold units go to the live edges.
            try await cluster.waitUntil("the dead edge to be retired and its units handed out", timeout: .seconds(20)) {
                let record = try #require(try await cluster.record("tv"))
                let status = try await cluster.status("tv")
                return !record.allotments.contains { $0.edge == firstName }
                    && status.edges.count == 2 && status.sellable == 990 && status.grantedUnused == 990
            }
            try await cluster.waitForEdgesToApply("tv")
            #expect(try await cluster.zk.exists(cluster.layout.quota("tv", edge: firstName)) == nil)
            // Nothing meant for the dead edge reached the new one: it handed nothing back, it holds all it was granted.
            let usage = try #require(try await cluster.usage(second, "tv"))
            #expect(usage.released == 0 && usage.used == 0 && usage.granted >= 490)

            let survivors = cluster.runningEdges
            #expect(try await cluster.sell("tv", until: 1_000, through: survivors) == 1_000)
            try await cluster.checkInvariants(expectOrders: ["tv": 1_000])
        }
    }

    /// Finding 18: retired allotments and quota nodes were never removed, so the product node grew with every edge
    /// that ever lived (toward ZooKeeper's 1 MB node limit, past which the sale stalls). Now a gone edge's allotment
    /// and quota node are dropped, and the record keeps only the highest id allotted.
    @Test func edgesComingAndGoingLeaveNothingBehindInZooKeeper() async throws {
        try await QuotaCluster.with(edges: 1) { cluster in
            try await cluster.createProduct("tv", stock: 1_000)
            try await cluster.waitForGrants("tv", [1_000])
            for _ in 0..<5 {
                let edge = try await cluster.addEdge()
                try await cluster.waitForGrants("tv", [500, 500])
                _ = await edge.process.terminate()
                try await cluster.waitForGrants("tv", [1_000])
            }
            let stays = QuotaLayout.edgeName(id: cluster.edgeIDs[0])
            try await cluster.waitUntil("the gone edges to be dropped") {
                let record = try #require(try await cluster.record("tv"))
                let quotas = try await cluster.zk.children(cluster.layout.quotas(of: "tv"))
                return record.allotments.map(\.edge) == [stays] && quotas == [stays]
            }
            #expect(try await cluster.record("tv")?.maxEdgeId == cluster.edgeIDs.max())
            try await cluster.checkInvariants(expectOrders: ["tv": 0])
        }
    }

    /// Finding 8: an edge partitioned from ZooKeeper kept selling its cached units with no time bound, while its
    /// session expired and the quota service handed the same units out again. Now, past the session timeout minus a
    /// margin without an answer from ZooKeeper, it answers UNAVAILABLE and hands back what it holds, until it has
    /// registered again and re-read its quotas; then it sells again.
    @Test func anEdgeCutOffFromZooKeeperStopsSellingBeforeItsSessionCanExpire() async throws {
        try await Self.withPartitionableEdge(cutFromQuotaService: false) { cluster, partition in
            let (cut, cutName, sale) = (partition.cut, partition.cutName, partition.sale)
            partition.blackhole()
            let client = cluster.edgeClient(cut)
            var expired = false
            var answersAfterExpiry: [String] = []
            var samples = 0
            // Until ZooKeeper has expired the cut edge's session (its node is gone) and a few attempts after.
            let deadline = ContinuousClock.now + .seconds(30)
            while answersAfterExpiry.count < 5 {
                guard ContinuousClock.now < deadline else { throw ClusterError.timeout("the cut edge's session to expire") }
                // Ground truth at every sample: what the edges hold is never more than the database still has.
                // (Remaining first: a sale between the reads only lowers what the edges hold.)
                let remaining = try await cluster.inventory.getStock(productId: "tv").remaining
                var held: Int64 = 0
                for edge in cluster.runningEdges { held += try await cluster.usage(edge, "tv").map { $0.granted - $0.used - $0.released } ?? 0 }
                #expect(held <= remaining, "edges hold \(held) > remaining \(remaining)")
                samples += 1

                if !expired { expired = try await !cluster.registrations().keys.contains(cutName) }
                let (request, user) = cluster.nextIDs()
                let answer: String
                do {
                    answer = "\(try await client.purchase(requestID: request, userID: user, product: "tv").outcome)"
                } catch let error as RPCError {
                    answer = "\(error.code)"
                }
                if expired { answersAfterExpiry.append(answer) }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(samples > 5)
            #expect(answersAfterExpiry.allSatisfy { $0 == "\(RPCError.Code.unavailable)" }, "\(answersAfterExpiry)")
            #expect(cut.process.log().contains("selling stops until registered again"))

            // The others' buyers may have sold everything meanwhile; stop them, and raise the stock so there is
            // something left to sell whatever their pace was (else SOLD_OUT would be the right answer).
            let outcome = await sale.stop()
            #expect(outcome.errors == 0)
            _ = try await cluster.quota().raiseStock(productId: "tv", by: 90)

            // Connected again: it registers under its name with a new session, vouches for it, and sells.
            partition.restore()
            try await cluster.waitUntil("the cut edge to sell again", timeout: .seconds(30)) {
                let (request, user) = cluster.nextIDs()
                return try await client.purchase(requestID: request, userID: user, product: "tv").outcome == .purchased
            }
            await client.shutdown()
            #expect(try await cluster.sell("tv", until: 990) == 990)
            try await cluster.checkInvariants(expectOrders: ["tv": 990])
        }
    }
}

extension QuotaHostileTests {
    /// The review's reproduce of finding 8: the edge cut off from ZooKeeper, and the quota service from the edge, past
    /// the session timeout. The quota service retires the edge and hands its units to the others; before, the edge
    /// still held them (and sold them) all along. Now it handed them back before its session could expire, and once
    /// back it sells nothing: its allotment is retired and never revived.
    @Test func anEdgeCutOffFromZooKeeperAndTheQuotaServiceHoldsNothingOnceRetired() async throws {
        try await Self.withPartitionableEdge(cutFromQuotaService: true) { cluster, partition in
            let (cut, cutName, others, sale) = (partition.cut, partition.cutName, partition.others, partition.sale)
            partition.blackhole()
            var samplesAfterRetirement = 0
            let deadline = ContinuousClock.now + .seconds(30)
            while samplesAfterRetirement < 10 {
                guard ContinuousClock.now < deadline else { throw ClusterError.timeout("the cut edge to be retired") }
                // Remaining first: a sale between the reads only lowers what the edges hold.
                let remaining = try await cluster.inventory.getStock(productId: "tv").remaining
                var held: Int64 = 0
                for edge in cluster.runningEdges { held += try await cluster.usage(edge, "tv").map { $0.granted - $0.used - $0.released } ?? 0 }
                #expect(held <= remaining, "edges hold \(held) > remaining \(remaining)")
                let retired = try #require(try await cluster.record("tv")).allotments.allSatisfy { $0.edge != cutName }
                if retired { samplesAfterRetirement += 1 }
                try await Task.sleep(for: .milliseconds(50))
            }

            partition.restore()
            try await cluster.waitUntil("the cut edge to register again", timeout: .seconds(30)) {
                try await cluster.registrations().keys.contains(cutName)
            }
            let client = cluster.edgeClient(cut)
            for _ in 0..<5 {
                let (request, user) = cluster.nextIDs()
                await #expect(throws: RPCError.self) { _ = try await client.purchase(requestID: request, userID: user, product: "tv") }
                try await Task.sleep(for: .milliseconds(200))
            }
            await client.shutdown()
            #expect(try await cluster.record("tv")?.allotments.contains { $0.edge == cutName } == false)

            let outcome = await sale.stop()
            #expect(outcome.errors == 0)
            #expect(try await cluster.sell("tv", until: 900, through: others) == 900)
            try await cluster.checkInvariants(expectOrders: ["tv": 900])
        }
    }

    /// The partition tests' set-up: two edges, and a third whose ZooKeeper connection (and, when
    /// `cutFromQuotaService`, the quota service's calls to it) pass through proxies `partition` can cut; "tv" with
    /// 900 units, 300 on each edge; a sale through the other two edges until 30 are sold. The proxies are stopped
    /// after `body`.
    static func withPartitionableEdge(
        cutFromQuotaService: Bool, _ body: (QuotaCluster, Partition) async throws -> Void
    ) async throws {
        try await QuotaCluster.with(edges: 2) { cluster in
            var proxies = [try await BlackholeProxy.start(forwardingToFirstOf: cluster.zkHosts, mode: .bothWays)]
            do {
                let cut: ServiceEndpoint
                if cutFromQuotaService {
                    let port = LocalPorts.free()
                    proxies.append(try await BlackholeProxy.start(port: port, mode: .bothWays))
                    cut = try await cluster.addEdge(port: port, zooKeeper: proxies[0].address, advertise: proxies[1].address)
                } else {
                    cut = try await cluster.addEdge(zooKeeper: proxies[0].address)
                }
                let cutName = QuotaLayout.edgeName(id: cluster.edgeIDs[2])
                try await cluster.createProduct("tv", stock: 900)
                try await cluster.waitForGrants("tv", [300, 300, 300])
                let others = Array(cluster.edges.prefix(2))
                let sale = cluster.startSale("tv", through: others)
                try await cluster.waitForSold("tv", atLeast: 30)
                try await body(cluster, Partition(cut: cut, cutName: cutName, others: others, sale: sale, proxies: proxies))
            } catch {
                for proxy in proxies { await proxy.stop() }
                throw error
            }
            for proxy in proxies { await proxy.stop() }
        }
    }

    /// The cut-able edge of `withPartitionableEdge`, and its proxies.
    struct Partition: Sendable {
        let cut: ServiceEndpoint
        /// Its registration node's name.
        let cutName: String
        /// The two edges the sale buys through.
        let others: [ServiceEndpoint]
        let sale: Sale
        let proxies: [BlackholeProxy]

        func blackhole() { for proxy in proxies { proxy.blackhole() } }
        func restore() { for proxy in proxies { proxy.restore() } }
    }
}
