import FlashSaleClient
import Foundation
import NIOCore
import PostgresClient
import Proto
import Synchronization
import TestSupport
import Testing
import Wire

/// Hot-item isolation (review finding 3 (a)(b)(c) and 17) against the real InventoryService and PostgreSQL: with the
/// hot database refusing connections or blackholed, the inventory starts, cold purchases and admin calls go on, hot
/// purchases fail by their deadline, and once the hot database is back its products sell out exactly, with no order
/// whose buyer was not told PURCHASED.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct HotIsolationTests {
    /// Short bounds, so that each outage plays out in seconds.
    static let arguments = ["--connect-timeout", "2", "--statement-timeout-ms", "1000", "--hot-consumers", "2", "--max-batch", "100"]

    // MARK: - (a) Start-up

    @Test func inventoryStartsAndSellsColdWhileTheHotDatabaseRefusesConnections() async throws {
        try await InventoryHarness.with(Self.arguments) { harness in
            let setup = harness.client(connections: 1)
            _ = try await setup.createProduct(CreateProductRequest(productId: "cold", totalStock: 1000))
            _ = try await setup.createProduct(CreateProductRequest(productId: "hot", totalStock: 60, hot: true))
            await setup.shutdown()
            await harness.process.terminate()
            try await Self.refuseHotConnections(harness, true)

            // Before the fix the inventory exited here: its hot migration could not connect.
            try await harness.start()
            let client = harness.client(connections: 2)
            defer { Task { await client.shutdown() } }
            let cold = try await client.purchase(Self.request("cold"), timeout: .seconds(5))
            #expect(cold.outcome == .purchased)
            #expect(try await client.getStock(productId: "cold", timeout: .seconds(2)).sold == 1)
            let started = ContinuousClock.now
            let hot = await Self.attempt { try await client.purchase(Self.request("hot"), timeout: .seconds(5)) }
            #expect(hot.code == .unavailable, "hot purchases are refused while the hot database is unreachable")
            #expect(ContinuousClock.now - started < .seconds(1), "refused at once, not at the deadline")
            #expect(await Self.attempt { try await client.getStock(productId: "hot", timeout: .seconds(5)) }.code == .unavailable)

            // Back: the inventory brings the hot database up in the background, and the hot product sells out exactly.
            try await Self.refuseHotConnections(harness, false)
            let buyers = HotBuyers(client: client, product: "hot", workers: 8, timeout: .seconds(4))
            await buyers.runUntilSoldOut(within: .seconds(30))
            try await Self.expectSoldOutExactly(harness, client: client, stock: 60, buyers: buyers)
        }
    }

    // MARK: - (b) Runtime loss, one connection for hot and cold

    @Test func hotDatabaseLostAtRuntimeLeavesColdPurchasesOnTheSameConnectionAndSellsOutExactlyWhenBack() async throws {
        try await InventoryHarness.with(Self.arguments) { harness in
            // One connection carries the hot load, the burst and the cold purchases, as an edge's would.
            let client = harness.client(connections: 1)
            defer { Task { await client.shutdown() } }
            _ = try await client.createProduct(CreateProductRequest(productId: "cold", totalStock: 1_000_000))
            _ = try await client.createProduct(CreateProductRequest(productId: "hot", totalStock: 300, hot: true))

            let buyers = HotBuyers(client: client, product: "hot", workers: 8, timeout: .seconds(4))
            let load = Task { await buyers.runUntilSoldOut(within: .seconds(60)) }
            let cold = ColdProbe(client: client)
            let probing = Task { await cold.run { try await client.purchase(Self.request("cold"), timeout: .seconds(2)) } }
            try await waitUntil(timeout: .seconds(20), what: "hot purchases") { buyers.purchasedCount >= 30 }

            try await Self.refuseHotConnections(harness, true)
            // Review reproduction (b): 1100 hot purchases, then one cold purchase, on the one connection. Before the
            // fix the hot ones were never answered, the server stopped reading the connection at 1024 calls in
            // flight, and the cold purchase timed out.
            let burstStarted = ContinuousClock.now
            let burst = await Self.hotBurst(client, count: 1100, timeout: .seconds(3))
            print("hot burst answered in \(ContinuousClock.now - burstStarted): \(Self.histogram(burst))")
            let coldAfterBurst = await Self.attempt { try await client.purchase(Self.request("cold"), timeout: .seconds(2)) }
            #expect(coldAfterBurst.value?.outcome == .purchased, "the cold purchase after the burst: \(String(describing: coldAfterBurst.code))")
            #expect(burst.allSatisfy { $0 == .unavailable || $0 == .deadlineExceeded })
            try await Task.sleep(for: .seconds(5))  // an outage longer than the hot buyers' deadline

            try await Self.refuseHotConnections(harness, false)
            await load.value
            cold.stop()
            await probing.value
            // Before the fix every cold purchase after the 1,100-call burst timed out. A rare one may still miss its 2 s
            // on the client's side, queued behind the burst's own timers on this one connection on 2 busy cores.
            #expect(cold.failures * 50 <= cold.successes, "cold purchases went on through the outage: \(cold.failures) failed")
            #expect(cold.successes > 10)
            try await Self.expectSoldOutExactly(harness, client: client, stock: 300, buyers: buyers)
        }
    }

    // MARK: - (c) Blackholed hot database

    @Test func blackholedHotDatabaseLeavesColdCallsAnsweringAndFailsHotPurchasesByTheirDeadline() async throws {
        let proxyBox = ProxyBox()
        defer { Task { await proxyBox.proxy?.stop() } }
        try await InventoryHarness.with(Self.arguments) { database in
            // The hot database behind a proxy the test can blackhole.
            let hot = database.hotCompanion
            try await hot.create()
            let port = try #require(PostgresDSN.value(of: "port", in: database.adminDSN).flatMap { Int($0) })
            let proxy = try await BlackholeProxy.start(port: port, mode: .requests)
            proxyBox.proxy = proxy
            // Served as the restricted role and migrated as the owner, both through the proxy.
            let hotOwner = PostgresDSN.with(port: proxy.port, hot.dsn)
            return [
                "--hot-dsn", PostgresDSN.with(user: Platform.defaultServingRole, hotOwner), "--hot-migrate-dsn", hotOwner,
            ]
        } _: { harness in
            let proxy = try #require(proxyBox.proxy)
            let client = harness.client(connections: 4)
            let admin = harness.client(connections: 2)
            defer { Task { await client.shutdown(); await admin.shutdown() } }
            _ = try await client.createProduct(CreateProductRequest(productId: "cold", totalStock: 1_000_000))
            _ = try await client.createProduct(CreateProductRequest(productId: "hot", totalStock: 300, hot: true))

            let buyers = HotBuyers(client: client, product: "hot", workers: 8, timeout: .seconds(4))
            let load = Task { await buyers.runUntilSoldOut(within: .seconds(60)) }
            // The quota service's rounds on the hot product: more concurrent calls than the old shared 32 threads.
            let quotaRounds = ColdProbe(client: admin)
            let rounds = Task {
                await withTaskGroup(of: Void.self) { group in
                    for index in 0..<40 {
                        group.addTask {
                            await quotaRounds.run {
                                if index.isMultiple(of: 2) {
                                    _ = try await admin.getStock(productId: "hot", timeout: .seconds(1))
                                } else {
                                    _ = try await admin.soldCounts(productId: "hot", timeout: .seconds(1))
                                }
                            }
                        }
                    }
                }
            }
            let coldStock = ColdProbe(client: admin)
            let probing = Task { await coldStock.run { _ = try await admin.getStock(productId: "cold", timeout: .milliseconds(1500)) } }
            try await waitUntil(timeout: .seconds(20), what: "hot purchases") { buyers.purchasedCount >= 30 }

            proxy.blackhole()
            try await Task.sleep(for: .seconds(1))
            // Queued hot purchases are answered at their deadline even while every hot consumer is stuck: the
            // connection they share with a cold purchase keeps being read.
            let one = harness.client(connections: 1)
            defer { Task { await one.shutdown() } }
            let burstStarted = ContinuousClock.now
            let burst = await Self.hotBurst(one, count: 1100, timeout: .milliseconds(1500))
            print("hot burst answered in \(ContinuousClock.now - burstStarted): \(Self.histogram(burst))")
            #expect(burst.allSatisfy { $0 == .unavailable || $0 == .deadlineExceeded })
            let cold = await Self.attempt { try await one.purchase(Self.request("cold"), timeout: .seconds(3)) }
            #expect(cold.value?.outcome == .purchased, "the cold purchase after the burst: \(String(describing: cold.code))")
            try await Task.sleep(for: .seconds(3))

            proxy.restore()
            await load.value
            quotaRounds.stop()
            coldStock.stop()
            await rounds.value
            await probing.value
            print("cold GetStock through the blackhole: \(coldStock.successes) answered, slowest \(coldStock.slowest)")
            #expect(coldStock.failures == 0, "cold GetStock answered within 1.5 s throughout")
            #expect(coldStock.successes > 10)
            try await Self.expectSoldOutExactly(harness, client: client, stock: 300, buyers: buyers)
        }
    }

    // MARK: - Slow hot database

    @Test func slowHotDatabaseFailsHotPurchasesByTheirDeadlineAndBuysNoneAfterIt() async throws {
        try await InventoryHarness.with(Self.arguments) { harness in
            let client = harness.client(connections: 1)
            defer { Task { await client.shutdown() } }
            _ = try await client.createProduct(CreateProductRequest(productId: "cold", totalStock: 1_000_000))
            _ = try await client.createProduct(CreateProductRequest(productId: "hot", totalStock: 300, hot: true))
            let buyers = HotBuyers(client: client, product: "hot", workers: 8, timeout: .seconds(2))
            let load = Task { await buyers.runUntilSoldOut(within: .seconds(60)) }
            try await waitUntil(timeout: .seconds(20), what: "hot purchases") { buyers.purchasedCount >= 30 }

            // Every hot statement that touches the orders waits on this lock: the database answers nothing for 5 s,
            // though it is reachable. Statements end at the statement timeout (nothing committed) and queued
            // purchases at their deadline; before the fix they waited for the lock and were bought after it.
            let locker = try await PostgresConnection.connect(harness.hotDSN)
            defer { locker.close() }
            try await locker.exec("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
            let burst = await Self.hotBurst(client, count: 1100, timeout: .milliseconds(1500))
            print("hot burst answered: \(Self.histogram(burst))")
            #expect(burst.allSatisfy { $0 == .unavailable || $0 == .deadlineExceeded })
            let cold = await Self.attempt { try await client.purchase(Self.request("cold"), timeout: .seconds(3)) }
            #expect(cold.value?.outcome == .purchased, "the cold purchase after the burst: \(String(describing: cold.code))")
            let stock = await Self.attempt { try await client.getStock(productId: "cold", timeout: .seconds(1)) }
            #expect(stock.value != nil, "cold GetStock answers while the hot database is slow")
            try await Task.sleep(for: .seconds(3))
            try await locker.exec("COMMIT")

            await load.value
            try await Self.expectSoldOutExactly(harness, client: client, stock: 300, buyers: buyers)
        }
    }

    // MARK: - Helpers

    static func request(_ product: String) -> PurchaseRequest {
        let id = TestIds.make()[0]
        return PurchaseRequest(requestId: id, userId: id, productId: product, edgeId: 1)
    }

    /// The status an attempt failed with (nil when it succeeded).
    static func attempt<T: Sendable>(_ body: () async throws -> T) async -> (code: RPCError.Code?, value: T?) {
        do {
            return (nil, try await body())
        } catch {
            return (RPCError.code(of: error), nil)
        }
    }

    /// `count` hot purchases at once on `client`; their statuses.
    static func hotBurst(_ client: InventoryClient, count: Int, timeout: TimeAmount) async -> [RPCError.Code?] {
        await withTaskGroup(of: RPCError.Code?.self) { group in
            for _ in 0..<count {
                group.addTask {
                    await attempt { try await client.purchase(request("hot"), timeout: timeout) }.code
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
    }

    static func histogram(_ codes: [RPCError.Code?]) -> String {
        Dictionary(grouping: codes, by: { $0.map { "\($0)" } ?? "ok" }).mapValues(\.count).sorted { $0.key < $1.key }
            .map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    }

    /// Makes the hot database refuse connections (and ends its sessions), or accept them again.
    static func refuseHotConnections(_ harness: InventoryHarness, _ refuse: Bool) async throws {
        let admin = try await PostgresConnection.connect(harness.database.adminDSN)
        defer { admin.close() }
        let name = harness.database.hotCompanion.name
        try await admin.exec("ALTER DATABASE \(name) ALLOW_CONNECTIONS \(refuse ? "false" : "true")")
        if refuse {
            _ = try await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [name])
        }
    }

    /// The hot product sold exactly its stock, and every order's buyer was told PURCHASED, except a purchase in
    /// doubt: one whose batch was in flight when the database connection died (or whose answer came after the
    /// buyer's own timer), at most one per buyer, committed before its buyer's deadline, which a lookup then
    /// finds. None was bought after its buyer's deadline (finding 17: 1,679 such orders after an outage).
    static func expectSoldOutExactly(
        _ harness: InventoryHarness, client: InventoryClient, stock: Int, buyers: HotBuyers
    ) async throws {
        #expect(buyers.soldOut, "the hot product sold out once its database was back")
        let orders = try await harness.sql(
            "SELECT request_id, extract(epoch FROM created_at)::float8 FROM orders", hot: true)
        var ordered: [UInt64: Double] = [:]
        for row in 0..<orders.count {
            ordered[UInt64(orders.int64(row, 0)!)] = orders.double(row, 1)!
        }
        let purchased = buyers.purchased
        let untold = Set(ordered.keys).subtracting(purchased)
        print("hot orders \(ordered.count), PURCHASED answers \(purchased.count), in doubt \(untold.count), answers \(buyers.answerCount)")
        #expect(ordered.count == stock, "sold out exactly")
        #expect(purchased.isSubset(of: Set(ordered.keys)), "every PURCHASED answer has its order")
        let deadlines = buyers.deadlines
        let late = ordered.filter { id, created in deadlines[id].map { created > $0 + 0.5 } ?? false }
        #expect(late.isEmpty, "\(late.count) orders bought after their buyer's deadline")
        #expect(untold.count <= buyers.workers, "\(untold.count) orders whose buyer was not told PURCHASED")
        for id in untold {
            let lookup = try await retryingUnavailable(patience: .seconds(15), pause: .milliseconds(200)) {
                try await client.purchase(
                    PurchaseRequest(requestId: id, userId: id, productId: "hot", edgeId: 1, lookupOnly: true), timeout: .seconds(5))
            }
            #expect(lookup.outcome == .purchased, "the lookup of an order in doubt finds it")
        }
        // As a client does: a database just back may still be in its reconnect backoff for a moment (UNAVAILABLE).
        #expect(try await retryingUnavailable(patience: .seconds(15), pause: .milliseconds(200)) {
            try await client.audit(productId: "hot")
        }.clean)
    }
}

private final class ProxyBox: Sendable {
    private let box = Mutex<BlackholeProxy?>(nil)
    var proxy: BlackholeProxy? {
        get { box.withLock { $0 } }
        set { box.withLock { $0 = newValue } }
    }
}

/// Hot buyers with fresh request ids and users, until the product answers SOLD_OUT; remembers every answer and each
/// request's deadline (wall clock, seconds since 1970).
final class HotBuyers: Sendable {
    private let client: InventoryClient
    private let product: String
    let workers: Int
    private let timeout: TimeAmount

    private struct State {
        var purchased: Set<UInt64> = []
        var deadlines: [UInt64: Double] = [:]
        var answers = 0
        var soldOut = false
    }

    private let state = Mutex(State())

    init(client: InventoryClient, product: String, workers: Int, timeout: TimeAmount) {
        self.client = client
        self.product = product
        self.workers = workers
        self.timeout = timeout
    }

    var purchasedCount: Int { state.withLock { $0.purchased.count } }
    var purchased: Set<UInt64> { state.withLock { $0.purchased } }
    var deadlines: [UInt64: Double] { state.withLock { $0.deadlines } }
    var answerCount: Int { state.withLock { $0.answers } }
    var soldOut: Bool { state.withLock { $0.soldOut } }

    /// Buys until SOLD_OUT, or until `within` has passed.
    func runUntilSoldOut(within: Duration) async {
        let end = ContinuousClock.now + within
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<workers {
                group.addTask {
                    while !self.soldOut && ContinuousClock.now < end {
                        let id = TestIds.make()[0]
                        let deadline = Date().timeIntervalSince1970 + Double(self.timeout.nanoseconds) / 1e9
                        self.state.withLock { $0.deadlines[id] = deadline }
                        do {
                            let answer = try await self.client.purchase(
                                PurchaseRequest(requestId: id, userId: id, productId: self.product, edgeId: 1),
                                timeout: self.timeout)
                            self.state.withLock { state in
                                state.answers += 1
                                if answer.outcome == .purchased { state.purchased.insert(id) }
                                if answer.outcome == .soldOut { state.soldOut = true }
                            }
                        } catch {
                            self.state.withLock { $0.answers += 1 }
                            try? await Task.sleep(for: .milliseconds(20))
                        }
                    }
                }
            }
        }
    }
}

/// Repeats a call until stopped, counting successes and failures and the slowest success.
final class ColdProbe: Sendable {
    let client: InventoryClient

    private struct State {
        var stopped = false
        var successes = 0
        var failures = 0
        var slowest: Duration = .zero
    }

    private let state = Mutex(State())

    init(client: InventoryClient) { self.client = client }

    var successes: Int { state.withLock { $0.successes } }
    var failures: Int { state.withLock { $0.failures } }
    var slowest: Duration { state.withLock { $0.slowest } }
    func stop() { state.withLock { $0.stopped = true } }

    func run<T: Sendable>(_ call: () async throws -> T) async {
        while !state.withLock({ $0.stopped }) {
            let started = ContinuousClock.now
            do {
                _ = try await call()
                let took = ContinuousClock.now - started
                state.withLock { state in
                    state.successes += 1
                    state.slowest = max(state.slowest, took)
                }
            } catch {
                state.withLock { $0.failures += 1 }
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }
}
