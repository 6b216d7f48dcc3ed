import ArgumentParser
import FlashSaleClient
import Proto

/// `flashsale product create|list|show`.
struct ProductCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "product", abstract: "Create, list and show the sale's products.",
        subcommands: [Create.self, List.self, Show.self])

    /// `flashsale product create ID --stock N [--hot | --cluster NAME] [--slots N] [--sale-limit N] [--hold SECONDS]`
    /// (operator token).
    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a product: its stock in the inventory, then its quotas split over the live edges.")

        @Argument(help: "Product id: 1-128 letters, digits, '.', '_' or '-'.") var product: String
        @Option(help: "Units of stock.") var stock: Int64
        @Flag(help: "Put the product in the hot-item database (its own connections and consumers).") var hot = false
        @Option(help: """
            The database cluster to place it on (the inventory's --database NAME=DSN, or main, hot); default: hot \
            with --hot, otherwise the cluster with the fewest products.
            """)
        var cluster = ""
        @Option(help: "Stock slots (rows) the units are spread over; 0 = the service's default.") var slots: UInt32 = 0
        @Option(help: "Stop the sale after this many sold; 0 = no limit beyond the stock.") var saleLimit: Int64 = 0
        @Option(help: "Seconds a buyer has to pay (inventory.ConfirmOrder) before the unit is sold again; 0 = orders are final at once.")
        var hold: UInt32 = 0
        @OptionGroup var platform: PlatformOptions

        func validate() throws {
            try validateProductID(product)
            guard stock > 0 else { throw ValidationError("--stock must be positive") }
            guard saleLimit >= 0 else { throw ValidationError("--sale-limit must not be negative") }
            guard slots <= 1024 else { throw ValidationError("--slots must be at most 1024") }
            guard hold <= 86_400 else { throw ValidationError("--hold must be at most 86400 seconds (a day)") }
        }

        func run() async throws {
            try await operate(platform, requireToken: true) { op in
                let request = CreateProductRequest(
                    productId: product, totalStock: stock, slotCount: slots, hot: hot, saleLimit: saleLimit, holdSeconds: hold,
                    cluster: cluster)
                let quotas = try await op.quota(product: product) { try await $0.createProduct(request) }
                let created = try await op.inventory(product: product) { try await $0.getStock(productId: product) }
                print("created \(product): \(created.totalStock.grouped) units in the \(created.database) database, \(created.slotCount) slots")
                print(quotaLines(quotas))
            }
        }
    }

    /// `flashsale product list`.
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List every product with its stock, sold and remaining units.")

        @OptionGroup var platform: PlatformOptions

        func run() async throws {
            try await operate(platform) { op in
                let products = try await op.inventory { try await $0.listProducts() }
                if products.isEmpty {
                    print("no products")
                    return
                }
                print(productTable(products.sorted { $0.productId < $1.productId }).render())
            }
        }
    }

    /// `flashsale product show ID`.
    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one product: stock, sold, remaining and its quota on each edge.")

        @Argument(help: "Product id.") var product: String
        @OptionGroup var platform: PlatformOptions

        func validate() throws { try validateProductID(product) }

        func run() async throws {
            try await operate(platform) { op in
                let stock = try await op.inventory(product: product) { try await $0.getStock(productId: product) }
                print("product     \(stock.productId)")
                print("database    \(stock.database)\(stock.hot ? " (hot)" : "")")
                print("stock       \(stock.totalStock.grouped) units in \(stock.slotCount) slots")
                print("sold        \(stock.sold.grouped)")
                print("remaining   \(stock.remaining.grouped)")
                print("sale limit  \(stock.saleLimit == 0 ? "none" : stock.saleLimit.grouped)")
                if stock.holdSeconds > 0 {
                    print("holds       \(stock.holdSeconds) s to pay; \(stock.held.grouped) held now, \(stock.released.grouped) released")
                }
                let status = try await op.quota(product: product) { try await $0.status(productId: product) }
                if let quotas = status.products.first {
                    print("")
                    print(quotaLines(quotas))
                }
            }
        }
    }
}

/// product, database, stock, sold, remaining, limit.
func productTable(_ products: [Product], indent: String = "") -> TextTable {
    var table = TextTable("product", "database", "stock", "sold", "remaining", "sale limit", indent: indent)
    for product in products {
        table.add(
            product.productId, product.database, product.totalStock.grouped, product.sold.grouped, product.remaining.grouped,
            product.saleLimit == 0 ? "-" : product.saleLimit.grouped)
    }
    return table
}

/// A product's quotas: sellable, on the edges, and per edge granted / used / released / sold.
func quotaLines(_ quotas: ProductQuotas) -> String {
    var lines = ["quotas of \(quotas.productId): sellable \(quotas.sellable.grouped), granted and unused on edges \(quotas.grantedUnused.grouped), \(quotas.edges.count) edges"]
    if !quotas.edges.isEmpty { lines.append(edgeQuotaTable(quotas.edges).render()) }
    return lines.joined(separator: "\n")
}

func edgeQuotaTable(_ edges: [EdgeQuota], product: String? = nil, indent: String = "  ") -> TextTable {
    var table = product == nil
        ? TextTable("edge", "address", "granted", "used", "released", "sold", "left", indent: indent)
        : TextTable("product", "edge", "address", "granted", "used", "released", "sold", "left", indent: indent)
    for edge in edges.sorted(by: { $0.edgeId < $1.edgeId }) {
        let left = max(0, edge.granted - edge.used - edge.released)
        var cells = [String(edge.edgeId), edge.address, edge.granted.grouped, edge.used.grouped, edge.released.grouped, edge.sold.grouped, left.grouped]
        if let product { cells.insert(product, at: 0) }
        table.add(cells)
    }
    return table
}
