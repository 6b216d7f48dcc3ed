import CoreMetrics
import Prometheus

/// swift-metrics onto the Prometheus registry, like `PrometheusMetricsFactory`, but every metric gets its `# HELP`
/// line from `MetricHelp` (Prometheus' own linter, `promtool check metrics`, refuses metrics without one; the tests
/// run it on every service's output). Removal is the Prometheus factory's.
struct HelpfulMetricsFactory: MetricsFactory {
    let prometheus: PrometheusMetricsFactory
    var registry: PrometheusCollectorRegistry { prometheus.registry }

    private func descriptor(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: label, unitName: "", helpText: MetricHelp.text[label] ?? "")
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else { return registry.makeGauge(descriptor: descriptor(label), labels: dimensions) }
        let buckets = prometheus.valueHistogramBuckets[label] ?? prometheus.defaultValueHistogramBuckets
        return registry.makeValueHistogram(descriptor: descriptor(label), labels: dimensions, buckets: buckets)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: descriptor(label), labels: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        let buckets = prometheus.durationHistogramBuckets[label] ?? prometheus.defaultDurationHistogramBuckets
        return registry.makeDurationHistogram(descriptor: descriptor(label), labels: dimensions, buckets: buckets)
    }

    func destroyCounter(_ handler: any CounterHandler) { prometheus.destroyCounter(handler) }
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) { prometheus.destroyFloatingPointCounter(handler) }
    func destroyRecorder(_ handler: any RecorderHandler) { prometheus.destroyRecorder(handler) }
    func destroyMeter(_ handler: any MeterHandler) { prometheus.destroyMeter(handler) }
    func destroyTimer(_ handler: any TimerHandler) { prometheus.destroyTimer(handler) }
}

/// The `# HELP` text of every metric the platform exports (the README's metrics table says the same, with labels).
public enum MetricHelp {
    public static let text: [String: String] = [
        MetricName.connections: "Open client connections of the service's RPC port.",
        MetricName.zooKeeperConnected: "1 while the service's ZooKeeper session is connected.",
        MetricName.zooKeeperSessionState: "The ZooKeeper session's state: 1 for the current state, 0 for the others.",
        MetricName.edgeAttempts: "Purchase attempts the edge received.",
        MetricName.edgeOutcomes: "Purchase attempts by the outcome the edge answered (shed: the lottery).",
        MetricName.edgeForwarded: "Attempts the edge forwarded to the inventory.",
        MetricName.edgeInDoubt: "Forwarded purchases whose outcome the edge is still resolving (their units held).",
        MetricName.edgeKeepPerMillion: "The lottery's ratio as the edge applies it: attempts kept per million.",
        MetricName.edgeQuotaLeft: "Units of the product this edge holds and can still sell.",
        MetricName.edgeQuotaGranted: "Units of the product granted to this edge in total.",
        MetricName.edgeQuotaUsed: "Units of the product this edge has used (sold or in flight).",
        MetricName.inventoryPurchases: "Purchases the inventory settled, by database and outcome.",
        MetricName.inventoryBatches: "Purchase batches (one procedure call each), by database and result.",
        MetricName.inventoryBatchSize: "Purchases per procedure call.",
        MetricName.inventoryCommitSeconds: "Duration of a batch's procedure call, commit included.",
        MetricName.inventoryQueueDepth: "Purchases queued for a batch.",
        MetricName.inventoryAudits: "Audits the inventory served, by result.",
        MetricName.inventoryAuditFailedProducts: "Products whose last audit failed.",
        MetricName.quotaLeader: "1 on the quota service that holds the leader lock.",
        MetricName.quotaGrantMore: "quota.GrantMore calls this quota service answered (edges that ran dry asking for more).",
    ]
}
