import ArgumentParser
import FlashSaleClient
import Foundation
import Logging
import Proto
import QuotaContract
import Wire
import ZooKeeperClient

/// Where to find the live edges: ZooKeeper's `edges/` (with `--zookeeper`), else the quota service's status.
struct DiscoveryOptions: ParsableArguments {
    @Option(help: "ZooKeeper connection string (host:port[,host:port...]): list the edges registered there. Without it the edges are those the quota service knows of through the products' quotas.")
    var zookeeper: String?

    @Option(help: "The sale's root node in ZooKeeper.")
    var root = QuotaLayout.defaultRoot

    func validate() throws {
        guard root.hasPrefix("/") else { throw ValidationError("--root must start with /") }
    }
}

/// A live edge as an operator sees it: its registration (or the quota service's record) and its own counters.
struct EdgeView: Sendable {
    var id: UInt32
    var address: String
    /// edge.Stats, or why it could not be had.
    var stats: Result<EdgeStatsResponse, RPCError>

    var isUp: Bool { if case .success = stats { true } else { false } }
}

extension Operator {
    /// The live edges, each asked for its counters.
    func edges(_ discovery: DiscoveryOptions, status given: QuotaStatusResponse? = nil) async throws -> [EdgeView] {
        var known: [UInt32: String] = [:]
        if let hosts = discovery.zookeeper {
            let layout = QuotaLayout(root: discovery.root)
            let zk: ZooKeeperClient
            do {
                zk = try await ZooKeeperClient.connect(hosts: hosts, sessionTimeout: .seconds(4), connectTimeout: .seconds(3), logger: logger)
            } catch {
                throw OperatorFailure(exitCode: 3, description: "cannot reach ZooKeeper at \(hosts): \(error)")
            }
            do {
                for name in try await zk.children(layout.edges) {
                    guard let id = QuotaLayout.edgeID(name: name) else { continue }
                    let data = try? await zk.get(layout.edge(name)).data
                    known[id] = data.flatMap { try? EdgeRegistration(decoding: $0) }?.address ?? "?"
                }
            } catch let error as ZooKeeperError where error.code == .noNode {
                // No edge ever registered under this root.
            } catch {
                await zk.close()
                throw OperatorFailure(exitCode: 3, description: "cannot read \(layout.edges) in ZooKeeper at \(hosts): \(error)")
            }
            await zk.close()
        } else {
            let status: QuotaStatusResponse
            if let given { status = given } else { status = try await quota { try await $0.status() } }
            for product in status.products {
                for edge in product.edges where !edge.address.isEmpty { known[edge.edgeId] = edge.address }
            }
        }
        return await withTaskGroup(of: EdgeView.self) { group in
            for (id, address) in known {
                group.addTask {
                    guard let client = edgeClient(address) else {
                        return EdgeView(id: id, address: address, stats: .failure(RPCError(.invalidArgument, "no address")))
                    }
                    let stats: Result<EdgeStatsResponse, RPCError>
                    do {
                        stats = .success(try await client.stats())
                    } catch {
                        stats = .failure(RPCError.wrapping(error))
                    }
                    await client.shutdown()
                    return EdgeView(id: id, address: address, stats: stats)
                }
            }
            var views: [EdgeView] = []
            for await view in group { views.append(view) }
            return views.sorted { $0.id < $1.id }
        }
    }
}

/// The edges' table: id, address, health, the lottery's ratio as applied, and their counters.
func edgeTable(_ edges: [EdgeView], indent: String = "") -> TextTable {
    var table = TextTable("edge", "address", "health", "keep/M", "attempts", "shed", "sold out", "forwarded", "purchased", "errors", indent: indent)
    for edge in edges {
        switch edge.stats {
        case .success(let stats):
            table.add(
                String(edge.id), edge.address, "up", stats.keepPerMillion.grouped, stats.attempts.grouped, stats.shed.grouped,
                stats.soldOut.grouped, stats.forwarded.grouped, stats.purchased.grouped, stats.errors.grouped)
        case .failure(let error):
            table.add(String(edge.id), edge.address, "DOWN (\(error.code))", "-", "-", "-", "-", "-", "-", "-")
        }
    }
    return table
}

/// `flashsale edges list`.
struct EdgesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edges", abstract: "The live edges.", subcommands: [List.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the live edges with their health and counters.")

        @OptionGroup var discovery: DiscoveryOptions
        @OptionGroup var platform: PlatformOptions

        func run() async throws {
            try await operate(platform) { op in
                let edges = try await op.edges(discovery)
                if edges.isEmpty {
                    print(discovery.zookeeper == nil ? "no edges hold quotas (pass --zookeeper to list every registered edge)" : "no edges registered")
                    return
                }
                print(edgeTable(edges).render())
                let down = edges.filter { !$0.isUp }.count
                if down > 0 {
                    standardError("error: \(down) of \(edges.count) edges do not answer")
                    throw ExitCode(3)
                }
            }
        }
    }
}

/// `flashsale quotas show [ID]`.
struct QuotasCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quotas", abstract: "The per-edge quotas.", subcommands: [Show.self])

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show each product's sellable units and each edge's grant, use, releases and sales.")

        @Argument(help: "Product id (default: every product).") var product: String?
        @OptionGroup var platform: PlatformOptions

        func validate() throws {
            if let product { try validateProductID(product) }
        }

        func run() async throws {
            try await operate(platform) { op in
                let status = try await op.quota(product: product) { try await $0.status(productId: product ?? "") }
                print("lottery: \(keepDescription(status.keepPerMillion))")
                if status.products.isEmpty { print("no products") }
                for quotas in status.products.sorted(by: { $0.productId < $1.productId }) {
                    print("")
                    print(quotaLines(quotas))
                }
            }
        }
    }
}

/// `flashsale audit [ID]`: the database's own check. Exit 2 when it fails.
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Check every product in the database: remaining + orders = stock, no slot negative (exit 2 if not).")

    @Argument(help: "Product id (default: every product).") var product: String?
    @OptionGroup var platform: PlatformOptions

    func validate() throws {
        if let product { try validateProductID(product) }
    }

    func run() async throws {
        try await operate(platform) { op in
            let audit = try await op.inventory(product: product) { try await $0.audit(productId: product ?? "") }
            var table = TextTable("product", "stock", "orders", "remaining", "negative slots", "audit")
            for line in audit.products.sorted(by: { $0.productId < $1.productId }) {
                table.add(
                    line.productId, line.totalStock.grouped, line.orders.grouped, line.remaining.grouped, line.negativeSlots.grouped,
                    line.clean ? "clean" : "FAILED")
            }
            print(audit.products.isEmpty ? "no products" : table.render())
            print(audit.clean
                ? "audit clean: no slot negative, remaining + orders = stock for every product"
                : "audit FAILED")
            if !audit.clean { throw ExitCode(2) }
        }
    }
}
