import Logging
import NIOConcurrencyHelpers
import NIOCore
import Proto

/// Forwarded purchases whose answer never came (timeout, dropped connection): the order may or may not have
/// committed. Each keeps its quota unit until the inventory says which (a lookup that buys nothing): no order,
/// the unit goes back on the counter; an order, it stays used. So a fault strands no stock on a live edge.
final class InDoubtResolver: Sendable {
    private let ledger: QuotaLedger
    private let forwarder: any PurchaseForwarder
    private let logger: Logger
    private let pending = NIOLockedValueBox<Set<UInt64>>([])
    /// Long enough for a purchase still queued or committing at the inventory to settle before the lookup.
    private let settleDelay: Duration

    init(ledger: QuotaLedger, forwarder: any PurchaseForwarder, settleDelay: Duration = .seconds(1), logger: Logger) {
        self.settleDelay = settleDelay
        self.ledger = ledger
        self.forwarder = forwarder
        self.logger = logger
    }

    var pendingCount: Int { self.pending.withLockedValue { $0.count } }

    /// Takes an in-doubt attempt (and its unit) over for a retry of the same request id. False if none is held.
    func claim(_ requestID: UInt64) -> Bool {
        self.pending.withLockedValue { $0.remove(requestID) != nil }
    }

    func resolveLater(_ request: PurchaseRequest) {
        let isNew = self.pending.withLockedValue { $0.insert(request.requestId).inserted }
        guard isNew else { return }
        var lookup = request
        lookup.lookupOnly = true
        Task {
            var delay = self.settleDelay
            while self.pending.withLockedValue({ $0.contains(request.requestId) }) {
                try? await Task.sleep(for: delay)
                do {
                    let response = try await self.forwarder.forward(lookup, timeout: .seconds(5)).get()
                    // Resolved here unless a retry claimed the attempt meanwhile (then the retry owns the unit). The
                    // unit stays used only if the order is this edge's own: a retry through another edge may have
                    // made it, and then this attempt bought nothing.
                    let madeHere = response.outcome == .purchased && response.edgeId == request.edgeId
                    if self.claim(request.requestId), !madeHere {
                        self.ledger.giveBack(request.productId)
                    }
                    return
                } catch {
                    self.logger.debug("in-doubt purchase not resolved yet", metadata: ["request": "\(request.requestId)"])
                    delay = min(delay * 2, .seconds(10))
                }
            }
        }
    }
}
