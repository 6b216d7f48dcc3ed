import Metrics
import ZooKeeperClient
import ServiceMetrics
import Synchronization
import Wire

/// The edge's Prometheus metrics, read at scrape time from what the purchase path counts anyway (its atomics and the
/// quota ledger): an attempt pays for no metric of its own.
///
/// - `flashsale_edge_attempts_total`, `flashsale_edge_outcomes_total{outcome=purchased|sold_out|shed|already_purchased|error}`
///   (shed is the lottery's count), `flashsale_edge_forwarded_total`, `flashsale_edge_in_doubt`,
///   `flashsale_edge_keep_per_million`
/// - per product: `flashsale_edge_quota_left`, `flashsale_edge_quota_granted`, `flashsale_edge_quota_used`
/// - `flashsale_rpc_connections{service="edge"}`, `flashsale_zookeeper_connected{service="edge"}`,
///   `flashsale_zookeeper_session_state{service="edge",state=...}`
public enum EdgeMetrics {
    public static func install(
        into hooks: ScrapeHooks, purchases: PurchasePath, ledger: QuotaLedger, server: RPCServer,
        zooKeeperState: @escaping @Sendable () -> ZooKeeperSessionState?
    ) {
        let attempts = CounterMirror(label: MetricName.edgeAttempts)
        let outcome = { (name: String) in CounterMirror(label: MetricName.edgeOutcomes, dimensions: [("outcome", name)]) }
        let purchased = outcome("purchased"), soldOut = outcome("sold_out"), shed = outcome("shed")
        let alreadyPurchased = outcome("already_purchased"), errors = outcome("error")
        let forwarded = CounterMirror(label: MetricName.edgeForwarded)
        let inDoubt = Gauge(label: MetricName.edgeInDoubt)
        let keep = Gauge(label: MetricName.edgeKeepPerMillion)
        let connections = Gauge(label: MetricName.connections, dimensions: [("service", "edge")])
        let zooKeeper = ZooKeeperMetrics(service: "edge")
        let products = ProductGauges()

        hooks.add {
            let stats = purchases.stats()
            attempts.update(total: stats.attempts)
            purchased.update(total: stats.purchased)
            soldOut.update(total: stats.soldOut)
            shed.update(total: stats.shed)
            alreadyPurchased.update(total: stats.alreadyPurchased)
            errors.update(total: stats.errors)
            forwarded.update(total: stats.forwarded)
            inDoubt.record(Int64(stats.inDoubt))
            keep.record(Int64(stats.keepPerMillion))
            connections.record(server.connectionCount)
            zooKeeper.record(zooKeeperState()?.name)
            for usage in ledger.usage() {
                let gauges = products.gauges(for: usage.product)
                gauges.left.record(usage.available)
                gauges.granted.record(usage.granted)
                gauges.used.record(usage.used)
            }
        }
    }

    /// One set of gauges per product, made when the product first shows up in the ledger.
    final class ProductGauges: Sendable {
        struct Set: Sendable {
            let left: Gauge
            let granted: Gauge
            let used: Gauge
        }

        private let byProduct = Mutex<[String: Set]>([:])

        func gauges(for product: String) -> Set {
            byProduct.withLock { all in
                if let gauges = all[product] { return gauges }
                let dimensions = [("product", product)]
                let gauges = Set(
                    left: Gauge(label: MetricName.edgeQuotaLeft, dimensions: dimensions),
                    granted: Gauge(label: MetricName.edgeQuotaGranted, dimensions: dimensions),
                    used: Gauge(label: MetricName.edgeQuotaUsed, dimensions: dimensions))
                all[product] = gauges
                return gauges
            }
        }
    }
}
