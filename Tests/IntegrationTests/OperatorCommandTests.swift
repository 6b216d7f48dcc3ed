import Cluster
import FlashSaleClient
import Foundation
import PostgresClient
import Proto
import Testing
import TestSupport

extension OperatingTests {
    /// The `flashsale` operator commands as an operator runs them: the real executable against a running platform,
    /// checking what it prints and how it exits.
    @Suite(.serialized, .timeLimit(.minutes(3)))
    struct OperatorCommandTests {
        @Test func productCreateListAndShow() async throws {
            try await OperatedPlatform.with(edges: 2) { ops in
                let created = try await ops.flashsale(["product", "create", "p1", "--stock", "1000"])
                #expect(created.status == 0, "\(created.output)")
                #expect(created.output.contains("created p1: 1,000 units in the main database"))
                #expect(created.output.contains("2 edges"), "split over both edges: \(created.output)")
                let hot = try await ops.flashsale(["product", "create", "h1", "--stock", "300", "--hot", "--slots", "4"])
                #expect(hot.status == 0, "\(hot.output)")
                #expect(hot.output.contains("300 units in the hot database, 4 slots"))

                let list = try await ops.flashsale(["product", "list"])
                #expect(list.status == 0)
                let lines = list.output.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true) }
                #expect(lines.contains { $0.first == "h1" && $0.dropFirst().first == "hot" && $0.contains("300") }, "\(list.output)")
                #expect(lines.contains { $0.first == "p1" && $0.dropFirst().first == "main" && $0.contains("1,000") }, "\(list.output)")

                let show = try await ops.flashsale(["product", "show", "p1"])
                #expect(show.status == 0, "\(show.output)")
                #expect(show.output.contains("remaining   1,000"))
                #expect(show.output.contains("sellable 1,000"))
                for edge in ops.platform.edges { #expect(show.output.contains(edge.address), "edge \(edge.address) in \(show.output)") }

                // Mistakes: a taken id, an unknown product, a bad id, a missing token.
                let again = try await ops.flashsale(["product", "create", "p1", "--stock", "5"])
                #expect(again.status == 1 && again.output.contains("error:") && again.output.contains("exists"), "\(again.output)")
                let unknown = try await ops.flashsale(["product", "show", "nope"])
                #expect(unknown.status == 4 && unknown.output.contains("unknown product 'nope'"), "\(unknown.output)")
                let bad = try await ops.flashsale(["product", "create", "no/slash", "--stock", "5"])
                #expect(bad.status == 64 && bad.output.contains("letters, digits"), "\(bad.output)")
                let zero = try await ops.flashsale(["product", "create", "p9", "--stock", "0"])
                #expect(zero.status == 64 && zero.output.contains("--stock must be positive"), "\(zero.output)")
                let anonymous = try await ops.flashsale(["product", "create", "p9", "--stock", "5"], token: nil)
                #expect(anonymous.status == 5 && anonymous.output.contains("FLASHSALE_OPERATOR_TOKEN"), "\(anonymous.output)")
                let wrong = try await ops.flashsale(["product", "create", "p9", "--stock", "5"], token: "not-the-token")
                #expect(wrong.status == 5 && wrong.output.contains("refused the operator token"), "\(wrong.output)")
                #expect(try await ops.inventory.listProducts().count == 2, "nothing was created by the refused calls")
            }
        }

        @Test func stockRaiseLimitAndShedSet() async throws {
            try await OperatedPlatform.with(edges: 2) { ops in
                try await ops.prepare(products: ["p1"], stock: 100, edges: 2)
                let raise = try await ops.flashsale(["stock", "raise", "p1", "--by", "50"])
                #expect(raise.status == 0, "\(raise.output)")
                #expect(raise.output.contains("raised p1 by 50: stock 150"), "\(raise.output)")
                #expect(try await ops.inventory.getStock(productId: "p1").totalStock == 150)
                try await waitUntil(timeout: .seconds(10), what: "the raise to reach the edges") {
                    try await ops.quota.status(productId: "p1").products[0].edges.reduce(0) { $0 + $1.granted } == 150
                }

                let limit = try await ops.flashsale(["stock", "limit", "p1", "--to", "120"])
                #expect(limit.status == 0, "\(limit.output)")
                #expect(limit.output.contains("limited p1 to 120 sold"), "\(limit.output)")
                let product = try await ops.inventory.getStock(productId: "p1")
                #expect(product.remaining == 120, "\(product)")

                let shed = try await ops.flashsale(["shed", "set", "--keep", "0.1"])
                #expect(shed.status == 0 && shed.output.contains("keep 100,000 per million (1 in 10)"), "\(shed.output)")
                #expect(try await ops.quota.status().keepPerMillion == 100_000)
                let perMillion = try await ops.flashsale(["shed", "set", "--keep-per-million", "250000"])
                #expect(perMillion.status == 0 && perMillion.output.contains("1 in 4"), "\(perMillion.output)")
                #expect(try await ops.quota.status().keepPerMillion == 250_000)

                let unknown = try await ops.flashsale(["stock", "raise", "nope", "--by", "5"])
                #expect(unknown.status == 4 && unknown.output.contains("unknown product 'nope'"), "\(unknown.output)")
                let negative = try await ops.flashsale(["stock", "raise", "p1", "--by", "-5"])
                #expect(negative.status == 64, "\(negative.output)")
                let both = try await ops.flashsale(["shed", "set", "--keep", "0.5", "--keep-per-million", "5"])
                #expect(both.status == 64 && both.output.contains("exactly one"), "\(both.output)")
                let tooMuch = try await ops.flashsale(["shed", "set", "--keep", "1.5"])
                #expect(tooMuch.status == 64, "\(tooMuch.output)")
                let anonymous = try await ops.flashsale(["shed", "set", "--keep", "1"], token: nil)
                #expect(anonymous.status == 5, "\(anonymous.output)")
                #expect(try await ops.quota.status().keepPerMillion == 250_000, "refused calls changed nothing")
            }
        }

        @Test func edgesQuotasAuditAndStatusDuringASale() async throws {
            try await OperatedPlatform.with(edges: 2) { ops in
                try await ops.prepare(products: ["p1", "p2"], stock: 200, edges: 2)
                let swarm = BuyerSwarm(
                    configuration: .init(
                        edges: ops.platform.edges.map { ($0.host, $0.port) }, products: ["p1", "p2"], attempts: 300,
                        users: 1_000_000, connections: 4, depth: 2, seed: 7),
                    logger: ops.logger)
                let result = try await swarm.run()
                #expect(result.purchased == 300)

                let edges = try await ops.flashsale(["edges", "list"])
                #expect(edges.status == 0, "\(edges.output)")
                for edge in ops.platform.edges { #expect(edges.output.contains(edge.address)) }
                #expect(edges.output.split(separator: "\n").filter { $0.contains(" up ") }.count == 2, "\(edges.output)")
                let fromZooKeeper = try await ops.flashsale(["edges", "list", "--zookeeper", ops.zooKeeperHosts, "--root", ops.root])
                #expect(fromZooKeeper.status == 0, "\(fromZooKeeper.output)")
                for edge in ops.platform.edges { #expect(fromZooKeeper.output.contains(edge.address)) }

                let quotas = try await ops.flashsale(["quotas", "show"])
                #expect(quotas.status == 0, "\(quotas.output)")
                #expect(quotas.output.contains("quotas of p1") && quotas.output.contains("quotas of p2"))
                #expect(quotas.output.contains("keep all"))
                let one = try await ops.flashsale(["quotas", "show", "p2"])
                #expect(one.status == 0 && !one.output.contains("quotas of p1") && one.output.contains("quotas of p2"), "\(one.output)")
                // Sold per edge in the quota table adds up to the purchases.
                let status = try await ops.quota.status()
                #expect(status.products.flatMap(\.edges).reduce(0) { $0 + $1.sold } == 300)

                let audit = try await ops.flashsale(["audit"])
                #expect(audit.status == 0 && audit.output.contains("audit clean"), "\(audit.output)")
                let auditOne = try await ops.flashsale(["audit", "p1"])
                #expect(auditOne.status == 0 && auditOne.output.contains("p1") && !auditOne.output.contains("p2"), "\(auditOne.output)")

                let screen = try await ops.flashsale(["status"])
                #expect(screen.status == 0, "\(screen.output)")
                for needle in ["inventory", "quota", "2 up, 0 down", "keep all", "p1", "p2", "quotas per edge"] {
                    #expect(screen.output.contains(needle), "status shows \(needle): \(screen.output)")
                }
                #expect(screen.output.split(separator: "\n").contains { $0.contains("p1") && $0.contains("main") && $0.contains("150") && $0.contains("50") },
                        "p1: stock 200, sold 150, remaining 50 (the swarm alternates products): \(screen.output)")

                // A database that does not add up fails the audit, with exit code 2.
                let connection = try await PostgresConnection.connect(ops.main.dsn)
                _ = try await connection.query(
                    "UPDATE stock_slot SET remaining = remaining + 1 WHERE product_id = (SELECT id FROM products WHERE name = 'p2') AND slot = (SELECT min(slot) FROM stock_slot WHERE product_id = (SELECT id FROM products WHERE name = 'p2'))")
                connection.close()
                let broken = try await ops.flashsale(["audit"])
                #expect(broken.status == 2 && broken.output.contains("audit FAILED"), "\(broken.output)")
                #expect(broken.output.split(separator: "\n").contains { $0.hasPrefix("p2") && $0.contains("FAILED") }, "\(broken.output)")
                #expect(broken.output.split(separator: "\n").contains { $0.hasPrefix("p1") && $0.contains("clean") }, "\(broken.output)")

                // An edge that dies shows as down, and the exit code says so.
                await ops.platform.edges[1].process.kill9()
                let degraded = try await ops.flashsale(["edges", "list"])
                #expect(degraded.status == 3 && degraded.output.contains("DOWN"), "\(degraded.output)")
            }
        }

        @Test func unreachableServicesFailClearly() async throws {
            let free = LocalPorts.free()
            let environment = ["FLASHSALE_OPERATOR_TOKEN": OperatedPlatform.token]
            let flashsale = try RepoPaths.executable("flashsale").path
            let address = ["--quota", "127.0.0.1:\(free)", "--inventory", "127.0.0.1:\(free)"]
            for command in [["product", "list"], ["product", "create", "p1", "--stock", "5"], ["stock", "raise", "p1", "--by", "1"],
                            ["shed", "set", "--keep", "1"], ["edges", "list"], ["quotas", "show"], ["audit"], ["status"]] {
                let result = try await runCommand(flashsale, command + address, environment: environment, timeout: .seconds(30))
                #expect(result.status == 3, "\(command): \(result.output)")
                #expect(result.output.contains("error:") && (result.output.contains("cannot reach") || result.output.contains("not answering")),
                        "\(command): \(result.output)")
            }
            let badAddress = try await runCommand(flashsale, ["product", "list", "--inventory", "nowhere"], environment: environment)
            #expect(badAddress.status == 64 && badAddress.output.contains("host:port"), "\(badAddress.output)")
            let noZooKeeper = try await runCommand(
                flashsale, ["edges", "list", "--zookeeper", "127.0.0.1:\(free)"] + address, environment: environment)
            #expect(noZooKeeper.status == 3 && noZooKeeper.output.contains("ZooKeeper"), "\(noZooKeeper.output)")
        }
    }
}
