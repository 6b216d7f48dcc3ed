import FlashSaleClient
import Foundation
import PostgresClient
import Proto
import TestSupport
import Testing
import Wire

/// Holds against the real service and PostgreSQL (issue 14): a PURCHASED unit of a product with a hold time is held
/// until paid or released; ConfirmOrder, CancelOrder and GetOrder; expiry that puts the unit back on sale; the audit.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct HoldTests {
    static func buy(_ client: InventoryClient, _ product: String, user: UInt64, request: UInt64? = nil) async throws -> (UInt64, PurchaseResponse) {
        let id = request ?? TestIds.make()[0]
        return (id, try await client.purchase(PurchaseRequest(requestId: id, userId: user, productId: product, edgeId: 1)))
    }

    static func status(_ body: () async throws -> some Any) async -> RPCError.Code? {
        do {
            _ = try await body()
            return nil
        } catch {
            return RPCError.code(of: error)
        }
    }

    /// Every audit line of the product, checked clean.
    static func expectClean(_ client: InventoryClient, _ product: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> ProductAudit {
        let audit = try await client.audit(productId: product)
        let line = try #require(audit.products.first, sourceLocation: sourceLocation)
        #expect(audit.clean && line.clean && line.remaining + line.held + line.paid == line.totalStock,
                "\(line)", sourceLocation: sourceLocation)
        return line
    }

    @Test func withoutAHoldTimeAnOrderIsPaidAtOnceAsBefore() async throws {
        try await InventoryHarness.with { harness in
            let client = harness.client()
            defer { Task { await client.shutdown() } }
            let product = try await client.createProduct(CreateProductRequest(productId: "tv", totalStock: 3))
            #expect(product.holdSeconds == 0)
            let (id, bought) = try await Self.buy(client, "tv", user: 1)
            #expect(bought.outcome == .purchased)
            let order = try await client.getOrder(.byRequest("tv", id))
            #expect(order.state == .paid && order.payByUnixMs == 0 && order.endedUnixMs > 0 && order.orderId == bought.orderId)
            #expect(try await client.getOrder(.byOrder("tv", bought.orderId)) == order)
            let confirmed = try await client.confirmOrder(.byRequest("tv", id))
            #expect(confirmed.state == .paid && confirmed.replayed, "a paid order confirms as a replay")
            #expect(await Self.status { try await client.cancelOrder(.byRequest("tv", id)) } == .failedPrecondition)
            let line = try await Self.expectClean(client, "tv")
            #expect(line.paid == 1 && line.held == 0 && line.orders == 1 && line.remaining == 2)
        }
    }

    @Test func aHoldIsPaidOnceAndAPaidOrderCannotBeCancelled() async throws {
        try await InventoryHarness.with { harness in
            let client = harness.client()
            defer { Task { await client.shutdown() } }
            let product = try await client.createProduct(CreateProductRequest(productId: "tv", totalStock: 2, holdSeconds: 300))
            #expect(product.holdSeconds == 300)
            let before = Int64(Date().timeIntervalSince1970 * 1000)
            let (id, bought) = try await Self.buy(client, "tv", user: 1)
            #expect(bought.outcome == .purchased)
            let held = try await client.getOrder(.byOrder("tv", bought.orderId))
            #expect(held.state == .held && held.requestId == id && held.userId == 1 && held.endedUnixMs == 0)
            #expect(abs(held.payByUnixMs - before - 300_000) < 30_000, "pay_by is the hold time from now: \(held.payByUnixMs - before)")
            #expect(try await client.getStock(productId: "tv").held == 1)

            let paid = try await client.confirmOrder(.byRequest("tv", id))
            #expect(paid.state == .paid && !paid.replayed && paid.payByUnixMs == held.payByUnixMs)
            let again = try await client.confirmOrder(.byOrder("tv", bought.orderId))
            #expect(again.state == .paid && again.replayed)
            #expect(await Self.status { try await client.cancelOrder(.byRequest("tv", id)) } == .failedPrecondition)
            // The buyer holds a paid order: a second purchase is ALREADY_PURCHASED.
            #expect(try await Self.buy(client, "tv", user: 1).1.outcome == .alreadyPurchased)
            let line = try await Self.expectClean(client, "tv")
            #expect(line.paid == 1 && line.held == 0 && line.remaining == 1)
        }
    }

    @Test func aCancelledHoldGoesBackOnSaleAndCanNeverBePaid() async throws {
        try await InventoryHarness.with { harness in
            let client = harness.client()
            defer { Task { await client.shutdown() } }
            _ = try await client.createProduct(CreateProductRequest(productId: "tv", totalStock: 1, holdSeconds: 300))
            let (id, bought) = try await Self.buy(client, "tv", user: 1)
            #expect(bought.outcome == .purchased)
            #expect(try await Self.buy(client, "tv", user: 2).1.outcome == .soldOut, "the one unit is held")
            #expect(try await Self.buy(client, "tv", user: 1).1.outcome == .alreadyPurchased, "a live hold is the buyer's order")

            let cancelled = try await client.cancelOrder(.byRequest("tv", id))
            #expect(cancelled.state == .released && cancelled.reason == .cancelled && !cancelled.replayed)
            let twice = try await client.cancelOrder(.byOrder("tv", bought.orderId))
            #expect(twice.state == .released && twice.replayed)
            do {
                _ = try await client.confirmOrder(.byRequest("tv", id))
                Issue.record("a cancelled hold was paid")
            } catch {
                let error = RPCError.wrapping(error)
                #expect(error.code == .failedPrecondition && error.message.contains("cancelled"), "\(error)")
            }
            #expect(try await client.getStock(productId: "tv").released == 1)
            _ = try await Self.expectClean(client, "tv")

            // The same buyer may buy again (a new request id); the old one replays its first outcome.
            let (_, rebought) = try await Self.buy(client, "tv", user: 1)
            #expect(rebought.outcome == .purchased && rebought.orderId != bought.orderId)
            let replay = try await Self.buy(client, "tv", user: 1, request: id).1
            #expect(replay.outcome == .purchased && replay.replayed && replay.orderId == bought.orderId)
            let line = try await Self.expectClean(client, "tv")
            #expect(line.held == 1 && line.released == 1 && line.remaining == 0)
        }
    }

    @Test func anExpiredHoldIsResoldAndItsLatePaymentRefused() async throws {
        try await InventoryHarness.with { harness in
            let client = harness.client()
            defer { Task { await client.shutdown() } }
            _ = try await client.createProduct(CreateProductRequest(productId: "tv", totalStock: 2, holdSeconds: 1))
            let (first, a) = try await Self.buy(client, "tv", user: 1)
            let (second, b) = try await Self.buy(client, "tv", user: 2)
            #expect(a.outcome == .purchased && b.outcome == .purchased)
            #expect(try await Self.buy(client, "tv", user: 3).1.outcome == .soldOut)
            // The service's expiry releases both within a moment of their pay_by.
            var released = 0
            for _ in 0..<60 where released < 2 {
                try await Task.sleep(for: .milliseconds(100))
                released = Int(try await client.getStock(productId: "tv").released)
            }
            #expect(released == 2)
            for id in [first, second] {
                let order = try await client.getOrder(.byRequest("tv", id))
                #expect(order.state == .released && order.reason == .expired && order.endedUnixMs >= order.payByUnixMs)
                do {
                    _ = try await client.confirmOrder(.byRequest("tv", id))
                    Issue.record("an expired hold was paid")
                } catch {
                    let error = RPCError.wrapping(error)
                    #expect(error.code == .failedPrecondition && error.message.contains("expired"), "\(error)")
                }
            }
            // The sold-out product sells its expired holds.
            #expect(try await Self.buy(client, "tv", user: 3).1.outcome == .purchased)
            #expect(try await Self.buy(client, "tv", user: 1).1.outcome == .purchased, "an expired buyer may buy again")
            #expect(try await Self.buy(client, "tv", user: 4).1.outcome == .soldOut)
            let line = try await Self.expectClean(client, "tv")
            #expect(line.held == 2 && line.released == 2 && line.remaining == 0)
        }
    }

    @Test func aConfirmPastPayByReleasesTheHoldInsteadOfPayingIt() async throws {
        try await InventoryHarness.with { harness in
            let client = harness.client()
            defer { Task { await client.shutdown() } }
            _ = try await client.createProduct(CreateProductRequest(productId: "tv", totalStock: 1, holdSeconds: 300))
            let (id, _) = try await Self.buy(client, "tv", user: 1)
            // Due now, before any expiry ran: the confirm itself decides, and it never pays a hold past its pay_by.
            _ = try await harness.sql(
                "UPDATE requests SET pay_by = now() - interval '1 millisecond' WHERE request_id = $1", [String(Int64(bitPattern: id))])
            #expect(await Self.status { try await client.confirmOrder(.byRequest("tv", id)) } == .failedPrecondition)
            let order = try await client.getOrder(.byRequest("tv", id))
            #expect(order.state == .released && order.reason == .expired)
            #expect(try await Self.buy(client, "tv", user: 2).1.outcome == .purchased)
            _ = try await Self.expectClean(client, "tv")
        }
    }

    @Test func badOrderRequestsGetClearErrors() async throws {
        try await InventoryHarness.with { harness in
            let client = harness.client()
            defer { Task { await client.shutdown() } }
            _ = try await client.createProduct(CreateProductRequest(productId: "tv", totalStock: 5, holdSeconds: 60))
            let (id, bought) = try await Self.buy(client, "tv", user: 1)
            #expect(await Self.status { try await client.createProduct(CreateProductRequest(productId: "radio", totalStock: 5, holdSeconds: 86_401)) } == .invalidArgument)
            // A closed request id (a lookup that found nothing) is no order.
            var lookup = PurchaseRequest(requestId: TestIds.make()[0], userId: 9, productId: "tv", edgeId: 1)
            lookup.lookupOnly = true
            #expect(try await client.purchase(lookup).outcome == .soldOut)
            let cases: [(String, OrderRequest, RPCError.Code)] = [
                ("unknown product", .byRequest("radio", id), .notFound),
                ("unknown request id", .byRequest("tv", TestIds.make()[0]), .notFound),
                ("closed request id", .byRequest("tv", lookup.requestId), .notFound),
                ("unknown order id", .byOrder("tv", bought.orderId + 1_000_000), .notFound),
                ("order id of another product", .byOrder("radio", bought.orderId), .notFound),
                ("absurd order id", .byOrder("tv", UInt64.max), .invalidArgument),
                ("request id 0", .byRequest("tv", 0), .invalidArgument),
                ("no key", OrderRequest(productId: "tv"), .invalidArgument),
                ("no product", .byRequest("", id), .invalidArgument),
            ]
            for (name, request, code) in cases {
                #expect(await Self.status { try await client.getOrder(request) } == code, "get: \(name)")
                #expect(await Self.status { try await client.confirmOrder(request) } == code, "confirm: \(name)")
                #expect(await Self.status { try await client.cancelOrder(request) } == code, "cancel: \(name)")
            }
            for (token, code) in [("", RPCError.Code.unauthenticated), ("wrong-token", .permissionDenied)] {
                let stranger = harness.client(token: token)
                #expect(await Self.status { try await stranger.getOrder(.byRequest("tv", id)) } == code)
                #expect(await Self.status { try await stranger.confirmOrder(.byRequest("tv", id)) } == code)
                #expect(await Self.status { try await stranger.cancelOrder(.byRequest("tv", id)) } == code)
                await stranger.shutdown()
            }
            #expect(try await client.getOrder(.byRequest("tv", id)).state == .held, "nothing changed the hold")
            _ = try await Self.expectClean(client, "tv")
        }
    }
}
