import Cluster
import FlashSaleClient
import Foundation
import Logging
import NIOCore
import Proto
import Synchronization
import Wire

/// The edges a case counts as alive: the ground-truth check sums what they hold. A killed edge holds nothing
/// and leaves the list as it is killed; a partitioned one stays (it can still sell).
final class LiveEdges: Sendable {
    private let edges: Mutex<[ServiceEndpoint]>

    init(_ edges: [ServiceEndpoint]) { self.edges = Mutex(edges) }

    var all: [ServiceEndpoint] { edges.withLock { $0 } }

    func remove(port: Int) { edges.withLock { $0.removeAll { $0.port == port } } }

    func add(_ edge: ServiceEndpoint) { edges.withLock { $0.append(edge) } }
}

/// The invariant from ground truth, not from the quota service's records: at every sample, for each product, the
/// units the live edges hold available (`edge.QuotaUsage`: granted - used - released) are at most what the
/// database still has (`inventory.GetStock` remaining). Otherwise the edges could sell units the database no longer
/// has, which only the database's refusal stops.
///
/// One sample reads `remaining` first, then every edge at once: a unit taken and bought in between is then
/// counted on neither side, never on both. A move of units between edges (a release, then a grant elsewhere) can
/// still straddle one sample, so a sample over the bound counts only if the sample taken right after it is over
/// too; the protocol's real breaches (an edge selling units the quota service gave again, orders the edges did not
/// take) last far longer than that.
final class GroundTruthMonitor: Sendable {
    struct Violation: Sendable, CustomStringConvertible {
        var product: String
        var available: Int64
        var remaining: Int64
        var secondsIntoCase: Double
        var description: String {
            "\(product): edges hold \(available) > remaining \(remaining) at \(String(format: "%.1f", secondsIntoCase)) s"
        }
    }

    struct Summary: Sendable {
        var samples = 0
        /// Samples that could not be read whole (an edge or the inventory restarting, the hot database away).
        var unreadable = 0
        var violations: [Violation] = []
        var worstExcess: Int64 = 0
    }

    private let products: [String]
    private let live: LiveEdges
    private let inventory: InventoryClient
    private let secrets: FaultSecrets
    private let logger: Logger
    private let interval: Duration
    private let summary = Mutex(Summary())
    private let started = ContinuousClock.now

    init(products: [String], live: LiveEdges, inventory: InventoryClient, secrets: FaultSecrets, logger: Logger,
         interval: Duration = .milliseconds(150)) {
        self.products = products
        self.live = live
        self.inventory = inventory
        self.secrets = secrets
        self.logger = logger
        self.interval = interval
    }

    var result: Summary { summary.withLock { $0 } }

    /// Samples until cancelled.
    func run() async {
        var clients: [Int: EdgeClient] = [:]
        defer {
            let all = Array(clients.values)
            Task { for client in all { await client.shutdown() } }
        }
        while !Task.isCancelled {
            let edges = live.all
            for edge in edges where clients[edge.port] == nil {
                clients[edge.port] = FaultPlatform.operatorClient(edge, secrets: secrets, logger: logger)
            }
            let current = edges.compactMap { clients[$0.port] }
            for product in products {
                guard let first = await sample(product, current) else {
                    summary.withLock { $0.unreadable += 1 }
                    continue
                }
                var over = first.available > first.remaining
                if over, let second = await sample(product, current) { over = second.available > second.remaining }
                let seconds = Double((ContinuousClock.now - started) / .milliseconds(1)) / 1000
                summary.withLock {
                    $0.samples += 1
                    if over {
                        $0.worstExcess = max($0.worstExcess, first.available - first.remaining)
                        if $0.violations.count < 20 {
                            $0.violations.append(Violation(
                                product: product, available: first.available, remaining: first.remaining,
                                secondsIntoCase: seconds))
                        }
                    }
                }
            }
            try? await Task.sleep(for: interval)
        }
    }

    private func sample(_ product: String, _ edges: [EdgeClient]) async -> (available: Int64, remaining: Int64)? {
        guard let stock = try? await inventory.getStock(productId: product, timeout: .seconds(1)) else { return nil }
        let held = await withTaskGroup(of: Int64?.self) { group in
            for edge in edges {
                group.addTask {
                    guard let usage = try? await edge.rpc.call(
                        EdgeRPC.QuotaUsage.self, QuotaStatusRequest(productId: product),
                        timeout: .seconds(1))
                    else { return nil }
                    // An edge that has not heard of the product yet holds none of it.
                    guard let line = usage.usage.first(where: { $0.productId == product }) else { return 0 }
                    return line.granted - line.used - line.released
                }
            }
            var total: Int64 = 0
            for await units in group {
                guard let units else { return nil as Int64? }
                total += units
            }
            return total
        }
        guard let held else { return nil }
        return (held, stock.remaining)
    }
}
