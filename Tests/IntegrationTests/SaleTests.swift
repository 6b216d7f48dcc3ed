import Cluster
import FlashSaleClient
import Foundation
import Logging
import Proto
import Testing
import TestSupport
import Wire

/// The whole platform end to end: real PostgreSQL and ZooKeeper, the real InventoryService, QuotaService and
/// Edge executables, a crowd of buyers through the edges, then the audit.
@Suite(.serialized, .timeLimit(.minutes(5)))
struct SaleTests {
    let logger = Logger(label: "sale-test")
    static let token = "sale-test-token"

    /// A running platform with its own databases and ZooKeeper root; stopped and dropped afterwards.
    struct Running: Sendable {
        let platform: Platform
        let quota: QuotaClient
        let inventory: InventoryClient

        func edgeClients(logger: Logger) -> [EdgeClient] {
            platform.edges.map { EdgeClient(host: $0.host, port: $0.port, logger: logger) }
        }

        func shutdown() async {
            await quota.shutdown()
            await inventory.shutdown()
        }
    }

    private func withPlatform(edges: Int, _ body: (Running) async throws -> Void) async throws {
        try await Platform.withTestPlatform(prefix: "sale", operatorToken: Self.token) { $0.edges = edges } _: { platform, _ in
            let running = Running(
                platform: platform,
                quota: platform.quotaClient(logger: logger), inventory: platform.inventoryClient(logger: logger))
            do {
                try await body(running)
            } catch {
                await running.shutdown()
                throw error
            }
            await running.shutdown()
        }
    }

    /// Creates the products and waits until the live edges hold all of their stock and the lottery's ratio.
    private func prepare(_ running: Running, products: [String], stock: Int64, keepPerMillion: UInt32) async throws {
        try await SaleDriver.prepare(
            quota: running.quota, products: products.map { ($0, stock, false) }, keepPerMillion: keepPerMillion,
            edges: running.platform.edges, logger: logger)
    }

    /// Every PURCHASED reply has its order (same order id), the audit is clean, nobody holds two orders of a
    /// product, and orders per product are exactly `expected`.
    private func audit(_ running: Running, _ result: BuyerSwarm.Result, expected: [String: Int64]) async throws {
        let audit = try await running.inventory.audit()
        #expect(audit.clean, "audit: \(audit)")
        for (product, units) in expected {
            let line = try #require(audit.products.first { $0.productId == product })
            #expect(line.orders == units, "orders of \(product)")
            #expect(line.remaining + line.orders == line.totalStock)
            #expect(line.negativeSlots == 0)
        }
        #expect(result.purchased == Int(expected.values.reduce(0, +)), "PURCHASED replies = orders")
        var holders = Set<String>()
        for purchase in result.purchases {
            #expect(holders.insert("\(purchase.product)/\(purchase.userID)").inserted, "one order per buyer and product")
        }
        let withoutOrder = try await SaleDriver.purchasesWithoutOrder(result.purchases, inventory: running.inventory)
        #expect(withoutOrder.isEmpty, "orders of requests \(withoutOrder.prefix(10).map(\.requestID))")
    }

    @Test func sellsExactlyTheStockAndNothingMore() async throws {
        try await withPlatform(edges: 2) { running in
            let products = ["p1", "p2", "p3"]
            try await prepare(running, products: products, stock: 200, keepPerMillion: 1_000_000)
            let swarm = BuyerSwarm(
                configuration: .init(
                    edges: running.platform.edges.map { ($0.host, $0.port) }, products: products, attempts: 6_000,
                    users: 3_000, connections: 40, depth: 4, seed: 1),
                logger: logger)
            let result = try await swarm.run()
            #expect(result.attempts == 6_000)
            #expect(result.errors == 0, "errors: \(result.errorsByCode)")
            #expect(result.alreadyPurchased > 0, "buyers tried twice, some after buying")
            try await audit(running, result, expected: ["p1": 200, "p2": 200, "p3": 200])
        }
    }

    @Test func lotteryKeepsAboutOneInTen() async throws {
        try await withPlatform(edges: 2) { running in
            try await prepare(running, products: ["p1"], stock: 100_000, keepPerMillion: 100_000)
            let swarm = BuyerSwarm(
                configuration: .init(
                    edges: running.platform.edges.map { ($0.host, $0.port) }, products: ["p1"], attempts: 10_000,
                    users: 1_000_000, connections: 20, depth: 4, seed: 2),
                logger: logger)
            let result = try await swarm.run()
            let through = result.attempts - result.shed
            #expect((800...1_200).contains(through), "about a tenth got through the lottery: \(through)")
            #expect(result.purchased + result.alreadyPurchased == through)
            try await audit(running, result, expected: ["p1": Int64(result.purchased)])
        }
    }

    @Test func edgeKilledMidSaleNeitherOversellsNorUndersells() async throws {
        try await withPlatform(edges: 3) { running in
            try await prepare(running, products: ["p1"], stock: 300, keepPerMillion: 1_000_000)
            let doomed = running.platform.edges[2]
            // The doomed edge sells a little of its share, then dies without a word.
            let first = BuyerSwarm(
                configuration: .init(edges: [(doomed.host, doomed.port)], products: ["p1"], attempts: 40, users: 1_000_000,
                                     connections: 2, depth: 2, seed: 3),
                logger: logger)
            let early = try await first.run()
            #expect(early.purchased == 40)
            await doomed.process.kill9()
            // Its unsold units come back once ZooKeeper drops its node and the quota service reclaims them.
            try await waitUntil(timeout: .seconds(30), what: "the dead edge's quota to be reclaimed") {
                let product = try await running.quota.status().products.first { $0.productId == "p1" }
                return product?.edges.count == 2
            }
            let survivors = running.platform.edges.prefix(2).map { ($0.host, $0.port) }
            let rest = BuyerSwarm(
                configuration: .init(edges: Array(survivors), products: ["p1"], attempts: 3_000, users: 1_000_000,
                                     connections: 10, depth: 4, seed: 4),
                logger: logger)
            let late = try await rest.run()
            #expect(late.errors == 0, "errors: \(late.errorsByCode)")
            var all = early
            all.purchased += late.purchased
            all.purchases += late.purchases
            try await audit(running, all, expected: ["p1": 300])
        }
    }
}
