import ArgumentParser
import FlashSaleClient
import Proto
import Wire

/// `flashsale status`: one screen of the running sale. Services and their health, the lottery, every product's
/// stock and sales, every edge's counters and each edge's quota and sales per product. Exit 3 when a service or an
/// edge does not answer (after printing what could be read).
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "One screen: services' health, lottery, products, stock, sold, per-edge quotas and sales.")

    @OptionGroup var discovery: DiscoveryOptions
    @OptionGroup var platform: PlatformOptions

    @Flag(help: "Redraw the screen every second until interrupted (Ctrl-C), like top, with rates per edge; the exit code is the last screen's (3 when something did not answer).")
    var watch = false

    @Option(help: "With --watch: seconds between screens.")
    var interval: Double = 1

    func validate() throws {
        guard interval >= 0.1, interval <= 3600 else { throw ValidationError("--interval must be in [0.1, 3600] seconds") }
    }

    func run() async throws {
        try await operate(platform) { op in
            guard watch else {
                let screen = await read(op)
                print(screen.text)
                if !screen.down.isEmpty {
                    standardError("error: not answering: \(screen.down.joined(separator: ", "))")
                    throw ExitCode(3)
                }
                return
            }
            if await StatusWatch(interval: interval, read: { await read(op) }).run() != 0 { throw ExitCode(3) }
        }
    }

    /// One screen: what `status` prints, the edges it read and what did not answer.
    struct Screen: Sendable {
        var text: String
        var down: [String]
        var edges: [EdgeView]
    }

    func read(_ op: Operator) async -> Screen {
        var out: [String] = []
        func print(_ line: String) { out.append(line) }
        async let inventoryPing = Operator.ping(op.inventoryClient.rpc)
        async let quotaPing = Operator.ping(op.quotaClient.rpc)
        let (inventoryHealth, quotaHealth) = await (inventoryPing, quotaPing)

        var products: Result<[Product], any Error> = .failure(RPCError(.unavailable, "not asked"))
        if case .success = inventoryHealth {
            do {
                products = .success(try await op.inventory { try await $0.listProducts() })
            } catch { products = .failure(error) }
        }
        var status: Result<QuotaStatusResponse, any Error> = .failure(RPCError(.unavailable, "not asked"))
        if case .success = quotaHealth {
            do {
                status = .success(try await op.quota { try await $0.status() })
            } catch { status = .failure(error) }
        }
        var edges: [EdgeView] = []
        var edgesProblem: String?
        if discovery.zookeeper != nil || (try? status.get()) != nil {
            do {
                edges = try await op.edges(discovery, status: try? status.get())
            } catch {
                edgesProblem = "\(error)"
            }
        }

        print("Flash sale status")
        print("")
        print("services")
        var services = TextTable("service", "address", "health", indent: "  ")
        func health(_ result: Result<Double, RPCError>) -> String {
            switch result {
            case .success(let ms): return String(format: "up (ping %.1f ms)", ms)
            case .failure(let error): return "DOWN (\(error.code): \(error.message))"
            }
        }
        services.add("inventory", "\(op.inventoryEndpoint)", health(inventoryHealth))
        services.add("quota", "\(op.quotaEndpoint)", health(quotaHealth))
        let edgesUp = edges.filter(\.isUp).count
        services.add(
            "edges", "\(edges.count) known",
            edgesProblem.map { "unknown: \($0)" } ?? "\(edgesUp) up, \(edges.count - edgesUp) down")
        print(services.render())
        print("")
        if case .success(let status) = status {
            print("lottery   \(keepDescription(status.keepPerMillion))")
            print("")
        }

        print("products")
        switch products {
        case .success(let list) where list.isEmpty:
            print("  none")
        case .success(let list):
            let quotas = (try? status.get())?.products ?? []
            var table = TextTable(
                "product", "database", "stock", "sold", "remaining", "sale limit", "sellable", "on edges", "edges", indent: "  ")
            for product in list.sorted(by: { $0.productId < $1.productId }) {
                let quota = quotas.first { $0.productId == product.productId }
                table.add(
                    product.productId, product.database, product.totalStock.grouped, product.sold.grouped,
                    product.remaining.grouped, product.saleLimit == 0 ? "-" : product.saleLimit.grouped,
                    quota.map { $0.sellable.grouped } ?? "?", quota.map { $0.grantedUnused.grouped } ?? "?",
                    quota.map { String($0.edges.count) } ?? "?")
            }
            print(table.render())
        case .failure(let error):
            print("  unavailable: \(Operator.failure(error, service: "inventory service", endpoint: op.inventoryEndpoint, product: nil))")
        }
        print("")

        print("edges")
        print(edges.isEmpty ? "  none" : edgeTable(edges, indent: "  ").render())
        print("")

        print("quotas per edge")
        switch status {
        case .success(let status):
            var rows: [[String]] = []
            var table = TextTable("product", "edge", "address", "granted", "used", "released", "sold", "left", indent: "  ")
            for quotas in status.products.sorted(by: { $0.productId < $1.productId }) {
                rows += edgeQuotaTable(quotas.edges, product: quotas.productId).rows
            }
            rows.forEach { table.add($0) }
            print(rows.isEmpty ? "  none" : table.render())
        case .failure(let error):
            print("  unavailable: \(Operator.failure(error, service: "quota service", endpoint: op.quotaEndpoint, product: nil))")
        }

        var down: [String] = []
        if case .failure = inventoryHealth { down.append("inventory service") }
        if case .failure = quotaHealth { down.append("quota service") }
        if edges.count > edgesUp { down.append("\(edges.count - edgesUp) edges") }
        // The README's exit 3 covers ZooKeeper too: with --zookeeper, the edges' registrations could not be read.
        if edgesProblem != nil { down.append("ZooKeeper") }
        return Screen(text: out.joined(separator: "\n"), down: down, edges: edges)
    }
}
