import FlashSaleClient
import Foundation
import Proto
import TestSupport
import Testing
import Wire

/// Order calls batched through the purchase pool's consumers (issue 14): many calls at once, for the same and for
/// different orders, each answered from its own row of one `order_batch` call; and a hold's `pay_by` in the
/// PURCHASED answer.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct OrderBatchTests {
    @Test func aPurchasedHoldCarriesItsPayByAndAFinalOrderNone() async throws {
        try await InventoryHarness.with { harness in
            let client = harness.client()
            defer { Task { await client.shutdown() } }
            _ = try await client.createProduct(CreateProductRequest(productId: "tv", totalStock: 2, holdSeconds: 300))
            _ = try await client.createProduct(CreateProductRequest(productId: "radio", totalStock: 2))
            let (id, bought) = try await HoldTests.buy(client, "tv", user: 1)
            #expect(bought.outcome == .purchased && bought.payByUnixMs > 0)
            let held = try await client.getOrder(.byRequest("tv", id))
            #expect(held.state == .held && bought.payByUnixMs == held.payByUnixMs, "\(bought.payByUnixMs) vs \(held.payByUnixMs)")
            // A replay took no unit and says nothing new: GetOrder tells its pay_by.
            let replay = try await HoldTests.buy(client, "tv", user: 1, request: id).1
            #expect(replay.replayed && replay.orderId == bought.orderId && replay.payByUnixMs == 0)
            let final = try await HoldTests.buy(client, "radio", user: 1).1
            #expect(final.outcome == .purchased && final.payByUnixMs == 0)
        }
    }

    @Test func manyOrderCallsAtOnceEachGetTheirOwnOutcome() async throws {
        try await InventoryHarness.with { harness in
            let client = harness.client(connections: 8)
            defer { Task { await client.shutdown() } }
            let count = 60
            _ = try await client.createProduct(CreateProductRequest(productId: "tv", totalStock: Int64(count), holdSeconds: 300))
            _ = try await client.createProduct(CreateProductRequest(productId: "radio", totalStock: Int64(count), holdSeconds: 300))
            var held: [(product: String, id: UInt64)] = []
            for user in 1...count {
                for product in ["tv", "radio"] {
                    let (id, bought) = try await HoldTests.buy(client, product, user: UInt64(user))
                    try #require(bought.outcome == .purchased)
                    held.append((product, id))
                }
            }
            enum Call: Sendable { case confirm, cancel }
            struct Outcome: Sendable {
                var order: Order?
                var status: RPCError.Code?
            }
            // Per hold: 0 confirmed twice, 1 cancelled twice, 2 confirmed and cancelled at once; and unknown orders.
            let calls: [(index: Int, call: Call)] = held.indices.flatMap { index -> [(Int, Call)] in
                switch index % 3 {
                case 0: [(index, .confirm), (index, .confirm)]
                case 1: [(index, .cancel), (index, .cancel)]
                default: [(index, .confirm), (index, .cancel)]
                }
            }.shuffled()
            let answers = await withTaskGroup(of: (Int, Call, Outcome).self) { group in
                for (index, call) in calls {
                    let key = OrderRequest.byRequest(held[index].product, held[index].id)
                    group.addTask {
                        do {
                            let order = call == .confirm ? try await client.confirmOrder(key) : try await client.cancelOrder(key)
                            return (index, call, Outcome(order: order))
                        } catch {
                            return (index, call, Outcome(status: RPCError.code(of: error)))
                        }
                    }
                }
                group.addTask {
                    let unknown = await HoldTests.status { try await client.confirmOrder(.byRequest("tv", TestIds.make()[0])) }
                    return (-1, .confirm, Outcome(status: unknown))
                }
                var answers: [(Int, Call, Outcome)] = []
                for await answer in group { answers.append(answer) }
                return answers
            }
            #expect(answers.contains { $0.0 == -1 && $0.2.status == .notFound }, "an unknown order is NOT_FOUND")
            let byHold = Dictionary(grouping: answers.filter { $0.0 >= 0 }, by: \.0)
            for (index, results) in byHold {
                try #require(results.count == 2)
                let orders = results.compactMap(\.2.order)
                switch index % 3 {
                case 0:
                    #expect(orders.count == 2 && orders.allSatisfy { $0.state == .paid } && orders.filter(\.replayed).count == 1)
                case 1:
                    #expect(orders.count == 2 && orders.allSatisfy { $0.state == .released && $0.reason == .cancelled }
                            && orders.filter(\.replayed).count == 1)
                default:
                    // Exactly one wins; the other is refused with the reason.
                    #expect(orders.count == 1 && results.contains { $0.2.status == .failedPrecondition })
                    let winner = try #require(orders.first)
                    let call = try #require(results.first { $0.2.order != nil }?.1)
                    #expect(winner.state == (call == .confirm ? .paid : .released))
                }
                let order = try await client.getOrder(.byRequest(held[index].product, held[index].id))
                #expect(order.state != .held)
            }
            for product in ["tv", "radio"] {
                let line = try await HoldTests.expectClean(client, product)
                #expect(line.held == 0 && line.paid + line.remaining == Int64(count))
            }
        }
    }

    /// Order calls go to their product's database's pool: while the hot database is unreachable a hot order's calls
    /// are refused UNAVAILABLE at once (nothing changed), a cold order's are answered, and once the hot database is
    /// back the hot hold is paid.
    @Test func orderCallsOfAnUnreachableDatabaseAreRefusedAtOnceAndOthersAnswered() async throws {
        try await InventoryHarness.with(HotIsolationTests.arguments) { harness in
            let setup = harness.client(connections: 1)
            _ = try await setup.createProduct(CreateProductRequest(productId: "cold", totalStock: 5, holdSeconds: 300))
            _ = try await setup.createProduct(CreateProductRequest(productId: "hot", totalStock: 5, hot: true, holdSeconds: 300))
            let cold = try await HoldTests.buy(setup, "cold", user: 1).0
            let hot = try await HoldTests.buy(setup, "hot", user: 1).0
            await setup.shutdown()
            await harness.process.terminate()
            try await HotIsolationTests.refuseHotConnections(harness, true)
            try await harness.start()
            let client = harness.client(connections: 2)
            defer { Task { await client.shutdown() } }

            #expect(try await client.confirmOrder(.byRequest("cold", cold)).state == .paid)
            let started = ContinuousClock.now
            #expect(await HoldTests.status { try await client.confirmOrder(.byRequest("hot", hot)) } == .unavailable)
            #expect(await HoldTests.status { try await client.getOrder(.byRequest("hot", hot)) } == .unavailable)
            #expect(ContinuousClock.now - started < .seconds(2), "refused at once, not at the deadline")

            try await HotIsolationTests.refuseHotConnections(harness, false)
            try await waitUntil(timeout: .seconds(30), what: "the hot hold to be paid") {
                (try? await client.confirmOrder(.byRequest("hot", hot)).state) == .paid
            }
            for product in ["cold", "hot"] {
                let line = try await HoldTests.expectClean(client, product)
                #expect(line.paid == 1 && line.held == 0)
            }
        }
    }
}
