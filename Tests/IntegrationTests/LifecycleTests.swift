import Cluster
import FlashSaleClient
import Foundation
import Proto
import Testing
import TestSupport

extension OperatingTests {
    /// Graceful shutdown mid-sale: SIGTERM to an edge or to the inventory service while buyers are buying. Nothing a
    /// buyer was told PURCHASED is missing from the database, and no order exists that nobody was told of (except for
    /// attempts still in doubt when the buyers stopped).
    @Suite(.serialized, .timeLimit(.minutes(3)))
    struct LifecycleTests {
        @Test func edgeSIGTERMDrainsItsCallsAndLeavesZooKeeper() async throws {
            try await OperatedPlatform.with(edges: 2, logLevel: "info") { ops in
                try await ops.prepare(products: ["p1"], stock: 100_000, edges: 2)
                let edges = ops.platform.edges
                #expect(try await ops.registeredEdges().count == 2)
                let crowd = BuyerSwarm.Following(
                    product: "p1", workers: 16, perSecond: 2_000, maxRetries: 60, timeout: .seconds(3), logger: ops.logger)
                crowd.follow(edges)
                let buying = Task { await crowd.run() }
                try await waitUntil(timeout: .seconds(30), what: "purchases through both edges") { crowd.purchased >= 300 }

                let doomed = edges[0]
                let signalled = ContinuousClock.now
                let status = await doomed.process.terminate(grace: .seconds(20))
                let took = ContinuousClock.now - signalled
                #expect(status == 0, "a graceful exit, not a kill: \(doomed.process.tail())")
                #expect(took < .seconds(10), "drained in \(took)")
                let log = doomed.process.log()
                for line in ["server draining", "server stopped"] { #expect(log.contains(line), "the edge logged \(line)") }
                // Its node goes with its session, at once (not after the session timeout).
                try await waitUntil(timeout: .seconds(2), what: "the edge's node to leave ZooKeeper") {
                    try await ops.registeredEdges().count == 1
                }
                crowd.follow([edges[1]])
                let before = crowd.purchased
                try await waitUntil(timeout: .seconds(30), what: "purchases through the other edge") { crowd.purchased >= before + 200 }
                crowd.stop()
                _ = await buying.value

                let result = crowd.result
                #expect(result.errors == 0, "\(result.errorsByCode)")
                #expect(result.abandoned.isEmpty, "every attempt got an outcome: \(result.abandoned.count) in doubt")
                let orders = try await ops.ordersInDatabase(result.purchases.map(\.requestID))
                for purchase in result.purchases {
                    #expect(orders[purchase.requestID] == purchase.orderID, "PURCHASED reply of request \(purchase.requestID) has its order")
                }
                #expect(try await ops.orderRequestIDs() == Set(result.purchases.map(\.requestID)), "orders == PURCHASED replies")
                let counts = try await ops.databaseCounts()
                #expect(counts.orders + counts.remaining == 100_000 && counts.negativeSlots == 0)
            }
        }

        @Test func inventorySIGTERMFinishesItsBatchesBeforeExiting() async throws {
            try await OperatedPlatform.with(edges: 2, logLevel: "info") { ops in
                try await ops.prepare(products: ["p1"], stock: 100_000, edges: 2)
                let crowd = BuyerSwarm.Following(
                    product: "p1", workers: 24, perSecond: 4_000, maxRetries: 60, timeout: .seconds(3), logger: ops.logger)
                crowd.follow(ops.platform.edges)
                let buying = Task { await crowd.run() }
                try await waitUntil(timeout: .seconds(30), what: "purchases") { crowd.purchased >= 500 }

                let inventory = ops.platform.inventory.process
                let status = await inventory.terminate(grace: .seconds(20))
                #expect(status == 0, "a graceful exit, not a kill: \(inventory.tail())")
                let log = inventory.log()
                for line in ["server draining", "inventory draining", "consumer pool stopped"] {
                    #expect(log.contains(line), "the inventory logged \(line)")
                }
                crowd.stop()
                _ = await buying.value

                let result = crowd.result
                #expect(result.errors == 0, "\(result.errorsByCode)")
                #expect(result.purchases.count >= 500)
                // Every PURCHASED reply is in the database with its order id (read from PostgreSQL: the service is gone).
                let orders = try await ops.ordersInDatabase(result.purchases.map(\.requestID))
                for purchase in result.purchases {
                    #expect(orders[purchase.requestID] == purchase.orderID, "PURCHASED reply of request \(purchase.requestID) has its order")
                }
                // And every order was either told to its buyer or is one of the attempts left in doubt by the stop.
                let told = Set(result.purchases.map(\.requestID)).union(result.abandoned)
                let unexplained = try await ops.orderRequestIDs().subtracting(told)
                #expect(unexplained.isEmpty, "orders nobody was told of: \(unexplained.count)")
                let counts = try await ops.databaseCounts()
                #expect(counts.orders + counts.remaining == 100_000 && counts.negativeSlots == 0, "\(counts)")
            }
        }
    }
}
