import Cluster
import FlashSaleClient
import Foundation
import Logging
import NIOCore
import PostgresClient
import Proto
import QuotaContract
import Synchronization
import Wire
import ZooKeeperClient

/// A product of a case's sale.
struct SaleProduct: Sendable {
    var id: String
    var hot = false
}

/// What a hostile case found beyond the common checks: the answers it expected and did not get, and orders its
/// own requests made that the promises forbid (counted with the swarm's in the row).
struct HostileFindings: Sendable {
    /// Expectations not met, one line each: the case fails if any.
    var failures: [String] = []
    /// What was sent and answered, for the report.
    var notes: [String] = []
    /// PURCHASED answers to the case's own requests whose order the database does not hold for that buyer.
    var lost = 0
    /// Request ids of the case's own requests holding two orders.
    var duplicated = 0

    mutating func merge(_ other: HostileFindings) {
        failures += other.failures
        notes += other.notes
        lost += other.lost
        duplicated += other.duplicated
    }

    mutating func expect(_ condition: Bool, _ failure: @autoclosure () -> String) {
        if !condition { failures.append(failure()) }
    }
}

/// The hostile load of one case once injected: what it saw, what to check once the sale has settled (lookups of
/// the case's own request ids), and what to undo at the very end.
struct HostileInjection: Sendable {
    var findings = HostileFindings()
    var afterSale: @Sendable () async -> HostileFindings = { HostileFindings() }
    var cleanup: @Sendable () async -> Void = {}
}

/// Everything a hostile load may touch.
struct CaseContext: Sendable {
    let platform: Platform
    let servers: FaultServers
    let databases: RunDatabases
    let root: String
    let secrets: FaultSecrets
    let products: [SaleProduct]
    let live: LiveEdges
    let inventory: InventoryClient
    let quota: QuotaClient
    let swarmRequestIDBase: UInt64
    /// The partition case's proxies, between edge 3 and ZooKeeper and between the quota service and edge 3.
    let proxies: (zooKeeper: BlackholeProxy, edge: BlackholeProxy)?
    let logger: Logger
    let say: @Sendable (String) -> Void
}

/// Request and user ids of a case's own requests, apart from the swarm's (its users are 1 ... stock × 200).
final class HostileIDs: Sendable {
    private let base = UInt64.random(in: 1...0x7FFF_FFFF) << 32
    private let counter = Atomic<UInt64>(0)

    func next() -> (request: UInt64, user: UInt64) {
        let n = counter.add(1, ordering: .relaxed).newValue
        return (base | n, (1 << 40) + n)
    }
}

/// One request of a case's own: who asked for what.
struct OwnRequest: Sendable {
    var requestID: UInt64
    var userID: UInt64
    var product: String
}

/// The hostile loads, each injected mid-sale by `FaultCase`.
struct HostileCases {
    let context: CaseContext
    let ids = HostileIDs()

    init(context: CaseContext) { self.context = context }

    var logger: Logger { context.logger }

    func edgeClients() -> [EdgeClient] {
        context.live.all.map { FaultPlatform.purchaseClient($0, secrets: context.secrets, logger: logger) }
    }

    private func operatorClients() -> [EdgeClient] {
        context.live.all.map { FaultPlatform.operatorClient($0, secrets: context.secrets, logger: logger) }
    }

    func shutdown(_ clients: [EdgeClient]) async {
        for client in clients { await client.shutdown() }
    }

    /// The first outcome of each request as the database tells it now (a definitive lookup), nil when it
    /// could not be asked.
    static func lookUp(_ requests: [OwnRequest], inventory: InventoryClient) async -> [PurchaseResponse?] {
        var answers: [PurchaseResponse?] = []
        for start in stride(from: 0, to: requests.count, by: 32) {
            let chunk = Array(requests[start..<min(start + 32, requests.count)])
            let part = await withTaskGroup(of: (Int, PurchaseResponse?).self) { group in
                for (index, request) in chunk.enumerated() {
                    group.addTask {
                        // A lookup is a read: asked again while its answer may be unknown, for about 5 s.
                        (index, try? await retryingUnavailable(patience: .seconds(5), pause: .milliseconds(250), idempotent: true) {
                            try await inventory.purchase(PurchaseRequest(
                                requestId: request.requestID, userId: request.userID, productId: request.product,
                                lookupOnly: true), timeout: .seconds(5))
                        })
                    }
                }
                var part = [PurchaseResponse?](repeating: nil, count: chunk.count)
                for await (index, answer) in group { part[index] = answer }
                return part
            }
            answers += part
        }
        return answers
    }

    /// After the sale: none of `requests` may hold an order.
    private static func expectNoOrders(
        _ requests: [OwnRequest], _ what: String, inventory: InventoryClient
    ) async -> HostileFindings {
        var findings = HostileFindings()
        let answers = await lookUp(requests, inventory: inventory)
        let bought = answers.filter { $0?.outcome == .purchased }.count
        let unknown = answers.filter { $0 == nil }.count
        findings.expect(bought == 0, "\(bought) of \(requests.count) \(what) hold an order")
        if unknown > 0 { findings.notes.append("\(unknown) of \(requests.count) \(what) could not be looked up") }
        return findings
    }

    static func describe(_ result: Result<PurchaseResponse, any Error>) -> String {
        switch result {
        case .success(let response): return "\(response.outcome)"
        case .failure(let error as RPCError): return "\(error.code)"
        case .failure(let error): return "\(error)"
        }
    }

    static func seconds(_ duration: Duration) -> String {
        String(format: "%.2f s", Double(duration / .milliseconds(1)) / 1000)
    }

    static func tally(_ answers: [String]) -> String {
        Dictionary(answers.map { ($0, 1) }, uniquingKeysWith: +).sorted { $0.key < $1.key }
            .map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    }

    // MARK: 1. 1 µs deadlines

    /// For 1.5 s, bursts to every edge of one request id repeated and of fresh ids, each with a 1 µs deadline (the
    /// edge sees timeout_us = 1). Nothing may be bought for them, and no unit may stay held for them: the sweep
    /// after the sale finds any unit they stranded.
    func tinyDeadlines() async -> HostileInjection {
        let clients = edgeClients()
        let product = context.products[0].id
        let repeated = ids.next()
        var fresh: [OwnRequest] = []
        var sent = 0
        let until = ContinuousClock.now + .milliseconds(1500)
        while ContinuousClock.now < until {
            var calls: [EventLoopFuture<PurchaseResponse>] = []
            for client in clients {
                for _ in 0..<20 {
                    calls.append(client.purchaseFuture(
                        requestID: repeated.request, userID: repeated.user, product: product, timeout: .microseconds(1)))
                }
                for _ in 0..<8 {
                    let id = ids.next()
                    fresh.append(OwnRequest(requestID: id.request, userID: id.user, product: product))
                    calls.append(client.purchaseFuture(
                        requestID: id.request, userID: id.user, product: product, timeout: .microseconds(1)))
                }
            }
            sent += calls.count
            for call in calls { _ = try? await call.get() }
            try? await Task.sleep(for: .milliseconds(100))
        }
        await shutdown(clients)
        var injection = HostileInjection()
        injection.findings.notes.append(
            "sent \(sent) purchases with 1 µs deadlines: one request id repeated, \(fresh.count) fresh ids")
        let inventory = context.inventory
        let all = [OwnRequest(requestID: repeated.request, userID: repeated.user, product: product)] + fresh
        injection.afterSale = { await Self.expectNoOrders(all, "1 µs-deadline requests", inventory: inventory) }
        return injection
    }

    // MARK: 2. request ids reused

    /// Request ids bought once, then sent again for another user of the same product, for the hot product (the
    /// other database), and for another product of the same database with a 1 µs deadline. A reuse must be refused
    /// (FAILED_PRECONDITION), never answered with another buyer's order, and never make a second order.
    func reusedIDs() async -> HostileInjection {
        let clients = edgeClients()
        let cold = context.products.filter { !$0.hot }.map(\.id)
        guard cold.count >= 2, let hot = context.products.first(where: \.hot)?.id else {
            var injection = HostileInjection()
            injection.findings.failures.append("the reuse case needs two cold products and a hot one")
            return injection
        }
        var firsts: [(OwnRequest, UInt64)] = []
        var crossDatabase: [OwnRequest] = []
        var otherUser: [String] = []
        var otherDatabase: [String] = []
        var findings = HostileFindings()
        for k in 0..<12 {
            let client = clients[k % clients.count]
            let id = ids.next()
            let first = try? await client.purchase(requestID: id.request, userID: id.user, product: cold[0], timeout: .seconds(3))
            guard let first, first.outcome == .purchased else { continue }
            firsts.append((OwnRequest(requestID: id.request, userID: id.user, product: cold[0]), first.orderId))
            // Another user, same product and database.
            let stranger = ids.next().user
            let second = await capture { try await client.purchase(requestID: id.request, userID: stranger, product: cold[0], timeout: .seconds(3)) }
            otherUser.append(Self.describe(second))
            if case .success(let answer) = second, answer.outcome == .purchased || answer.outcome == .alreadyPurchased {
                findings.lost += 1  // an acknowledged purchase with no order of that buyer behind it
            }
            // Another user, the hot product: the other database.
            let hotBuyer = ids.next().user
            let third = await capture { try await client.purchase(requestID: id.request, userID: hotBuyer, product: hot, timeout: .seconds(3)) }
            otherDatabase.append(Self.describe(third))
            crossDatabase.append(OwnRequest(requestID: id.request, userID: hotBuyer, product: hot))
            // Same buyer, another product of the same database, in doubt at once.
            _ = try? await client.purchase(requestID: id.request, userID: id.user, product: cold[1], timeout: .microseconds(1))
        }
        await shutdown(clients)
        let refused = "\(RPCError.Code.failedPrecondition)"
        findings.expect(!firsts.isEmpty, "no first purchase of a reused id was bought")
        findings.expect(otherUser.allSatisfy { $0 == refused },
                        "a reused id for another user answered: \(Self.tally(otherUser)) (expected FAILED_PRECONDITION)")
        findings.expect(otherDatabase.allSatisfy { $0 == refused },
                        "a reused id for the hot product answered: \(Self.tally(otherDatabase)) (expected FAILED_PRECONDITION)")
        findings.notes.append("\(firsts.count) ids bought, then reused for another user, the hot product and another cold product")
        var injection = HostileInjection(findings: findings)
        let inventory = context.inventory
        let bought = firsts
        let reusedForHot = crossDatabase
        injection.afterSale = {
            var after = HostileFindings()
            let kept = await Self.lookUp(bought.map(\.0), inventory: inventory)
            for (answer, first) in zip(kept, bought) where answer?.outcome != .purchased || answer?.orderId != first.1 {
                after.lost += 1
            }
            let twice = await Self.lookUp(reusedForHot, inventory: inventory)
            let inBoth = twice.filter { $0?.outcome == .purchased }.count
            after.duplicated += inBoth
            after.expect(inBoth == 0, "\(inBoth) reused ids hold an order in both databases")
            return after
        }
        return injection
    }

    // MARK: 3. retry floods at keep 0

    /// The sale paused (keep 0 on every edge), then fresh request ids sent with `retry: true` for 1.5 s, as a bot
    /// that never takes part in the lottery: nothing may be bought. Then the sale goes on.
    func retryFloodAtKeepZero() async -> HostileInjection {
        var findings = HostileFindings()
        let clients = edgeClients()
        let operators = operatorClients()
        let product = context.products[0].id
        do {
            try await context.quota.setShed(keepPerMillion: 0)
            try await waitUntil(timeout: .seconds(10), what: "every edge to apply keep 0") {
                for client in operators where (try? await client.stats().keepPerMillion) != 0 { return false }
                return true
            }
        } catch {
            findings.failures.append("keep 0 not applied: \(error)")
        }
        var flood: [OwnRequest] = []
        var answers: [String] = []
        let until = ContinuousClock.now + .milliseconds(1500)
        while ContinuousClock.now < until {
            var calls: [EventLoopFuture<PurchaseResponse>] = []
            for client in clients {
                for _ in 0..<20 {
                    let id = ids.next()
                    flood.append(OwnRequest(requestID: id.request, userID: id.user, product: product))
                    calls.append(client.purchaseFuture(
                        requestID: id.request, userID: id.user, product: product, retry: true, timeout: .seconds(2)))
                }
            }
            for call in calls { answers.append(Self.describe(await capture { try await call.get() })) }
            try? await Task.sleep(for: .milliseconds(100))
        }
        do {
            try await context.quota.setShed(keepPerMillion: 1_000_000)
            try await waitUntil(timeout: .seconds(10), what: "every edge to apply keep 1,000,000") {
                for client in operators where (try? await client.stats().keepPerMillion) != 1_000_000 { return false }
                return true
            }
        } catch {
            findings.failures.append("keep 1,000,000 not restored: \(error)")
        }
        await shutdown(clients + operators)
        let bought = answers.filter { $0 == "\(PurchaseOutcome.purchased)" }.count
        findings.expect(bought == 0, "\(bought) of \(answers.count) retry: true attempts PURCHASED at keep 0")
        findings.notes.append("keep 0: \(answers.count) fresh retry: true attempts answered \(Self.tally(answers))")
        var injection = HostileInjection(findings: findings)
        let inventory = context.inventory
        let flooded = flood
        injection.afterSale = { await Self.expectNoOrders(flooded, "retry: true attempts sent at keep 0", inventory: inventory) }
        return injection
    }

    // MARK: 4. purchases without a token

    /// Purchases sent straight to the inventory, past the edges: without a token and with the operator token (not
    /// a service's), some naming an edge id, plus lookups probing the swarm's request ids. All must be refused, and
    /// none may book an order.
    func directPurchases() async -> HostileInjection {
        var findings = HostileFindings()
        let product = context.products[0].id
        let anonymous = FaultPlatform.inventoryClient(context.platform, token: "", logger: logger)
        let operatorOnly = FaultPlatform.inventoryClient(context.platform, token: context.secrets.operatorToken, logger: logger)
        var sent: [OwnRequest] = []
        var answers: [String] = []
        for k in 0..<30 {
            let id = ids.next()
            sent.append(OwnRequest(requestID: id.request, userID: id.user, product: product))
            let client = k % 3 == 2 ? operatorOnly : anonymous
            let answer = await capture {
                try await client.purchase(PurchaseRequest(
                    requestId: id.request, userId: id.user, productId: product, edgeId: k % 2 == 0 ? 7 : 0))
            }
            answers.append(Self.describe(answer))
        }
        var probes: [String] = []
        for k in 0..<10 {
            let answer = await capture {
                try await anonymous.purchase(PurchaseRequest(
                    requestId: context.swarmRequestIDBase &+ UInt64(k), userId: 1, productId: product, lookupOnly: true))
            }
            probes.append(Self.describe(answer))
        }
        await anonymous.shutdown()
        await operatorOnly.shutdown()
        let outcomes = Set(PurchaseOutcome.allKnown.map { "\($0)" })
        let answered = answers.filter { outcomes.contains($0) }.count
        let probed = probes.filter { outcomes.contains($0) }.count
        findings.expect(answered == 0, "\(answered) of \(answers.count) purchases without a service token answered: \(Self.tally(answers))")
        findings.expect(probed == 0, "\(probed) of \(probes.count) lookups without a token answered: \(Self.tally(probes))")
        findings.notes.append("direct purchases: \(Self.tally(answers)); lookups: \(Self.tally(probes))")
        var injection = HostileInjection(findings: findings)
        let inventory = context.inventory
        let direct = sent
        injection.afterSale = { await Self.expectNoOrders(direct, "purchases without a service token", inventory: inventory) }
        return injection
    }

    // MARK: 5. poisoned registration

    /// As a holder of the edges' ZooKeeper secret (a compromised edge): a registration with released = Int64.min
    /// (review finding 4), then edge 3 killed and, once it is gone, a forged registration under its name (finding
    /// 14). Each must be refused by ZooKeeper or ignored by the quota service: it stays up, and the dead edge's
    /// allotment stays retired. Both nodes live until the end of the case, through the sweep.
    func poisonedRegistration() async -> HostileInjection {
        var findings = HostileFindings()
        let layout = QuotaLayout(root: context.root)
        let product = context.products[0].id
        let quotaPID = context.platform.quota.process.pid
        let access = ZooKeeperAccess(edgeSecret: context.secrets.zooKeeperEdgeSecret)
        let zooKeeper: ZooKeeperClient
        do {
            zooKeeper = try await ZooKeeperClient.connect(hosts: context.platform.configuration.zooKeeperHosts, logger: logger)
            try await access.authenticateEdge(zooKeeper)
        } catch {
            findings.failures.append("cannot reach ZooKeeper as an edge: \(error)")
            return HostileInjection(findings: findings)
        }
        let victim = context.platform.edges[2]
        let victimClient = FaultPlatform.operatorClient(victim, secrets: context.secrets, logger: logger)
        let victimID = (try? await victimClient.stats().edgeId) ?? 0
        await victimClient.shutdown()

        // Finding 4: an extreme number.
        let poison = EdgeRegistration(
            edgeId: 100_000, address: "127.0.0.1:1", usage: [ProductUsage(productId: product, released: .min)])
        do {
            try await zooKeeper.create(
                layout.edge(QuotaLayout.edgeName(id: 100_000)), data: poison.serializedBytes(), mode: .ephemeral,
                acl: access.registration)
            findings.notes.append("registration with released = Int64.min created")
        } catch {
            findings.notes.append("registration with released = Int64.min refused: \(error)")
        }

        // Finding 14: a dead edge's name taken over.
        let victimName = (try? await Self.registrationName(of: victimID, in: zooKeeper, layout: layout))
            ?? QuotaLayout.edgeName(id: victimID)
        context.live.remove(port: victim.port)
        await victim.process.kill9()
        do {
            try await waitUntil(timeout: .seconds(15), what: "edge 3's registration to expire") {
                try await zooKeeper.exists(layout.edge(victimName)) == nil
            }
            try await waitUntil(timeout: .seconds(10), what: "edge 3's allotment to be retired") {
                try await Self.isRetired(victimName, of: product, in: zooKeeper, layout: layout)
            }
        } catch {
            findings.failures.append("edge 3 killed: \(error)")
        }
        let forged = EdgeRegistration(
            edgeId: victimID, address: "127.0.0.1:1", usage: [ProductUsage(productId: product, used: 0, released: 0, granted: 0)])
        do {
            try await zooKeeper.create(
                layout.edge(victimName), data: forged.serializedBytes(), mode: .ephemeral, acl: access.registration)
            findings.notes.append("forged registration under dead \(victimName) created")
        } catch {
            findings.notes.append("forged registration under dead \(victimName) refused: \(error)")
        }
        try? await Task.sleep(for: .seconds(2))  // a few of the quota service's rounds
        let platform = context.platform
        let check: @Sendable (String) async -> HostileFindings = { when in
            var found = HostileFindings()
            let alive = platform.quota.process.isRunning && platform.quota.process.pid == quotaPID
            found.expect(alive, "the quota service exited \(when) (status \(platform.quota.process.exitStatus ?? -1))")
            let revived = (try? await Self.isRetired(victimName, of: product, in: zooKeeper, layout: layout)) == false
            found.expect(!revived, "dead \(victimName)'s allotment not retired, or revived by the forged registration, \(when)")
            return found
        }
        findings.merge(await check("mid-sale"))
        var injection = HostileInjection(findings: findings)
        injection.afterSale = { await check("after the sale") }
        injection.cleanup = { await zooKeeper.close() }
        return injection
    }

    /// The name under edges/ of the registration that carries `edgeID` (found by content, not by a naming rule).
    private static func registrationName(
        of edgeID: UInt32, in zooKeeper: ZooKeeperClient, layout: QuotaLayout
    ) async throws -> String? {
        for name in try await zooKeeper.children(layout.edges) {
            guard let node = try? await zooKeeper.get(layout.edge(name)),
                  let registration = try? EdgeRegistration(decoding: node.data)
            else { continue }
            if registration.edgeId == edgeID { return name }
        }
        return nil
    }

    /// Retired in the product's record, or dropped from it (the quota service may prune retired allotments).
    private static func isRetired(
        _ edge: String, of product: String, in zooKeeper: ZooKeeperClient, layout: QuotaLayout
    ) async throws -> Bool {
        try await allotment(edge, of: product, in: zooKeeper, layout: layout)?.retired ?? true
    }

    private static func allotment(
        _ edge: String, of product: String, in zooKeeper: ZooKeeperClient, layout: QuotaLayout
    ) async throws -> EdgeAllotment? {
        let (data, _) = try await zooKeeper.get(layout.product(product))
        return try ProductQuotaState(decoding: data).allotments.first { $0.edge == edge }
    }

    // MARK: 6. hot database unreachable

    /// The hot database away while the cold product sells (`clusterAway`: refused for about 5 s, the inventory
    /// restarted meanwhile without it, cold purchases and cold admin calls answered within 1 s, and once the hot
    /// database is back its product sells out exactly).
    func hotDatabaseDown() async -> HostileInjection {
        guard let cold = context.products.first(where: { !$0.hot })?.id, let hot = context.products.first(where: \.hot)?.id
        else {
            var findings = HostileFindings()
            findings.failures.append("the hot-database case needs a cold and a hot product")
            return HostileInjection(findings: findings)
        }
        return await clusterAway(
            ClusterOutage(database: context.databases.hot.name, name: "the hot database", away: hot, probed: [cold]))
    }

    // MARK: 7. a new edge on a dead edge's port

    /// Edge 3 is killed and a new edge started on its port at once. The new edge must be neither drained by the
    /// probes meant for the dead one nor credited to it: the dead edge is retired once its session ends, and the
    /// new edge's `released` does not keep growing.
    func edgeOnDeadPort() async -> HostileInjection {
        var findings = HostileFindings()
        let layout = QuotaLayout(root: context.root)
        let product = context.products[0].id
        let victim = context.platform.edges[2]
        let victimClient = FaultPlatform.operatorClient(victim, secrets: context.secrets, logger: logger)
        let victimID = (try? await victimClient.stats().edgeId) ?? 0
        await victimClient.shutdown()
        let zooKeeper = try? await ZooKeeperClient.connect(hosts: context.platform.configuration.zooKeeperHosts, logger: logger)
        var found: String?
        if let zooKeeper { found = try? await Self.registrationName(of: victimID, in: zooKeeper, layout: layout) }
        let victimName = found ?? QuotaLayout.edgeName(id: victimID)
        context.live.remove(port: victim.port)
        let killed = ContinuousClock.now
        await victim.process.kill9()
        let successor: ServiceEndpoint
        do {
            successor = try await FaultPlatform.addEdge(to: context.platform, port: victim.port)
            context.live.add(successor)
        } catch {
            findings.failures.append("no edge could start on the dead edge's port \(victim.port): \(error)")
            await zooKeeper?.close()
            return HostileInjection(findings: findings)
        }
        let client = FaultPlatform.operatorClient(successor, secrets: context.secrets, logger: logger)
        var retired = false
        if let zooKeeper {
            retired = (try? await waitUntil(timeout: .seconds(12), what: "the dead edge to be retired") {
                try await Self.isRetired(victimName, of: product, in: zooKeeper, layout: layout)
            }) != nil
            await zooKeeper.close()
        }
        findings.expect(retired, "dead \(victimName) not retired \(Int((ContinuousClock.now - killed) / .seconds(1))) s after its kill: its port answers for it")
        // Releases of the new edge over the next 3 s: one drain per settle round is the finding.
        var released: [Int64] = []
        for _ in 0..<6 {
            if let usage = try? await client.rpc.call(
                EdgeRPC.QuotaUsage.self, QuotaStatusRequest(productId: product)) {
                released.append(usage.usage.first { $0.productId == product }?.released ?? 0)
            }
            try? await Task.sleep(for: .milliseconds(500))
        }
        await client.shutdown()
        let increases = zip(released, released.dropFirst()).filter { $0.1 > $0.0 }.count
        findings.expect(increases < 3, "the new edge on port \(victim.port) handed units back \(increases) times in 3 s: \(released)")
        findings.notes.append("new edge on port \(victim.port): released \(released)")
        return HostileInjection(findings: findings)
    }

    // MARK: 8. an edge cut off from ZooKeeper

    /// Edge 3's ZooKeeper connection and the quota service's calls to it go through proxies; both are blackholed
    /// until ZooKeeper has ended edge 3's session and 3 s more, while buyers still reach it (the crowd buys at edges
    /// 1 and 2; this case's buyers at edge 3, so it still holds units). Once its registration is gone it must not
    /// sell: its units may already be granted again. (It should have stopped a margin before.)
    func cutOffFromZooKeeper() async -> HostileInjection {
        var findings = HostileFindings()
        guard let proxies = context.proxies else {
            findings.failures.append("the partition case needs its proxies")
            return HostileInjection(findings: findings)
        }
        let product = context.products[0].id
        let edge = context.platform.edges[2]
        let layout = QuotaLayout(root: context.root)
        let client = FaultPlatform.purchaseClient(edge, secrets: context.secrets, logger: logger)
        let stats = FaultPlatform.operatorClient(edge, secrets: context.secrets, logger: logger)
        let edgeID = (try? await stats.stats().edgeId) ?? 0
        await stats.shutdown()
        let zooKeeper: ZooKeeperClient
        let registration: String
        do {
            zooKeeper = try await ZooKeeperClient.connect(hosts: context.platform.configuration.zooKeeperHosts, logger: logger)
            guard let name = try await Self.registrationName(of: edgeID, in: zooKeeper, layout: layout) else {
                await zooKeeper.close()
                throw ClusterError.commandFailed("edge 3 (id \(edgeID)) has no registration")
            }
            registration = name
        } catch {
            await client.shutdown()
            findings.failures.append("cannot watch edge 3's registration: \(error)")
            return HostileInjection(findings: findings)
        }
        proxies.zooKeeper.blackhole()
        proxies.edge.blackhole()
        let cut = ContinuousClock.now
        // Once ZooKeeper has ended edge 3's session (its registration gone: the quota service may now give its
        // units to others), edge 3 must not sell; before that, it may.
        var expired: ContinuousClock.Instant?
        var late: [String] = []
        var lateRequests: [OwnRequest] = []
        var early: [String] = []
        while ContinuousClock.now - cut < .seconds(15) {
            if expired == nil, (try? await zooKeeper.exists(layout.edge(registration))) == .some(nil) {
                expired = ContinuousClock.now
            }
            if let expired, ContinuousClock.now - expired > .seconds(3) { break }
            let id = ids.next()
            let answer = Self.describe(await capture {
                try await client.purchase(requestID: id.request, userID: id.user, product: product, timeout: .seconds(1))
            })
            if expired != nil {
                lateRequests.append(OwnRequest(requestID: id.request, userID: id.user, product: product))
                late.append(answer)
            } else {
                early.append(answer)
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        proxies.zooKeeper.restore()
        proxies.edge.restore()
        await zooKeeper.close()
        await client.shutdown()
        findings.expect(expired != nil, "edge 3's session did not end within 15 s of being cut off")
        let session = expired.map { Self.seconds($0 - cut) } ?? "never"
        let bought = late.filter { $0 == "\(PurchaseOutcome.purchased)" }.count
        findings.expect(bought == 0, "edge 3 sold \(bought) of \(late.count) purchases after its session ended while cut off")
        findings.notes.append(
            "cut off; session ended after \(session); purchases at edge 3 before: \(Self.tally(early)); after: \(Self.tally(late))")
        var injection = HostileInjection(findings: findings)
        let inventory = context.inventory
        let asked = lateRequests
        let answered = late
        injection.afterSale = {
            // Bought or not, each answer must be the truth: a PURCHASED answer holds its order.
            var after = HostileFindings()
            let answers = await Self.lookUp(asked, inventory: inventory)
            for (answer, reply) in zip(answers, answered) where reply == "\(PurchaseOutcome.purchased)" && answer?.outcome != .purchased {
                after.lost += 1
            }
            return after
        }
        injection.cleanup = {
            await proxies.zooKeeper.stop()
            await proxies.edge.stop()
        }
        return injection
    }
}

extension PurchaseOutcome {
    /// The outcomes a purchase can be answered with (an answer, as opposed to an error).
    static let allKnown: [PurchaseOutcome] = [.purchased, .soldOut, .shed, .alreadyPurchased]
}

/// The answer of a call, or its error, as a value.
func capture<T: Sendable>(_ body: () async throws -> T) async -> Result<T, any Error> {
    do {
        return .success(try await body())
    } catch {
        return .failure(error)
    }
}
