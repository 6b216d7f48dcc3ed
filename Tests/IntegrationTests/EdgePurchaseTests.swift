import FlashSaleClient
import Foundation
import NIOCore
import Proto
import TestSupport
import Testing
import Wire

/// Hostile or careless clients against one real edge (real inventory, quota service and ZooKeeper): nothing they
/// send strands a unit or buys past the lottery.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct EdgePurchaseTests {
    /// Finding 1: one request id repeated with deadlines of 1 µs (and a little more) used to strand the edge's
    /// quota: each copy took a unit, its forward failed in doubt, and every copy after the first leaked its unit.
    @Test func repeatingOneRequestIDWithTinyDeadlinesStrandsNothing() async throws {
        try await QuotaCluster.with(edges: 1) { cluster in
            try await cluster.createProduct("p1", stock: 10)
            try await cluster.waitForGrants("p1", [10])
            let edge = cluster.edgeClient(cluster.edges[0])
            let (request, user) = cluster.nextIDs()
            var answers: [String: Int] = [:]
            for timeout: TimeAmount in [.microseconds(1), .microseconds(200), .milliseconds(2), .milliseconds(20)] {
                for _ in 0..<20 {
                    do {
                        let response = try await edge.purchase(requestID: request, userID: user, product: "p1", timeout: timeout)
                        answers["\(response.outcome)", default: 0] += 1
                    } catch let error as RPCError {
                        answers["\(error.code)", default: 0] += 1
                    }
                }
            }
            await edge.shutdown()
            let usage = try #require(try await cluster.edgeQuotaUsage(cluster.edges[0], "p1"))
            #expect(usage.used == 0, "no unit taken for a purchase that cannot finish in time: \(usage), answers \(answers)")

            // Real buyers now: the whole stock still sells through this edge.
            #expect(try await cluster.buy("p1", through: cluster.edges, count: 10) == 10, "answers were \(answers)")
            #expect(try await cluster.inventory.getStock(productId: "p1").remaining == 0)
            try await cluster.checkInvariants(expectOrders: ["p1": 10])
        }
    }

    /// Finding 5: `retry: true` on request ids the edge never saw is shed like any other attempt; at keep 0
    /// nothing is bought (each shed retry is settled by a lookup, which finds no order).
    @Test func retryFloodsAtKeepZeroBuyNothing() async throws {
        try await QuotaCluster.with(edges: 1) { cluster in
            try await cluster.createProduct("p1", stock: 100)
            try await cluster.waitForGrants("p1", [100])
            try await cluster.quota().setShed(keepPerMillion: 0)
            try await cluster.waitUntil("the edge to apply keep 0") {
                try await cluster.edgeStats().allSatisfy { $0.keepPerMillion == 0 }
            }
            let edge = cluster.edgeClient(cluster.edges[0])
            var outcomes: [String: Int] = [:]
            for _ in 0..<300 {
                let (request, user) = cluster.nextIDs()
                let response = try await edge.purchase(requestID: request, userID: user, product: "p1", retry: true)
                outcomes["\(response.outcome)", default: 0] += 1
            }
            await edge.shutdown()
            #expect(outcomes == ["\(PurchaseOutcome.shed)": 300], "\(outcomes)")
            #expect(try await cluster.soldCount("p1") == 0, "nothing bought at keep 0")

            // The lottery open again: the stock sells exactly, nothing was stranded by the flood.
            try await cluster.quota().setShed(keepPerMillion: 1_000_000)
            try await cluster.waitUntil("the edge to apply keep all") {
                try await cluster.edgeStats().allSatisfy { $0.keepPerMillion == 1_000_000 }
            }
            #expect(try await cluster.buy("p1", through: cluster.edges, count: 100) == 100)
            try await cluster.checkInvariants(expectOrders: ["p1": 100])
        }
    }
}

extension QuotaCluster {
    /// The edge's counters of `product` as applied now (`edge.QuotaUsage`).
    func edgeQuotaUsage(_ edge: Endpoint, _ product: String) async throws -> ProductUsage? {
        let client = edgeClient(edge)
        do {
            let usage = try await client.rpc.call(
                EdgeRPC.QuotaUsage.self, QuotaStatusRequest(productId: product))
            await client.shutdown()
            return usage.usage.first { $0.productId == product }
        } catch {
            await client.shutdown()
            throw error
        }
    }
}
