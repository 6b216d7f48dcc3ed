import FlashSaleClient
import Foundation
import Logging
import PostgresClient
import Proto
import TestSupport
import Testing
import Wire

/// The late-payment race of issue 14, against the real database: payments, cancels and expiries of the same holds
/// at the same instant, on two inventory instances and extra expirers of the test's own, repeatedly; and the
/// inventory killed mid-expiry. Each hold ends paid or released, never both; a confirm answered OK stays paid with
/// its unit; paid + live holds never exceed the stock; the audit is clean. Small sizes: seconds, not minutes.
@Suite(.serialized, .timeLimit(.minutes(4)))
struct HoldRaceTests {
    static let rounds = 3
    static let holds = 40

    enum Answer: Equatable {
        case ok(replayed: Bool)
        case refused
        case failed(RPCError.Code)
    }

    static func answer(_ body: () async throws -> Order) async -> Answer {
        do {
            return .ok(replayed: try await body().replayed)
        } catch {
            let code = RPCError.code(of: error)
            return code == .failedPrecondition ? .refused : .failed(code)
        }
    }

    /// Products of `count` units with a hold time of 300 s (only the test's pay_by decides). Made before a second
    /// inventory starts: an instance learns the catalog at start.
    static func createProducts(_ client: InventoryClient, _ names: [String], count: Int) async throws {
        for name in names {
            _ = try await client.createProduct(CreateProductRequest(productId: name, totalStock: Int64(count), holdSeconds: 300))
        }
    }

    /// `count` holds of the product, bought through `client`.
    static func makeHolds(_ client: InventoryClient, product: String, count: Int) async throws -> [UInt64] {
        let ids = TestIds.make(count)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, id) in ids.enumerated() {
                group.addTask {
                    let bought = try await client.purchase(PurchaseRequest(requestId: id, userId: UInt64(index + 1), productId: product, edgeId: 1))
                    #expect(bought.outcome == .purchased)
                }
            }
            try await group.waitForAll()
        }
        return ids
    }

    /// Every hold of the product due at a random moment of the next `window` milliseconds, so that confirms spread
    /// over the same window meet expiries at every distance, ties included, whatever the machine's pace.
    static func makeDue(_ harness: InventoryHarness, product: String, window milliseconds: Int) async throws {
        _ = try await harness.sql(
            """
            UPDATE requests SET pay_by = clock_timestamp() + make_interval(secs => random() * $2::double precision / 1000)
             WHERE state = 'held' AND product_id = (SELECT id FROM products WHERE name = $1)
            """, [product, String(milliseconds)])
    }

    /// Runs `body` for each id, the i-th after i/count of `window` milliseconds.
    static func spread<T: Sendable>(_ ids: [UInt64], window milliseconds: Int, _ body: @escaping @Sendable (Int, UInt64) async -> T) async -> [UInt64: T] {
        await withTaskGroup(of: (UInt64, T).self) { group in
            for (index, id) in ids.enumerated() {
                group.addTask {
                    try? await Task.sleep(for: .milliseconds(milliseconds * index / max(ids.count, 1)))
                    return (id, await body(index, id))
                }
            }
            return await group.reduce(into: [UInt64: T]()) { $0[$1.0] = $1.1 }
        }
    }

    /// Expirers of the test's own (as many instances would be), calling `expire_holds` in a loop until `until`.
    static func expirers(_ harness: InventoryHarness, count: Int, until: ContinuousClock.Instant) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<count {
                group.addTask {
                    let connection = try await PostgresConnection.connect(harness.database.dsn)
                    defer { connection.close() }
                    while ContinuousClock.now < until { _ = try await connection.query("SELECT expire_holds(7)") }
                }
            }
            try await group.waitForAll()
        }
    }

    /// Each request id's end state in the database, and the product's line of the audit.
    static func ends(_ harness: InventoryHarness, product: String) async throws -> [UInt64: String] {
        let result = try await harness.sql(
            "SELECT request_id, state FROM orders WHERE product_id = (SELECT id FROM products WHERE name = $1)", [product])
        var states: [UInt64: String] = [:]
        for row in 0..<result.count { states[UInt64(bitPattern: result.int64(row, 0)!)] = result.string(row, 1)! }
        return states
    }

    static func expectBalanced(_ client: InventoryClient, product: String, stock: Int64, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let audit = try await client.audit(productId: product)
        let line = try #require(audit.products.first, sourceLocation: sourceLocation)
        #expect(line.clean && line.invalidOrders == 0 && line.paid + line.held <= stock && line.totalStock == stock,
                "\(line)", sourceLocation: sourceLocation)
    }

    /// Waits (bounded) until no hold of the product is live.
    static func waitUntilEnded(_ client: InventoryClient, product: String) async throws {
        for _ in 0..<100 {
            if try await client.getStock(productId: product).held == 0 { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("holds of \(product) still live after 10 s")
    }

    /// A second inventory on the same databases: its own expiry competes with the first's.
    static func withSecondInventory<T: Sendable>(_ harness: InventoryHarness, _ body: (InventoryClient) async throws -> T) async throws -> T {
        var arguments = harness.arguments
        arguments.port = LocalPorts.free()
        let second = try await ServiceEndpoint.start(arguments, environment: InventoryHarness.environment, name: "inventory-2-\(harness.database.name)")
        var logger = Logging.Logger(label: "inventory-2")
        logger.logLevel = .critical
        let client = InventoryClient(port: arguments.port, connections: 4, token: InventoryHarness.token, logger: logger)
        do {
            let result = try await body(client)
            await client.shutdown()
            _ = await second.process.terminate(grace: .seconds(5))
            return result
        } catch {
            await client.shutdown()
            _ = await second.process.terminate(grace: .seconds(5))
            throw error
        }
    }

    @Test func confirmsRacingExpiryEndEachHoldOnceAndEveryOKStaysPaid() async throws {
        try await InventoryHarness.with { harness in
            let client = harness.client(connections: 8)
            defer { Task { await client.shutdown() } }
            try await Self.createProducts(client, (0..<Self.rounds).map { "race-\($0)" }, count: Self.holds)
            try await Self.withSecondInventory(harness) { other in
                for round in 0..<Self.rounds {
                    let product = "race-\(round)"
                    let ids = try await Self.makeHolds(client, product: product, count: Self.holds)
                    // Confirms from both instances, expiries from both instances and three expirers more, all
                    // through the window in which the holds fall due.
                    try await Self.makeDue(harness, product: product, window: 600)
                    async let expiring: Void = Self.expirers(harness, count: 3, until: .now + .milliseconds(700))
                    let answers = await Self.spread(ids, window: 600) { index, id in
                        let via = index % 2 == 0 ? client : other
                        return await Self.answer { try await via.confirmOrder(.byRequest(product, id)) }
                    }
                    try await expiring
                    try await Self.waitUntilEnded(client, product: product)
                    let states = try await Self.ends(harness, product: product)
                    for id in ids {
                        switch answers[id] {
                        case .ok?: #expect(states[id] == "paid", "round \(round): confirmed \(id) ended \(String(describing: states[id]))")
                        case .refused?: #expect(states[id] == "released", "round \(round): refused \(id) ended \(String(describing: states[id]))")
                        case let other: Issue.record("round \(round): confirm of \(id) answered \(String(describing: other))")
                        }
                    }
                    // The released units sell again, to new buyers, and never beyond the stock.
                    let released = states.values.filter { $0 == "released" }.count
                    print("hold race round \(round): \(Self.holds - released) confirms paid, \(released) holds expired first")
                    var bought = 0
                    for user in 1_000..<(1_000 + released + 3) {
                        let response = try await client.purchase(PurchaseRequest(requestId: TestIds.make()[0], userId: UInt64(user), productId: product))
                        if response.outcome == .purchased { bought += 1 }
                    }
                    #expect(bought == released, "round \(round): \(released) released, \(bought) resold")
                    try await Self.expectBalanced(client, product: product, stock: Int64(Self.holds))
                }
            }
        }
    }

    @Test func cancelsRacingConfirmsLetExactlyOneWin() async throws {
        try await InventoryHarness.with { harness in
            let client = harness.client(connections: 8)
            defer { Task { await client.shutdown() } }
            try await Self.createProducts(client, (0..<Self.rounds).map { "duel-\($0)" }, count: Self.holds)
            try await Self.withSecondInventory(harness) { other in
                for round in 0..<Self.rounds {
                    let product = "duel-\(round)"
                    let ids = try await Self.makeHolds(client, product: product, count: Self.holds)
                    let answers = await withTaskGroup(of: (UInt64, Bool, Answer).self) { group in
                        for (index, id) in ids.enumerated() {
                            let (payer, canceller) = index % 2 == 0 ? (client, other) : (other, client)
                            group.addTask { (id, true, await Self.answer { try await payer.confirmOrder(.byRequest(product, id)) }) }
                            group.addTask { (id, false, await Self.answer { try await canceller.cancelOrder(.byRequest(product, id)) }) }
                        }
                        return await group.reduce(into: [UInt64: (confirm: Answer?, cancel: Answer?)]()) {
                            if $1.1 { $0[$1.0, default: (nil, nil)].confirm = $1.2 } else { $0[$1.0, default: (nil, nil)].cancel = $1.2 }
                        }
                    }
                    let states = try await Self.ends(harness, product: product)
                    for id in ids {
                        let (confirm, cancel) = answers[id] ?? (nil, nil)
                        switch (confirm, cancel) {
                        case (.ok(false)?, .refused?): #expect(states[id] == "paid")
                        case (.refused?, .ok(false)?): #expect(states[id] == "released")
                        default: Issue.record("round \(round): \(id) answered confirm \(String(describing: confirm)), cancel \(String(describing: cancel))")
                        }
                    }
                    try await Self.expectBalanced(client, product: product, stock: Int64(Self.holds))
                }
            }
        }
    }

    @Test func theInventoryKilledMidExpiryLosesNoPaymentAndStrandsNoUnit() async throws {
        try await InventoryHarness.with { harness in
            for round in 0..<Self.rounds {
                let client = harness.client(connections: 8)
                let product = "crash-\(round)"
                try await Self.createProducts(client, [product], count: Self.holds * 5)
                let ids = try await Self.makeHolds(client, product: product, count: Self.holds * 5)
                // Half the buyers pay while the holds fall due, and the inventory dies in the middle of it, its
                // expiry running.
                try await Self.makeDue(harness, product: product, window: 600)
                let paying = Array(ids.enumerated().filter { $0.offset % 2 == 0 }.map(\.element))
                async let killed: Void = {
                    try? await Task.sleep(for: .milliseconds(250 + 50 * round))
                    await harness.process.kill9()
                }()
                let answers = await Self.spread(paying, window: 600) { _, id in
                    await Self.answer { try await client.confirmOrder(.byRequest(product, id), timeout: .seconds(2)) }
                }
                await killed
                await client.shutdown()
                try await harness.start()
                let restarted = harness.client(connections: 4)
                try await Self.waitUntilEnded(restarted, product: product)
                let states = try await Self.ends(harness, product: product)
                for id in paying {
                    switch answers[id] {
                    case .ok?: #expect(states[id] == "paid", "round \(round): confirmed \(id) ended \(String(describing: states[id]))")
                    case .refused?: #expect(states[id] == "released")
                    default: #expect(states[id] == "paid" || states[id] == "released", "an unanswered confirm: either end, once")
                    }
                }
                #expect(states.count == ids.count && states.values.allSatisfy { $0 == "paid" || $0 == "released" })
                let paidBeforeKill = answers.values.filter { if case .ok = $0 { true } else { false } }.count
                print("hold crash round \(round): \(paidBeforeKill) confirms answered OK, \(states.values.filter { $0 == "released" }.count) released in all")
                try await Self.expectBalanced(restarted, product: product, stock: Int64(Self.holds * 5))
                await restarted.shutdown()
            }
        }
    }
}
