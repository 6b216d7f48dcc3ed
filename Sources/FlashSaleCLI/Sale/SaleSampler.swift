import Cluster
import FlashSaleClient
import Foundation
import Logging
import NIOCore
import Proto
import SalePage
import Synchronization
import Wire

/// Samples a running sale about every 200 ms for the report page (`flashsale sale --html`): each edge's counters
/// and quota (edge.Stats, edge.QuotaUsage), the database's remaining stock (inventory.ListProducts) and the buyers'
/// latency since the sample before (`LatencyWindow`). Marks what happened on the same clock (`mark`). The figures
/// are read, never inferred: a sample that could not be read is left out.
final class SaleSampler: Sendable {
    let latency = LatencyWindow()
    private let edges: [(label: String, client: EdgeClient)]
    private let inventory: InventoryClient
    private let products: [String]
    private let interval: Duration
    private let started = ContinuousClock.now
    private let state = Mutex(State())

    private struct State {
        var timeline = Timeline()
        /// The counters of the sample before, per edge, and when they were read.
        var previous: [String: (stats: EdgeStatsResponse, at: Double)] = [:]
        var soldOut: Set<String> = []
    }

    init(platform: Platform, inventory: InventoryClient, products: [String], interval: Duration = .milliseconds(200), logger: Logger) {
        self.edges = platform.edges.enumerated().map { index, endpoint in
            ("edge \(index + 1)", EdgeClient(host: endpoint.host, port: endpoint.port, logger: logger))
        }
        self.inventory = inventory
        self.products = products
        self.interval = interval
    }

    var now: Double { (ContinuousClock.now - started).seconds }

    var timeline: Timeline { state.withLock { $0.timeline } }

    func mark(_ kind: Timeline.Event.Kind, _ label: String) {
        let t = now
        state.withLock { $0.timeline.events.append(.init(t: t, kind: kind, label: label)) }
    }

    /// Samples until cancelled.
    func run() async {
        while !Task.isCancelled {
            let next = ContinuousClock.now + interval
            await sample()
            try? await Task.sleep(until: next)
        }
    }

    func shutdown() async {
        for edge in edges { await edge.client.shutdown() }
    }

    func sample() async {
        var reads: [(label: String, stats: EdgeStatsResponse, left: Int64?, at: Double)] = []
        for edge in edges {
            guard let stats = try? await edge.client.rpc.call(EdgeRPC.Stats.self, EdgeStatsRequest(), timeout: .milliseconds(500)) else { continue }
            let usage = try? await edge.client.rpc.call(EdgeRPC.QuotaUsage.self, QuotaStatusRequest(), timeout: .milliseconds(500))
            let left = usage.map { $0.usage.reduce(Int64(0)) { $0 + max(0, $1.granted - $1.used - $1.released) } }
            reads.append((edge.label, stats, left, now))
        }
        let stock = try? await inventory.listProducts(timeout: .milliseconds(500))
        let window = latency.take()
        let t = now

        state.withLock { state in
            var sample = Timeline.Sample(t: t)
            var outcomes: [String: Double] = [:]
            for read in reads {
                if let left = read.left { sample.edgeQuotaLeft[read.label] = left }
                defer { state.previous[read.label] = (read.stats, read.at) }
                guard let before = state.previous[read.label], read.at > before.at else { continue }
                let seconds = read.at - before.at
                func rate(_ key: KeyPath<EdgeStatsResponse, UInt64>) -> Double {
                    let (now, then) = (read.stats[keyPath: key], before.stats[keyPath: key])
                    return Double(now >= then ? now - then : now) / seconds
                }
                sample.edgeAttemptsPerSecond[read.label] = rate(\.attempts)
                outcomes["purchased", default: 0] += rate(\.purchased)
                outcomes["sold out", default: 0] += rate(\.soldOut)
                outcomes["shed", default: 0] += rate(\.shed)
                outcomes["already purchased", default: 0] += rate(\.alreadyPurchased)
                outcomes["errors", default: 0] += rate(\.errors)
            }
            sample.attemptsPerSecond = outcomes
            if window.totalCount > 0 {
                sample.latencyP50Ms = Double(window.valueAtPercentile(50)) / 1000
                sample.latencyP99Ms = Double(window.valueAtPercentile(99)) / 1000
            }
            for product in stock ?? [] where products.contains(product.productId) {
                sample.remaining[product.productId] = product.remaining
                if product.remaining == 0, state.soldOut.insert(product.productId).inserted {
                    state.timeline.events.append(.init(t: t, kind: .phase, label: "\(product.productId) sold out"))
                }
            }
            state.timeline.samples.append(sample)
        }
    }
}
