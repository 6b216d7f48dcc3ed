import ArgumentParser
import Cluster
import FlashSaleClient
import Foundation
import Logging
import NIOCore
import PostgresClient
import Proto
import SalePage
import ServiceKit
import Wire

/// `flashsale sale`: the whole platform end to end. Starts PostgreSQL and ZooKeeper of its own (a run folder,
/// stopped afterwards; or uses the ones FLASHSALE_PG_DSN and FLASHSALE_ZK name), starts the inventory service, the quota service and N edges, creates the products, runs the crowd of buyers with a
/// progress bar, then prints the report and audits the database. Exits non-zero when the audit fails. The platform
/// runs as it should in production: tokens and ZooKeeper secrets made for this run, the inventory serving as the
/// restricted login role (see `Platform`).
struct SaleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sale", abstract: "Run a flash sale end to end and print its report.")

    @Option(help: "Number of products (p1, p2, ...).") var products = 3
    @Option(help: "Units of stock per product.") var stock: Int64 = 1_000
    @Option(help: "Purchase attempts in all.") var attempts = 1_000_000
    @Option(help: "Distinct buyers; each attempt picks one at random.") var users = 500_000
    @Option(help: "Client connections, spread over the edges.") var connections = 1_000
    @Option(help: "Attempts in flight per connection.") var depth = 16
    @Option(help: "Share of attempts the edges keep (the lottery): 0.1 keeps 1 in 10.") var keep = 0.1
    @Option(help: "Products that get a database of their own (comma-separated ids, e.g. p1).") var hot = ""
    @Option(help: "Shard clusters (shard-2, ...) beside main and hot, each a database of its own; products go to the least loaded.")
    var shards = 0
    @Option(help: "Number of edges.") var edges = 2
    @Option(help: "Event loop threads of each edge (default: the edge's own, one per core).") var edgeThreads: Int?
    @Flag(help: "Pin the buyers (this process) to CPU 0 and the edges to CPU 1 once the platform runs (the other servers stay on both): client and server costs apart, as `scripts/bench.sh sale` measures them.")
    var pin = false
    @Option(help: "Seed of the buyers' choices.") var seed: UInt64 = 20_261_124
    @Option(help: "Write the report as JSON to this file as well.") var json: String?
    @Option(help: "Write the report as one self-contained HTML page with charts (sampled every 200 ms) to this file as well.")
    var html: String?
    @Option(help: "An operator's stock raise during the sale: SECONDS:PRODUCT:UNITS after the buyers start (repeatable), e.g. 1.5:p1:100; marked on the --html page.")
    var raiseAt: [String] = []
    @Option(help: "A fault during the sale: kill -9 the last edge SECONDS after the buyers start (needs 2 edges or more; the buyers move to the others); marked on the --html page.")
    var killEdgeAt: Double?
    @Option(help: "Log level of the services.") var logLevel = "warning"
    @Flag(help: "Keep the sale's databases afterwards (dropped by default).") var keepData = false
    @Option(help: "Seconds a winner has to pay; 0 = orders are final at once. With it, unpaid holds expire and sell again to later buyers.")
    var hold: UInt32 = 0
    @Option(help: "With --hold: share of winners who pay (the rest abandon their carts).") var payShare = 1.0
    @Flag(help: "The high-availability set-up: PostgreSQL as a primary and a synchronous standby under Patroni (on the sale's ZooKeeper), two inventory replicas following Patroni's leader, and a quota leader with a standby. Needs the sale's own servers (not FLASHSALE_PG_DSN).")
    var ha = false

    func run() async throws {
        guard products > 0, stock > 0, attempts > 0, users > 0, connections > 0, depth > 0, edges > 0,
              (0...1).contains(keep)
        else { throw ValidationError("products, stock, attempts, users, connections, depth and edges must be positive; keep in 0...1") }
        guard (0...8).contains(shards) else { throw ValidationError("--shards must be 0...8") }
        guard hold <= 86_400, (0...1).contains(payShare), payShare > 0 || hold == 0 else {
            throw ValidationError("--hold must be at most 86400 seconds; --pay-share in (0, 1]")
        }
        if let killEdgeAt, !(0...3_600).contains(killEdgeAt) || edges < 2 {
            throw ValidationError("--kill-edge-at takes 0...3600 seconds and needs --edges 2 or more")
        }
        for raise in raiseAt {
            guard let parsed = ScheduledRaise(raise), (1...products).map({ "p\($0)" }).contains(parsed.product) else {
                throw ValidationError("--raise-at takes SECONDS:PRODUCT:UNITS with one of the sale's products (p1...p\(products)), not '\(raise)'")
            }
        }

        let logger = ServiceRuntime.makeLogger(label: "flashsale", level: .warning)
        let say = { (line: String) in FileHandle.standardError.write((line + "\n").data(using: .utf8)!) }

        // Servers of this sale's own (a run folder, free ports), unless FLASHSALE_PG_DSN and FLASHSALE_ZK name
        // running ones (the sale benchmark's): a test run or another sale beside it is never shared nor stopped.
        let environment = ProcessInfo.processInfo.environment
        let given = (environment["FLASHSALE_PG_DSN"].flatMap { $0.isEmpty ? nil : $0 },
                     environment["FLASHSALE_ZK"].flatMap { $0.isEmpty ? nil : $0 })
        let servers: RunServers?
        let adminDSN: String
        let zooKeeper: String
        var patroni: PatroniCluster?
        if let dsn = given.0, let hosts = given.1, !ha {
            (servers, adminDSN, zooKeeper) = (nil, dsn, hosts)
        } else {
            say("starting PostgreSQL and ZooKeeper...")
            let started = try await RunServers.start(ha ? "sale-ha" : "sale") { await PatroniCluster.stopAbandoned(in: $0) }
            (servers, adminDSN, zooKeeper) = (started, started.adminDSN, started.zooKeeper)
            if ha {
                say("starting a PostgreSQL primary and synchronous standby under Patroni...")
                do {
                    patroni = try await PatroniCluster.start(in: started.folder, zooKeeper: started.zooKeeper)
                } catch {
                    await started.stop()
                    throw error
                }
            }
        }
        let runID = "sale_\(Int(Date().timeIntervalSince1970))_\(UInt32.random(in: 0...UInt32.max) % 10_000)"
        let token = environment["FLASHSALE_OPERATOR_TOKEN"] ?? Platform.newSecret()

        var report: SaleReport?
        var timeline: Timeline?
        var failure: (any Error)?
        var databases: RunDatabases?
        var platform: Platform?
        do {
            databases = try await RunDatabases.create(adminDSN: patroni?.adminDSN ?? adminDSN, name: runID, shards: shards)
            var platformConfiguration = Platform.Configuration(
                databaseDSN: databases!.main.dsn, hotDatabaseDSN: databases!.hot.dsn, zooKeeperHosts: zooKeeper,
                operatorToken: token)
            platformConfiguration.clusters = databases!.shardClusters
            platformConfiguration.zooKeeperRoot = "/\(runID)"
            platformConfiguration.edges = edges
            platformConfiguration.edgeThreads = edgeThreads
            platformConfiguration.logLevel = logLevel
            if let patroni {
                platformConfiguration.inventories = 2
                platformConfiguration.quotaServices = 2
                platformConfiguration.patroni = patroni.following(shards: platformConfiguration.clusters.map(\.name))
                say("starting 2 inventory replicas, a quota leader and its standby, and \(edges) edges...")
            } else {
                say("starting the inventory service, the quota service and \(edges) edges...")
            }
            platform = try await Platform.start(platformConfiguration)
            if pin {
                for edge in platform!.edges { try await CPUAffinity.pin(pid: edge.process.pid, cpu: 1) }
                try await CPUAffinity.pin(pid: getpid(), cpu: 0)
            }
            (report, timeline) = try await runSale(
                platform: platform!, dsns: databases!.allDSNs, logger: logger, say: say)
        } catch {
            failure = error
        }
        say("stopping...")
        await platform?.stop()
        if keepData {
            if let servers {
                servers.keep()
                say("the sale's servers keep running, data in \(servers.folder.url.path)")
            }
        } else {
            await databases?.drop()
            await patroni?.stop()
            await servers?.stop()
        }
        if let failure { throw failure }
        guard let report else { return }
        print(report.text())
        if let json { try report.json().write(to: URL(fileURLWithPath: json)) }
        if let html, let timeline { try Data(report.page(timeline: timeline).html().utf8).write(to: URL(fileURLWithPath: html)) }
        if !report.auditClean { throw ExitCode(2) }
    }

    /// The report, and with `--html` the sale's timeline.
    private func runSale(
        platform: Platform, dsns: [String], logger: Logger, say: (String) -> Void
    ) async throws -> (SaleReport, Timeline?) {
        let control = SaleControl(platform: platform, logger: logger)
        defer { Task { await control.shutdown() } }
        let productIDs = (1...products).map { "p\($0)" }
        let hotProducts = Set(hot.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) })
        // With --html: sampled from before the products exist, so the operator's set-up is on the page's time axis.
        let sampler = html == nil ? nil : SaleSampler(platform: platform, inventory: control.inventory, products: productIDs, logger: logger)
        let sampling = Task { await sampler?.run() }
        defer {
            sampling.cancel()
            if let sampler { Task { await sampler.shutdown() } }
        }
        say("creating \(products) products x \(stock) units, keeping \(keep) of attempts...")
        sampler?.mark(.action, "lottery: keep \(keep)")
        sampler?.mark(.action, "\(products) products x \(stock.grouped) created")
        try await control.prepare(
            products: productIDs, stock: stock, hot: hotProducts, keepPerMillion: UInt32(keep * 1_000_000), holdSeconds: hold)
        sampler?.mark(.phase, "edges hold the stock")
        // With holds, a payment service of the sale's own pays the chosen share of winners while the sale runs.
        let payer = hold > 0 ? HoldPayer(dsns: dsns, inventory: control.inventory, payShare: payShare, logger: logger) : nil
        let paying = Task { await payer?.run() }
        defer { paying.cancel() }

        var swarmConfiguration = BuyerSwarm.Configuration(
            edges: platform.edges.map { ($0.host, $0.port) }, products: productIDs, attempts: attempts, users: users,
            connections: connections, depth: depth, seed: seed)
        swarmConfiguration.timeout = .seconds(10)
        swarmConfiguration.latencyWindow = sampler?.latency
        let swarm = BuyerSwarm(configuration: swarmConfiguration, logger: logger)
        let bar = ProgressBar(total: attempts)
        let progress = Task {
            while !Task.isCancelled {
                bar.draw(done: swarm.completed)
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        say("running \(attempts) attempts from \(connections) connections x \(depth) in flight...")
        sampler?.mark(.phase, "buyers start")
        let raises = Task { [raiseAt, quota = control.quota] in
            await ScheduledRaise.run(raiseAt.compactMap(ScheduledRaise.init), quota: quota, sampler: sampler)
        }
        let fault = Task { [killEdgeAt] in
            guard let killEdgeAt, let victim = platform.edges.last else { return }
            try? await Task.sleep(for: .milliseconds(Int64(killEdgeAt * 1000)))
            await victim.process.kill9()
            sampler?.mark(.fault, "\(victim.name) killed (kill -9)")
            standardError("\(victim.name) killed (kill -9)")
        }
        var result = try await swarm.run()
        sampler?.mark(.phase, "buyers done")
        await raises.value
        await fault.value
        progress.cancel()
        bar.draw(done: swarm.completed)
        bar.finish()

        var waves: Int?
        if let payer {
            waves = try await lateBuyers(
                control: control, payer: payer, products: productIDs, swarm: swarmConfiguration, result: &result,
                sampler: sampler, say: say)
            paying.cancel()
            _ = await paying.value
        }
        sampling.cancel()
        _ = await sampling.value
        await sampler?.sample()
        say("auditing...")
        let report = try await control.report(
            result: result, products: productIDs, stock: stock, configuration: self,
            holds: payer.map { (dsns, $0.tally, waves ?? 0) })
        return (report, sampler?.timeline)
    }

    /// After the rush, with holds: waves of late buyers while abandoned holds expire and their units come back, until
    /// the whole stock is paid (or a deadline of 12 hold times and 30 s passes). Returns the number of waves.
    private func lateBuyers(
        control: SaleControl, payer: HoldPayer, products: [String], swarm: BuyerSwarm.Configuration,
        result: inout BuyerSwarm.Result, sampler: SaleSampler?, say: (String) -> Void
    ) async throws -> Int {
        let total = stock * Int64(products.count)
        let deadline = ContinuousClock.now + .seconds(Int64(hold) * 12 + 30)
        var waves = 0
        while ContinuousClock.now < deadline {
            guard try await payer.undecided() == 0 else {
                try await Task.sleep(for: .milliseconds(50))
                continue
            }
            let lines = try await control.inventory.audit().products.filter { products.contains($0.productId) }
            let paid = lines.reduce(0) { $0 + $1.paid }
            if paid >= total { break }
            let free = lines.reduce(0) { $0 + $1.remaining }
            guard free > 0 else {
                try await Task.sleep(for: .milliseconds(100))  // abandoned holds still live: they expire soon
                continue
            }
            // The quota service grants the returned units out within its settle interval (500 ms).
            try await Task.sleep(for: .milliseconds(600))
            waves += 1
            var wave = swarm
            wave.attempts = Int(max(1_000, free * 50))
            wave.seed = seed &+ UInt64(waves)
            wave.requestIDBase = swarm.requestIDBase &+ UInt64(waves) << 28
            say("wave \(waves): \(free) units back on sale, \(paid) of \(total) paid; \(wave.attempts) attempts...")
            sampler?.mark(.phase, "wave \(waves): \(free) units back")
            result.merge(try await BuyerSwarm(configuration: wave, logger: control.logger).run())
        }
        return waves
    }
}
