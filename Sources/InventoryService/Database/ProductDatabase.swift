import Logging
import PostgresClient
import Proto
import Wire

/// Which database holds a product's stock and orders.
enum DatabaseRole: String, Sendable {
    case main
    case hot
}

/// The operator-side statements of one database (products, stock, sold counts, audit). Every method is one
/// statement, so calls from concurrent tasks can share the one admin connection without interleaving transactions;
/// the purchase path never uses it (consumers own their connections).
final class ProductDatabase: Sendable {
    let role: DatabaseRole
    let dsn: String
    private let admin: PostgresConnection
    private let logger: Logger

    init(role: DatabaseRole, dsn: String, admin: PostgresConnection, logger: Logger) {
        self.role = role
        self.dsn = dsn
        self.admin = admin
        self.logger = logger
    }

    // MARK: - Catalog

    struct CatalogRow: Sendable {
        let key: Int32
        let name: String
        let hot: Bool
    }

    /// The products whose stock lives here (for the main database: the cold ones; hot ones are listed too, as
    /// catalog entries, when `includeHotCatalog` is set).
    func catalog(includeHotCatalog: Bool) async throws -> [CatalogRow] {
        let result = try await run(
            "SELECT id, name, hot FROM products WHERE database = $1 OR $2::boolean ORDER BY id",
            [role.rawValue, includeHotCatalog ? "true" : "false"])
        return (0..<result.count).compactMap { row in
            guard let key = result.int64(row, 0), let name = result.string(row, 1) else { return nil }
            return CatalogRow(key: Int32(truncatingIfNeeded: key), name: name, hot: result.bool(row, 2) ?? false)
        }
    }

    /// A fresh key from the main database's product sequence, so that hot products' keys never collide with cold ones.
    func allocateProductKey() async throws -> Int32 {
        let result = try await run("SELECT allocate_product_key()", [])
        guard let key = result.int64(0, 0) else { throw RPCError(.internal, "no product key allocated") }
        return Int32(truncatingIfNeeded: key)
    }

    /// Creates the product with its slots. `created` is false when the name exists here already (its key is returned).
    func createProduct(
        key: Int32?, name: String, totalStock: Int64, slotCount: Int, hot: Bool, database: DatabaseRole, saleLimit: Int64
    ) async throws -> (key: Int32, created: Bool) {
        let result = try await run(
            "SELECT r_id, r_created FROM create_product($1, $2, $3, $4, $5, $6, $7)",
            [key.map { String($0) }, name, String(totalStock), String(slotCount), hot ? "true" : "false",
             database.rawValue, String(saleLimit)])
        guard let id = result.int64(0, 0), let created = result.bool(0, 1) else {
            throw RPCError(.internal, "create_product returned nothing")
        }
        return (Int32(truncatingIfNeeded: id), created)
    }

    /// The main database's catalog entry of a hot product (its stock lives in the hot database).
    func addHotCatalogEntry(key: Int32, name: String, slotCount: Int, saleLimit: Int64) async throws -> Bool {
        // A procedure: the service's role may not insert into the table (Schema.serviceRole).
        let result = try await run(
            "SELECT add_hot_catalog_entry($1, $2, $3, $4)", [String(key), name, String(slotCount), String(saleLimit)])
        return result.bool(0, 0) ?? false
    }

    // MARK: - Stock

    private static let productColumns = """
        SELECT p.name, p.total_stock, p.slot_count, p.hot, p.database, p.sale_limit,
               coalesce((SELECT sum(s.remaining) FROM stock_slot s WHERE s.product_id = p.id), 0)
        FROM products p
        """

    func product(key: Int32) async throws -> Product? {
        let result = try await run("\(Self.productColumns) WHERE p.id = $1", [String(key)])
        return Self.products(result).first
    }

    func products() async throws -> [Product] {
        Self.products(try await run("\(Self.productColumns) WHERE p.database = $1 ORDER BY p.id", [role.rawValue]))
    }

    private static func products(_ result: PostgresResult) -> [Product] {
        (0..<result.count).map { row in
            let total = result.int64(row, 1) ?? 0
            let remaining = result.int64(row, 6) ?? 0
            return Product(
                productId: result.string(row, 0) ?? "", totalStock: total,
                slotCount: UInt32(clamping: result.int64(row, 2) ?? 0), hot: result.bool(row, 3) ?? false,
                database: result.string(row, 4) ?? "", saleLimit: result.int64(row, 5) ?? 0,
                sold: total - remaining, remaining: remaining)
        }
    }

    enum StockChange: Sendable {
        case raise(Int64)
        case saleLimit(Int64)
    }

    /// What `adjust_stock` did with a change.
    enum StockChangeOutcome: Sendable {
        case applied
        /// Its change id was applied before: nothing changed now.
        case appliedBefore
        /// Its change id was used for another change: nothing changed.
        case changeIdReused
    }

    /// Applies the change in one transaction (it waits for batches in flight on the product's slots), once per
    /// change id. Nil when the product does not exist here.
    func adjustStock(key: Int32, _ change: StockChange, changeId: Int64?) async throws -> StockChangeOutcome? {
        let params: [String?]
        switch change {
        case .raise(let units): params = [String(key), String(units), nil, changeId.map { String($0) }]
        case .saleLimit(let limit): params = [String(key), nil, String(limit), changeId.map { String($0) }]
        }
        let result = try await run("SELECT r_outcome FROM adjust_stock($1, $2, $3, $4)", params)
        guard !result.isEmpty else { return nil }
        switch result.int64(0, 0) {
        case 1: return .applied
        case 2: return .appliedBefore
        case 3: return .changeIdReused
        default: throw RPCError(.internal, "adjust_stock returned an unknown outcome")
        }
    }

    // MARK: - Sold counts and audit

    /// Orders per product and per forwarding edge, for every product here (or the one named).
    func soldCounts(key: Int32?) async throws -> [ProductSold] {
        let result = try await run(
            """
            SELECT p.name, o.edge_id, count(o.request_id)
            FROM products p LEFT JOIN orders o ON o.product_id = p.id
            WHERE p.database = $1 AND ($2::integer IS NULL OR p.id = $2)
            GROUP BY p.id, p.name, o.edge_id ORDER BY p.id, o.edge_id
            """,
            [role.rawValue, key.map { String($0) }])
        var byName: [String: ProductSold] = [:]
        var order: [String] = []
        for row in 0..<result.count {
            guard let name = result.string(row, 0) else { continue }
            if byName[name] == nil {
                byName[name] = ProductSold(productId: name)
                order.append(name)
            }
            let count = result.int64(row, 2) ?? 0
            guard count > 0, let edge = result.int64(row, 1) else { continue }
            byName[name]!.sold += count
            byName[name]!.edges.append(EdgeSold(edgeId: UInt32(truncatingIfNeeded: edge), sold: count))
        }
        return order.compactMap { byName[$0] }
    }

    /// Per product, in one snapshot: total = sum(remaining) + orders, and no slot below zero.
    func audit(key: Int32?) async throws -> [ProductAudit] {
        let result = try await run(
            """
            SELECT p.name, p.total_stock,
                   coalesce((SELECT sum(s.remaining) FROM stock_slot s WHERE s.product_id = p.id), 0),
                   (SELECT count(*) FROM orders o WHERE o.product_id = p.id),
                   (SELECT count(*) FROM stock_slot s WHERE s.product_id = p.id AND s.remaining < 0)
            FROM products p
            WHERE p.database = $1 AND ($2::integer IS NULL OR p.id = $2)
            ORDER BY p.id
            """,
            [role.rawValue, key.map { String($0) }])
        return (0..<result.count).map { row in
            let total = result.int64(row, 1) ?? 0
            let remaining = result.int64(row, 2) ?? 0
            let orders = result.int64(row, 3) ?? 0
            let negative = result.int64(row, 4) ?? 0
            return ProductAudit(
                productId: result.string(row, 0) ?? "", totalStock: total, remaining: remaining, orders: orders,
                negativeSlots: negative, clean: remaining + orders == total && negative == 0)
        }
    }

    // MARK: - Running statements

    /// One statement on the admin connection; a lost connection is re-established once before giving up.
    private func run(_ sql: String, _ params: [String?]) async throws -> PostgresResult {
        do {
            if !admin.isConnected { try await admin.reset() }
            return try await admin.query(sql, params)
        } catch let error as PostgresError {
            logger.warning("admin statement failed", metadata: ["database": "\(role.rawValue)", "error": "\(error)"])
            if error.isConnectionFailure {
                throw RPCError(.unavailable, "the \(role.rawValue) database is unreachable", cause: error)
            }
            throw RPCError(.internal, "the \(role.rawValue) database refused a statement", cause: error)
        }
    }
}
