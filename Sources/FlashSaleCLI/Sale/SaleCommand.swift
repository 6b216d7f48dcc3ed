import ArgumentParser
import Cluster
import FlashSaleClient
import Foundation
import Logging
import NIOCore
import PostgresClient
import Proto
import ServiceKit
import Wire

/// `flashsale sale`: the whole platform end to end. Starts (or reuses) PostgreSQL and ZooKeeper, starts the
/// inventory service, the quota service and N edges, creates the products, runs the crowd of buyers with a
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
    @Option(help: "Number of edges.") var edges = 2
    @Option(help: "Seed of the buyers' choices.") var seed: UInt64 = 20_261_124
    @Option(help: "Write the report as JSON to this file as well.") var json: String?
    @Option(help: "Log level of the services.") var logLevel = "warning"
    @Flag(help: "Keep the sale's databases afterwards (dropped by default).") var keepData = false

    func run() async throws {
        guard products > 0, stock > 0, attempts > 0, users > 0, connections > 0, depth > 0, edges > 0,
              (0...1).contains(keep)
        else { throw ValidationError("products, stock, attempts, users, connections, depth and edges must be positive; keep in 0...1") }

        let logger = ServiceRuntime.makeLogger(label: "flashsale", level: .warning)
        let say = { (line: String) in FileHandle.standardError.write((line + "\n").data(using: .utf8)!) }

        say("starting PostgreSQL and ZooKeeper...")
        let (adminDSN, startedPostgres) = try await ServerScript.postgres.ensureRunning()
        let (zooKeeper, startedZooKeeper) = try await ServerScript.zookeeper.ensureRunning()
        let runID = "sale_\(Int(Date().timeIntervalSince1970))_\(UInt32.random(in: 0...UInt32.max) % 10_000)"
        let databases = try await SaleDatabases.create(adminDSN: adminDSN, name: runID)
        let token = ProcessInfo.processInfo.environment["FLASHSALE_OPERATOR_TOKEN"] ?? Platform.newSecret()

        var platformConfiguration = Platform.Configuration(
            databaseDSN: databases.main, hotDatabaseDSN: databases.hot, zooKeeperHosts: zooKeeper, operatorToken: token)
        platformConfiguration.zooKeeperRoot = "/\(runID)"
        platformConfiguration.edges = edges
        platformConfiguration.logLevel = logLevel
        say("starting the inventory service, the quota service and \(edges) edges...")
        let platform = try await Platform.start(platformConfiguration)

        var report: SaleReport?
        var failure: (any Error)?
        do {
            report = try await runSale(platform: platform, token: token, logger: logger, say: say)
        } catch {
            failure = error
        }
        say("stopping...")
        await platform.stop()
        if !keepData { await databases.drop() }
        if startedZooKeeper { await ServerScript.zookeeper.stop() }
        if startedPostgres { await ServerScript.postgres.stop() }
        if let failure { throw failure }
        guard let report else { return }
        print(report.text())
        if let json { try report.json().write(to: URL(fileURLWithPath: json)) }
        if !report.auditClean { throw ExitCode(2) }
    }

    private func runSale(platform: Platform, token: String, logger: Logger, say: (String) -> Void) async throws -> SaleReport {
        let control = SaleControl(platform: platform, token: token, logger: logger)
        defer { Task { await control.shutdown() } }
        let productIDs = (1...products).map { "p\($0)" }
        let hotProducts = Set(hot.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) })
        say("creating \(products) products x \(stock) units, keeping \(keep) of attempts...")
        try await control.prepare(products: productIDs, stock: stock, hot: hotProducts, keepPerMillion: UInt32(keep * 1_000_000))

        var swarmConfiguration = BuyerSwarm.Configuration(
            edges: platform.edges.map { ($0.host, $0.port) }, products: productIDs, attempts: attempts, users: users,
            connections: connections, depth: depth, seed: seed)
        swarmConfiguration.timeout = .seconds(10)
        let swarm = BuyerSwarm(configuration: swarmConfiguration, logger: logger)
        let bar = ProgressBar(total: attempts)
        let progress = Task {
            while !Task.isCancelled {
                bar.draw(done: swarm.completed)
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        say("running \(attempts) attempts from \(connections) connections x \(depth) in flight...")
        let result = try await swarm.run()
        progress.cancel()
        bar.draw(done: swarm.completed)
        bar.finish()

        say("auditing...")
        return try await control.report(result: result, products: productIDs, stock: stock, configuration: self)
    }
}
