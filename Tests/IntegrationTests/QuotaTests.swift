import FlashSaleClient
import Foundation
import Logging
import Proto
import Synchronization
import TestSupport
import Testing
import Wire
import ZooKeeperClient

/// The quota service and the edges' quotas against real ZooKeeper, real PostgreSQL and the real executables
/// (InventoryService, QuotaService, Edge). Each test has its own ZooKeeper root and fresh databases; after each,
/// nothing is granted beyond what is sellable, every published grant matches the quota service's record and what
/// the edges applied, and the database audit is clean.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct QuotaTests {
    @Test func threeEdgesSplitAThousandAndAFourthJoins() async throws {
        try await QuotaCluster.with(edges: 3) { cluster in
            try await cluster.createProduct("tv", stock: 1_000)
            try await cluster.waitForGrants("tv", [334, 333, 333])

            try await cluster.addEdge()
            // Each edge holds 250 now: the first three handed back their surplus, the fourth got it.
            try await cluster.waitUntil("a four-way split") {
                let edges = try await cluster.status("tv").edges
                return edges.count == 4 && edges.allSatisfy { $0.granted - $0.released == 250 }
            }
            try await cluster.waitForEdgesToApply("tv")

            // The keep ratio reaches every edge too.
            try await cluster.quota().setShed(keepPerMillion: 250_000)
            try await cluster.waitUntil("every edge to apply the shed ratio") {
                try await cluster.edgeStats().allSatisfy { $0.keepPerMillion == 250_000 }
            }
            try await cluster.quota().setShed(keepPerMillion: 1_000_000)

            let sold = try await cluster.sell("tv", until: 1_000)
            #expect(sold == 1_000)
            try await cluster.checkInvariants(expectOrders: ["tv": 1_000])
        }
    }

    @Test func aKilledEdgesUnusedQuotaIsReclaimedByTheOthers() async throws {
        try await QuotaCluster.with(edges: 3) { cluster in
            try await cluster.createProduct("tv", stock: 1_000)
            try await cluster.waitForGrants("tv", [334, 333, 333])
            // 100 sold through the edge about to die; its other 233 must go to the survivors, exactly.
            let victim = cluster.edges[1]
            #expect(try await cluster.buy("tv", through: [victim], count: 100) == 100)
            await victim.process.kill9()

            try await cluster.waitUntil("the dead edge's units to be reclaimed", timeout: .seconds(20)) {
                let status = try await cluster.status("tv")
                return status.edges.count == 2 && status.grantedUnused == status.sellable && status.sellable == 900
            }
            let survivors = Array(cluster.edges.filter { $0.process.isRunning })
            let sold = try await cluster.sell("tv", until: 1_000, through: survivors)
            #expect(sold == 1_000)
            try await cluster.checkInvariants(expectOrders: ["tv": 1_000])
        }
    }

    @Test func raisingTheStockMidSaleReachesEveryEdge() async throws {
        try await QuotaCluster.with(edges: 3) { cluster in
            try await cluster.createProduct("tv", stock: 600)
            try await cluster.waitForGrants("tv", [200, 200, 200])
            let sale = cluster.startSale("tv")
            try await cluster.waitForSold("tv", atLeast: 150)
            let before = try await cluster.appliedGrants("tv")
            _ = try await cluster.quota().raiseStock(productId: "tv", by: 300)
            // The whole raise reaches the edges; how it is spread depends on which edges ran dry first (a dry edge
            // asks for more), so only the total is a promise.
            try await cluster.waitUntil("the edges to be granted the raise") {
                let after = try await cluster.appliedGrants("tv")
                let added = after.reduce(Int64(0)) { $0 + $1.value } - before.reduce(Int64(0)) { $0 + $1.value }
                return after.count == 3 && added >= 300 && after.allSatisfy { edge, granted in granted >= (before[edge] ?? 0) }
            }
            try await cluster.waitForSold("tv", atLeast: 900)
            let outcome = await sale.stop()
            #expect(outcome.errors == 0)
            try await cluster.checkInvariants(expectOrders: ["tv": 900])
        }
    }

    @Test func stopAfterFiveHundredMidSaleEndsWithExactlyFiveHundred() async throws {
        try await QuotaCluster.with(edges: 3) { cluster in
            try await cluster.createProduct("tv", stock: 1_000)
            try await cluster.waitForGrants("tv", [334, 333, 333])
            let sale = cluster.startSale("tv")
            try await cluster.waitForSold("tv", atLeast: 100)
            // Database first, so the edges hold more than is sellable until they hand their surplus back.
            cluster.monitor.allowOverGrant(for: .seconds(3))
            let limited = try await cluster.quota().limitStock(productId: "tv", to: 500)
            #expect(limited.sellable <= 400)
            try await cluster.waitForSold("tv", atLeast: 500)
            try await Task.sleep(for: .milliseconds(500))  // buyers keep trying: nothing more may sell
            let outcome = await sale.stop()
            #expect(outcome.errors == 0)
            #expect(try await cluster.soldCount("tv") == 500)
            try await cluster.checkInvariants(expectOrders: ["tv": 500])
        }
    }

    @Test func zooKeeperRestartedMidSaleNoOversellEdgesResync() async throws {
        let zk = try await PrivateZooKeeper.start()
        do {
            try await QuotaCluster.with(edges: 3, zooKeeper: zk.hosts) { cluster in
                try await cluster.createProduct("tv", stock: 1_000)
                try await cluster.waitForGrants("tv", [334, 333, 333])
                let sale = cluster.startSale("tv")
                try await cluster.waitForSold("tv", atLeast: 100)
                cluster.monitor.pause()  // the quota service cannot answer while ZooKeeper is down
                try await zk.stop()
                let soldWhileDown = try await cluster.soldCount("tv")
                try await Task.sleep(for: .milliseconds(700))
                // Edges kept selling from their counters, within what they were granted.
                #expect(try await cluster.soldCount("tv") >= soldWhileDown)
                try await zk.restart()
                cluster.monitor.resume()
                try await cluster.waitForSold("tv", atLeast: 1_000, timeout: .seconds(40))
                let outcome = await sale.stop()
                #expect(outcome.purchased == 1_000)

                // The edges resynced: a raise after the restart reaches each of them.
                let before = try await cluster.appliedGrants("tv")
                _ = try await cluster.quota().raiseStock(productId: "tv", by: 90)
                try await cluster.waitUntil("every edge to see the raise after the restart") {
                    let after = try await cluster.appliedGrants("tv")
                    return after.allSatisfy { edge, granted in granted >= (before[edge] ?? 0) + 30 }
                }
                #expect(try await cluster.sell("tv", until: 1_090) == 1_090)
                try await cluster.checkInvariants(expectOrders: ["tv": 1_090])
            }
        } catch {
            await zk.destroy()
            throw error
        }
        await zk.destroy()
    }

    @Test func twoQuotaServicesAtOnceNeverCorruptAQuota() async throws {
        try await QuotaCluster.with(edges: 0, quotaServices: 2) { cluster in
            // Edges talk to either service; operators to both.
            try await cluster.addEdge(quotaService: 0)
            try await cluster.addEdge(quotaService: 1)
            try await cluster.addEdge(quotaService: 1)
            try await cluster.createProduct("tv", stock: 900, through: 1)
            try await cluster.waitForGrants("tv", [300, 300, 300])
            let sale = cluster.startSale("tv")
            // Both services decide at once: dry edges ask each, operators raise through both.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<2 {
                    group.addTask { _ = try await cluster.quota(i).raiseStock(productId: "tv", by: 50) }
                    group.addTask {
                        for _ in 0..<20 {
                            _ = try await cluster.quota(i, token: QuotaCluster.serviceToken).grantMore(GrantMoreRequest(edgeId: cluster.edgeIDs[i + 1], productId: "tv"))
                        }
                    }
                }
                try await group.waitForAll()
            }
            try await cluster.waitForSold("tv", atLeast: 1_000)
            try await Task.sleep(for: .milliseconds(300))
            let outcome = await sale.stop()
            #expect(outcome.errors == 0)
            try await cluster.checkInvariants(expectOrders: ["tv": 1_000])
        }
    }

    @Test func badInputGetsAClearStatusAndChangesNothing() async throws {
        try await QuotaCluster.with(edges: 1) { cluster in
            try await cluster.createProduct("tv", stock: 100)
            try await cluster.waitForGrants("tv", [100])
            #expect(try await cluster.buy("tv", through: cluster.edges, count: 40) == 40)
            let quota = cluster.quota()
            let edgeSide = cluster.quota(token: QuotaCluster.serviceToken)
            let record = try await cluster.record("tv")

            await expectStatus(.notFound) { try await quota.raiseStock(productId: "radio", by: 5) }
            await expectStatus(.notFound) { try await quota.limitStock(productId: "radio", to: 5) }
            await expectStatus(.notFound) { try await quota.status(productId: "radio") }
            await expectStatus(.notFound) { try await edgeSide.grantMore(GrantMoreRequest(edgeId: cluster.edgeIDs[0], productId: "radio")) }
            await expectStatus(.invalidArgument) { try await quota.raiseStock(productId: "tv", by: -5) }
            await expectStatus(.invalidArgument) { try await quota.raiseStock(productId: "tv", by: 0) }
            await expectStatus(.invalidArgument) { try await quota.limitStock(productId: "tv", to: -1) }
            await expectStatus(.failedPrecondition) { try await quota.limitStock(productId: "tv", to: 39) }
            await expectStatus(.invalidArgument) { try await quota.createProduct(CreateProductRequest(productId: "radio", totalStock: -10)) }
            await expectStatus(.invalidArgument) { try await quota.createProduct(CreateProductRequest(productId: "../x", totalStock: 10)) }
            await expectStatus(.invalidArgument) { try await quota.createProduct(CreateProductRequest(productId: "", totalStock: 10)) }
            await expectStatus(.alreadyExists) { try await quota.createProduct(CreateProductRequest(productId: "tv", totalStock: 10)) }
            await expectStatus(.invalidArgument) { try await quota.setShed(keepPerMillion: 1_000_001) }
            await expectStatus(.invalidArgument) { try await edgeSide.grantMore(GrantMoreRequest(edgeId: 0, productId: "tv")) }
            let stranger = cluster.quota(token: "wrong")
            await expectStatus(nil) { try await stranger.raiseStock(productId: "tv", by: 5) }

            // Nothing changed: the record, the database's stock, and no product "radio" anywhere.
            #expect(try await cluster.record("tv") == record)
            let stock = try await cluster.inventory.getStock(productId: "tv")
            #expect(stock.totalStock == 100 && stock.sold == 40)
            await expectStatus(.notFound) { try await cluster.inventory.getStock(productId: "radio") }
            #expect(try await cluster.quota().status().products.map(\.productId) == ["tv"])
            try await cluster.checkInvariants(expectOrders: ["tv": 40])
        }
    }
}

/// Expects the call to fail with `code` (nil: any non-OK status).
func expectStatus<T>(_ code: RPCError.Code?, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> T) async {
    do {
        _ = try await body()
        Issue.record("expected \(code.map { "\($0)" } ?? "an error"), got success", sourceLocation: sourceLocation)
    } catch let error as RPCError {
        if let code { #expect(error.code == code, "\(error)", sourceLocation: sourceLocation) }
    } catch {
        Issue.record("expected an RPCError, got \(error)", sourceLocation: sourceLocation)
    }
}
