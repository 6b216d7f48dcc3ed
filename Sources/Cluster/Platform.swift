import Foundation
import Synchronization

/// A service process of the platform and where it listens.
public struct ServiceEndpoint: Sendable {
    public let name: String
    public let host: String
    public let port: Int
    public let process: ManagedProcess

    public var address: String { "\(host):\(port)" }
}

extension ManagedProcess {
    /// Waits for the service's `READY <service> <host>:<port>` line and returns where it listens.
    public func waitForReady(timeout: Duration = .seconds(30)) async throws -> (host: String, port: Int) {
        try await waitForLine(containing: "READY ", timeout: timeout)
        for line in log().split(separator: "\n") where line.hasPrefix("READY ") {
            let fields = line.split(separator: " ")
            if fields.count >= 3, let colon = fields[2].lastIndex(of: ":"), let port = Int(fields[2][fields[2].index(after: colon)...]) {
                return (String(fields[2][..<colon]), port)
            }
        }
        throw ClusterError.commandFailed("\(name) printed a READY line without an address:\n\(tail())")
    }
}

/// The three services started as processes against running PostgreSQL and ZooKeeper: one InventoryService,
/// one QuotaService, N edges. Used by `flashsale sale` and the end-to-end tests.
public final class Platform: Sendable {
    public struct Configuration: Sendable {
        /// libpq DSN of the main database and of the hot products' database.
        public var databaseDSN: String
        public var hotDatabaseDSN: String
        public var zooKeeperHosts: String
        public var zooKeeperRoot: String = "/flashsale"
        public var edges: Int = 2
        public var operatorToken: String
        public var logLevel: String = "warning"
        public var inventoryArguments: [String] = []
        public var quotaArguments: [String] = []
        public var edgeArguments: [String] = []
        /// Added to each service's environment (secrets such as FLASHSALE_ZK_QUOTA_SECRET go to the service that
        /// needs them only).
        public var inventoryEnvironment: [String: String] = [:]
        public var quotaEnvironment: [String: String] = [:]
        public var edgeEnvironment: [String: String] = [:]

        public init(databaseDSN: String, hotDatabaseDSN: String, zooKeeperHosts: String, operatorToken: String) {
            self.databaseDSN = databaseDSN
            self.hotDatabaseDSN = hotDatabaseDSN
            self.zooKeeperHosts = zooKeeperHosts
            self.operatorToken = operatorToken
        }
    }

    public let configuration: Configuration
    private let inventoryEndpoint: Mutex<ServiceEndpoint>
    public var inventory: ServiceEndpoint { inventoryEndpoint.withLock { $0 } }
    public let quota: ServiceEndpoint
    private let edgeList: Mutex<[ServiceEndpoint]>

    public var edges: [ServiceEndpoint] { edgeList.withLock { $0 } }

    private var environment: [String: String] { ["FLASHSALE_OPERATOR_TOKEN": configuration.operatorToken] }

    private init(configuration: Configuration, inventory: ServiceEndpoint, quota: ServiceEndpoint) {
        self.configuration = configuration
        self.inventoryEndpoint = Mutex(inventory)
        self.quota = quota
        self.edgeList = Mutex([])
    }

    /// Starts the inventory, then the quota service, then the edges, each once the one before is ready.
    public static func start(_ configuration: Configuration) async throws -> Platform {
        let environment = ["FLASHSALE_OPERATOR_TOKEN": configuration.operatorToken]
        let inventory = try await startService(
            "InventoryService", inventoryArguments(configuration, port: 0),
            environment: environment.merging(configuration.inventoryEnvironment) { $1 }, name: "inventory")
        do {
            let quota = try await startService(
                "QuotaService",
                ["--port", "0", "--zookeeper", configuration.zooKeeperHosts, "--root", configuration.zooKeeperRoot,
                 "--inventory", inventory.address, "--log-level", configuration.logLevel] + configuration.quotaArguments,
                environment: environment.merging(configuration.quotaEnvironment) { $1 }, name: "quota")
            let platform = Platform(configuration: configuration, inventory: inventory, quota: quota)
            do {
                for _ in 0..<configuration.edges { _ = try await platform.addEdge() }
            } catch {
                await platform.stop()
                throw error
            }
            return platform
        } catch {
            await inventory.process.terminate()
            throw error
        }
    }

    /// Starts one more edge; it registers in ZooKeeper and the quota service gives it a share.
    @discardableResult
    public func addEdge(extraArguments: [String] = []) async throws -> ServiceEndpoint {
        let index = edgeList.withLock { $0.count }
        let edge = try await Self.startService(
            "Edge",
            ["--port", "0", "--zookeeper", configuration.zooKeeperHosts, "--root", configuration.zooKeeperRoot,
             "--inventory", inventory.address, "--quota", quota.address, "--log-level", configuration.logLevel]
                + configuration.edgeArguments + extraArguments,
            environment: environment.merging(configuration.edgeEnvironment) { $1 }, name: "edge\(index + 1)")
        edgeList.withLock { $0.append(edge) }
        return edge
    }

    /// SIGTERM to every process (edges first, so they finish their calls in flight), SIGKILL after a grace.
    public func stop() async {
        for edge in edges { await edge.process.terminate() }
        await quota.process.terminate()
        await inventory.process.terminate()
    }

    /// Kills the inventory service (SIGKILL, a crash) and starts it again on the same port, where the quota
    /// service and the edges expect it.
    public func crashAndRestartInventory(downtime: Duration = .milliseconds(500)) async throws {
        let old = inventory
        await old.process.kill9()
        try await Task.sleep(for: downtime)
        let restarted = try await Self.startService(
            "InventoryService", Self.inventoryArguments(configuration, port: old.port),
            environment: environment.merging(configuration.inventoryEnvironment) { $1 }, name: "inventory-restarted")
        inventoryEndpoint.withLock { $0 = restarted }
    }

    private static func inventoryArguments(_ configuration: Configuration, port: Int) -> [String] {
        ["--port", "\(port)", "--dsn", configuration.databaseDSN, "--hot-dsn", configuration.hotDatabaseDSN,
         "--log-level", configuration.logLevel] + configuration.inventoryArguments
    }

    private static func startService(
        _ executable: String, _ arguments: [String], environment: [String: String], name: String
    ) async throws -> ServiceEndpoint {
        let process = try ManagedProcess.start(
            RepoPaths.executable(executable), arguments: arguments, environment: environment, name: name)
        do {
            let (host, port) = try await process.waitForReady()
            return ServiceEndpoint(name: name, host: host, port: port, process: process)
        } catch {
            await process.kill9()
            throw error
        }
    }
}
