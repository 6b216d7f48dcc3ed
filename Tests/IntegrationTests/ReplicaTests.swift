import Addressing
import FlashSaleClient
import Foundation
import Logging
import Proto
import QuotaContract
import ServiceKit
import Synchronization
import TestSupport
import Testing
import Wire
import ZooKeeperClient

/// Two inventory replicas on one pair of databases, and a quota leader with a standby, as real processes. The
/// fault suite's `replica` and `quotaleader` cases run the same faults under a paced sale with its ground truth;
/// these check the mechanisms one by one, small.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct ReplicaTests {
    static let token = "replica-test-operator-token"
    let logger = Logger(label: "replica-test")

    private func inventoryClient(_ endpoint: ServiceEndpoint, _ platform: Platform) -> InventoryClient {
        InventoryClient(rpc: RPCClient(
            configuration: RPCClientConfiguration(
                host: endpoint.host, port: endpoint.port, defaultTimeout: .seconds(5), token: platform.configuration.serviceToken),
            logger: logger))
    }

    /// A product created through one replica (the quota service's call) sells on the other, whose catalog was
    /// loaded before it existed; a request id's first outcome is the same on both (one database binds it), a
    /// retry on the other replica buys nothing more, and the id stays bound to its buyer.
    @Test func replicasShareProductsAndRequestIDs() async throws {
        try await Platform.withTestPlatform(prefix: "replicas", operatorToken: Self.token) {
            $0.inventories = 2
            $0.edges = 0
        } _: { platform, _ in
            let quota = platform.quotaClient(logger: logger)
            let first = inventoryClient(platform.inventories[0], platform)
            let second = inventoryClient(platform.inventories[1], platform)
            defer { Task { for client in [first, second] { await client.shutdown() }; await quota.shutdown() } }
            _ = try await quota.createProduct(CreateProductRequest(productId: "tv", totalStock: 3))
            for client in [first, second] {
                #expect(try await client.getStock(productId: "tv").totalStock == 3, "both replicas know the product")
            }
            let bought = try await second.purchase(PurchaseRequest(requestId: 7, userId: 70, productId: "tv"))
            #expect(bought.outcome == .purchased && !bought.replayed)
            // The same purchase retried on the other replica: its first outcome, no second order.
            let retried = try await first.purchase(PurchaseRequest(requestId: 7, userId: 70, productId: "tv", retry: true))
            #expect(retried.outcome == .purchased && retried.replayed && retried.orderId == bought.orderId)
            let looked = try await first.purchase(PurchaseRequest(requestId: 7, userId: 70, productId: "tv", lookupOnly: true))
            #expect(looked.outcome == .purchased && looked.orderId == bought.orderId)
            await #expect(throws: RPCError.self, "the id is bound to its buyer on every replica") {
                _ = try await first.purchase(PurchaseRequest(requestId: 7, userId: 71, productId: "tv"))
            }
            // A lookup that closes an id on one replica closes it on both.
            let closed = try await first.purchase(PurchaseRequest(requestId: 8, userId: 80, productId: "tv", lookupOnly: true))
            let afterClose = try await second.purchase(PurchaseRequest(requestId: 8, userId: 80, productId: "tv"))
            #expect(closed.outcome == .soldOut && afterClose.outcome == .soldOut && afterClose.replayed)
            #expect(try await first.getStock(productId: "tv").sold == 1)
            #expect(try await first.audit().clean)
            await #expect(throws: RPCError.self, "a name no replica knows is still NOT_FOUND") {
                _ = try await second.purchase(PurchaseRequest(requestId: 9, userId: 90, productId: "radio"))
            }
            // An order call on a replica that has never seen the product reloads its catalog, as a purchase does: a
            // hold bought through one replica is paid through the other.
            var held = CreateProductRequest(productId: "lamp", totalStock: 2)
            held.holdSeconds = 300
            _ = try await first.createProduct(held)
            let hold = try await first.purchase(PurchaseRequest(requestId: 20, userId: 200, productId: "lamp"))
            #expect(hold.outcome == .purchased)
            let paid = try await second.confirmOrder(.byRequest("lamp", 20))
            #expect(paid.state == .paid && paid.orderId == hold.orderId)
        }
    }

    /// An edge that knows the replicas only from ZooKeeper (`--discover-inventories`, no `--inventory`) sells
    /// through both; one is killed (kill -9) with purchases in flight, the edge moves off it, its in-doubt
    /// purchases settle on the other, and the whole stock sells exactly once.
    @Test func edgesFindReplicasInZooKeeperAndMoveOffADeadOne() async throws {
        try await Platform.withTestPlatform(prefix: "replicas_zk", operatorToken: Self.token) {
            $0.inventories = 2
            $0.discoverInventories = true
            $0.edges = 0
        } _: { platform, _ in
            let edge = try await platform.addEdge { $0.inventory = "" }
            let quota = platform.quotaClient(logger: logger)
            let inventory = platform.inventoryClient(logger: logger)
            defer { Task { await quota.shutdown(); await inventory.shutdown() } }
            let stock: Int64 = 300
            try await SaleDriver.prepare(
                quota: quota, products: [("tv", stock, false)], keepPerMillion: 1_000_000, edges: [edge], logger: logger)
            let crowd = BuyerSwarm.Following(
                product: "tv", workers: 4, perSecond: 400, maxRetries: 60, edges: { [(edge.host, edge.port)] }, logger: logger)
            let sale = Task { await crowd.run() }
            try await waitUntil(timeout: .seconds(30), what: "a third sold") { crowd.purchased >= Int(stock / 3) }
            await platform.inventories[1].process.kill9()
            try await waitUntil(timeout: .seconds(60), what: "the stock to sell") {
                (try? await inventory.getStock(productId: "tv").remaining) == 0
            }
            crowd.stop()
            let result = await sale.value
            let client = EdgeClient(host: edge.host, port: edge.port, logger: logger)
            defer { Task { await client.shutdown() } }
            try await waitUntil(timeout: .seconds(20), what: "the edge's in-doubt purchases to settle") {
                (try? await client.stats().inDoubt) == 0
            }
            #expect(try await SaleDriver.purchasesWithoutOrder(result.purchases, inventory: inventory).isEmpty)
            #expect(Set(result.purchases.map(\.requestID)).count == result.purchases.count)
            // As many PURCHASED answers as units, each with its own order: no order is anyone else's (an attempt
            // still retrying when the crowd stopped holds none).
            #expect(result.purchases.count == Int(stock), "\(result.errorsByCode)")
            let audit = try await inventory.audit()
            #expect(audit.clean && audit.products.first?.orders == stock)
        }
    }

    /// The leader of two quota services is killed (kill -9) mid-sale; the standby holds the leader lock within a
    /// bound (its session timeout and a retry, with room for a busy machine), the edges (which ask the standby
    /// for more) sell the stock out, and the quota service never has more granted and unused than is sellable.
    @Test func theStandbyTakesOverWhenTheLeaderIsKilled() async throws {
        try await Platform.withTestPlatform(prefix: "standby", operatorToken: Self.token) {
            $0.quotaServices = 2
            $0.quotaArguments = ["--metrics-port", "0"]
            $0.edges = 0
        } _: { platform, _ in
            let standby = platform.quotaServices[1]
            // The edges know both (the platform lists every quota service, leader first): they ask the leader until
            // it is gone, then the standby.
            for _ in 0..<2 { try await platform.addEdge() }
            let quota = QuotaClient(port: standby.port, token: Self.token, logger: logger)
            let inventory = platform.inventoryClient(logger: logger)
            let zk = try await ZooKeeperClient.connect(hosts: platform.configuration.zooKeeperHosts, logger: logger)
            defer { Task { await quota.shutdown(); await inventory.shutdown(); await zk.close() } }
            let leaderNode = QuotaLayout(root: platform.configuration.zooKeeperRoot).leader
            let leaderPort: @Sendable () async -> Int? = {
                (try? await zk.get(leaderNode).data).flatMap { HostPort(String(decoding: $0, as: UTF8.self))?.port }
            }
            try await waitUntil(timeout: .seconds(10), what: "a leader") { await leaderPort() != nil }
            #expect(await leaderPort() == platform.quotaServices[0].port, "the first started leads")
            let stock: Int64 = 400
            try await SaleDriver.prepare(
                quota: quota, products: [("tv", stock, false)], keepPerMillion: 1_000_000, edges: platform.edges,
                logger: logger)
            let overGrants = Mutex<[String]>([])
            let sampler = Task {
                while !Task.isCancelled {
                    if let product = try? await quota.status(productId: "tv").products.first,
                       product.grantedUnused > product.sellable {
                        overGrants.withLock { $0.append("\(product.grantedUnused) > \(product.sellable)") }
                    }
                    try? await Task.sleep(for: .milliseconds(50))
                }
            }
            let edges = platform.edges.map { ($0.host, $0.port) }
            let crowd = BuyerSwarm.Following(
                product: "tv", workers: 4, perSecond: 200, maxRetries: 60, edges: { edges }, logger: logger)
            let sale = Task { await crowd.run() }
            try await waitUntil(timeout: .seconds(30), what: "a quarter sold") { crowd.purchased >= Int(stock / 4) }

            await platform.quotaServices[0].process.kill9()
            let killed = ContinuousClock.now
            try await waitUntil(timeout: .seconds(20), what: "the standby to lead") { await leaderPort() == standby.port }
            let handover = ContinuousClock.now - killed
            print("quota handover after kill -9 of the leader: \(handover)")
            #expect(handover < .seconds(20))

            try await waitUntil(timeout: .seconds(60), what: "the stock to sell") {
                (try? await inventory.getStock(productId: "tv").remaining) == 0
            }
            crowd.stop()
            let result = await sale.value
            sampler.cancel()
            _ = await sampler.value
            #expect(overGrants.withLock { $0 }.isEmpty, "granted beyond sellable: \(overGrants.withLock { $0.prefix(5) })")
            #expect(try await SaleDriver.purchasesWithoutOrder(result.purchases, inventory: inventory).isEmpty)
            #expect(result.purchases.count == Int(stock), "\(result.errorsByCode)")
            // The edges' refills reached the standby: its rebalancing alone would also have sold the stock out.
            let scrape = try await MetricsSample.scrape(try await standby.metricsAddress())
            #expect(scrape.sum("flashsale_quota_grant_more_total") > 0, "the standby answered no GrantMore")
            let status = try #require(try await quota.status(productId: "tv").products.first)
            #expect(status.grantedUnused <= status.sellable)
            #expect(try await inventory.audit().clean)
        }
    }
}
