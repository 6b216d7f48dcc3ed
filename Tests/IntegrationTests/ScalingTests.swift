import Cluster
import FlashSaleClient
import Foundation
import Proto
import Testing
import TestSupport

extension OperatingTests {
    /// Scaling edges live: a sale starts on 2 edges, grows to 6 and shrinks to 3 (two SIGTERMs and a `kill -9`) while
    /// buyers keep buying, and still sells exactly its stock, with the quotas re-split at each step.
    @Suite(.serialized, .timeLimit(.minutes(3)))
    struct ScalingTests {
        static let stock: Int64 = 3_000

        @Test func saleGrowsFromTwoToSixEdgesAndShrinksToThree() async throws {
            try await OperatedPlatform.with(edges: 2) { ops in
                try await ops.prepare(products: ["p1"], stock: Self.stock, edges: 2)
                let crowd = BuyerSwarm.Following(
                    product: "p1", workers: 8, perSecond: 150, maxRetries: 60, timeout: .seconds(3), logger: ops.logger)
                crowd.follow(ops.platform.edges)
                let buying = Task { await crowd.run() }

                @Sendable func liveEdges() async throws -> [EdgeQuota] {
                    try await ops.quota.status(productId: "p1").products.first?.edges ?? []
                }
                func checkInvariant() async throws {
                    let product = try #require(try await ops.quota.status(productId: "p1").products.first)
                    #expect(product.grantedUnused <= product.sellable, "quotas on edges never exceed what is sellable: \(product)")
                }

                // 2 edges.
                try await waitUntil(timeout: .seconds(30), what: "sales on 2 edges") { crowd.purchased >= 300 }
                try await checkInvariant()

                // Grow to 6: each new edge registers and gets a share of what is left.
                for _ in 0..<4 { try await ops.platform.addEdge() }
                let grown = Set(ops.platform.edges.map(\.address))
                try await waitUntil(timeout: .seconds(20), what: "quotas re-split over 6 edges") {
                    let edges = try await liveEdges()
                    return Set(edges.map(\.address)) == grown && edges.allSatisfy { $0.granted > 0 }
                }
                // As an operator does: buyers are sent to a new edge once it holds its quota (before its first grant an
                // edge does not know the product).
                crowd.follow(ops.platform.edges)
                try await checkInvariant()
                try await waitUntil(timeout: .seconds(30), what: "sales on 6 edges") { crowd.purchased >= 1_200 }

                // Shrink to 3: two leave gracefully, one dies.
                let edges = ops.platform.edges
                let (graceful, crashed, survivors) = ([edges[1], edges[3]], edges[4], [edges[0], edges[2], edges[5]])
                for edge in graceful {
                    let status = await edge.process.terminate(grace: .seconds(15))
                    #expect(status == 0, "\(edge.name) left gracefully")
                }
                await crashed.process.kill9()
                crowd.follow(survivors)
                let remaining = Set(survivors.map(\.address))
                try await waitUntil(timeout: .seconds(30), what: "quotas re-split over the 3 survivors") {
                    Set(try await liveEdges().map(\.address)) == remaining
                }
                try await checkInvariant()

                // Sell out on 3 edges: the units of the edges that left came back, nothing is stranded.
                try await waitUntil(timeout: .seconds(60), what: "the sale to sell out") {
                    try await ops.inventory.getStock(productId: "p1").remaining == 0
                }
                // A few more attempts after the last unit: they are refused SOLD_OUT. (The crowd's count is no witness
                // of the sell-out's moment: the last PURCHASED replies may still be on their way when the stock reads
                // 0, as CI once saw with 2,999 of 3,000. The audit and the orders below are.)
                try await waitUntil(timeout: .seconds(10), what: "SOLD_OUT answers") { crowd.result.soldOut >= 10 }
                crowd.stop()
                _ = await buying.value

                let result = crowd.result
                #expect(result.errors == 0, "\(result.errorsByCode)")
                #expect(result.purchases.count <= Int(Self.stock), "nothing sold past the stock")
                let audit = try await ops.inventory.audit(productId: "p1")
                #expect(audit.clean, "\(audit)")
                #expect(audit.products.first?.orders == Self.stock, "sold exactly the stock")
                #expect(audit.products.first?.remaining == 0)
                let orders = try await ops.ordersInDatabase(result.purchases.map(\.requestID))
                for purchase in result.purchases {
                    #expect(orders[purchase.requestID] == purchase.orderID, "PURCHASED reply of request \(purchase.requestID) has its order")
                }
                #expect(Set(result.purchases.map(\.userID)).count == result.purchases.count, "one order per buyer")
                let told = Set(result.purchases.map(\.requestID)).union(result.abandoned)
                #expect(try await ops.orderRequestIDs().subtracting(told).isEmpty, "every order was told to its buyer or is in doubt")
                // Every edge of the six sold through its quota.
                let soldByEdge = try await ops.inventory.soldCounts(productId: "p1").first?.edges ?? []
                #expect(soldByEdge.filter { $0.sold > 0 }.count == 6, "each of the 6 edges sold: \(soldByEdge)")
            }
        }
    }
}
