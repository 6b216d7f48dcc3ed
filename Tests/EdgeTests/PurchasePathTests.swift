import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Proto
import Testing
@testable import Wire

@testable import Edge

/// Answers forwarded purchases from a script, and records them.
final class ScriptedInventory: PurchaseForwarder, @unchecked Sendable {
    // Only touched from the test's thread and the embedded loop, which is that same thread.
    var received: [PurchaseRequest] = []
    var answer: (PurchaseRequest) -> Result<PurchaseResponse, RPCError> = { _ in .success(PurchaseResponse(outcome: .purchased, orderId: 1)) }
    let eventLoop: any EventLoop
    private let lock = NIOLock()

    init(eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    func forward(_ request: PurchaseRequest, timeout: TimeAmount) -> EventLoopFuture<PurchaseResponse> {
        let result = lock.withLock { () -> Result<PurchaseResponse, RPCError> in
            received.append(request)
            return answer(request)
        }
        return eventLoop.makeCompletedFuture(result.mapError { $0 as any Error })
    }
}

struct Refill: QuotaRefiller {
    let ledger: QuotaLedger
    let units: Int64
    func requestMore(product: String) async -> Bool {
        guard units > 0 else { return false }
        let granted = ledger.usage(of: product)?.granted ?? 0
        return ledger.applyGrant(product, granted: granted + units) > 0
    }
}

@Suite struct PurchasePathTests {
    struct Harness {
        let channel: EmbeddedChannel
        let ledger: QuotaLedger
        let shedder: LoadShedder
        let inventory: ScriptedInventory
        let path: PurchasePath
        var nextCall: UInt64 = 1

        init(keepPerMillion: UInt32 = LoadShedder.million, refillUnits: Int64 = 0) throws {
            channel = EmbeddedChannel()
            ledger = QuotaLedger()
            shedder = LoadShedder(keepPerMillion: keepPerMillion, seed: 42)
            inventory = ScriptedInventory(eventLoop: channel.embeddedEventLoop)
            path = PurchasePath(
                ledger: ledger, shedder: shedder, forwarder: inventory,
                refiller: Refill(ledger: ledger, units: refillUnits), edgeID: { 7 },
                inDoubtSettleDelay: .milliseconds(10), logger: Logger(label: "test"))
            var router = RPCRouter(serviceName: "edge")
            path.register(into: &router)
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder()))
            try channel.pipeline.syncOperations.addHandler(
                RPCServerHandler(router: router, configuration: RPCServerConfiguration(), logger: Logger(label: "test")))
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        }

        /// Sends one purchase and waits (bounded) for its answer.
        mutating func purchase(_ request: PurchaseRequest) async throws -> Result<PurchaseResponse, RPCError> {
            let callID = nextCall
            nextCall += 1
            var frame = ByteBuffer()
            Framing.writeFrame(into: &frame) {
                WireRequest(callId: callID, method: "edge.Purchase", payload: request.serializedBuffer()).serialize(into: &$0)
            }
            try channel.writeInbound(frame)
            for _ in 0..<2000 {
                channel.embeddedEventLoop.run()
                if var out = try channel.readOutbound(as: ByteBuffer.self) {
                    let length = out.readInteger(as: UInt32.self)!
                    let response = try WireResponse(decoding: out.readSlice(length: Int(length))!)
                    #expect(response.callId == callID)
                    if response.status == .ok { return .success(try PurchaseResponse(decoding: response.payload)) }
                    return .failure(RPCError(RPCError.Code(rawValue: response.status.rawValue), response.message))
                }
                try await Task.sleep(for: .milliseconds(1))
            }
            Issue.record("no answer")
            throw RPCError(.deadlineExceeded, "no answer")
        }
    }

    private func buy(_ request: UInt64, user: UInt64? = nil, product: String = "tv", retry: Bool = false) -> PurchaseRequest {
        PurchaseRequest(requestId: request, userId: user ?? request, productId: product, retry: retry)
    }

    @Test func badInputIsInvalidArgument() async throws {
        var harness = try Harness()
        harness.ledger.applyGrant("tv", granted: 10)
        for request in [
            PurchaseRequest(requestId: 0, userId: 1, productId: "tv"),
            PurchaseRequest(requestId: 1, userId: 0, productId: "tv"),
            PurchaseRequest(requestId: 1, userId: 1, productId: ""),
            PurchaseRequest(requestId: 1, userId: 1, productId: String(repeating: "x", count: 500)),
            PurchaseRequest(requestId: 1, userId: 1, productId: "tv", lookupOnly: true),
        ] {
            let result = try await harness.purchase(request)
            #expect(throws: RPCError.self) { try result.get() }
            if case .failure(let error) = result { #expect(error.code == .invalidArgument) }
        }
        #expect(harness.inventory.received.isEmpty)
        #expect(harness.ledger.usage(of: "tv")?.available == 10)
    }

    @Test func unknownProductIsNotFound() async throws {
        var harness = try Harness()
        let result = try await harness.purchase(buy(1, product: "nope"))
        if case .failure(let error) = result { #expect(error.code == .notFound) } else { Issue.record("expected NOT_FOUND") }
    }

    @Test func forwardsOnlyWhatTheQuotaCoversThenSoldOut() async throws {
        var harness = try Harness()
        harness.ledger.applyGrant("tv", granted: 3)
        var outcomes: [PurchaseOutcome] = []
        for id in 1...10 { outcomes.append(try await harness.purchase(buy(UInt64(id))).get().outcome) }
        #expect(outcomes.filter { $0 == .purchased }.count == 3)
        #expect(outcomes.filter { $0 == .soldOut }.count == 7)
        #expect(harness.inventory.received.count == 3)
        #expect(harness.inventory.received.allSatisfy { $0.edgeId == 7 && !$0.lookupOnly })
    }

    @Test func unitsComeBackWhenTheInventoryBuysNothing() async throws {
        var harness = try Harness()
        harness.ledger.applyGrant("tv", granted: 1)
        harness.inventory.answer = { _ in .success(PurchaseResponse(outcome: .alreadyPurchased, orderId: 9)) }
        #expect(try await harness.purchase(buy(1)).get() == PurchaseResponse(outcome: .alreadyPurchased, orderId: 9))
        harness.inventory.answer = { _ in .success(PurchaseResponse(outcome: .purchased, orderId: 5, replayed: true)) }
        #expect(try await harness.purchase(buy(2)).get().orderId == 5)
        #expect(harness.ledger.usage(of: "tv")?.available == 1, "neither call kept the unit")
    }

    @Test func inDoubtAttemptKeepsItsUnitUntilResolved() async throws {
        var harness = try Harness()
        harness.ledger.applyGrant("tv", granted: 1)
        harness.inventory.answer = { _ in .failure(RPCError(.unavailable, "inventory down")) }
        if case .failure(let error) = try await harness.purchase(buy(1)) { #expect(error.code == .unavailable) }
        #expect(harness.ledger.usage(of: "tv")?.available == 0)
        #expect(harness.path.resolver.pendingCount == 1)
        // The inventory comes back and has no order for it: the unit returns.
        harness.inventory.answer = { $0.lookupOnly ? .success(PurchaseResponse(outcome: .soldOut)) : .success(PurchaseResponse(outcome: .purchased, orderId: 3)) }
        for _ in 0..<500 where harness.path.resolver.pendingCount > 0 { try await Task.sleep(for: .milliseconds(5)) }
        #expect(harness.path.resolver.pendingCount == 0)
        #expect(harness.ledger.usage(of: "tv")?.available == 1)
    }

    @Test func retryOfAnInDoubtAttemptReusesItsUnit() async throws {
        var harness = try Harness()
        harness.ledger.applyGrant("tv", granted: 1)
        harness.inventory.answer = { _ in .failure(RPCError(.deadlineExceeded, "slow")) }
        _ = try await harness.purchase(buy(1))
        harness.inventory.answer = { _ in .success(PurchaseResponse(outcome: .purchased, orderId: 11)) }
        #expect(try await harness.purchase(buy(1, retry: true)).get().orderId == 11)
        #expect(harness.path.resolver.pendingCount == 0)
        let usage = harness.ledger.usage(of: "tv")!
        #expect(usage.used == 1 && usage.available == 0, "one unit for one order")
    }

    @Test func retryAfterSoldOutLearnsItsFirstOutcome() async throws {
        var harness = try Harness()
        harness.ledger.markSoldOut("tv")
        harness.inventory.answer = { request in
            request.lookupOnly ? .success(PurchaseResponse(outcome: .purchased, orderId: 77, replayed: true)) : .failure(RPCError(.internal, "must not buy"))
        }
        #expect(try await harness.purchase(buy(5)).get().outcome == .soldOut)
        #expect(harness.inventory.received.isEmpty)
        #expect(try await harness.purchase(buy(5, retry: true)).get() == PurchaseResponse(outcome: .purchased, orderId: 77, replayed: true))
        #expect(harness.inventory.received.map(\.lookupOnly) == [true])
    }

    @Test func dryEdgeAsksForMoreBeforeSayingSoldOut() async throws {
        var harness = try Harness(refillUnits: 2)
        harness.ledger.applyGrant("tv", granted: 0)
        #expect(try await harness.purchase(buy(1)).get().outcome == .purchased)
        #expect(harness.ledger.usage(of: "tv")?.granted == 2)
    }

    @Test func shedsTheConfiguredShareAndNeverAnInDoubtRetry() async throws {
        var harness = try Harness(keepPerMillion: 100_000)
        harness.ledger.applyGrant("tv", granted: 1_000_000)
        var shed = 0
        for id in 1...2000 where try await harness.purchase(buy(UInt64(id))).get().outcome == .shed { shed += 1 }
        #expect((1700...1900).contains(shed), "about nine in ten shed, got \(shed)")
        harness.shedder.setKeepPerMillion(0)
        #expect(try await harness.purchase(buy(9999, retry: true)).get().outcome == .purchased)
        #expect(try await harness.purchase(buy(10000)).get().outcome == .shed)
    }
}

@Suite struct PurchasePathRefusalTests {
    @Test func refusalBeforeQueueingGivesTheUnitBackAtOnce() async throws {
        var harness = try PurchasePathTests.Harness()
        harness.ledger.applyGrant("tv", granted: 1)
        harness.inventory.answer = { _ in .failure(RPCError(.resourceExhausted, "queue full")) }
        if case .failure(let error) = try await harness.purchase(PurchaseRequest(requestId: 1, userId: 1, productId: "tv")) {
            #expect(error.code == .resourceExhausted)
        } else {
            Issue.record("expected RESOURCE_EXHAUSTED")
        }
        #expect(harness.path.resolver.pendingCount == 0)
        #expect(harness.ledger.usage(of: "tv")?.available == 1)
    }
}

/// Whose order is it: an edge keeps a unit only for an order its own forwarded purchase made.
@Suite struct PurchasePathOwnershipTests {
    private func inDoubt(_ harness: inout PurchasePathTests.Harness) async throws {
        harness.ledger.applyGrant("tv", granted: 1)
        harness.inventory.answer = { _ in .failure(RPCError(.unavailable, "inventory down")) }
        _ = try await harness.purchase(PurchaseRequest(requestId: 1, userId: 1, productId: "tv"))
        #expect(harness.path.resolver.pendingCount == 1)
    }

    @Test func claimedRetryReplayingThisEdgesOrderKeepsTheUnit() async throws {
        var harness = try PurchasePathTests.Harness()
        try await inDoubt(&harness)
        harness.inventory.answer = { _ in .success(PurchaseResponse(outcome: .purchased, orderId: 5, replayed: true, edgeId: 7)) }
        #expect(try await harness.purchase(PurchaseRequest(requestId: 1, userId: 1, productId: "tv", retry: true)).get().orderId == 5)
        #expect(harness.ledger.usage(of: "tv")?.available == 0, "the first forward made the order: its unit is sold")
    }

    @Test func claimedRetryReplayingAnotherEdgesOrderGivesTheUnitBack() async throws {
        var harness = try PurchasePathTests.Harness()
        try await inDoubt(&harness)
        harness.inventory.answer = { _ in .success(PurchaseResponse(outcome: .purchased, orderId: 5, replayed: true, edgeId: 3)) }
        _ = try await harness.purchase(PurchaseRequest(requestId: 1, userId: 1, productId: "tv", retry: true))
        #expect(harness.ledger.usage(of: "tv")?.available == 1, "edge 3 sold it; this edge's attempt bought nothing")
    }

    @Test func resolverKeepsTheUnitOnlyForThisEdgesOrder() async throws {
        for (maker, expectedAvailable) in [(UInt32(7), Int64(0)), (UInt32(3), Int64(1))] {
            var harness = try PurchasePathTests.Harness()
            try await inDoubt(&harness)
            harness.inventory.answer = { _ in .success(PurchaseResponse(outcome: .purchased, orderId: 5, replayed: true, edgeId: maker)) }
            for _ in 0..<500 where harness.path.resolver.pendingCount > 0 { try await Task.sleep(for: .milliseconds(5)) }
            #expect(harness.path.resolver.pendingCount == 0)
            #expect(harness.ledger.usage(of: "tv")?.available == expectedAvailable, "order made by edge \(maker)")
        }
    }
}
