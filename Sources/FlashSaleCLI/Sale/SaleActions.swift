import Cluster
import FlashSaleClient
import Proto
import SalePage

/// `flashsale sale --raise-at SECONDS:PRODUCT:UNITS`: an operator's stock raise while the buyers buy, SECONDS after
/// they start, through the quota service as `flashsale stock raise` does (one change id, retried while UNAVAILABLE, so
/// it applies once). Each is marked on the page's time axis when it is answered.
struct ScheduledRaise: Sendable, Equatable {
    var seconds: Double
    var product: String
    var units: Int64

    /// "2.5:p1:100"; nil when it does not parse.
    init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3, let seconds = Double(parts[0]), seconds >= 0, seconds <= 3_600,
              let units = Int64(parts[2]), units > 0, !parts[1].isEmpty
        else { return nil }
        (self.seconds, self.product, self.units) = (seconds, parts[1], units)
    }

    /// Runs every raise at its time; returns once all were answered (a failed one is marked and said, not thrown:
    /// the sale and its audit go on).
    static func run(_ raises: [ScheduledRaise], quota: QuotaClient, sampler: SaleSampler?) async {
        await withTaskGroup(of: Void.self) { group in
            for raise in raises {
                group.addTask {
                    try? await Task.sleep(for: .milliseconds(Int64(raise.seconds * 1000)))
                    let changeId = StockChangeId.make()
                    let what = "raise \(raise.product) by \(raise.units.grouped)"
                    do {
                        // The change id makes a repeat a no-op, so an outcome in doubt is asked again too.
                        _ = try await retryingUnavailable(idempotent: true) {
                            try await quota.raiseStock(productId: raise.product, by: raise.units, changeId: changeId)
                        }
                        sampler?.mark(.action, what)
                        standardError("\(what) (change id \(changeId))")
                    } catch {
                        sampler?.mark(.action, "\(what) failed")
                        standardError("\(what) failed: \(error)")
                    }
                }
            }
        }
    }
}
