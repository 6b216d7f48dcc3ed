import ArgumentParser
import Cluster
import Foundation
import Logging
import NIOCore
import ServiceKit
import ServiceLifecycle

/// `flashsale-bench serve inventory|wire-server`: the benchmark scripts' one process starter. It starts the process
/// through the harness (`ServiceEndpoint.start` with typed arguments, on `RunDatabases` of its own), prints one line
///
///     SERVING <name> address=<host:port> pid=<pid> log=<path> [database=<name> hot_database=<name>]
///
/// and then reads its input: a line `stop` stops the process (the databases stay, for what the script reads after
/// it) and prints `STOPPED <name> status=<exit status>`; the end of its input (the script ended, however it ended)
/// or SIGTERM/SIGINT stops the process and drops the databases.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Start a process for a benchmark script; stop it when input ends.",
        subcommands: [ServeInventory.self, ServeWireServer.self])
}

/// An InventoryService on databases of its own, served as the login role and migrated as the owner, as in production.
struct ServeInventory: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inventory", abstract: "Serve an InventoryService.")

    @Option(help: "The server's owner DSN (of its `postgres` database): where the databases are made ($FLASHSALE_PG_DSN).")
    var adminDSN = ProcessInfo.processInfo.environment["FLASHSALE_PG_DSN"] ?? ""
    @Option(help: "Databases <prefix>_<random> and <prefix>_<random>_hot.") var prefix = "bench_inventory"
    @Option var port = 0
    @Option var hotConsumers: Int?
    @Option var maxBatch: Int?
    @Option var queueLimit: Int?
    @Option(help: "Follow Patroni's leader in this ZooKeeper ($FLASHSALE_PG_PATRONI_LEADER gives the path).")
    var patroniZookeeper: String?
    @Option var patroniLeaderPath = ProcessInfo.processInfo.environment["FLASHSALE_PG_PATRONI_LEADER"] ?? ""
    @Option var logLevel = "info"

    func validate() throws {
        guard !adminDSN.isEmpty else { throw ValidationError("--admin-dsn (or FLASHSALE_PG_DSN) is required") }
        if patroniZookeeper != nil, patroniLeaderPath.isEmpty {
            throw ValidationError("--patroni-zookeeper needs --patroni-leader-path (or FLASHSALE_PG_PATRONI_LEADER)")
        }
    }

    func run() async throws {
        let databases = try await RunDatabases.create(adminDSN: adminDSN, prefix: prefix)
        do {
            var arguments = InventoryArguments.serving(
                as: Platform.defaultServingRole, main: databases.main.dsn, hot: databases.hot.dsn)
            arguments.port = port
            arguments.hotConsumers = hotConsumers
            arguments.maxBatch = maxBatch
            arguments.queueLimit = queueLimit
            arguments.patroni = patroniZookeeper.map { PatroniFollowing(zooKeeper: $0, leaderPath: patroniLeaderPath) }
            arguments.logLevel = logLevel
            // The service token comes from this process's environment (FLASHSALE_SERVICE_TOKEN), as the load's does.
            let endpoint = try await ServiceEndpoint.start(arguments, environment: [:], name: "inventory")
            try await Served(
                endpoint: endpoint,
                details: "database=\(databases.main.name) hot_database=\(databases.hot.name)"
            ).run()
        } catch {
            await databases.drop()
            throw error
        }
        await databases.drop()
    }
}

/// `flashsale-bench wire-server` (the wire benchmark's Ping server) as a process of its own.
struct ServeWireServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "wire-server", abstract: "Serve the wire benchmark's Ping.")

    @Option var port = 0
    @Option(help: "Event loop threads.") var threads = System.coreCount

    func run() async throws {
        let endpoint = try await ServiceEndpoint.start(
            WireServerArguments(port: port, threads: threads), environment: [:], name: "wire-server")
        try await Served(endpoint: endpoint, details: "").run()
    }
}

/// The command line of `flashsale-bench wire-server`.
struct WireServerArguments: ServiceArguments {
    static let product = "flashsale-bench"
    var port: Int
    var threads: Int

    var list: [String] { ["wire-server", "--port", "\(port)", "--threads", "\(threads)"] }
}

/// Announces a started process, then follows the script's input until it ends (or a signal): the `stop` line stops
/// the process early. The process is stopped on the way out either way.
struct Served {
    let endpoint: ServiceEndpoint
    let details: String

    func run() async throws {
        let logger = ServiceRuntime.makeLogger(label: "serve", level: .warning)
        let follower = InputFollower(endpoint: endpoint)
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: follower, successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        let process = endpoint.process
        Self.say(
            "SERVING \(endpoint.name) address=\(endpoint.address) pid=\(process.pid) log=\(process.logURL.path)"
                + (details.isEmpty ? "" : " \(details)"))
        do {
            try await group.run()
        } catch {
            await process.terminate()
            throw error
        }
        await process.terminate()
    }

    /// One line to the script, unbuffered (stdout is a pipe).
    static func say(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}

/// Reads stdin lines until it ends (or a graceful shutdown cancels the wait).
private struct InputFollower: Service {
    let endpoint: ServiceEndpoint

    func run() async throws {
        // A blocking read, on a thread of its own: when it is cancelled the thread stays blocked until exit.
        let (lines, continuation) = AsyncStream<String>.makeStream()
        Thread.detachNewThread {
            while let line = readLine() { continuation.yield(line) }
            continuation.finish()
        }
        await cancelWhenGracefulShutdown {
            for await line in lines where line.trimmingCharacters(in: .whitespaces) == "stop" {
                let status = await endpoint.process.terminate()
                Served.say("STOPPED \(endpoint.name) status=\(status)")
            }
        }
    }
}
