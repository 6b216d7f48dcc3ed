import Cluster
import FlashSaleClient
import Foundation
import PostgresClient
import Proto
import Wire

extension Fault {
    /// Shard clusters the case's inventory is given (`RunDatabases` shards: `shard-2`, `shard-3`, ...). The orphan
    /// case has one on the Patroni cluster, following its leader as main does (`--patroni-cluster`).
    var shards: Int {
        switch self {
        case .sharddown: 2
        case .pgorphan: 1
        default: 0
        }
    }

    /// Created in this order, so the least-loaded placement puts f1 on main, s2 on shard-2 and s3 on shard-3 (h1 is
    /// hot): the case checks that it did.
    static let shardDownProducts = [
        SaleProduct(id: "f1"), SaleProduct(id: "h1", hot: true), SaleProduct(id: "s2"), SaleProduct(id: "s3"),
    ]
}

/// One database cluster taken away mid-sale (the hotdown and sharddown cases).
struct ClusterOutage: Sendable {
    /// The PostgreSQL database that refuses connections, and what the findings call it.
    var database: String
    var name: String
    /// A product on it: refused while it is away.
    var away: String
    /// Products on the other clusters: bought and answered in time throughout.
    var probed: [String]
}

extension HostileCases {
    // MARK: one shard cluster down

    /// Cluster shard-2 away while main, hot and shard-3 sell (`clusterAway`), after checking that the least-loaded
    /// placement put each product where `Fault.shardDownProducts` says.
    func shardDown() async -> HostileInjection {
        var findings = HostileFindings()
        guard let down = context.databases.shards.first(where: { $0.cluster == "shard-2" })?.database.name else {
            findings.failures.append("the shard case needs clusters shard-2 and shard-3")
            return HostileInjection(findings: findings)
        }
        for (product, cluster) in [("f1", "main"), ("h1", "hot"), ("s2", "shard-2"), ("s3", "shard-3")] {
            let placed = (try? await context.inventory.getStock(productId: product, timeout: .seconds(3)))?.database
            findings.expect(placed == cluster, "\(product) was placed on \(placed ?? "?"), not \(cluster)")
        }
        var injection = await clusterAway(ClusterOutage(database: down, name: "shard-2", away: "s2", probed: ["f1", "h1", "s3"]))
        injection.findings.merge(findings)
        return injection
    }

    /// The cluster refuses connections (ALLOW_CONNECTIONS false, its backends terminated) for about 7 s while every
    /// product sells; halfway, the inventory is restarted (it must start without that cluster). Purchases of the
    /// other clusters' products, each followed by a GetStock, before and after the restart, must all be answered
    /// within 1 s, and a read of the cluster's own product refused; once the cluster is back its product sells out
    /// exactly (the common checks).
    func clusterAway(_ outage: ClusterOutage) async -> HostileInjection {
        var findings = HostileFindings()
        let admin: PostgresConnection
        do {
            admin = try await PostgresConnection.connect(context.servers.adminDSN)
            _ = try await admin.exec("ALTER DATABASE \(outage.database) ALLOW_CONNECTIONS false")
            _ = try await admin.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                [outage.database])
        } catch {
            findings.failures.append("cannot take \(outage.name) away: \(error)")
            return HostileInjection(findings: findings)
        }
        let outageStarted = ContinuousClock.now
        let clients = edgeClients()
        let inventory = context.inventory
        var probes: [(OwnRequest, Result<PurchaseResponse, any Error>, Duration)] = []
        var stockLatencies: [Duration] = []
        var warmUps: [(OwnRequest, Result<PurchaseResponse, any Error>)] = []
        var k = 0
        var retriedProbes = 0
        func probe(for span: Duration) async {
            let until = ContinuousClock.now + span
            while ContinuousClock.now < until {
                let id = ids.next()
                let product = outage.probed[k % outage.probed.count]
                let request = OwnRequest(requestID: id.request, userID: id.user, product: product)
                let client = clients[k % clients.count]
                k += 1
                var sent = ContinuousClock.now
                var answer = await capture {
                    try await client.purchase(requestID: id.request, userID: id.user, product: product, timeout: .seconds(3))
                }
                // Near sell-out an edge whose counter is dry answers UNAVAILABLE while another edge still holds the
                // last units (they come back within one release round), whichever cluster is away: a careful
                // client asks once more, with the same request id. The outage's own failure would last.
                if case .failure(let error) = answer, (error as? RPCError)?.code == .unavailable {
                    retriedProbes += 1
                    try? await Task.sleep(for: .milliseconds(300))
                    sent = ContinuousClock.now
                    answer = await capture {
                        try await client.purchase(
                            requestID: id.request, userID: id.user, product: product, retry: true, timeout: .seconds(3))
                    }
                }
                probes.append((request, answer, ContinuousClock.now - sent))
                let asked = ContinuousClock.now
                let stock = try? await inventory.getStock(productId: product, timeout: .seconds(3))
                stockLatencies.append(stock == nil ? .seconds(3) : ContinuousClock.now - asked)
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        await probe(for: .milliseconds(1500))
        // The inventory's restart is a fault of its own: nothing is probed until it is back and the edges have
        // reconnected.
        do {
            try await context.platform.crashAndRestartInventory(downtime: .milliseconds(200))
            findings.notes.append("inventory restarted without \(outage.name)")
            // An edge retries its inventory with a backoff of up to 2 s, so a fixed pause raced it (CI saw one
            // UNAVAILABLE): each edge is asked until it answers, and what those warm-up calls bought is checked
            // after the sale like every probe's.
            for client in clients {
                let until = ContinuousClock.now + .seconds(10)
                while ContinuousClock.now < until {
                    let id = ids.next()
                    let product = outage.probed[0]
                    let answer = await capture {
                        try await client.purchase(requestID: id.request, userID: id.user, product: product, timeout: .seconds(3))
                    }
                    if case .success = answer {
                        warmUps.append((OwnRequest(requestID: id.request, userID: id.user, product: product), answer))
                        break
                    }
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
            // One answer per edge shows one of its connections back, not all of them (an edge has several, each
            // reconnecting on a backoff of up to 2 s, and a call on one still down is UNAVAILABLE): past that
            // backoff, the case's own inventory client is asked until it answers too.
            try? await Task.sleep(for: .milliseconds(2500))
            let until = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < until,
                  (try? await inventory.getStock(productId: outage.probed[0], timeout: .seconds(1))) == nil {
                try? await Task.sleep(for: .milliseconds(100))
            }
            await probe(for: .milliseconds(1500))
        } catch {
            findings.failures.append("the inventory did not start without \(outage.name)")
            _ = try? await admin.exec("ALTER DATABASE \(outage.database) ALLOW_CONNECTIONS true")
            _ = try? await context.platform.crashAndRestartInventory(downtime: .milliseconds(100))
        }
        if case .success = await capture({ try await inventory.getStock(productId: outage.away, timeout: .seconds(3)) }) {
            findings.failures.append("GetStock of \(outage.away) answered while \(outage.name) was away")
        }
        let away = ContinuousClock.now - outageStarted
        _ = try? await admin.exec("ALTER DATABASE \(outage.database) ALLOW_CONNECTIONS true")
        admin.close()
        await shutdown(clients)

        let answered = probes.filter { if case .success = $0.1 { return true } else { return false } }
        let bought = answered.filter { (try? $0.1.get())?.outcome == .purchased }
        let slow = probes.filter { $0.2 > .seconds(1) }.count
        let slowStock = stockLatencies.filter { $0 > .seconds(1) }.count
        let answers = Self.tally(probes.map { Self.describe($0.1) })
        for product in outage.probed {
            findings.expect(bought.contains { $0.0.product == product }, "no purchase of \(product) bought while \(outage.name) was away")
        }
        findings.expect(answered.count == probes.count && slow == 0,
                        "purchases of \(outage.probed.joined(separator: ", ")) while \(outage.name) was away: \(answers), \(slow) over 1 s")
        findings.expect(slowStock == 0, "\(slowStock) of \(stockLatencies.count) GetStock calls over 1 s while \(outage.name) was away")
        findings.notes.append(
            "\(outage.name) away \(Self.seconds(away)): probes of \(outage.probed.joined(separator: ", ")) \(answers), slowest "
                + Self.seconds(probes.map { $0.2 }.max() ?? .zero) + (retriedProbes > 0 ? ", \(retriedProbes) asked again after UNAVAILABLE" : ""))
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
