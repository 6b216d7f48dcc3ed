import Logging
import Wire

/// When the expiry runs next, pure: at once after a full batch (more holds are due), after `interval` otherwise, and
/// after a failure when `backoff` says.
struct HoldExpirySchedule: Sendable {
    let interval: Duration
    let batchSize: Int
    private let backoff: Backoff
    private var failures: Backoff.Iterator

    init(interval: Duration = .milliseconds(100), batchSize: Int = 500,
         backoff: Backoff = Backoff(initial: .milliseconds(200), max: .seconds(2))) {
        self.interval = interval
        self.batchSize = batchSize
        self.backoff = backoff
        self.failures = backoff.makeIterator()
    }

    mutating func afterBatch(released: Int64) -> Duration {
        failures = backoff.makeIterator()
        return released >= Int64(batchSize) ? .zero : interval
    }

    mutating func afterFailure() -> Duration { failures.next() }
}

/// Expires one database's due holds, a batch (one `expire_holds` call, one transaction) at a time, until cancelled.
/// Every inventory instance runs one per database: the procedure skips holds another transaction has locked, so
/// instances share the work without doing any twice. A product that got units back forgets it was sold out here;
/// the quota service sees its sellable stock rise (`Product.released`) and grants the units to the edges again.
struct HoldExpiry: Sendable {
    let database: ProductDatabase
    let pool: PurchasePool
    let logger: Logger
    var schedule = HoldExpirySchedule()

    func run() async {
        var schedule = self.schedule
        while !Task.isCancelled {
            var pause = schedule.interval
            if database.isReady {
                do {
                    let released = try await database.expireHolds(limit: schedule.batchSize)
                    var units: Int64 = 0
                    for (product, count) in released {
                        pool.stockChanged(product: product)
                        units += count
                    }
                    if units > 0 {
                        logger.info("holds expired", metadata: ["database": "\(database.role.rawValue)", "units": "\(units)"])
                    }
                    pause = schedule.afterBatch(released: units)
                } catch {
                    logger.warning("hold expiry failed", metadata: ["database": "\(database.role.rawValue)", "error": "\(error)"])
                    pause = schedule.afterFailure()
                }
            }
            if pause > .zero { try? await Task.sleep(for: pause) }
        }
    }
}
