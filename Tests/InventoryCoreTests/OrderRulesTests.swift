import Proto
import Testing
import Wire

@testable import InventoryCore

/// How `order_action`'s answer becomes a reply, what an order request may name, and when the expiry runs: pure.
@Suite struct OrderRulesTests {
    typealias Row = OrderAction.Row

    static func row(_ outcome: Int64, _ state: String, reason: String? = nil) -> Row {
        Row(outcome: outcome, requestId: -5, orderId: 42, userId: 7, state: state, payByUnixMs: 1_000,
            endedUnixMs: state == "held" ? nil : 2_000, reason: reason)
    }

    @Test func aConfirmedHoldIsPaidAndAConfirmOfAPaidOneIsAReplay() throws {
        let now = OrderAction.confirm.reply(product: "tv", row: Self.row(1, "paid"))
        let order = try now.result.get()
        #expect(order.state == .paid && !order.replayed && order.orderId == 42 && order.endedUnixMs == 2_000)
        #expect(order.requestId == UInt64(bitPattern: -5), "request ids travel as their bit pattern")
        #expect(!now.releasedNow)
        #expect(try OrderAction.confirm.reply(product: "tv", row: Self.row(2, "paid")).result.get().replayed)
    }

    @Test func aConfirmAfterReleaseIsRefusedWithTheReason() {
        for (outcome, reason, words, released) in [(Int64(3), "cancelled", "cancelled", false), (3, "expired", "expired", false),
                                                    (4, "expired", "pay_by has passed", true)] {
            let reply = OrderAction.confirm.reply(product: "tv", row: Self.row(outcome, "released", reason: reason))
            guard case .failure(let error) = reply.result else {
                Issue.record("a released hold was answered \(reply.result)")
                continue
            }
            #expect(error.code == .failedPrecondition && error.message.contains(words) && error.message.contains("refund"))
            #expect(reply.releasedNow == released, "outcome 4 released the unit in this very call")
        }
    }

    @Test func aCancelReleasesOnceAndAPaidOrderCannotBeCancelled() throws {
        let now = OrderAction.cancel.reply(product: "tv", row: Self.row(1, "released", reason: "cancelled"))
        #expect(try now.result.get().reason == .cancelled && now.releasedNow)
        let again = OrderAction.cancel.reply(product: "tv", row: Self.row(2, "released", reason: "expired"))
        #expect(try again.result.get().replayed && !again.releasedNow)
        let paid = OrderAction.cancel.reply(product: "tv", row: Self.row(3, "paid"))
        #expect(RPCError.wrapping(paid.result.error!).code == .failedPrecondition)
    }

    @Test func noRowIsNotFoundAndNonsenseIsAnInternalError() {
        #expect(OrderAction.read.reply(product: "tv", row: nil).result.error?.code == .notFound)
        for row in [Self.row(1, "lost"), Self.row(1, "released"), Self.row(1, "paid", reason: "expired"), Self.row(9, "held"),
                    Self.row(3, "held")] {
            // `read` knows only outcome 1; an unknown state, or a reason that does not fit the state, is never relayed.
            let reply = OrderAction.read.reply(product: "tv", row: row)
            #expect(reply.result.error?.code == .internal, "\(row)")
        }
    }

    @Test func anOrderRequestNamesOneNonZeroKeyOfAValidProduct() throws {
        #expect(try Validation.order(OrderRequest(productId: "tv", key: .requestId(UInt64.max))) == .request(-1))
        #expect(try Validation.order(OrderRequest(productId: "tv", key: .orderId(9))) == .order(9))
        let cases: [(OrderRequest, String)] = [
            (OrderRequest(productId: "tv"), "set request_id"), (OrderRequest(productId: "tv", key: .requestId(0)), "request_id"),
            (OrderRequest(productId: "tv", key: .orderId(0)), "order_id"),
            (OrderRequest(productId: "tv", key: .orderId(UInt64(Int64.max) + 1)), "out of range"),
            (OrderRequest(productId: "", key: .requestId(1)), "product_id"),
        ]
        for (request, words) in cases {
            #expect(throws: RPCError.self) { try Validation.order(request) }
            do { _ = try Validation.order(request) } catch let error as RPCError {
                #expect(error.code == .invalidArgument && error.message.contains(words), "\(error)")
            }
        }
        #expect(throws: RPCError.self) { try Validation.holdSeconds(86_401) }
        try Validation.holdSeconds(86_400)
    }

    @Test func theExpiryRunsAgainAtOnceAfterAFullBatchAndBacksOffAfterFailures() {
        var schedule = HoldExpirySchedule(
            interval: .milliseconds(100), batchSize: 10, backoff: Backoff(initial: .milliseconds(200), max: .seconds(2), jitter: 0))
        #expect(schedule.afterBatch(released: 10) == .zero)
        #expect(schedule.afterBatch(released: 3) == .milliseconds(100))
        func ms(_ duration: Duration) -> Int {
            Int((Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15).rounded())
        }
        #expect(ms(schedule.afterFailure()) == 200)
        #expect(ms(schedule.afterFailure()) == 400)
        _ = schedule.afterBatch(released: 0)
        #expect(ms(schedule.afterFailure()) == 200, "a success starts the backoff over")
    }
}

extension Result {
    fileprivate var error: RPCError? {
        if case .failure(let error) = self { return RPCError.wrapping(error) }
        return nil
    }
}
