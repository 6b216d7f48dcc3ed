import FlashSaleClient
import Foundation
import PostgresClient
import Proto
import TestSupport
import Testing
import Wire

/// Request ids and stock changes against the real service and PostgreSQL (review findings 2, 6, 11, 12, 16 and the
/// uint64 id range): one request id, one purchase; definitive lookups; durable first outcomes; change ids.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct InventoryRequestIdTests {
    /// Finding 6. The old code answered a reused id with the first buyer's order (no order for the second user),
    /// and made a second order for the same id in the hot database.
    @Test func aRequestIdReusedWithAnotherUserOrProductIsRefused() async throws {
        try await InventoryHarness.with { harness in
            let client = harness.client(connections: 8)
            defer { Task { await client.shutdown() } }
            for (name, hot) in [("tv", false), ("radio", false), ("hotcam", true)] {
                _ = try await client.createProduct(CreateProductRequest(productId: name, totalStock: 10, hot: hot))
            }
            let ids = TestIds.make(3)
            let (r, r2, r3) = (ids[0], ids[1], ids[2])
            let first = try await client.purchase(PurchaseRequest(requestId: r, userId: 1, productId: "tv", edgeId: 1))
            #expect(first.outcome == .purchased && !first.replayed)

            // Another user, another product of the same database, a product of the hot database; buys and lookups.
            for (user, product, lookup) in [(2, "tv", false), (1, "radio", false), (3, "hotcam", false),
                                            (2, "tv", true), (1, "radio", true), (1, "hotcam", true)] as [(UInt64, String, Bool)] {
                var request = PurchaseRequest(requestId: r, userId: user, productId: product, edgeId: 1)
                request.lookupOnly = lookup
                await Self.expectReused(client, request)
            }
            // The other direction: an id first used for the hot product is refused for a main one.
            #expect(try await client.purchase(PurchaseRequest(requestId: r2, userId: 4, productId: "hotcam")).outcome == .purchased)
            await Self.expectReused(client, PurchaseRequest(requestId: r2, userId: 4, productId: "tv"))
            await Self.expectReused(client, PurchaseRequest(requestId: r2, userId: 5, productId: "hotcam"))

            // One id sent by two users at once, many times: one of them holds it, the other is refused every time.
            let racing = try await withThrowingTaskGroup(of: (UInt64, Result<PurchaseResponse, RPCError>).self) { group in
                for copy in 0..<40 {
                    let user: UInt64 = copy % 2 == 0 ? 5 : 6
                    group.addTask {
                        do {
                            return (user, .success(try await client.purchase(PurchaseRequest(requestId: r3, userId: user, productId: "tv"))))
                        } catch {
                            return (user, .failure(RPCError.wrapping(error)))
                        }
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let winners = Set(racing.compactMap { user, result in (try? result.get())?.outcome == .purchased ? user : nil })
            #expect(winners.count == 1, "\(racing)")
            for (user, result) in racing where !winners.contains(user) {
                if case .failure(let error) = result {
                    #expect(error.code == .failedPrecondition, "\(user): \(error)")
                } else {
                    Issue.record("user \(user), who does not hold the id, was answered \(result)")
                }
            }

            // The retry of the first purchase still gets its order.
            let retry = try await client.purchase(PurchaseRequest(requestId: r, userId: 1, productId: "tv"))
            #expect(retry == PurchaseResponse(outcome: .purchased, orderId: first.orderId, replayed: true, edgeId: 1))

            let main = try await harness.orders()
            let hot = try await harness.orders(hot: true)
            #expect(Set(main.keys).intersection(hot.keys).isEmpty, "no request id has orders in both databases")
            #expect(main.values.filter { $0.user == 2 || $0.user == 3 }.isEmpty)
            #expect(main.count == 2 && hot.count == 1, "r and r3 in main, r2 in hot: \(main) \(hot)")
            #expect(try await client.getStock(productId: "radio").remaining == 10)
            #expect(try await client.audit().clean)
        }
    }

    /// Findings 2 and 11 (contract 2). A purchase whose commit stalls (a test-only trigger, made as the owner):
    /// before its row reaches the index (BEFORE trigger) the lookup closes the id and the purchase then answers
    /// SOLD_OUT replayed; after (AFTER trigger) the lookup waits for the commit and answers the order. The old
    /// lookup read around the stalled insert, answered SOLD_OUT, and the order committed after it.
    @Test func aLookupIsNeverContradictedByAPurchaseStillCommitting() async throws {
        try await InventoryHarness.with { harness in
            let client = harness.client(connections: 4)
            defer { Task { await client.shutdown() } }
            _ = try await client.createProduct(CreateProductRequest(productId: "cam", totalStock: 10))
            // The table under `orders` (a view of it since migration 4).
            let table = try await harness.sql("SELECT coalesce(to_regclass('requests')::text, 'orders')").string(0, 0)!
            _ = try await harness.sql("""
                CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN PERFORM pg_sleep(2); RETURN NEW; END$$
                """)
            // Purchases only (a purchase's row has an order id).
            _ = try await harness.sql("""
                CREATE TRIGGER stall_before BEFORE INSERT ON \(table) FOR EACH ROW
                WHEN (NEW.user_id = 4242 AND NEW.order_id IS NOT NULL) EXECUTE FUNCTION stall()
                """)
            _ = try await harness.sql("""
                CREATE TRIGGER stall_after AFTER INSERT ON \(table) FOR EACH ROW
                WHEN (NEW.user_id = 4243 AND NEW.order_id IS NOT NULL) EXECUTE FUNCTION stall()
                """)
            for user: UInt64 in [4242, 4243] {
                let id = TestIds.make()[0]
                let purchase = Task {
                    try await client.purchase(PurchaseRequest(requestId: id, userId: user, productId: "cam", edgeId: 1), timeout: .seconds(20))
                }
                try await waitUntil(timeout: .seconds(10), what: "the purchase to stall") {
                    try await harness.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'").int64(0, 0) == 1
                }
                var lookup = PurchaseRequest(requestId: id, userId: user, productId: "cam", edgeId: 2)
                lookup.lookupOnly = true
                let looked = try await client.purchase(lookup, timeout: .seconds(20))
                let bought = try await purchase.value
                let order = try await harness.orders()[Int64(bitPattern: id)]
                if looked.outcome == .purchased {
                    #expect(looked == PurchaseResponse(outcome: .purchased, orderId: bought.orderId, replayed: true, edgeId: 1))
                    #expect(order?.order == Int64(bought.orderId))
                } else {
                    #expect(looked.outcome == .soldOut)
                    #expect(order == nil, "user \(user): the lookup answered SOLD_OUT, then the order committed")
                    #expect(bought == PurchaseResponse(outcome: .soldOut, replayed: true), "user \(user): \(bought)")
                }
                // Which one each trigger exercises: the lookup closes first, or waits for the commit.
                #expect(looked.outcome == (user == 4242 ? .soldOut : .purchased), "user \(user): \(looked)")
            }
            #expect(try await client.getStock(productId: "cam").remaining == 9)
            #expect(try await client.audit().clean, "closed ids are not orders")
        }
    }

    /// Finding 11 (contract 2): SOLD_OUT is durable. The old code bought the retried request after the raise.
    @Test func soldOutStaysTheFirstOutcomeAfterARaise() async throws {
        try await InventoryHarness.with { harness in
            let client = harness.client(connections: 4)
            defer { Task { await client.shutdown() } }
            for (name, hot) in [("mug", false), ("hotmug", true)] {
                _ = try await client.createProduct(CreateProductRequest(productId: name, totalStock: 2, hot: hot))
                for id in TestIds.make(2) {
                    #expect(try await client.purchase(PurchaseRequest(requestId: id, userId: id, productId: name)).outcome == .purchased)
                }
                let late = TestIds.make()[0]
                let request = PurchaseRequest(requestId: late, userId: 77, productId: name)
                #expect(try await client.purchase(request) == PurchaseResponse(outcome: .soldOut))
                #expect(try await client.purchase(request) == PurchaseResponse(outcome: .soldOut, replayed: true))

                _ = try await client.raiseStock(productId: name, by: 5)
                #expect(try await client.purchase(request) == PurchaseResponse(outcome: .soldOut, replayed: true), "\(name)")
                var lookup = request
                lookup.lookupOnly = true
                #expect(try await client.purchase(lookup) == PurchaseResponse(outcome: .soldOut), "\(name)")
                // The buyer may still buy, with a new request id.
                let fresh = try await client.purchase(PurchaseRequest(requestId: TestIds.make()[0], userId: 77, productId: name))
                #expect(fresh.outcome == .purchased && !fresh.replayed)
                #expect(try await client.getStock(productId: name).remaining == 4)
            }
            #expect(try await client.audit().clean)
        }
    }

    /// Finding 12. A raise that waits behind a slot lock past its caller's timeout, retried twice with its change
    /// id, raises once. The old AdjustStock had no change id: each retry raised again.
    @Test func aRetriedRaiseAppliesOnce() async throws {
        try await InventoryHarness.with { harness in
            let client = harness.client(connections: 4)
            defer { Task { await client.shutdown() } }
            _ = try await client.createProduct(CreateProductRequest(productId: "lamp", totalStock: 10, slotCount: 2))
            let change = StockChangeId.make()

            let lock = try await PostgresConnection.connect(harness.database.dsn)
            defer { lock.close() }
            _ = try await lock.exec("""
                BEGIN; SELECT 1 FROM stock_slot WHERE product_id = (SELECT id FROM products WHERE name = 'lamp') FOR UPDATE
                """)
            for _ in 0..<2 {
                await #expect(throws: (any Error).self) {
                    _ = try await client.raiseStock(productId: "lamp", by: 5, changeId: change, timeout: .milliseconds(500))
                }
            }
            _ = try await lock.exec("COMMIT")
            let raised = try await client.raiseStock(productId: "lamp", by: 5, changeId: change, timeout: .seconds(10))
            // The timed-out calls are still running in the service: wait until they are done.
            try await waitUntil(timeout: .seconds(10), what: "the raises to finish") {
                try await harness.sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%adjust_stock%' AND state <> 'idle' AND pid <> pg_backend_pid()"
                ).int64(0, 0) == 0
            }
            let stock = try await client.getStock(productId: "lamp")
            #expect(raised.totalStock == 15 && stock.totalStock == 15 && stock.remaining == 15, "\(raised) / \(stock)")

            // The same change id for another change is refused; a raise needs one.
            do {
                _ = try await client.raiseStock(productId: "lamp", by: 6, changeId: change)
                Issue.record("a change id reused for another change was applied")
            } catch {
                #expect(RPCError.code(of: error) == .failedPrecondition && "\(error)".contains("change id reused"), "\(error)")
            }
            do {
                _ = try await client.adjustStock(AdjustStockRequest(productId: "lamp", change: .raiseBy(1)))
                Issue.record("a raise without a change id was applied")
            } catch {
                #expect(RPCError.code(of: error) == .invalidArgument)
            }
            #expect(try await client.getStock(productId: "lamp").totalStock == 15)
            #expect(try await client.audit().clean)
        }
    }

    /// Finding 12 as the operator meets it: `flashsale stock raise` prints its change id, and running it again with
    /// `--change-id` (after a timeout, say) goes through the quota service and raises nothing more.
    @Test func theOperatorsRetriedRaiseAppliesOnceThroughTheQuotaService() async throws {
        try await OperatedPlatform.with(edges: 1) { ops in
            try await ops.prepare(products: ["p1"], stock: 100, edges: 1)
            let first = try await ops.flashsale(["stock", "raise", "p1", "--by", "50"])
            #expect(first.status == 0, "\(first.output)")
            guard let match = first.output.firstMatch(of: /--change-id (\d+)/) else {
                Issue.record("no change id printed: \(first.output)")
                return
            }
            let id = String(match.1)
            let retry = try await ops.flashsale(["stock", "raise", "p1", "--by", "50", "--change-id", id])
            #expect(retry.status == 0 && retry.output.contains("stock 150"), "\(retry.output)")
            let other = try await ops.flashsale(["stock", "raise", "p1", "--by", "7", "--change-id", id])
            #expect(other.status != 0 && other.output.contains("change id reused with another change"), "\(other.output)")
            #expect(try await ops.inventory.getStock(productId: "p1").totalStock == 150)
            try await waitUntil(timeout: .seconds(10), what: "the raise to reach the edge") {
                try await ops.quota.status(productId: "p1").products[0].edges.reduce(0) { $0 + $1.granted } == 150
            }
        }
    }

    /// Finding 16. The old limit cut the stock for good: "limit 50" then "limit 100" left 50 on sale while the
    /// answer said sale_limit 100.
    @Test func raisingALoweredSaleLimitRestoresTheUnits() async throws {
        try await InventoryHarness.with { harness in
            let client = harness.client(connections: 16)
            defer { Task { await client.shutdown() } }
            _ = try await client.createProduct(CreateProductRequest(productId: "desk", totalStock: 100, slotCount: 3))
            _ = try await InventoryTests.buyAll(client, TestIds.make(10).map { ($0, $0, "desk") }, copies: 1)
            var product = try await client.setSaleLimit(productId: "desk", limit: 50)
            #expect(product.totalStock == 50 && product.remaining == 40 && product.saleLimit == 50)
            product = try await client.setSaleLimit(productId: "desk", limit: 100)
            #expect(product.totalStock == 100 && product.remaining == 90 && product.saleLimit == 100, "\(product)")
            // Above the stock there is nothing more to restore.
            product = try await client.setSaleLimit(productId: "desk", limit: 500)
            #expect(product.totalStock == 100 && product.remaining == 90 && product.saleLimit == 500, "\(product)")
            let burst = try await InventoryTests.buyAll(client, TestIds.make(120).map { ($0, $0, "desk") }, copies: 1)
            #expect(burst.values.filter { $0[0].outcome == .purchased }.count == 90)

            // A limit given at creation keeps the rest of the stock back until a higher limit.
            _ = try await client.createProduct(CreateProductRequest(productId: "chair", totalStock: 100, saleLimit: 30))
            product = try await client.setSaleLimit(productId: "chair", limit: 80)
            #expect(product.totalStock == 80 && product.remaining == 80, "\(product)")
            #expect(try await client.audit().clean)
        }
    }

    /// Issue item 11: request and user ids are any non-zero uint64 (the proto's type), kept as their bit pattern.
    /// The old service refused ids above Int64.max.
    @Test func idsUseTheWholeUInt64Range() async throws {
        try await InventoryHarness.with { harness in
            let client = harness.client(connections: 4)
            defer { Task { await client.shutdown() } }
            let high: [(request: UInt64, user: UInt64)] = [(1 << 63, .max), (.max, 1 << 63), (UInt64(Int64.max), 1)]
            for (name, hot) in [("big", false), ("hotbig", true)] {
                _ = try await client.createProduct(CreateProductRequest(productId: name, totalStock: 3, hot: hot))
                // The hot product gets other ids: an id is bound to one product.
                let ids = high.map { (request: hot ? $0.request ^ 0x10 : $0.request, user: $0.user) }
                var orders: [UInt64: UInt64] = [:]
                for (request, user) in ids {
                    let bought = try await client.purchase(PurchaseRequest(requestId: request, userId: user, productId: name, edgeId: 2))
                    #expect(bought.outcome == .purchased && !bought.replayed, "\(name) \(request): \(bought)")
                    orders[request] = bought.orderId
                }
                // Sold out now: the retries are answered from memory or the database, lookups too.
                for (request, user) in ids {
                    let replay = PurchaseResponse(outcome: .purchased, orderId: orders[request]!, replayed: true, edgeId: 2)
                    #expect(try await client.purchase(PurchaseRequest(requestId: request, userId: user, productId: name)) == replay)
                    var lookup = PurchaseRequest(requestId: request, userId: user, productId: name)
                    lookup.lookupOnly = true
                    #expect(try await client.purchase(lookup) == replay)
                    await Self.expectReused(client, PurchaseRequest(requestId: request, userId: user == 1 ? 2 : user - 1, productId: name))
                }
                let stored = try await harness.orders(hot: hot)
                for (request, user) in ids {
                    #expect(stored[Int64(bitPattern: request)]?.user == Int64(bitPattern: user), "the bit pattern is stored")
                }
            }
            #expect(try await harness.sql("SELECT count(*) FROM orders WHERE request_id IN (-9223372036854775808, -1)").int64(0, 0) == 2)
            #expect(try await client.audit().clean)
        }
    }

    // MARK: - Helpers

    static func expectReused(_ client: InventoryClient, _ request: PurchaseRequest, sourceLocation: SourceLocation = #_sourceLocation) async {
        do {
            let answer = try await client.purchase(request)
            Issue.record("\(request) was answered \(answer)", sourceLocation: sourceLocation)
        } catch {
            #expect(RPCError.code(of: error) == .failedPrecondition, "\(error)", sourceLocation: sourceLocation)
            #expect("\(error)".contains("request id reused with another product or user"), "\(error)", sourceLocation: sourceLocation)
        }
    }
}
