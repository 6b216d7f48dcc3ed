import Foundation
import ServiceKit
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
            if fields.count >= 3, let address = HostPort(fields[2]) {
                return (address.host, address.port)
            }
        }
        throw ClusterError.commandFailed("\(name) printed a READY line without an address:\n\(tail())")
    }
}

/// The three services started as processes against running PostgreSQL and ZooKeeper: one InventoryService,
/// one QuotaService, N edges. Used by `flashsale sale`, the benchmarks and the end-to-end tests.
///
/// Least privilege by default: each service gets only the secrets it needs (the service token for all three, the
/// operator token for the quota service alone); the inventory serves as the login role `servingRole` and migrates
/// with the DSNs given (the owner's); ZooKeeper runs with digest ACLs under secrets made for this platform.
public final class Platform: Sendable {
    public struct Configuration: Sendable {
        /// libpq DSN of the main database and of the hot products' database, as their owner (the migrations run so).
        public var databaseDSN: String
        public var hotDatabaseDSN: String
        /// The login role the inventory serves both databases as: a member of flashsale_service, made by
        /// `scripts/postgres.sh`. Nil: it serves with the DSNs above (refused unless `inventoryArguments` holds
        /// `--allow-privileged-role`).
        public var servingRole: String? = Platform.defaultServingRole
        public var zooKeeperHosts: String
        public var zooKeeperRoot: String = "/flashsale"
        /// The quota service's and the edges' ZooKeeper secrets; nil leaves the nodes open (the services warn).
        public var zooKeeperSecrets: ZooKeeperSecrets? = ZooKeeperSecrets()
        public var edges: Int = 2
        public var operatorToken: String
        /// What the services present to one another (FLASHSALE_SERVICE_TOKEN); made for this platform by default.
        public var serviceToken: String = Platform.newSecret()
        public var logLevel: String = "warning"
        public var inventoryArguments: [String] = []
        public var quotaArguments: [String] = []
        public var edgeArguments: [String] = []
        /// Added to each service's environment, over what the platform gives it.
        public var inventoryEnvironment: [String: String] = [:]
        public var quotaEnvironment: [String: String] = [:]
        public var edgeEnvironment: [String: String] = [:]

        public init(databaseDSN: String, hotDatabaseDSN: String, zooKeeperHosts: String, operatorToken: String) {
            self.databaseDSN = databaseDSN
            self.hotDatabaseDSN = hotDatabaseDSN
            self.zooKeeperHosts = zooKeeperHosts
            self.operatorToken = operatorToken
        }

        /// The environment of each service: its own secrets, then the caller's additions. An operator token this
        /// process may hold is blanked for the services that have no use for it.
        private static let noOperatorToken = ["FLASHSALE_OPERATOR_TOKEN": "", "FLASHSALE_OPERATOR_TOKEN_FILE": ""]

        var inventoryProcessEnvironment: [String: String] {
            Self.noOperatorToken.merging(["FLASHSALE_SERVICE_TOKEN": serviceToken]) { $1 }.merging(inventoryEnvironment) { $1 }
        }

        var quotaProcessEnvironment: [String: String] {
            var environment = ["FLASHSALE_SERVICE_TOKEN": serviceToken, "FLASHSALE_OPERATOR_TOKEN": operatorToken]
            if let zooKeeperSecrets {
                environment["FLASHSALE_ZK_QUOTA_SECRET"] = zooKeeperSecrets.quota
                environment["FLASHSALE_ZK_EDGE_SECRET"] = zooKeeperSecrets.edge
            }
            return environment.merging(quotaEnvironment) { $1 }
        }

        var edgeProcessEnvironment: [String: String] {
            var environment = Self.noOperatorToken
            environment["FLASHSALE_SERVICE_TOKEN"] = serviceToken
            if let zooKeeperSecrets { environment["FLASHSALE_ZK_EDGE_SECRET"] = zooKeeperSecrets.edge }
            return environment.merging(edgeEnvironment) { $1 }
        }
    }

    /// The ZooKeeper digest secrets: the quota service's, and the one every edge shares.
    public struct ZooKeeperSecrets: Sendable {
        public var quota: String
        public var edge: String

        public init(quota: String = Platform.newSecret(), edge: String = Platform.newSecret()) {
            self.quota = quota
            self.edge = edge
        }
    }

    /// The login role `scripts/postgres.sh` makes for serving.
    public static let defaultServingRole = "flashsale_app"

    /// 128 random bits as hex: a token or secret for one run.
    public static func newSecret() -> String {
        (0..<2).map { _ in
            let hex = String(UInt64.random(in: 0...UInt64.max), radix: 16)
            return String(repeating: "0", count: 16 - hex.count) + hex
        }.joined()
    }

    public let configuration: Configuration
    private let inventoryEndpoint: Mutex<ServiceEndpoint>
    public var inventory: ServiceEndpoint { inventoryEndpoint.withLock { $0 } }
    public let quota: ServiceEndpoint
    private let edgeList: Mutex<[ServiceEndpoint]>

    public var edges: [ServiceEndpoint] { edgeList.withLock { $0 } }

    private init(configuration: Configuration, inventory: ServiceEndpoint, quota: ServiceEndpoint) {
        self.configuration = configuration
        self.inventoryEndpoint = Mutex(inventory)
        self.quota = quota
        self.edgeList = Mutex([])
    }

    /// Starts the inventory, then the quota service, then the edges, each once the one before is ready.
    public static func start(_ configuration: Configuration) async throws -> Platform {
        let inventory = try await startService(
            "InventoryService", inventoryArguments(configuration, port: 0),
            environment: configuration.inventoryProcessEnvironment, name: "inventory")
        do {
            let quota = try await startService(
                "QuotaService",
                ["--port", "0", "--zookeeper", configuration.zooKeeperHosts, "--root", configuration.zooKeeperRoot,
                 "--inventory", inventory.address, "--log-level", configuration.logLevel] + configuration.quotaArguments,
                environment: configuration.quotaProcessEnvironment, name: "quota")
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
            environment: configuration.edgeProcessEnvironment, name: "edge\(index + 1)")
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
            environment: configuration.inventoryProcessEnvironment, name: "inventory-restarted")
        inventoryEndpoint.withLock { $0 = restarted }
    }

    private static func inventoryArguments(_ configuration: Configuration, port: Int) -> [String] {
        var databases = ["--dsn", configuration.databaseDSN, "--hot-dsn", configuration.hotDatabaseDSN]
        if let role = configuration.servingRole {
            databases = [
                "--dsn", PostgresDSN.with(user: role, configuration.databaseDSN),
                "--hot-dsn", PostgresDSN.with(user: role, configuration.hotDatabaseDSN),
                "--migrate-dsn", configuration.databaseDSN, "--hot-migrate-dsn", configuration.hotDatabaseDSN,
            ]
        }
        return ["--port", "\(port)"] + databases + ["--log-level", configuration.logLevel] + configuration.inventoryArguments
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
