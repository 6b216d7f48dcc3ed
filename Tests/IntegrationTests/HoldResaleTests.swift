import FlashSaleClient
import Foundation
import Proto
import TestSupport
import Testing
import Wire

/// Expired holds sold again through the whole platform (issue 14 item 3): edges that marked the product sold out take
/// it up again when the quota service grants the returned units, and a buyer gets SOLD_OUT only when no unit is free.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct HoldResaleTests {
    @Test func aSoldOutProductSellsItsExpiredHoldsThroughTheEdges() async throws {
        try await QuotaCluster.with(edges: 2) { cluster in
            let quota = cluster.quota()
            defer { Task { await quota.shutdown() } }
            _ = try await quota.createProduct(CreateProductRequest(productId: "p1", totalStock: 6, holdSeconds: 2))
            let edges = cluster.edges.map(cluster.edgeClient)
            defer { for edge in edges { Task { await edge.shutdown() } } }

            /// Buyers through the edges, round robin, until `count` bought or `attempts` ran out; the ids that bought.
            func buy(_ count: Int, attempts: Int) async throws -> [UInt64] {
                var bought: [UInt64] = []
                for attempt in 0..<attempts where bought.count < count {
                    let (request, user) = cluster.nextIDs()
                    let response = try await edges[attempt % edges.count].purchase(requestID: request, userID: user, product: "p1")
                    if response.outcome == .purchased { bought.append(request) }
                    if response.outcome == .soldOut { try await Task.sleep(for: .milliseconds(20)) }
                }
                return bought
            }

            let first = try await buy(6, attempts: 60)
            #expect(first.count == 6)
            // Sold out everywhere: every edge answers SOLD_OUT (and marks it).
            for edge in edges {
                let (request, user) = cluster.nextIDs()
                #expect(try await edge.purchase(requestID: request, userID: user, product: "p1").outcome == .soldOut)
            }
            // Two buyers pay; four holds expire and their units sell again, through both edges.
            for request in first.prefix(2) {
                #expect(try await cluster.inventory.confirmOrder(.byRequest("p1", request)).state == .paid)
            }
            try await cluster.waitUntil("the four unpaid holds to expire") {
                try await cluster.inventory.getStock(productId: "p1").released == 4
            }
            let resold = try await buy(4, attempts: 400)
            #expect(resold.count == 4, "the expired units sold again")
            for edge in edges {
                let (request, user) = cluster.nextIDs()
                #expect(try await edge.purchase(requestID: request, userID: user, product: "p1").outcome == .soldOut)
            }
            for request in resold {
                #expect(try await cluster.inventory.confirmOrder(.byRequest("p1", request)).state == .paid)
            }
            let stock = try await cluster.inventory.getStock(productId: "p1")
            #expect(stock.sold == 6 && stock.held == 0 && stock.remaining == 0 && stock.released == 4)
            // Sold counts keep every order on the edge that made it (10: the edges used 10 units), and the quota
            // service counts the 4 released ones back as sellable: nothing is left to grant.
            try await cluster.checkInvariants(expectOrders: ["p1": 10])
            let status = try await cluster.status("p1")
            #expect(status.sellable == 0 && status.grantedUnused == 0, "\(status)")
        }
    }
}
