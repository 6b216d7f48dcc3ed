import Cluster
import FlashSaleClient
import Foundation
import Logging
import PostgresClient
import Proto
import Synchronization
import Wire

/// Which winners pay, pure: a fixed share of request ids, chosen by a hash of the id (the same id always decides
/// the same way, so a replayed hold is never paid by one pass and abandoned by another).
struct PaymentChoice: Sendable {
    let perMillion: UInt64

    init(share: Double) { perMillion = UInt64((min(max(share, 0), 1) * 1_000_000).rounded()) }

    func pays(_ requestID: UInt64) -> Bool {
        // splitmix64's finaliser: request ids are consecutive, their hashes are not.
        var z = requestID &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return z % 1_000_000 < perMillion
    }
}

/// The payment service of a sale with holds: watches the databases for new holds and pays the share `choice`
/// picks through `inventory.ConfirmOrder` (the real call, with the service token); the others are abandoned carts,
/// left to expire. Runs until cancelled.
final class HoldPayer: Sendable {
    struct Tally: Sendable {
        var seen = 0
        var paid = 0
        /// Answered FAILED_PRECONDITION (the hold was released first): a refund.
        var refused = 0
        var errors = 0
        var abandoned = 0
        /// Request ids whose confirm was answered OK: each must end paid.
        var confirmed: Set<UInt64> = []
    }

    private let dsns: [String]
    private let inventory: InventoryClient
    private let choice: PaymentChoice
    private let logger: Logger
    private let state = Mutex(Tally())
    /// Request ids decided already (paid or abandoned).
    private let decided = Mutex(Set<UInt64>())

    init(dsns: [String], inventory: InventoryClient, payShare: Double, logger: Logger) {
        self.dsns = dsns
        self.inventory = inventory
        self.choice = PaymentChoice(share: payShare)
        self.logger = logger
    }

    var tally: Tally { state.withLock { $0 } }

    /// Holds seen and not yet decided: zero once the payer has caught up.
    func undecided() async throws -> Int {
        let held = try await heldOrders()
        return decided.withLock { decided in held.filter { !decided.contains($0.0) }.count }
    }

    func run() async {
        var connections: [PostgresConnection] = []
        defer { for connection in connections { connection.close() } }
        while !Task.isCancelled {
            do {
                if connections.isEmpty {
                    for dsn in dsns { connections.append(try await PostgresConnection.connect(dsn)) }
                }
                var fresh: [(UInt64, String)] = []
                for connection in connections {
                    for held in try await Self.heldOrders(connection) where decided.withLock({ $0.insert(held.0).inserted }) {
                        fresh.append(held)
                    }
                }
                try await pay(fresh)
            } catch is CancellationError {
                return
            } catch {
                logger.warning("payer failed; retrying", metadata: ["error": "\(error)"])
                for connection in connections { connection.close() }
                connections = []
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Confirms the payers among `holds`, up to 256 in flight (the inventory batches order calls through its
    /// consumers, one `order_batch` call per batch: more in flight make fuller batches).
    private func pay(_ holds: [(UInt64, String)]) async throws {
        let payers = holds.filter { choice.pays($0.0) }
        state.withLock {
            $0.seen += holds.count
            $0.abandoned += holds.count - payers.count
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, (request, product)) in payers.enumerated() {
                if index >= 256 { try await group.next() }
                try Task.checkCancellation()
                group.addTask { await self.confirm(request, product) }
            }
            try await group.waitForAll()
        }
    }

    private func confirm(_ request: UInt64, _ product: String) async {
        do {
            _ = try await retryingUnavailable { try await self.inventory.confirmOrder(.byRequest(product, request)) }
            state.withLock {
                $0.paid += 1
                $0.confirmed.insert(request)
            }
        } catch {
            let refused = RPCError.wrapping(error).code == .failedPrecondition
            state.withLock { if refused { $0.refused += 1 } else { $0.errors += 1 } }
        }
    }

    private func heldOrders() async throws -> [(UInt64, String)] {
        var all: [(UInt64, String)] = []
        for dsn in dsns {
            let connection = try await PostgresConnection.connect(dsn)
            defer { connection.close() }
            all += try await Self.heldOrders(connection)
        }
        return all
    }

    private static func heldOrders(_ connection: PostgresConnection) async throws -> [(UInt64, String)] {
        let result = try await connection.query(
            "SELECT o.request_id, p.name FROM orders o JOIN products p ON p.id = o.product_id WHERE o.state = 'held'")
        return (0..<result.count).compactMap { row in
            guard let request = result.int64(row, 0), let name = result.string(row, 1) else { return nil }
            return (UInt64(bitPattern: request), name)
        }
    }
}

/// What a sale with holds adds to the report, from the databases after the sale: holds made, paid, expired and
/// resold, and the time from an expiry to the resale of its unit.
struct HoldFigures: Codable, Sendable {
    var holdSeconds: UInt32
    var payShare: Double
    var waves: Int
    var holdsMade: Int64
    var paid: Int64
    var expired: Int64
    var cancelled: Int64
    var resold: Int64
    var stock: Int64
    var stillHeld: Int64
    /// Units held by orders beyond the stock (paid + live holds above it), and negative slots.
    var oversold: Int64
    /// Holds whose confirm was answered OK but that did not end paid, plus orders in no valid state.
    var doubleEnded: Int64
    var refusedPayments: Int
    var p50ResaleMs: Double
    var p99ResaleMs: Double
    var maxResaleMs: Double
    var auditClean: Bool

    var resultLine: String {
        "RESULT paid=\(paid) stock=\(stock) expired=\(expired) resold=\(resold) oversold=\(oversold) "
            + "double_ended=\(doubleEnded) audit=\(auditClean ? "clean" : "FAILED") p99_resale_ms=\(String(format: "%.0f", p99ResaleMs))"
    }

    /// Time from expiry to resale, per product: the k-th order after the first `stock` (by creation) takes the unit
    /// of the k-th release (by its end). Exact when the first units sold out before any hold expired, as in a sale
    /// whose holds outlast its first rush.
    static func resaleDelays(stock: Int64, created: [Double], released: [Double]) -> [Double] {
        let resales = created.sorted().dropFirst(Int(stock))
        return zip(resales, released.sorted()).map { max(0, $0 - $1) * 1000 }
    }

    static func percentile(_ values: [Double], _ p: Double) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        let rank = Int((Double(sorted.count) * p / 100).rounded(.up)) - 1
        return sorted[min(max(rank, 0), sorted.count - 1)]
    }

    /// Reads every product's orders from the databases.
    static func gather(
        dsns: [String], products: [String], stock: Int64, holdSeconds: UInt32, payShare: Double, waves: Int,
        payer: HoldPayer.Tally, audit: AuditResponse
    ) async throws -> (figures: HoldFigures, released: Set<UInt64>) {
        var figures = HoldFigures(
            holdSeconds: holdSeconds, payShare: payShare, waves: waves, holdsMade: 0, paid: 0, expired: 0, cancelled: 0,
            resold: 0, stock: stock * Int64(products.count), stillHeld: 0, oversold: 0, doubleEnded: 0,
            refusedPayments: payer.refused, p50ResaleMs: 0, p99ResaleMs: 0, maxResaleMs: 0, auditClean: audit.clean)
        var delays: [Double] = []
        var endedPaid = Set<UInt64>()
        var releasedRequests = Set<UInt64>()
        for dsn in dsns {
            let connection = try await PostgresConnection.connect(dsn)
            defer { connection.close() }
            let result = try await connection.query(
                """
                SELECT p.name, o.request_id, o.state, o.release_reason, extract(epoch FROM o.created_at)::float8,
                       extract(epoch FROM o.ended_at)::float8
                FROM orders o JOIN products p ON p.id = o.product_id
                """)
            var created: [String: [Double]] = [:]
            var released: [String: [Double]] = [:]
            for row in 0..<result.count {
                guard let name = result.string(row, 0), products.contains(name) else { continue }
                created[name, default: []].append(result.double(row, 4) ?? 0)
                switch result.string(row, 2) {
                case "paid": endedPaid.insert(UInt64(bitPattern: result.int64(row, 1) ?? 0))
                case "released":
                    released[name, default: []].append(result.double(row, 5) ?? 0)
                    releasedRequests.insert(UInt64(bitPattern: result.int64(row, 1) ?? 0))
                    if result.string(row, 3) == "expired" { figures.expired += 1 } else { figures.cancelled += 1 }
                default: break
                }
            }
            for (name, times) in created {
                delays += resaleDelays(stock: stock, created: times, released: released[name] ?? [])
            }
        }
        for line in audit.products where products.contains(line.productId) {
            figures.holdsMade += line.held + line.paid + line.released
            figures.paid += line.paid
            figures.stillHeld += line.held
            figures.oversold += max(0, line.held + line.paid - line.totalStock) + line.negativeSlots
            figures.doubleEnded += line.invalidOrders
            figures.resold += max(0, line.held + line.paid + line.released - line.totalStock)
        }
        figures.doubleEnded += Int64(payer.confirmed.subtracting(endedPaid).count)
        figures.p50ResaleMs = percentile(delays, 50)
        figures.p99ResaleMs = percentile(delays, 99)
        figures.maxResaleMs = delays.max() ?? 0
        return (figures, releasedRequests)
    }
}
