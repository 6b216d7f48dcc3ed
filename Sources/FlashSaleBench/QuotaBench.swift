import ArgumentParser
import Cluster
import FlashSaleClient
import Foundation
import Histogram
import Logging
import NIOCore
import Proto
import QuotaContract
import Wire
import ZooKeeperClient

/// `flashsale-bench quota`: how long a quota or shed change written in ZooKeeper takes to reach every edge.
///
/// Edges run as real `Edge` processes (the production binary), each with its own ZooKeeper session and watches.
/// The benchmark plays the quota service: it writes each edge's quota node (one change = a new grant for every edge)
/// or `config/shed`, then polls every edge (`edge.QuotaUsage`, `edge.Stats`, every millisecond) until each applied
/// it. A change's latency is the time from the first write until the last edge has applied it.
struct QuotaBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quota", abstract: "Latency from a quota or shed write in ZooKeeper to every edge applying it.")

    @Option(help: "ZooKeeper connection string.") var zookeeper = "127.0.0.1:12181"
    @Option(help: "The Edge executable (default: the one built beside this benchmark).") var edgeBinary: String?
    @Option(help: "Edge counts to measure, comma separated.") var edges = "2,4,8"
    @Option(help: "Changes per edge count (half quota, half shed).") var changes = 400
    @Option(help: "Pause between changes, in milliseconds.") var pauseMs = 10

    func run() async throws {
        let counts = edges.split(separator: ",").compactMap { Int($0) }.filter { $0 > 0 }
        guard !counts.isEmpty, changes > 0 else { throw ValidationError("--edges and --changes must be positive") }
        var logger = Logger(label: "bench-quota")
        logger.logLevel = .warning
        var last: (p50: Double, p99: Double) = (0, 0)
        print("quota/shed propagation: ZooKeeper write -> every edge applied (edges are Edge processes, polled over RPC)")
        for count in counts {
            let figures = try await measure(edges: count, logger: logger)
            func line(_ name: String, _ h: Histogram<UInt64>) -> String {
                String(
                    format: "  %-6@ changes=%d p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f", name as NSString,
                    Int(h.totalCount), ms(h, 50), ms(h, 90), ms(h, 99), Double(h.max) / 1000)
            }
            print("edges=\(count)")
            print(line("quota", figures.quota))
            print(line("shed", figures.shed))
            print(line("all", figures.all))
            last = (ms(figures.all, 50), ms(figures.all, 99))
        }
        print(String(format: "RESULT edges=%d changes=%d p50_ms=%.2f p99_ms=%.2f", counts.last!, changes, last.p50, last.p99))
    }

    private func ms(_ h: Histogram<UInt64>, _ percentile: Double) -> Double {
        Double(h.valueAtPercentile(percentile)) / 1000
    }

    struct Figures {
        var quota = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var shed = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var all = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    }

    private func measure(edges count: Int, logger: Logger) async throws -> Figures {
        let root = ZooKeeperRoot.unique("bench-quota")
        let layout = QuotaLayout(root: root)
        let product = "bench"
        let zk = try await ZooKeeperClient.connect(hosts: zookeeper, logger: logger)
        try await zk.ensurePath(layout.quotas(of: product))
        try await zk.ensurePath(layout.config)
        try await zk.ensurePath(layout.products)
        try await zk.create(layout.product(product), data: ProductQuotaState(totalStock: 1).serializedBytes())
        try await zk.create(layout.shed, data: ShedConfig(keepPerMillion: 1_000_000).serializedBytes())

        var edges: [ServiceEndpoint] = []
        var clients: [(node: String, rpc: RPCClient)] = []
        defer {
            let running = edges
            Task { for edge in running { await edge.process.terminate() } }
        }
        for i in 0..<count {
            // The edges never buy here.
            var arguments = EdgeArguments.standalone(zooKeeper: zookeeper, root: root)
            arguments.logLevel = "warning"
            let edge = try await ServiceEndpoint.start(
                arguments, environment: ["FLASHSALE_SERVICE_TOKEN": Platform.newSecret()], name: "bench-quota-edge\(i + 1)",
                executable: edgeBinary.map { URL(fileURLWithPath: $0) })
            edges.append(edge)
            clients.append(("", RPCClient(configuration: RPCClientConfiguration(host: edge.host, port: edge.port), logger: logger)))
        }
        // Which node is which edge: the registration that names the edge's address.
        var nodes: [String: String] = [:]
        for name in try await zk.children(layout.edges) {
            if let registration = try? EdgeRegistration(decoding: try await zk.get(layout.edge(name)).data) {
                nodes[registration.address] = name
            }
        }
        for i in clients.indices {
            let address = "\(clients[i].rpc.configuration.host):\(clients[i].rpc.configuration.port)"
            guard let node = nodes[address] else { throw RPCError(.notFound, "no registration names \(address)") }
            clients[i].node = node
        }

        var figures = Figures()
        for change in 1...changes {
            let started = ContinuousClock.now
            if change % 2 == 1 {
                let granted = Int64(change) * 10
                // One write per edge, all in flight at once (as a rebalancing quota service would write them).
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for client in clients {
                        group.addTask { try await Self.setGrant(zk, layout.quota(product, edge: client.node), granted) }
                    }
                    try await group.waitForAll()
                }
                try await Self.waitForAll(clients.map(\.rpc)) { rpc in
                    let usage = try await rpc.call(
                        EdgeRPC.QuotaUsage.self, QuotaStatusRequest(productId: product))
                    return (usage.usage.first?.granted ?? 0) >= granted
                }
                let elapsed = Self.micros(ContinuousClock.now - started)
                figures.quota.record(elapsed)
                figures.all.record(elapsed)
            } else {
                let keep = UInt32(500_000 + change)
                let stat = try await zk.get(layout.shed).stat
                try await zk.set(layout.shed, data: ShedConfig(keepPerMillion: keep).serializedBytes(), version: stat.version)
                try await Self.waitForAll(clients.map(\.rpc)) { rpc in
                    try await rpc.call(EdgeRPC.Stats.self, EdgeStatsRequest()).keepPerMillion == keep
                }
                let elapsed = Self.micros(ContinuousClock.now - started)
                figures.shed.record(elapsed)
                figures.all.record(elapsed)
            }
            try await Task.sleep(for: .milliseconds(pauseMs))
        }

        for client in clients { await client.rpc.shutdown() }
        for edge in edges { await edge.process.terminate() }
        try? await zk.deleteTree(root)
        await zk.close()
        return figures
    }

    /// Compare-and-set of a quota node, created on first use.
    static func setGrant(_ zk: ZooKeeperClient, _ path: String, _ granted: Int64) async throws {
        let data = QuotaGrant(granted: granted).serializedBytes()
        do {
            let stat = try await zk.get(path).stat
            try await zk.set(path, data: data, version: stat.version)
        } catch let error as ZooKeeperError where error.code == .noNode {
            try await zk.create(path, data: data)
        }
    }

    /// Polls every edge until `applied` holds for each (at most 10 s).
    static func waitForAll(_ rpcs: [RPCClient], _ applied: @escaping @Sendable (RPCClient) async throws -> Bool) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for rpc in rpcs {
                group.addTask {
                    let deadline = ContinuousClock.now + .seconds(10)
                    while try await !applied(rpc) {
                        guard ContinuousClock.now < deadline else { throw RPCError(.deadlineExceeded, "an edge never applied the change") }
                        try await Task.sleep(for: .milliseconds(1))
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    static func micros(_ d: Duration) -> UInt64 {
        UInt64(max(0, d.components.seconds * 1_000_000 + d.components.attoseconds / 1_000_000_000_000))
    }
}
