import ArgumentParser
import Cluster
import FlashSaleClient
import Histogram
import Foundation
import NIOCore
import NIOPosix
import ServiceKit

/// `flashsale-bench latency`: the reference sale's mix (3 products x 1,000 units, 1 in 10 kept by the lottery,
/// 500,000 buyers) at fixed offered rates, open loop (see `OpenLoopLoad`), through 2 edges. Each rate sells its own
/// 3 fresh products, so every step has its selling phase and its sold-out phase. Prints p50/p99/p99.9 per rate,
/// the generator's and the edges' CPU per attempt (to tell client from server on one machine), and checks that
/// every PURCHASED answer has its order.
struct LatencyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "latency", abstract: "Open-loop latency of the sale's mix at fixed rates.")

    @Option(help: "libpq DSN of a server to make this run's databases on (as its owner).") var adminDsn: String
    @Option(help: "ZooKeeper hosts.") var zookeeper: String
    @Option(help: "Offered rates, attempts/s, comma-separated.") var rates = "25000,50000,100000,200000"
    @Option(help: "Seconds of load per rate.") var seconds = 5.0
    @Option(help: "Client connections, spread over the edges.") var connections = 100
    @Option(help: "Event loop threads of the generator.") var threads = 1
    @Option(help: "How attempts go round the connections: tick (those due in one 100 µs tick together on one connection, as a multiplexing caller sends) or attempt (each on the next).")
    var spread = OpenLoopLoad.Spread.tick
    @Option(help: "Event loop threads of each edge (default: the edge's own, one per core).") var edgeThreads: Int?
    @Option(help: "Consumers of the inventory's main database (default: the inventory's own).") var inventoryConsumers: Int?
    @Flag(help: "Pin the generator to CPU 0 and the edges to CPU 1 (the other servers stay on both).") var pin = false
    @Option var stock: Int64 = 1_000
    @Option var users = 500_000

    func run() async throws {
        let steps = rates.split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard !steps.isEmpty, steps.allSatisfy({ $0 > 0 }), seconds > 0, connections > 0, threads > 0 else {
            throw ValidationError("--rates takes positive numbers; --seconds, --connections, --threads positive")
        }
        let logger = ServiceRuntime.makeLogger(label: "latency", level: .warning)
        let databases = try await RunDatabases.create(adminDSN: adminDsn, prefix: "latency")
        var configuration = Platform.Configuration(
            databaseDSN: databases.main.dsn, hotDatabaseDSN: databases.hot.dsn, zooKeeperHosts: zookeeper,
            operatorToken: Platform.newSecret())
        configuration.zooKeeperRoot = ZooKeeperRoot.unique("latency")
        configuration.edges = 2
        configuration.edgeThreads = edgeThreads
        if let inventoryConsumers { configuration.inventoryArguments = ["--consumers", "\(inventoryConsumers)"] }
        let platform = try await Platform.start(configuration)
        if pin {
            for edge in platform.edges { try await CPUAffinity.pin(pid: edge.process.pid, cpu: 1) }
            // Before the generator's loops exist: they inherit this process's set.
            try await CPUAffinity.pin(pid: getpid(), cpu: 0)
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        do {
            let products = steps.indices.map { step in (1...3).map { "r\(step + 1)p\($0)" } }
            let quota = platform.quotaClient(logger: logger)
            try await SaleDriver.prepare(
                quota: quota, products: products.flatMap { $0 }.map { ($0, stock, false) }, keepPerMillion: 100_000,
                edges: platform.edges, logger: logger)
            await quota.shutdown()
            let inventory = platform.inventoryClient(logger: logger)
            // Each rate's result, and the p99 of its sold-out phase (`OpenLoopLoad.Result.phases`), in ms.
            var lines: [(rate: Double, result: OpenLoopLoad.Result, soldOutP99Ms: Double)] = []
            var lost = 0
            var oversold = 0
            for (step, rate) in steps.enumerated() {
                let load = try await OpenLoopLoad.connect(
                    .init(
                        edges: platform.edges.map { ($0.host, $0.port) }, products: products[step], users: users,
                        rate: rate, duration: .nanoseconds(Int64(seconds * 1e9)), connections: connections, spread: spread,
                        requestIDBase: UInt64(step + 1) << 40 | (UInt64.random(in: 1...0x7FFF) << 48),
                        seed: 20_261_124 &+ UInt64(step)),
                    group: group, logger: logger)
                let edgesBefore = platform.edges.compactMap { CPUTime.ofProcess(Int($0.process.pid)) }.reduce(0, +)
                let inventoryBefore = CPUTime.ofProcess(Int(platform.inventory.process.pid)) ?? 0
                let postgresBefore = CPUTime.ofProcesses(named: "postgres")
                let clientBefore = CPUTime.ofThisProcess()
                let result = await load.run()
                let clientCPU = CPUTime.ofThisProcess() - clientBefore
                let edgesCPU = platform.edges.compactMap { CPUTime.ofProcess(Int($0.process.pid)) }.reduce(0, +) - edgesBefore
                let inventoryCPU = (CPUTime.ofProcess(Int(platform.inventory.process.pid)) ?? 0) - inventoryBefore
                let postgresCPU = CPUTime.ofProcesses(named: "postgres") - postgresBefore
                await load.shutdown()
                lost += try await SaleDriver.purchasesWithoutOrder(result.purchases, inventory: inventory).count
                oversold += max(0, result.answers.purchased - Int(stock) * products[step].count)
                let (selling, soldOut, sellingSeconds) = result.phases()
                lines.append((rate, result, Self.ms(soldOut, 99)))
                let attempts = Double(max(1, result.sent))
                print("rate=\(Int(rate)) due=\(result.due) sent=\(result.sent) achieved_per_s=\(Int(Double(result.sent) / max(result.wallSeconds, 1e-9))) p50_ms=\(format(result.latencyMs(50), decimals: 3)) p99_ms=\(format(result.latencyMs(99), decimals: 3)) p999_ms=\(format(result.latencyMs(99.9), decimals: 3)) max_ms=\(format(result.maxMs, decimals: 3)) dropped=\(result.dropped) timed_out=\(result.timedOut) errors=\(result.errors) purchased=\(result.answers.purchased) sold_out=\(result.answers.soldOut) shed=\(result.answers.shed) client_cpu_us_per_attempt=\(format(clientCPU * 1e6 / attempts)) edges_cpu_us_per_attempt=\(format(edgesCPU * 1e6 / attempts)) inventory_cpu_us_per_attempt=\(format(inventoryCPU * 1e6 / attempts)) postgres_cpu_us_per_attempt=\(format(postgresCPU * 1e6 / attempts))")
                let purchasedLatency = result.answers.purchasedLatency
                func ms(_ histogram: Histogram<UInt64>, _ percentile: Double) -> String { format(Self.ms(histogram, percentile), decimals: 3) }
                print("  purchased answers: p50_ms=\(ms(purchasedLatency, 50)) p99_ms=\(ms(purchasedLatency, 99)) max_ms=\(format(Double(purchasedLatency.max) / 1000, decimals: 3))")
                print("  while selling (first \(format(sellingSeconds, decimals: 2)) s, \(selling.totalCount) attempts): p50_ms=\(ms(selling, 50)) p99_ms=\(ms(selling, 99)); sold out (\(soldOut.totalCount) attempts): p50_ms=\(ms(soldOut, 50)) p99_ms=\(ms(soldOut, 99)) p999_ms=\(ms(soldOut, 99.9))")
                if !result.answers.errorsByCode.isEmpty {
                    print("  errors by code: \(result.answers.errorsByCode.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))")
                }
            }
            await inventory.shutdown()
            func line(_ rate: Double) -> (rate: Double, result: OpenLoopLoad.Result, soldOutP99Ms: Double)? { lines.first { $0.rate == rate } }
            func at(_ rate: Double) -> OpenLoopLoad.Result? { line(rate)?.result }
            let underTarget = lines.filter { $0.result.latencyMs(99) <= 5 && $0.result.dropped == 0 && $0.result.timedOut == 0 }
            let dropped = lines.reduce(0) { $0 + $1.result.dropped + $1.result.timedOut }
            let missing = "n/a"
            let soldOutP99At100k = line(100_000).map { format($0.soldOutP99Ms, decimals: 3) } ?? missing
            print("RESULT p99_ms_at_100k=\(at(100_000).map { format($0.latencyMs(99), decimals: 3) } ?? missing) p999_ms_at_100k=\(at(100_000).map { format($0.latencyMs(99.9), decimals: 3) } ?? missing) p99_ms_at_200k=\(at(200_000).map { format($0.latencyMs(99), decimals: 3) } ?? missing) max_rate_p99_under_5ms=\(Int(underTarget.map(\.rate).max() ?? 0)) dropped=\(dropped) lost=\(lost) oversold=\(oversold) sold_out_p99_ms_at_100k=\(soldOutP99At100k)")
        } catch {
            await platform.stop()
            try? await group.shutdownGracefully()
            await databases.drop()
            throw error
        }
        await platform.stop()
        try await group.shutdownGracefully()
        await databases.drop()
    }

    /// A latency histogram's percentile (recorded in microseconds), in milliseconds.
    private static func ms(_ histogram: Histogram<UInt64>, _ percentile: Double) -> Double {
        Double(histogram.valueAtPercentile(percentile)) / 1000
    }
}

extension OpenLoopLoad.Spread: ExpressibleByArgument {}
