import Cluster
import FlashSaleClient
import Foundation
import Proto
import Testing
import TestSupport

extension OperatingTests {
    /// `flashsale product create --hold` and `flashsale order show|confirm|cancel` as an operator (or a payment
    /// desk) runs them: the real executable, what it prints and how it exits.
    @Suite(.serialized, .timeLimit(.minutes(3)))
    struct OrderCommandTests {
        @Test func ordersAreShownConfirmedAndCancelledByTheTool() async throws {
            try await OperatedPlatform.with(edges: 1) { ops in
                let created = try await ops.flashsale(["product", "create", "p1", "--stock", "10", "--hold", "120"])
                #expect(created.status == 0, "\(created.output)")
                let tooLong = try await ops.flashsale(["product", "create", "p2", "--stock", "10", "--hold", "90000"])
                #expect(tooLong.status == 64 && tooLong.output.contains("--hold"), "\(tooLong.output)")
                #expect(try await ops.inventory.getStock(productId: "p1").holdSeconds == 120)

                let ids = TestIds.make(2)
                var orders: [UInt64] = []
                for (user, id) in ids.enumerated() {
                    let bought = try await ops.inventory.purchase(PurchaseRequest(requestId: id, userId: UInt64(user + 1), productId: "p1"))
                    #expect(bought.outcome == .purchased)
                    orders.append(bought.orderId)
                }
                let show = try await Self.order(ops, ["show", "p1", "--request-id", "\(ids[0])"])
                #expect(show.status == 0 && show.output.contains("state       held") && show.output.contains("order       \(orders[0])"), "\(show.output)")
                let paid = try await Self.order(ops, ["confirm", "p1", "--order-id", "\(orders[0])"])
                #expect(paid.status == 0 && paid.output.contains("state       paid"), "\(paid.output)")
                let again = try await Self.order(ops, ["confirm", "p1", "--request-id", "\(ids[0])"])
                #expect(again.status == 0 && again.output.contains("paid (already)"), "\(again.output)")
                let cancelPaid = try await Self.order(ops, ["cancel", "p1", "--request-id", "\(ids[0])"])
                #expect(cancelPaid.status == 1 && cancelPaid.output.contains("paid"), "\(cancelPaid.output)")
                let cancelled = try await Self.order(ops, ["cancel", "p1", "--request-id", "\(ids[1])"])
                #expect(cancelled.status == 0 && cancelled.output.contains("released (cancelled)"), "\(cancelled.output)")
                let late = try await Self.order(ops, ["confirm", "p1", "--request-id", "\(ids[1])"])
                #expect(late.status == 1 && late.output.contains("refund"), "\(late.output)")

                // Mistakes: no key, both keys, an unknown order, an unknown product, no or a wrong service token.
                let none = try await Self.order(ops, ["show", "p1"])
                #expect(none.status == 64 && none.output.contains("--request-id or --order-id"), "\(none.output)")
                let both = try await Self.order(ops, ["show", "p1", "--request-id", "1", "--order-id", "1"])
                #expect(both.status == 64, "\(both.output)")
                let unknown = try await Self.order(ops, ["show", "p1", "--order-id", "\(orders[1] + 1_000_000)"])
                #expect(unknown.status == 4 && unknown.output.contains("no such order"), "\(unknown.output)")
                let noProduct = try await Self.order(ops, ["show", "nope", "--order-id", "1"])
                #expect(noProduct.status == 4, "\(noProduct.output)")
                let anonymous = try await Self.order(ops, ["show", "p1", "--order-id", "\(orders[0])"], token: "")
                #expect(anonymous.status == 5 && anonymous.output.contains("FLASHSALE_SERVICE_TOKEN"), "\(anonymous.output)")
                let wrong = try await Self.order(ops, ["confirm", "p1", "--order-id", "\(orders[1])"], token: "not-the-token")
                #expect(wrong.status == 5, "\(wrong.output)")
                let audit = try await ops.inventory.audit(productId: "p1")
                #expect(audit.clean && audit.products.first?.paid == 1 && audit.products.first?.released == 1)
            }
        }

        /// `flashsale order ARGS` with the platform's service token (or `token`).
        static func order(_ ops: OperatedPlatform, _ arguments: [String], token: String? = nil) async throws -> CommandResult {
            try await runCommand(
                try RepoPaths.executable("flashsale").path,
                ["order"] + arguments + ["--inventory", ops.platform.inventory.address],
                environment: [
                    "FLASHSALE_SERVICE_TOKEN": token ?? ops.platform.configuration.serviceToken, "FLASHSALE_SERVICE_TOKEN_FILE": "",
                    "FLASHSALE_INVENTORY": "",
                ],
                timeout: .seconds(60))
        }
    }
}
