import Metrics
import ServiceMetrics

/// A pool's Prometheus metrics (swift-metrics handles, made once): outcomes of bought purchases, batches, batch
/// sizes and the procedure call's latency (commit included), labelled with the database (`main` or `hot`).
struct PoolMetrics: Sendable {
    let purchased: Counter
    let replayed: Counter
    let alreadyPurchased: Counter
    let soldOut: Counter
    let requeued: Counter
    let failed: Counter
    let batches: Counter
    let failedBatches: Counter
    let batchSize: Recorder
    let commit: Timer

    init(database: String) {
        func outcome(_ name: String) -> Counter {
            Counter(label: MetricName.inventoryPurchases, dimensions: [("database", database), ("outcome", name)])
        }
        purchased = outcome("purchased")
        replayed = outcome("replayed")
        alreadyPurchased = outcome("already_purchased")
        soldOut = outcome("sold_out")
        requeued = outcome("requeued")
        failed = outcome("failed")
        batches = Counter(label: MetricName.inventoryBatches, dimensions: [("database", database), ("result", "ok")])
        failedBatches = Counter(label: MetricName.inventoryBatches, dimensions: [("database", database), ("result", "failed")])
        batchSize = Recorder(label: MetricName.inventoryBatchSize, dimensions: [("database", database)], aggregate: true)
        commit = Timer(label: MetricName.inventoryCommitSeconds, dimensions: [("database", database)])
    }

    /// The procedure call that began at `started` has ended (committed or not).
    func recordCommit(since started: ContinuousClock.Instant) {
        commit.recordNanoseconds((ContinuousClock.now - started).nanoseconds)
    }

    func record(purchased: Int, replayed: Int, alreadyPurchased: Int, soldOut: Int, requeued: Int) {
        batches.increment()
        if purchased > 0 { self.purchased.increment(by: purchased) }
        if replayed > 0 { self.replayed.increment(by: replayed) }
        if alreadyPurchased > 0 { self.alreadyPurchased.increment(by: alreadyPurchased) }
        if soldOut > 0 { self.soldOut.increment(by: soldOut) }
        if requeued > 0 { self.requeued.increment(by: requeued) }
    }
}

extension Duration {
    /// The whole duration in nanoseconds (saturating).
    fileprivate var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds.multipliedReportingOverflow(by: 1_000_000_000).overflow
            ? .max : seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
