import Metrics
import Prometheus
import Synchronization

/// Prometheus metrics for a service process: swift-metrics bootstrapped once onto a Prometheus registry, served by
/// `MetricsServer` at `GET /metrics`.
///
/// Hot paths keep their own atomics (the edge's outcome counters, the quota ledger); what they already count is
/// mirrored into swift-metrics when Prometheus scrapes (`ScrapeHooks`, `CounterMirror`), so an attempt pays for no
/// second counter. Per-batch figures (batch size, commit latency) are recorded where they happen, outside any lock
/// of the purchase path.
public enum ServiceMetrics {
    /// The registry every metric of this process lands in. The first use bootstraps swift-metrics onto it.
    public static var registry: PrometheusCollectorRegistry { bootstrapped.registry }

    /// Bootstraps swift-metrics (once per process; later calls return the same registry).
    @discardableResult
    public static func bootstrap() -> PrometheusCollectorRegistry { registry }

    private static let bootstrapped: (registry: PrometheusCollectorRegistry, factory: PrometheusMetricsFactory) = {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = durationBuckets
        factory.valueHistogramBuckets[MetricName.inventoryBatchSize] = batchSizeBuckets
        MetricsSystem.bootstrap(HelpfulMetricsFactory(prometheus: factory))
        return (registry, factory)
    }()

    /// Commit latency and other durations: 0.5 ms to 5 s.
    public static let durationBuckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .milliseconds(2500), .seconds(5),
    ]

    /// Purchases per procedure call: 1 to 10,000.
    public static let batchSizeBuckets: [Double] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]
}

/// The names of the platform's metrics (the README's table lists them with their labels).
public enum MetricName {
    // Every service.
    public static let connections = "flashsale_rpc_connections"
    public static let zooKeeperConnected = "flashsale_zookeeper_connected"
    public static let zooKeeperSessionState = "flashsale_zookeeper_session_state"

    // Edge.
    public static let edgeAttempts = "flashsale_edge_attempts_total"
    public static let edgeOutcomes = "flashsale_edge_outcomes_total"
    public static let edgeForwarded = "flashsale_edge_forwarded_total"
    public static let edgeInDoubt = "flashsale_edge_in_doubt"
    public static let edgeKeepPerMillion = "flashsale_edge_keep_per_million"
    public static let edgeQuotaLeft = "flashsale_edge_quota_left"
    public static let edgeQuotaGranted = "flashsale_edge_quota_granted"
    public static let edgeQuotaUsed = "flashsale_edge_quota_used"

    // Inventory.
    public static let inventoryPurchases = "flashsale_inventory_purchases_total"
    public static let inventoryBatches = "flashsale_inventory_batches_total"
    public static let inventoryBatchSize = "flashsale_inventory_batch_size"
    public static let inventoryCommitSeconds = "flashsale_inventory_commit_seconds"
    public static let inventoryQueueDepth = "flashsale_inventory_queue_depth"
    public static let inventoryAudits = "flashsale_inventory_audits_total"
    public static let inventoryAuditFailedProducts = "flashsale_inventory_audit_failed_products"

    // Quota service.
    public static let quotaLeader = "flashsale_quota_leader"
    public static let quotaGrantMore = "flashsale_quota_grant_more_total"
}

/// Work done just before each scrape: read atomics and counters the service keeps anyway and set the gauges and
/// mirrored counters from them. Hooks run on the metrics server's event loop: quick reads only, no I/O.
public final class ScrapeHooks: Sendable {
    private let hooks = Mutex<[@Sendable () -> Void]>([])

    public init() {}

    public func add(_ hook: @escaping @Sendable () -> Void) {
        hooks.withLock { $0.append(hook) }
    }

    public func run() {
        for hook in hooks.withLock({ $0 }) { hook() }
    }
}

/// A swift-metrics counter that follows a total counted elsewhere (an atomic of the hot path): each `update` adds
/// what the total grew by since the last one.
public final class CounterMirror: Sendable {
    private let counter: CoreMetrics.Counter
    private let last = Mutex<UInt64>(0)

    public init(label: String, dimensions: [(String, String)] = []) {
        self.counter = CoreMetrics.Counter(label: label, dimensions: dimensions)
    }

    public func update(total: UInt64) {
        let delta = last.withLock { last -> UInt64 in
            guard total > last else { return 0 }
            defer { last = total }
            return total - last
        }
        if delta > 0 { counter.increment(by: Int64(clamping: delta)) }
    }
}

/// A Prometheus "state set": one gauge per state, 1 for the current state and 0 for the others.
public final class StateSetGauge: Sendable {
    private let gauges: [(state: String, gauge: CoreMetrics.Gauge)]

    public init(label: String, states: [String], dimensions: [(String, String)] = []) {
        self.gauges = states.map { state in (state, CoreMetrics.Gauge(label: label, dimensions: dimensions + [("state", state)])) }
    }

    public func set(_ current: String) {
        for (state, gauge) in gauges { gauge.record(state == current ? 1 : 0) }
    }
}
