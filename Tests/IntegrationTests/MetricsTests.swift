import Cluster
import FlashSaleClient
import Foundation
import Proto
import Synchronization
import Testing
import TestSupport

extension OperatingTests {
    /// Every service's Prometheus endpoint, scraped while a sale runs and after it: the counts agree with the buyers'
    /// replies and with the database.
    @Suite(.serialized, .timeLimit(.minutes(3)))
    struct MetricsTests {
        @Test func scrapedCountsAgreeWithTheDatabase() async throws {
            try await OperatedPlatform.with(edges: 2, metrics: true) { ops in
                let products = ["p1", "p2"]
                try await ops.prepare(products: products, stock: 300, edges: 2)
                let edges = ops.platform.edges
                var edgeAddresses: [(host: String, port: Int)] = []
                for edge in edges { edgeAddresses.append(try await edge.metricsAddress()) }
                let inventoryAddress = try await ops.platform.inventory.metricsAddress()
                let quotaAddress = try await ops.platform.quota.metricsAddress()

                // Scrape every edge while the sale runs: the endpoint answers under load and its counters only grow.
                let swarm = BuyerSwarm(
                    configuration: .init(
                        edges: edges.map { ($0.host, $0.port) }, products: products, attempts: 6_000, users: 1_000_000,
                        connections: 8, depth: 4, seed: 11),
                    logger: ops.logger)
                let scrapes = Mutex<[[Double]]>([])
                let scraper = Task {
                    while !Task.isCancelled {
                        var attempts: [Double] = []
                        for address in edgeAddresses {
                            if let sample = try? await MetricsSample.scrape(address) { attempts.append(sample.sum("flashsale_edge_attempts_total")) }
                        }
                        if attempts.count == edgeAddresses.count { scrapes.withLock { $0.append(attempts) } }
                        try? await Task.sleep(for: .milliseconds(50))
                    }
                }
                let result = try await swarm.run()
                scraper.cancel()
                _ = await scraper.value
                #expect(result.errors == 0, "\(result.errorsByCode)")
                #expect(result.purchased == 600)

                let during = scrapes.withLock { $0 }
                #expect(during.count >= 2, "scrapes during the sale: \(during.count)")
                for (earlier, later) in zip(during, during.dropFirst()) {
                    #expect(zip(earlier, later).allSatisfy { $0 <= $1 }, "counters only grow: \(earlier) then \(later)")
                }

                // After the sale: edges, inventory and quota service against the replies and the database.
                var edgeSamples: [MetricsSample] = []
                for address in edgeAddresses { edgeSamples.append(try await MetricsSample.scrape(address)) }
                func edgeSum(_ name: String, _ labels: String...) -> Double {
                    edgeSamples.reduce(0) { total, sample in
                        total + sample.series.filter { key, _ in
                            (key == name || key.hasPrefix(name + "{")) && labels.allSatisfy { key.contains($0) }
                        }.values.reduce(0, +)
                    }
                }
                let database = try await ops.databaseCounts()
                #expect(database.orders == 600)
                #expect(edgeSum("flashsale_edge_outcomes_total", #"outcome="purchased""#) == Double(database.orders),
                        "edges' purchased counters summed == orders")
                #expect(edgeSum("flashsale_edge_outcomes_total", #"outcome="sold_out""#) == Double(result.soldOut))
                #expect(edgeSum("flashsale_edge_outcomes_total", #"outcome="already_purchased""#) == Double(result.alreadyPurchased))
                #expect(edgeSum("flashsale_edge_attempts_total") == Double(result.attempts + result.retries))
                #expect(edgeSum("flashsale_edge_outcomes_total") == edgeSum("flashsale_edge_attempts_total"), "one outcome per attempt")
                #expect(edgeSum("flashsale_edge_outcomes_total", #"outcome="shed""#) == 0, "keep all: nothing shed")
                for product in products {
                    #expect(edgeSum("flashsale_edge_quota_used", #"product="\#(product)""#) == 300, "units used on edges of \(product)")
                    #expect(edgeSum("flashsale_edge_quota_left", #"product="\#(product)""#) == 0, "no quota left of \(product)")
                }
                #expect(edgeSum("flashsale_edge_forwarded_total") >= 600)
                #expect(edgeSum("flashsale_edge_keep_per_million") == 2_000_000)
                #expect(edgeSum("flashsale_zookeeper_connected") == 2)
                #expect(edgeSum("flashsale_rpc_connections") >= 0 && edgeSamples.allSatisfy { $0.has("flashsale_rpc_connections") })

                let inventory = try await MetricsSample.scrape(inventoryAddress)
                #expect(inventory.sum("flashsale_inventory_purchases_total", #"outcome="purchased""#) == Double(database.orders),
                        "inventory's purchased counter == orders")
                let batches = inventory.sum("flashsale_inventory_batches_total")
                #expect(batches >= 1 && batches <= 600)
                #expect(inventory.sum("flashsale_inventory_batches_total", #"result="failed""#) == 0)
                #expect(inventory.sum("flashsale_inventory_batch_size_count") == batches, "one batch size per batch")
                #expect(inventory.sum("flashsale_inventory_commit_seconds_count") == batches, "one commit latency per batch")
                #expect(inventory.sum("flashsale_inventory_batch_size_sum") >= 600, "every forwarded purchase went through a batch")
                #expect(inventory.sum("flashsale_inventory_commit_seconds_sum") > 0)
                #expect(inventory.sum("flashsale_inventory_queue_depth") == 0, "queues empty after the sale")
                #expect(inventory.has("flashsale_inventory_commit_seconds_bucket"))
                #expect(inventory.sum("flashsale_rpc_connections", #"service="inventory""#) >= 2, "the edges' connections")

                let quota = try await MetricsSample.scrape(quotaAddress)
                #expect(quota.sum("flashsale_quota_leader") == 1)
                #expect(quota.sum("flashsale_zookeeper_connected", #"service="quota""#) == 1)
                #expect(quota.sum("flashsale_zookeeper_session_state", #"state="connected""#) == 1)
                #expect(quota.has("flashsale_rpc_connections"))
            }
        }

        @Test func metricsPortAnswersOnlyMetrics() async throws {
            try await OperatedPlatform.with(edges: 1, metrics: true) { ops in
                let address = try await ops.platform.edges[0].metricsAddress()
                let sample = try await MetricsSample.scrape(address)
                #expect(sample.text.contains("# TYPE flashsale_edge_attempts_total counter"))
                let missing = try await runCommand("/usr/bin/env", ["bash", "-c", "exec 3<>/dev/tcp/\(address.host)/\(address.port); printf 'GET /nope HTTP/1.0\\r\\n\\r\\n' >&3; head -1 <&3"])
                #expect(missing.output.contains("404"), "\(missing.output)")
            }
        }
    }
}
