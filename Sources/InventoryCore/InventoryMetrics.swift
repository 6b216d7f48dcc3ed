import Metrics
import Proto
import ServiceMetrics
import Synchronization

/// The audit's metrics, set by every audit the inventory serves (`flashsale audit`, the end of a sale, any
/// `inventory.Audit` caller), for the alert on a failed audit (deploy/prometheus/rules/alerts.yml):
/// - `flashsale_inventory_audits_total{result=clean|failed}`: audits served;
/// - `flashsale_inventory_audit_failed_products`: products whose last audit failed. Each audit updates the products it
///   read, so a one-product audit that passes leaves another product's failure standing.
final class AuditMetrics: Sendable {
    private let clean = Counter(label: MetricName.inventoryAudits, dimensions: [("result", "clean")])
    private let failed = Counter(label: MetricName.inventoryAudits, dimensions: [("result", "failed")])
    private let failing = Gauge(label: MetricName.inventoryAuditFailedProducts)
    private let failingProducts = Mutex<Set<String>>([])

    func record(_ products: [ProductAudit]) {
        let count = failingProducts.withLock { ids in
            for product in products {
                if product.clean { ids.remove(product.productId) } else { ids.insert(product.productId) }
            }
            return ids.count
        }
        (products.allSatisfy(\.clean) ? clean : failed).increment()
        failing.record(count)
    }
}
