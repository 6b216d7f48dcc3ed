import ArgumentParser
import FlashSaleClient
import Foundation
import Histogram
import Logging
import NIOCore
import NIOPosix
import Proto
import ServiceKit
import Synchronization
import Wire

/// `flashsale-bench inventory`: drives ONE hot product of the inventory service over TCP with distinct users
/// (many connections, many purchases in flight on each) and reports committed orders per second and latency.
struct InventoryBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inventory",
        abstract: "Orders per second through the inventory service on one hot product.")

    @Option(help: "Inventory service host.")
    var host = "127.0.0.1"

    @Option(help: "Inventory service port.")
    var port: Int

    @Option(help: "The product to buy; created as a hot product with --stock units if it does not exist.")
    var product = "bench-hot"

    @Option(help: "Units of the product when it is created.")
    var stock: Int64 = 10_000_000

    @Option(help: "TCP connections to the service.")
    var connections = 64

    @Option(help: "Purchases in flight per connection.")
    var inFlight = 32

    @Option(help: "Seconds measured (after the warm-up).")
    var seconds = 10.0

    @Option(help: "Seconds of warm-up, not measured.")
    var warmup = 2.0

    @Flag(help: "Create the product if missing, print its state, and exit.")
    var prepareOnly = false

    mutating func run() async throws {
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        // Purchases and CreateProduct are the service token's work (the bench stands in for the edges and quota service).
        let token = try ServiceRuntime.serviceToken(environment: ProcessInfo.processInfo.environment) ?? ""
        let client = InventoryClient(host: host, port: port, connections: connections, token: token, logger: logger)
        defer { Task { [client] in await client.shutdown() } }

        do {
            _ = try await client.getStock(productId: product)
        } catch let error as RPCError where error.code == .notFound {
            _ = try await client.createProduct(
                CreateProductRequest(productId: product, totalStock: stock, slotCount: 8, hot: true))
        }

        if prepareOnly {
            let state = try await client.getStock(productId: product)
            print("product=\(state.productId) total=\(state.totalStock) remaining=\(state.remaining) database=\(state.database)")
            return
        }

        // The load's own clients: one per event loop (a client prefers connections on the caller's loop, so one
        // client would keep every chain on one thread), and no per-call timer (a scheduled task per call costs).
        let loops = Array(MultiThreadedEventLoopGroup.singleton.makeIterator())
        let loadClients = loops.map { loop in
            InventoryClient(rpc: RPCClient(
                configuration: RPCClientConfiguration(
                    host: host, port: port, connections: max(1, connections / loops.count), defaultTimeout: nil,
                    token: token),
                group: loop, logger: logger))
        }
        defer { Task { [loadClients] in for client in loadClients { await client.shutdown() } } }
        let run = LoadRun(clients: loadClients, product: product)
        let lanes = connections * inFlight
        let started = DispatchTime.now().uptimeNanoseconds
        run.start(lanes: lanes)
        try await Task.sleep(nanoseconds: UInt64(warmup * 1e9))
        run.beginMeasuring()
        let measureStart = DispatchTime.now().uptimeNanoseconds
        try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
        let measured = run.endMeasuring()
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - measureStart) / 1e9
        await run.stopAndWait()
        _ = started

        let ordersPerSecond = Double(measured.purchased) / elapsed
        let p50 = Double(measured.latencies.valueAtPercentile(50)) / 1000
        let p99 = Double(measured.latencies.valueAtPercentile(99)) / 1000
        print("inventory bench: product=\(product) connections=\(connections) in_flight=\(lanes) seconds=\(String(format: "%.1f", elapsed))")
        print("  purchased=\(measured.purchased) other_outcomes=\(measured.otherOutcomes) errors=\(measured.errors)")
        print(String(format: "  orders_per_s=%.0f p50_ms=%.2f p99_ms=%.2f", ordersPerSecond, p50, p99))
        if let error = measured.firstError { print("  first error: \(error)") }
        print(String(format: "BENCH orders_per_s=%.0f p50_ms=%.2f p99_ms=%.2f errors=%d", ordersPerSecond, p50, p99, measured.errors))
    }
}

/// The load: `lanes` chains of purchases, each firing its next purchase from the previous one's completion
/// (on the event loop, no task per call). Request and user ids are distinct across lanes and runs.
private final class LoadRun: Sendable {
    struct Measurement {
        var purchased = 0
        var otherOutcomes = 0
        var errors = 0
        var firstError: String?
        var latencies = Histogram<UInt64>(highestTrackableValue: 60_000_000)  // microseconds
    }

    private let clients: [InventoryClient]
    private let product: String
    private let nextId: Atomic<Int64>
    private let stopping = Atomic<Bool>(false)
    private let measuring = Atomic<Bool>(false)

    private struct State {
        var measurement = Measurement()
        var lanesRunning = 0
        var finished: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    init(clients: [InventoryClient], product: String) {
        self.clients = clients
        self.product = product
        // Ids unique across runs against the same database: seconds since 2020 in the high bits.
        let base = Int64(Date().timeIntervalSince1970 - 1_577_836_800) << 24
        self.nextId = Atomic(base)
    }

    func start(lanes: Int) {
        state.withLock { $0.lanesRunning = lanes }
        for lane in 0..<lanes { fire(clients[lane % clients.count]) }
    }

    func beginMeasuring() {
        state.withLock { $0.measurement = Measurement() }
        measuring.store(true, ordering: .relaxed)
    }

    func endMeasuring() -> Measurement {
        measuring.store(false, ordering: .relaxed)
        return state.withLock { $0.measurement }
    }

    func stopAndWait() async {
        stopping.store(true, ordering: .relaxed)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state in
                if state.lanesRunning == 0 { return true }
                state.finished = continuation
                return false
            }
            if done { continuation.resume() }
        }
    }

    private func fire(_ client: InventoryClient) {
        if stopping.load(ordering: .relaxed) {
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                state.lanesRunning -= 1
                guard state.lanesRunning == 0 else { return nil }
                defer { state.finished = nil }
                return state.finished
            }
            waiter?.resume()
            return
        }
        let id = nextId.wrappingAdd(1, ordering: .relaxed).newValue
        let request = PurchaseRequest(requestId: UInt64(id), userId: UInt64(id), productId: product, edgeId: 1)
        let sent = DispatchTime.now().uptimeNanoseconds
        let future = client.purchaseFuture(request)
        future.whenComplete { result in
            if self.measuring.load(ordering: .relaxed) {
                let micros = (DispatchTime.now().uptimeNanoseconds - sent) / 1000
                self.state.withLock { state in
                    switch result {
                    case .success(let response) where response.outcome == .purchased:
                        state.measurement.purchased += 1
                    case .success:
                        state.measurement.otherOutcomes += 1
                    case .failure(let error):
                        state.measurement.errors += 1
                        if state.measurement.firstError == nil { state.measurement.firstError = "\(error)" }
                    }
                    _ = state.measurement.latencies.record(micros)
                }
            }
            if case .failure = result {
                // A failure can complete at once (connection in backoff): pause instead of recursing.
                future.eventLoop.scheduleTask(in: .milliseconds(10)) { self.fire(client) }
            } else {
                self.fire(client)
            }
        }
    }
}
