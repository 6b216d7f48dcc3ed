import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresClient
import Proto
import Synchronization
import Wire

/// The operator-side statements of one database (products, stock, sold counts, audit). Every method is one
/// statement, so calls from concurrent tasks can share the one admin connection without interleaving transactions;
/// the purchase path never uses it (consumers own their connections).
///
/// Each cluster's blocking work runs on a thread of its own (`threadPool`), so a cluster that is unreachable,
/// blackholed or slow holds only its own thread: the other clusters' admin calls, and the quota service's rounds on
/// their products, go on. Calls fail fast (UNAVAILABLE) while the database is known unreachable, before it is brought up,
/// and past a bound of waiting calls; each one is bounded by the connection's connect and statement timeouts.
final class ProductDatabase: Sendable {
    let role: DatabaseRole
    let dsn: String
    private let link: AdminLink
    private let logger: Logger

    /// `connection`: an admin connection opened at start-up, if any (otherwise the first call connects). `ready`:
    /// false until the database is migrated (`markReady`); calls are refused until then.
    convenience init(
        role: DatabaseRole, dsn: String, settings: PostgresSettings, connection: PostgresConnection? = nil, ready: Bool,
        maxWaiting: Int = 64, logger: Logger
    ) {
        self.init(role: role, dsn: dsn, settings: settings, connection: connection,
                  gate: AdminGate(ready: ready, maxWaiting: maxWaiting), logger: logger)
    }

    private init(
        role: DatabaseRole, dsn: String, settings: PostgresSettings, connection: PostgresConnection?, gate: AdminGate,
        logger: Logger
    ) {
        self.role = role
        self.dsn = dsn
        self.logger = logger
        self.link = AdminLink(dsn: dsn, settings: settings, connection: connection, gate: gate, logger: logger)
    }

    /// A cluster the catalog names but this inventory was not given: every call is refused, naming the flag.
    static func absent(_ role: DatabaseRole, logger: Logger) -> ProductDatabase {
        ProductDatabase(
            role: role, dsn: "", settings: .standard, connection: nil,
            gate: AdminGate(ready: false, maxWaiting: 0, absent: true), logger: logger)
    }

    /// The thread this database's blocking work runs on (its admin statements, and its migration at start-up).
    var threadPool: NIOThreadPool { link.threadPool }

    var isReady: Bool { link.isReady }

    /// The database is migrated: calls go to it from now on.
    func markReady() { link.markReady() }

    // MARK: - Catalog

    struct CatalogRow: Sendable {
        let key: Int32
        let name: String
        /// The cluster its stock lives on (`products.database`).
        let role: DatabaseRole
    }

    /// The main database's catalog: every product, with the cluster its stock lives on (a row whose name breaks
    /// the rule is skipped; migration 6's CHECK keeps them out).
    func catalog() async throws -> [CatalogRow] {
        let result = try await run("SELECT id, name, database FROM products ORDER BY id", [])
        return (0..<result.count).compactMap { row in
            guard let key = result.int64(row, 0), let name = result.string(row, 1),
                  let role = result.string(row, 2).flatMap(DatabaseRole.init(rawValue:))
            else { return nil }
            return CatalogRow(key: Int32(truncatingIfNeeded: key), name: name, role: role)
        }
    }

    /// The main database's count of products per cluster (the load `ClusterPlacement` balances).
    func productsPerCluster() async throws -> [DatabaseRole: Int] {
        let result = try await run("SELECT database, count(*) FROM products GROUP BY database", [])
        var counts: [DatabaseRole: Int] = [:]
        for row in 0..<result.count {
            guard let role = result.string(row, 0).flatMap(DatabaseRole.init(rawValue:)) else { continue }
            counts[role] = Int(result.int64(row, 1) ?? 0)
        }
        return counts
    }

    /// A fresh key from the main database's product sequence, so that keys on other clusters never collide.
    func allocateProductKey() async throws -> Int32 {
        let result = try await run("SELECT allocate_product_key()", [])
        guard let key = result.int64(0, 0) else { throw RPCError(.internal, "no product key allocated") }
        return Int32(truncatingIfNeeded: key)
    }

    /// Creates the product with its slots. `created` is false when the name exists here already (its key is returned).
    func createProduct(
        key: Int32?, name: String, totalStock: Int64, slotCount: Int, hot: Bool, database: DatabaseRole, saleLimit: Int64,
        holdSeconds: UInt32 = 0
    ) async throws -> (key: Int32, created: Bool) {
        let result = try await run(
            "SELECT r_id, r_created FROM create_product($1, $2, $3, $4, $5, $6, $7, $8)",
            [key.map { String($0) }, name, String(totalStock), String(slotCount), hot ? "true" : "false",
             database.rawValue, String(saleLimit), String(holdSeconds)])
        guard let id = result.int64(0, 0), let created = result.bool(0, 1) else {
            throw RPCError(.internal, "create_product returned nothing")
        }
        return (Int32(truncatingIfNeeded: id), created)
    }

    /// The main database's catalog entry of a product whose stock lives on another cluster (migration 6).
    func addCatalogEntry(key: Int32, name: String, slotCount: Int, saleLimit: Int64, cluster: DatabaseRole) async throws -> Bool {
        // A procedure: the service's role may not insert into the table (Schema.serviceRole).
        let result = try await run(
            "SELECT add_catalog_entry($1, $2, $3, $4, $5, $6)",
            [String(key), name, String(slotCount), String(saleLimit), cluster == .hot ? "true" : "false", cluster.rawValue])
        return result.bool(0, 0) ?? false
    }

    // MARK: - Stock

    private static let productColumns = """
        SELECT p.name, p.total_stock, p.slot_count, p.hot, p.database, p.sale_limit,
               coalesce((SELECT sum(s.remaining) FROM stock_slot s WHERE s.product_id = p.id), 0),
               p.hold_seconds, p.released,
               CASE WHEN p.hold_seconds > 0 THEN (SELECT count(*) FROM requests r
                     WHERE r.product_id = p.id AND r.order_id IS NOT NULL AND r.state = 'held') ELSE 0 END
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
                sold: total - remaining, remaining: remaining, holdSeconds: UInt32(clamping: result.int64(row, 7) ?? 0),
                held: result.int64(row, 9) ?? 0, released: result.int64(row, 8) ?? 0)
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

    /// Per product, in one snapshot: total = sum(remaining) + live holds + paid (released orders hold no unit), no
    /// slot below zero, and every order in one valid state (the table's CHECK says so too; the audit does not trust it)
    /// with the product's count of released orders matching its rows.
    func audit(key: Int32?) async throws -> [ProductAudit] {
        let result = try await run(
            """
            SELECT p.name, p.total_stock,
                   coalesce((SELECT sum(s.remaining) FROM stock_slot s WHERE s.product_id = p.id), 0),
                   o.held, o.paid, o.released, o.invalid,
                   (SELECT count(*) FROM stock_slot s WHERE s.product_id = p.id AND s.remaining < 0), p.released
            FROM products p, LATERAL (
                SELECT count(*) FILTER (WHERE x.state = 'held' AND x.release_reason IS NULL) AS held,
                       count(*) FILTER (WHERE x.state = 'paid' AND x.release_reason IS NULL) AS paid,
                       count(*) FILTER (WHERE x.state = 'released' AND x.release_reason IN ('cancelled', 'expired')) AS released,
                       count(*) FILTER (WHERE NOT coalesce((x.state IN ('held', 'paid') AND x.release_reason IS NULL)
                           OR (x.state = 'released' AND x.release_reason IN ('cancelled', 'expired')), false)) AS invalid
                  FROM orders x WHERE x.product_id = p.id) o
            WHERE p.database = $1 AND ($2::integer IS NULL OR p.id = $2)
            ORDER BY p.id
            """,
            [role.rawValue, key.map { String($0) }])
        return (0..<result.count).map { row in
            let total = result.int64(row, 1) ?? 0
            let remaining = result.int64(row, 2) ?? 0
            let (held, paid, released) = (result.int64(row, 3) ?? 0, result.int64(row, 4) ?? 0, result.int64(row, 5) ?? 0)
            let invalid = result.int64(row, 6) ?? 0
            let negative = result.int64(row, 7) ?? 0
            let releasedCount = result.int64(row, 8) ?? 0
            return ProductAudit(
                productId: result.string(row, 0) ?? "", totalStock: total, remaining: remaining, orders: held + paid,
                negativeSlots: negative,
                clean: remaining + held + paid == total && negative == 0 && invalid == 0 && released == releasedCount,
                held: held, paid: paid, released: released, invalidOrders: invalid)
        }
    }

    // MARK: - Running statements

    /// One statement on the admin connection, which is (re)connected first when it is not working.
    func run(_ sql: String, _ params: [String?]) async throws -> PostgresResult {
        do {
            return try await link.run(sql, params)
        } catch let refusal as AdminGate.Refusal {
            throw RPCError(.unavailable, "the \(role.rawValue) database \(refusal.reason); retry later")
        } catch let error as PostgresError {
            logger.warning("admin statement failed", metadata: ["database": "\(role.rawValue)", "error": "\(error)"])
            throw RPCError(error.rpcErrorCode, "the \(role.rawValue) \(error.rpcErrorMessage)", cause: error)
        }
    }
}

/// When an admin call may go to its database: the pure decisions of `ProductDatabase`.
struct AdminGate: Sendable {
    struct Refusal: Error, Sendable, Equatable {
        let reason: String
    }

    private(set) var ready: Bool
    let maxWaiting: Int
    let backoff: Backoff
    /// Calls admitted and not yet finished (running or waiting for the database's thread).
    private(set) var waiting = 0
    /// Set after a failed connect: until then calls are refused at once rather than each wait out a connect timeout.
    private(set) var retryAt: NIODeadline?
    private var delays: Backoff.Iterator

    /// The cluster was not given to this inventory: never ready.
    let absent: Bool

    init(
        ready: Bool, maxWaiting: Int, absent: Bool = false,
        backoff: Backoff = Backoff(initial: .milliseconds(200), max: .seconds(2))
    ) {
        self.ready = ready
        self.absent = absent
        self.maxWaiting = maxWaiting
        self.backoff = backoff
        self.delays = backoff.makeIterator()
    }

    mutating func markReady() { ready = !absent }

    /// A call arrives: admitted (it must `leave` later), or refused.
    mutating func enter(now: NIODeadline) -> Refusal? {
        if absent { return Refusal(reason: "is not among this inventory's clusters (start it with --database NAME=DSN)") }
        guard ready else { return Refusal(reason: "is not reachable yet") }
        if let retryAt, now < retryAt { return Refusal(reason: "is unreachable") }
        guard waiting < maxWaiting else { return Refusal(reason: "is too slow to answer more calls") }
        waiting += 1
        return nil
    }

    /// An admitted call needs to connect: refused when another call's attempt failed a moment ago.
    func mayConnect(now: NIODeadline) -> Refusal? {
        if let retryAt, now < retryAt { return Refusal(reason: "is unreachable") }
        return nil
    }

    mutating func connected() {
        retryAt = nil
        delays = backoff.makeIterator()
    }

    mutating func connectFailed(now: NIODeadline) {
        retryAt = now + TimeAmount(delays.next())
    }

    mutating func leave() { waiting -= 1 }
}

/// The admin connection of one database and the single thread its statements run on, in arrival order.
///
/// `@unchecked Sendable`: `connection` is touched only on the pool's one thread (and in `init`).
private final class AdminLink: @unchecked Sendable {
    let threadPool: NIOThreadPool
    private let dsn: String
    private let settings: PostgresSettings
    private let logger: Logger
    private let gate: Mutex<AdminGate>
    private var connection: PostgresConnection?

    init(dsn: String, settings: PostgresSettings, connection: PostgresConnection?, gate: AdminGate, logger: Logger) {
        self.threadPool = NIOThreadPool(numberOfThreads: 1)
        self.threadPool.start()
        self.dsn = dsn
        self.settings = settings
        self.connection = connection
        self.gate = Mutex(gate)
        self.logger = logger
    }

    var isReady: Bool { gate.withLock { $0.ready } }

    func markReady() { gate.withLock { $0.markReady() } }

    func run(_ sql: String, _ params: [String?]) async throws -> PostgresResult {
        if let refusal = gate.withLock({ $0.enter(now: .now()) }) { throw refusal }
        do {
            return try await threadPool.runIfActive { try self.blockingRun(sql, params) }
        } catch {
            // A call the thread pool never ran (it was shut down) still leaves.
            if error is NIOThreadPoolError.ThreadPoolInactive { gate.withLock { $0.leave() } }
            throw error
        }
    }

    /// On the pool's thread.
    private func blockingRun(_ sql: String, _ params: [String?]) throws -> PostgresResult {
        defer { gate.withLock { $0.leave() } }
        let current: PostgresConnection
        if let connection, connection.isConnected {
            current = connection
        } else {
            if let refusal = gate.withLock({ $0.mayConnect(now: .now()) }) { throw refusal }
            do {
                if let connection {
                    try connection.reset()
                    current = connection
                } else {
                    current = try PostgresConnection.connect(dsn, settings: settings, threadPool: threadPool, logger: logger)
                    connection = current
                }
                gate.withLock { $0.connected() }
            } catch {
                gate.withLock { $0.connectFailed(now: .now()) }
                throw error
            }
        }
        return try current.query(sql, params)
    }
}

/// PostgreSQL's errors as statuses: the database unreachable, a statement cancelled (its timeout) or a transaction
/// rolled back by a deadlock or serialization failure is UNAVAILABLE (nothing was applied: retry), the rest INTERNAL.
extension PostgresError: RPCErrorConvertible {
    public var rpcErrorCode: RPCError.Code {
        isConnectionFailure || isQueryCanceled || isRetryableTransactionFailure ? .unavailable : .internal
    }
    public var rpcErrorMessage: String {
        rpcErrorCode == .unavailable ? "database is unreachable or busy" : "database refused a statement"
    }
}
