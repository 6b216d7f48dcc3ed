import FlashSaleClient
import Foundation
import Proto

/// What `flashsale sale` prints (and writes as JSON): throughput, outcomes, latency, orders per product from
/// the database, per-edge counts, and the audit.
struct SaleReport: Codable {
    struct Configuration: Codable {
        var products: Int
        var stock: Int64
        var attempts: Int
        var users: Int
        var connections: Int
        var depth: Int
        var keep: Double
        var edges: Int
        var hot: [String]
    }

    struct Outcomes: Codable {
        var purchased: Int
        var soldOut: Int
        var shed: Int
        var alreadyPurchased: Int
        var errors: Int
        var retries: Int
        var errorsByCode: [String: Int]
    }

    struct Latency: Codable {
        var p50Ms: Double
        var p90Ms: Double
        var p99Ms: Double
        var p999Ms: Double
        var maxMs: Double
    }

    struct ProductLine: Codable {
        var product: String
        var database: String
        var totalStock: Int64
        var orders: Int64
        var remaining: Int64
        var purchasedReplies: Int
        var auditClean: Bool
        /// Released orders (holds cancelled or expired): each had its PURCHASED reply, and holds no unit now.
        var released: Int64 = 0
    }

    struct EdgeLine: Codable {
        var edgeID: UInt32
        var address: String
        var attempts: UInt64
        var shed: UInt64
        var soldOut: UInt64
        var purchased: UInt64
        var alreadyPurchased: UInt64
        var errors: UInt64
        var forwarded: UInt64
    }

    var configuration: Configuration
    var wallSeconds: Double
    var attemptsPerSecond: Double
    var attempts: Int
    var outcomes: Outcomes
    var latency: Latency
    var products: [ProductLine]
    var edges: [EdgeLine]
    /// PURCHASED replies whose order the inventory does not know, or knows with another order id.
    var purchasedRepliesWithoutOrder: Int
    /// Users holding more than one order of one product (from the replies).
    var usersWithTwoOrders: Int
    var auditClean: Bool
    /// A sale with holds (`--hold`): holds made, paid, expired and resold.
    var holds: HoldFigures?

    /// `released`: request ids whose order was released (their buyers may hold a second, live order).
    init(result: BuyerSwarm.Result, configuration: Configuration, products: [ProductLine], edges: [EdgeLine],
         purchasedRepliesWithoutOrder: Int, auditClean: Bool, holds: HoldFigures? = nil, released: Set<UInt64> = []) {
        self.configuration = configuration
        self.wallSeconds = result.wallSeconds
        self.attemptsPerSecond = result.attemptsPerSecond
        self.attempts = result.attempts
        self.outcomes = Outcomes(
            purchased: result.purchased, soldOut: result.soldOut, shed: result.shed,
            alreadyPurchased: result.alreadyPurchased, errors: result.errors, retries: result.retries,
            errorsByCode: result.errorsByCode)
        self.latency = Latency(
            p50Ms: result.latencyMs(percentile: 50), p90Ms: result.latencyMs(percentile: 90),
            p99Ms: result.latencyMs(percentile: 99), p999Ms: result.latencyMs(percentile: 99.9),
            maxMs: Double(result.latency.max) / 1000)
        self.products = products
        self.edges = edges
        self.purchasedRepliesWithoutOrder = purchasedRepliesWithoutOrder
        var seen = Set<String>()
        var doubles = 0
        for purchase in result.purchases where !released.contains(purchase.requestID)
            && !seen.insert("\(purchase.product)/\(purchase.userID)").inserted { doubles += 1 }
        self.usersWithTwoOrders = doubles
        self.holds = holds
        let holdsClean = holds.map { $0.auditClean && $0.oversold == 0 && $0.doubleEnded == 0 } ?? true
        self.auditClean = auditClean && purchasedRepliesWithoutOrder == 0 && doubles == 0 && holdsClean
            && products.allSatisfy { $0.orders <= $0.totalStock && Int($0.orders + $0.released) == $0.purchasedReplies }
    }

    func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    func text() -> String {
        func n(_ value: some BinaryInteger) -> String { Int(value).formatted() }
        func ms(_ value: Double) -> String { String(format: "%.2f ms", value) }
        var lines: [String] = []
        lines.append("")
        lines.append("Flash sale report")
        lines.append("=================")
        lines.append("setup       \(configuration.products) products x \(n(configuration.stock)) units, \(n(configuration.attempts)) attempts by \(n(configuration.users)) buyers")
        lines.append("            \(n(configuration.connections)) connections x \(configuration.depth) in flight over \(configuration.edges) edges, keep \(configuration.keep)\(configuration.hot.isEmpty ? "" : ", hot: \(configuration.hot.joined(separator: ","))")")
        lines.append(String(format: "wall time   %.2f s", wallSeconds))
        lines.append("throughput  \(n(Int(attemptsPerSecond))) attempts/s")
        lines.append("")
        lines.append("outcomes    PURCHASED          \(n(outcomes.purchased))")
        lines.append("            SOLD_OUT           \(n(outcomes.soldOut))")
        lines.append("            SHED               \(n(outcomes.shed))")
        lines.append("            ALREADY_PURCHASED  \(n(outcomes.alreadyPurchased))")
        lines.append("            errors             \(n(outcomes.errors))\(outcomes.errorsByCode.isEmpty ? "" : "  \(outcomes.errorsByCode.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))")")
        lines.append("            retries (in doubt) \(n(outcomes.retries))")
        lines.append("")
        lines.append("latency     p50 \(ms(latency.p50Ms))   p90 \(ms(latency.p90Ms))   p99 \(ms(latency.p99Ms))   p99.9 \(ms(latency.p999Ms))   max \(ms(latency.maxMs))")
        lines.append("")
        lines.append("product  database  stock      orders     remaining  PURCHASED replies  audit")
        for product in products {
            lines.append(
                "\(product.product.padding(toLength: 8, withPad: " ", startingAt: 0)) \(product.database.padding(toLength: 9, withPad: " ", startingAt: 0)) \(n(product.totalStock).padding(toLength: 10, withPad: " ", startingAt: 0)) \(n(product.orders).padding(toLength: 10, withPad: " ", startingAt: 0)) \(n(product.remaining).padding(toLength: 10, withPad: " ", startingAt: 0)) \(n(product.purchasedReplies).padding(toLength: 18, withPad: " ", startingAt: 0)) \(product.auditClean ? "clean" : "FAILED")")
        }
        lines.append("")
        lines.append("edge  address               attempts     shed         sold out     forwarded  purchased  errors")
        for edge in edges {
            lines.append(
                "\(String(edge.edgeID).padding(toLength: 5, withPad: " ", startingAt: 0)) \(edge.address.padding(toLength: 21, withPad: " ", startingAt: 0)) \(n(edge.attempts).padding(toLength: 12, withPad: " ", startingAt: 0)) \(n(edge.shed).padding(toLength: 12, withPad: " ", startingAt: 0)) \(n(edge.soldOut).padding(toLength: 12, withPad: " ", startingAt: 0)) \(n(edge.forwarded).padding(toLength: 10, withPad: " ", startingAt: 0)) \(n(edge.purchased).padding(toLength: 10, withPad: " ", startingAt: 0)) \(n(edge.errors))")
        }
        lines.append("")
        lines.append("checks      PURCHASED replies without their order: \(purchasedRepliesWithoutOrder)")
        lines.append("            buyers with two orders of one product: \(usersWithTwoOrders)")
        if let holds {
            lines.append("")
            lines.append("holds       \(holds.holdSeconds) s to pay, \(Int((holds.payShare * 100).rounded())) % of winners pay, \(holds.waves) waves of late buyers")
            lines.append("            made \(n(holds.holdsMade)), paid \(n(holds.paid)) of \(n(holds.stock)), expired \(n(holds.expired)), resold \(n(holds.resold)), still held \(n(holds.stillHeld))")
            lines.append("            late payments refused (refunds) \(holds.refusedPayments); oversold \(holds.oversold); ended twice \(holds.doubleEnded)")
            lines.append("            expiry to resale p50 \(ms(holds.p50ResaleMs))   p99 \(ms(holds.p99ResaleMs))   max \(ms(holds.maxResaleMs))")
        }
        lines.append("audit       \(auditClean ? "clean: stock never negative, orders (live holds + paid) + released = PURCHASED replies, remaining + live holds + paid = stock" : "FAILED")")
        if let holds { lines.append(holds.resultLine) }
        return lines.joined(separator: "\n")
    }
}
