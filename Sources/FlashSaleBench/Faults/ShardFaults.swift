import Cluster
import FlashSaleClient
import Foundation
import PostgresClient
import Proto
import Wire

extension Fault {
    /// Shard clusters the case's inventory is given (`RunDatabases` shards: `shard-2`, `shard-3`, ...).
    var shards: Int { self == .sharddown ? 2 : 0 }

    /// Created in this order, so the least-loaded placement puts f1 on main, s2 on shard-2 and s3 on shard-3 (h1 is
    /// hot): the case checks that it did.
    static let shardDownProducts = [
        SaleProduct(id: "f1"), SaleProduct(id: "h1", hot: true), SaleProduct(id: "s2"), SaleProduct(id: "s3"),
    ]
}

extension HostileCases {
    // MARK: one shard cluster down

    /// The sharddown case, as the hotdown one with a shard: cluster shard-2 refuses connections (ALLOW_CONNECTIONS
    /// false, its backends terminated) for about 5 s while all four products sell; halfway, the inventory is
    /// restarted (it must start without that shard). Purchases and GetStock calls of the products on the other
    /// clusters (main, hot, shard-3), before and after the restart, must all be answered within 1 s; once shard-2 is
    /// back its product sells out exactly (the common checks).
    func shardDown() async -> HostileInjection {
        var findings = HostileFindings()
        let expected = ["f1": "main", "h1": "hot", "s2": "shard-2", "s3": "shard-3"]
        guard let down = context.databases.shards.first(where: { $0.cluster == "shard-2" })?.database.name else {
            findings.failures.append("the shard case needs clusters shard-2 and shard-3")
            return HostileInjection(findings: findings)
        }
        for (product, cluster) in expected.sorted(by: { $0.key < $1.key }) {
            let placed = (try? await context.inventory.getStock(productId: product, timeout: .seconds(3)))?.database
            findings.expect(placed == cluster, "\(product) was placed on \(placed ?? "?"), not \(cluster)")
        }
        let others = ["f1", "h1", "s3"]
        let admin: PostgresConnection
        do {
            admin = try await PostgresConnection.connect(context.servers.adminDSN)
            _ = try await admin.exec("ALTER DATABASE \(down) ALLOW_CONNECTIONS false")
            _ = try await admin.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                [down])
        } catch {
            findings.failures.append("cannot take shard-2 away: \(error)")
            return HostileInjection(findings: findings)
        }
        let outageStarted = ContinuousClock.now
        let clients = edgeClients()
        let inventory = context.inventory
        var probes: [(OwnRequest, Result<PurchaseResponse, any Error>, Duration)] = []
        var stockLatencies: [Duration] = []
        var warmUps: [(OwnRequest, Result<PurchaseResponse, any Error>)] = []
        var k = 0
        // Purchases of the other clusters' products one after another, each followed by a GetStock, for `span`.
        func probe(for span: Duration) async {
            let until = ContinuousClock.now + span
            while ContinuousClock.now < until {
                let id = ids.next()
                let product = others[k % others.count]
                let request = OwnRequest(requestID: id.request, userID: id.user, product: product)
                let client = clients[k % clients.count]
                k += 1
                let sent = ContinuousClock.now
                let answer = await capture {
                    try await client.purchase(requestID: id.request, userID: id.user, product: product, timeout: .seconds(3))
                }
                probes.append((request, answer, ContinuousClock.now - sent))
                let asked = ContinuousClock.now
                let stock = try? await inventory.getStock(productId: product, timeout: .seconds(3))
                stockLatencies.append(stock == nil ? .seconds(3) : ContinuousClock.now - asked)
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        await probe(for: .milliseconds(1500))
        do {
            try await context.platform.crashAndRestartInventory(downtime: .milliseconds(200))
            findings.notes.append("inventory restarted without shard-2")
            // Each edge is asked until it answers (its reconnect backoff is up to 2 s), as in the hotdown case.
            for client in clients {
                let until = ContinuousClock.now + .seconds(10)
                while ContinuousClock.now < until {
                    let id = ids.next()
                    let answer = await capture {
                        try await client.purchase(requestID: id.request, userID: id.user, product: "f1", timeout: .seconds(3))
                    }
                    if case .success = answer {
                        warmUps.append((OwnRequest(requestID: id.request, userID: id.user, product: "f1"), answer))
                        break
                    }
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
            await probe(for: .milliseconds(1500))
        } catch {
            findings.failures.append("the inventory did not start without shard-2")
            _ = try? await admin.exec("ALTER DATABASE \(down) ALLOW_CONNECTIONS true")
            _ = try? await context.platform.crashAndRestartInventory(downtime: .milliseconds(100))
        }
        // While it is still away: its product is refused, not bought (UNAVAILABLE at once).
        let refused = await capture { try await inventory.getStock(productId: "s2", timeout: .seconds(3)) }
        if case .success = refused { findings.failures.append("GetStock of s2 answered while shard-2 was away") }
        let away = ContinuousClock.now - outageStarted
        _ = try? await admin.exec("ALTER DATABASE \(down) ALLOW_CONNECTIONS true")
        admin.close()
        await shutdown(clients)

        let answered = probes.filter { if case .success = $0.1 { return true } else { return false } }
        let bought = answered.filter { (try? $0.1.get())?.outcome == .purchased }
        let slow = probes.filter { $0.2 > .seconds(1) }.count
        let slowStock = stockLatencies.filter { $0 > .seconds(1) }.count
        let answers = Self.tally(probes.map { Self.describe($0.1) })
        for product in others {
            findings.expect(
                bought.contains { $0.0.product == product }, "no purchase of \(product) bought while shard-2 was away")
        }
        findings.expect(answered.count == probes.count && slow == 0,
                        "purchases on the other clusters while shard-2 was away: \(answers), \(slow) over 1 s")
        findings.expect(slowStock == 0, "\(slowStock) of \(stockLatencies.count) GetStock calls over 1 s while shard-2 was away")
        findings.notes.append(
            "shard-2 away \(Self.seconds(away)): probes of main, hot and shard-3 \(answers), slowest "
                + Self.seconds(probes.map { $0.2 }.max() ?? .zero))
        var injection = HostileInjection(findings: findings)
        let purchased = (bought.map { ($0.0, $0.1) } + warmUps).compactMap { probe, answer in
            (try? answer.get()).flatMap { $0.outcome == .purchased ? (probe, $0.orderId) : nil }
        }
        injection.afterSale = {
            var after = HostileFindings()
            let answers = await Self.lookUp(purchased.map(\.0), inventory: inventory)
            for (answer, probe) in zip(answers, purchased) where answer?.outcome != .purchased || answer?.orderId != probe.1 {
                after.lost += 1
            }
            return after
        }
        return injection
    }
}
