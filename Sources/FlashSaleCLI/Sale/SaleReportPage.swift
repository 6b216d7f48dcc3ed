import Foundation
import SalePage

extension SaleReport {
    /// The report as a page (`flashsale sale --html`): the timeline's charts, then the text report's tables and audit.
    func page(timeline: Timeline) -> ReportPage {
        func n(_ value: some BinaryInteger) -> String { Int(value).formatted() }
        func ms(_ value: Double) -> String { String(format: "%.2f ms", value) }
        let setup = configuration
        var summary = [
            "\(setup.products) products x \(n(setup.stock)) units, \(n(setup.attempts)) attempts by \(n(setup.users)) buyers",
            "\(n(setup.connections)) connections x \(setup.depth) in flight over \(setup.edges) edges, keep \(setup.keep)"
                + (setup.hot.isEmpty ? "" : ", hot: \(setup.hot.joined(separator: ","))"),
            String(format: "wall time %.2f s, %@ attempts/s", wallSeconds, n(Int(attemptsPerSecond))),
        ]
        if let holds {
            summary.append("holds: \(holds.holdSeconds) s to pay, \(Int((holds.payShare * 100).rounded())) % of winners pay, \(holds.waves) waves of late buyers")
        }
        var tables: [ReportPage.Table] = [
            .init(
                title: "Outcomes (the buyers' replies)", header: ["outcome", "attempts"],
                rows: [
                    ["PURCHASED", n(outcomes.purchased)], ["SOLD_OUT", n(outcomes.soldOut)], ["SHED", n(outcomes.shed)],
                    ["ALREADY_PURCHASED", n(outcomes.alreadyPurchased)], ["errors", n(outcomes.errors)],
                    ["retries (in doubt)", n(outcomes.retries)],
                ] + outcomes.errorsByCode.sorted { $0.key < $1.key }.map { ["error \($0.key)", n($0.value)] }),
            .init(
                title: "Latency", header: ["p50", "p90", "p99", "p99.9", "max"],
                rows: [[ms(latency.p50Ms), ms(latency.p90Ms), ms(latency.p99Ms), ms(latency.p999Ms), ms(latency.maxMs)]]),
            .init(
                title: "Products (the database)",
                header: ["product", "database", "stock", "orders", "remaining", "PURCHASED replies", "released", "audit"],
                rows: products.map {
                    [$0.product, $0.database, n($0.totalStock), n($0.orders), n($0.remaining), n($0.purchasedReplies),
                     n($0.released), $0.auditClean ? "clean" : "FAILED"]
                }),
            .init(
                title: "Edges", header: ["edge", "address", "attempts", "shed", "sold out", "forwarded", "purchased", "errors"],
                rows: edges.map {
                    [String($0.edgeID), $0.address, n($0.attempts), n($0.shed), n($0.soldOut), n($0.forwarded), n($0.purchased),
                     n($0.errors)]
                }),
        ]
        if let holds {
            tables.append(.init(
                title: "Holds", header: ["made", "paid", "stock", "expired", "resold", "still held", "refused payments", "oversold", "ended twice"],
                rows: [[n(holds.holdsMade), n(holds.paid), n(holds.stock), n(holds.expired), n(holds.resold), n(holds.stillHeld),
                        n(holds.refusedPayments), n(holds.oversold), n(holds.doubleEnded)]]))
        }
        let audit = [
            "PURCHASED replies without their order: \(purchasedRepliesWithoutOrder)",
            "buyers with two orders of one product: \(usersWithTwoOrders)",
            auditClean
                ? "clean: stock never negative, orders (live holds + paid) + released = PURCHASED replies, remaining + live holds + paid = stock"
                : "FAILED",
        ]
        return ReportPage(
            title: "Flash sale report", summary: summary, timeline: timeline, tables: tables, auditClean: auditClean, audit: audit)
    }
}
