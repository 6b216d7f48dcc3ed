import Cluster
import FlashSaleClient
import Foundation
import NIOCore
import NIOPosix
import Testing
import TestSupport

extension OperatingTests {
    /// What `deploy/` ships, checked by Prometheus' own tools and by a real Prometheus scraping a running sale.
    @Suite(.serialized, .timeLimit(.minutes(2)))
    struct PrometheusTests {
        static let deploy = RepoPaths.root.appendingPathComponent("deploy")

        /// `promtool check config`, `check rules` and `test rules` (every alert fires on the series that should raise it).
        @Test func shippedConfigAndRulesPassPromtool() async throws {
            let prometheus = Self.deploy.appendingPathComponent("prometheus").path
            for arguments in [
                ["check", "config", "\(prometheus)/prometheus.yml"],
                ["check", "rules", "\(prometheus)/rules/recording.yml", "\(prometheus)/rules/alerts.yml"],
                ["test", "rules", "\(prometheus)/tests/alerts-test.yml"],
            ] {
                let result = try await runCommand(PrometheusServer.promtool, arguments, timeout: .seconds(30))
                #expect(result.status == 0, "promtool \(arguments.joined(separator: " ")):\n\(result.output)")
            }
            let alerts = try String(contentsOfFile: "\(prometheus)/rules/alerts.yml", encoding: .utf8)
            for alert in ["FlashsaleEdgeInDoubt", "FlashsaleQuotaLeaderCount", "FlashsaleBatchesFailing", "FlashsaleAuditFailed",
                          "FlashsaleEdgeCutOffFromZooKeeper"] {
                #expect(alerts.contains("alert: \(alert)"), "the issue's alert \(alert)")
            }
        }

        /// A small sale scraped by a real Prometheus with the shipped config and rules (at a short interval): the
        /// recorded purchase totals equal the orders in the database, every Grafana query answers data, and every
        /// service's `/metrics` passes `promtool check metrics`.
        @Test func realPrometheusRecordsTheSale() async throws {
            try await OperatedPlatform.with(edges: 2, metrics: true) { ops in
                let products = ["p1", "p2"]
                try await ops.prepare(products: products, stock: 200, edges: 2)
                var targets: [String: [String]] = ["edge": [], "inventory": [], "quota": []]
                for edge in ops.platform.edges { targets["edge"]!.append(Self.joined(try await edge.metricsAddress())) }
                targets["inventory"]!.append(Self.joined(try await ops.platform.inventory.metricsAddress()))
                targets["quota"]!.append(Self.joined(try await ops.platform.quota.metricsAddress()))

                let prometheus = try await PrometheusServer.start(targets: targets)
                do {
                    try await prometheus.waitUntil("every target is up") {
                        let up = try await prometheus.query("up")
                        return up.count == 4 && up.allSatisfy { $0.value == 1 }
                    }
                    let swarm = BuyerSwarm(
                        configuration: .init(
                            edges: ops.platform.edges.map { ($0.host, $0.port) }, products: products, attempts: 4_000,
                            users: 1_000_000, connections: 8, depth: 4, seed: 16),
                        logger: ops.logger)
                    let result = try await swarm.run()
                    #expect(result.errors == 0, "\(result.errorsByCode)")
                    // An audit, so the audit's metrics have a value to check.
                    #expect(try await ops.inventory.audit().clean)
                    let orders = try await ops.databaseCounts().orders
                    #expect(orders == 400)

                    // The recording rules, evaluated on what Prometheus scraped after the last purchase.
                    try await prometheus.waitUntil("the recorded purchase totals to reach the orders") {
                        let inventory = try await prometheus.query("flashsale:inventory_purchases:total").first?.value
                        let edges = try await prometheus.query("flashsale:edge_purchases:total").first?.value
                        return inventory == Double(orders) && edges == Double(orders)
                    }
                    #expect(try await prometheus.query("flashsale:inventory_purchases:total").first?.value == Double(orders))
                    #expect(try await prometheus.query("flashsale:edge_purchases:total").first?.value == Double(orders))
                    let left = try await prometheus.query("product:flashsale_edge_quota_left:sum")
                    #expect(Set(left.map { $0.labels["product"] ?? "" }) == Set(products) && left.allSatisfy { $0.value == 0 },
                            "sold out: no quota left: \(left)")
                    #expect(try await prometheus.query("flashsale:quota_leaders:sum").first?.value == 1)
                    #expect(try await prometheus.query("ALERTS{alertstate=\"firing\"}").isEmpty, "no alert fires on a healthy sale")

                    // The dashboard: every panel's query parses and answers data; annotation queries parse.
                    let dashboard = try Self.dashboardQueries()
                    #expect(dashboard.panels.count >= 10)
                    for expr in dashboard.panels {
                        let answer = try await prometheus.query(expr)
                        #expect(!answer.isEmpty, "dashboard query answers no data: \(expr)")
                    }
                    for expr in dashboard.annotations { _ = try await prometheus.query(expr) }
                } catch {
                    await prometheus.stop()
                    throw error
                }
                await prometheus.stop()

                // Prometheus' linter on each service's real output (after the sale: every series exists by now).
                let addresses = try await (ops.platform.edges + [ops.platform.inventory, ops.platform.quota]).asyncMap {
                    ($0.name, try await $0.metricsAddress())
                }
                for (name, address) in addresses {
                    let text = try await MetricsSample.scrape(address).text
                    let file = FileManager.default.temporaryDirectory.appendingPathComponent("metrics-\(name)-\(getpid()).txt")
                    try text.write(to: file, atomically: true, encoding: .utf8)
                    defer { try? FileManager.default.removeItem(at: file) }
                    let lint = try await runCommand("/bin/sh", ["-c", "\(PrometheusServer.promtool) check metrics < \(file.path)"])
                    #expect(lint.status == 0, "promtool check metrics on \(name):\n\(lint.output)")
                    #expect(text.contains("# HELP "), "\(name) has help texts")
                }
            }
        }

        static func joined(_ address: (host: String, port: Int)) -> String { "\(address.host):\(address.port)" }

        /// Every `expr` of the Grafana dashboard: the panels' queries and the annotations'.
        static func dashboardQueries() throws -> (panels: [String], annotations: [String]) {
            let data = try Data(contentsOf: deploy.appendingPathComponent("grafana/flashsale.json"))
            let root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            let panels = (root["panels"] as? [[String: Any]] ?? []).flatMap { panel in
                (panel["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String }
            }
            let annotations = ((root["annotations"] as? [String: Any])?["list"] as? [[String: Any]] ?? [])
                .compactMap { $0["expr"] as? String }
            return (panels, annotations)
        }
    }
}

/// A real Prometheus (Debian's `prometheus`) for one test: the shipped config and rules from `deploy/prometheus`,
/// with a 200 ms scrape and evaluation interval, the test's targets, its data in a run folder of its own, on a free
/// port.
struct PrometheusServer: Sendable {
    static let promtool = "/usr/bin/promtool"
    static let binary = "/usr/bin/prometheus"

    let process: ManagedProcess
    let folder: RunFolder
    let port: Int

    /// `targets`: per job (edge, inventory, quota), the `host:port` of each metrics port.
    static func start(targets: [String: [String]]) async throws -> PrometheusServer {
        let folder = RunFolder.mine("prometheus-\(UInt32.random(in: 0...UInt32.max))")
        let files = FileManager.default
        try files.createDirectory(at: folder.url.appendingPathComponent("targets"), withIntermediateDirectories: true)
        let shipped = RepoPaths.root.appendingPathComponent("deploy/prometheus")
        try files.copyItem(at: shipped.appendingPathComponent("rules"), to: folder.url.appendingPathComponent("rules"))
        var config = try String(contentsOf: shipped.appendingPathComponent("prometheus.yml"), encoding: .utf8)
        for interval in ["scrape_interval", "evaluation_interval"] {
            config = config.replacingOccurrences(of: "\(interval): 5s", with: "\(interval): 200ms")
        }
        #expect(config.components(separatedBy: ": 200ms").count == 3, "the shipped config sets both intervals to 5s")
        try config.write(toFile: folder.path("prometheus.yml"), atomically: true, encoding: .utf8)
        for (job, addresses) in targets {
            let list = addresses.map { "'\($0)'" }.joined(separator: ", ")
            try "- targets: [\(list)]\n".write(toFile: folder.path("targets/\(job).yml"), atomically: true, encoding: .utf8)
        }
        let port = LocalPorts.free()
        let process = try ManagedProcess.start(
            URL(fileURLWithPath: binary),
            arguments: [
                "--config.file=\(folder.path("prometheus.yml"))", "--storage.tsdb.path=\(folder.path("data"))",
                "--web.listen-address=127.0.0.1:\(port)", "--log.level=warn",
            ],
            name: "prometheus")
        let server = PrometheusServer(process: process, folder: folder, port: port)
        do {
            try await server.waitUntil("Prometheus to be ready", timeout: .seconds(20)) {
                guard process.isRunning else { throw ClusterError.commandFailed("prometheus exited:\n\(process.tail())") }
                return (try? await HTTP.get(("127.0.0.1", port), "/-/ready"))?.status == 200
            }
        } catch {
            await server.stop()
            throw error
        }
        return server
    }

    func stop() async {
        _ = await process.terminate()
        folder.remove()
    }

    /// One series of an instant query's answer.
    struct Series: Sendable, CustomStringConvertible {
        var labels: [String: String]
        var value: Double
        var description: String { "\(labels) \(value)" }
    }

    /// An instant query through the HTTP API (`/api/v1/query`); a query Prometheus refuses throws with its error.
    func query(_ expr: String) async throws -> [Series] {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        let encoded = expr.addingPercentEncoding(withAllowedCharacters: allowed)!
        let answer = try await HTTP.get(("127.0.0.1", port), "/api/v1/query?query=\(encoded)")
        let json = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any]
        guard answer.status == 200, json?["status"] as? String == "success",
              let data = json?["data"] as? [String: Any] else {
            throw ClusterError.commandFailed("query \(expr) answered \(answer.status): \(answer.body.prefix(300))")
        }
        switch data["resultType"] as? String {
        case "vector":
            return (data["result"] as? [[String: Any]] ?? []).map { item in
                let pair = item["value"] as? [Any] ?? []
                return Series(
                    labels: item["metric"] as? [String: String] ?? [:],
                    value: (pair.count == 2 ? pair[1] as? String : nil).flatMap(Double.init) ?? .nan)
            }
        case "scalar":
            let pair = data["result"] as? [Any] ?? []
            return [Series(labels: [:], value: (pair.count == 2 ? pair[1] as? String : nil).flatMap(Double.init) ?? .nan)]
        default:
            throw ClusterError.commandFailed("query \(expr): unexpected answer \(answer.body.prefix(300))")
        }
    }

    func waitUntil(
        _ what: String, timeout: Duration = .seconds(15), _ condition: @Sendable () async throws -> Bool
    ) async throws {
        try await Cluster.waitUntil(timeout: timeout, what: what, condition)
    }
}

/// A plain HTTP/1.0 GET (the server closes when done): Prometheus' API and the services' metrics ports.
enum HTTP {
    static func get(_ address: (host: String, port: Int), _ path: String) async throws -> (status: Int, body: String) {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(2))
            .connect(host: address.host, port: address.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        let response = try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: "GET \(path) HTTP/1.0\r\nHost: \(address.host)\r\n\r\n"))
            var all = ByteBuffer()
            for try await var chunk in inbound { all.writeBuffer(&chunk) }
            return String(buffer: all)
        }
        let statusLine = response.prefix { $0 != "\r" }.split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]), let split = response.range(of: "\r\n\r\n") else {
            throw ClusterError.commandFailed("GET \(path) from \(address.host):\(address.port) answered: \(response.prefix(200))")
        }
        return (status, String(response[split.upperBound...]))
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}
