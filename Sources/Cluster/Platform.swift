import Addressing
import FlashSaleClient
import Foundation
import Logging
import PostgresClient
import ServiceKit
import Synchronization
import Wire

/// A service process of the platform and where it listens.
public struct ServiceEndpoint: Sendable {
    public let name: String
    public let host: String
    public let port: Int
    public let process: ManagedProcess

    /// `host:port`, an IPv6 host in brackets.
    public var address: String { HostPort(host: host, port: port).description }
}

extension ManagedProcess {
    /// Waits for the service's `READY <service> <host>:<port>` line (`AnnouncedLine`) and returns where it listens.
    public func waitForReady(timeout: Duration = .seconds(30)) async throws -> (host: String, port: Int) {
        try await waitForLine(containing: AnnouncedLine.Kind.ready.marker, timeout: timeout)
        guard let ready = AnnouncedLine.first(.ready, in: log()) else {
            throw ClusterError.commandFailed("\(name) printed a READY line without an address:\n\(tail())")
        }
        return (ready.address.host, ready.address.port)
    }
}

/// The three services started as processes against running PostgreSQL and ZooKeeper: one InventoryService (or
/// `inventories` replicas), one QuotaService (or a leader and standbys: `quotaServices`), N edges. Used by `flashsale sale`, the benchmarks and the end-to-end tests.
///
/// Least privilege by default: each service gets only the secrets it needs (the service token for all three, the
/// operator token for the quota service alone); the inventory serves as the login role `servingRole` and migrates
/// with the DSNs given (the owner's); ZooKeeper runs with digest ACLs under secrets made for this platform.
public final class Platform: Sendable {
    public struct Configuration: Sendable {
        /// libpq DSN of the main database and of the hot products' database, as their owner (the migrations run so).
        public var databaseDSN: String
        public var hotDatabaseDSN: String
        /// More database clusters (shards: `RunDatabases.shardClusters`), as their owner, as the two above.
        public var clusters: [Cluster] = []
        /// The login role the inventory serves both databases as: a member of flashsale_service, made by
        /// `scripts/postgres.sh`. Nil: it serves with the DSNs above (refused unless `inventoryArguments` holds
        /// `--allow-privileged-role`).
        public var servingRole: String? = Platform.defaultServingRole
        public var zooKeeperHosts: String
        public var zooKeeperRoot: String = "/flashsale"
        /// The quota service's and the edges' ZooKeeper secrets; nil leaves the nodes open (the services warn).
        public var zooKeeperSecrets: ZooKeeperSecrets? = ZooKeeperSecrets()
        public var edges: Int = 2
        /// Inventory replicas, all on the same databases (edges and quota services spread their calls over them),
        /// and quota service processes (the first started leads, the others stand by).
        public var inventories: Int = 1
        public var quotaServices: Int = 1
        /// The inventories also register in ZooKeeper, and the edges and quota services watch `inventories/`.
        public var discoverInventories = false
        public var operatorToken: String
        /// What the services present to one another (FLASHSALE_SERVICE_TOKEN); made for this platform by default.
        public var serviceToken: String = Platform.newSecret()
        public var logLevel: String = "warning"
        public var inventoryArguments: [String] = []
        /// The inventory follows a Patroni cluster's leader (`PatroniCluster.following`); nil: its DSNs alone decide.
        public var patroni: PatroniFollowing?
        public var quotaArguments: [String] = []
        public var edgeArguments: [String] = []
        /// Event loop threads of each edge; nil: the edge's own default (one per core).
        public var edgeThreads: Int?
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
            var environment = Self.noOperatorToken.merging(["FLASHSALE_SERVICE_TOKEN": serviceToken]) { $1 }
            // It registers with the services' ZooKeeper identity, as an edge does.
            if discoverInventories, let zooKeeperSecrets { environment["FLASHSALE_ZK_EDGE_SECRET"] = zooKeeperSecrets.edge }
            return environment.merging(inventoryEnvironment) { $1 }
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

    /// A database cluster beyond main and hot: the inventory's `--database NAME=DSN`.
    public struct Cluster: Sendable {
        public var name: String
        /// As the owner (the migrations run so).
        public var dsn: String

        public init(name: String, dsn: String) {
            self.name = name
            self.dsn = dsn
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
    private let inventoryEndpoints: Mutex<[ServiceEndpoint]>
    /// The first inventory replica (the only one by default).
    public var inventory: ServiceEndpoint { inventoryEndpoints.withLock { $0[0] } }
    /// Every inventory replica, in start order (a killed one stays listed).
    public var inventories: [ServiceEndpoint] { inventoryEndpoints.withLock { $0 } }
    private let quotaEndpoints: Mutex<[ServiceEndpoint]>
    /// The first quota service: the leader at start, and the one edges ask for more.
    public var quota: ServiceEndpoint { quotaEndpoints.withLock { $0[0] } }
    /// Every quota service process, in start order.
    public var quotaServices: [ServiceEndpoint] { quotaEndpoints.withLock { $0 } }
    private let edgeList: Mutex<[ServiceEndpoint]>

    public var edges: [ServiceEndpoint] { edgeList.withLock { $0 } }

    private init(configuration: Configuration, inventories: [ServiceEndpoint], quotaServices: [ServiceEndpoint]) {
        self.configuration = configuration
        self.inventoryEndpoints = Mutex(inventories)
        self.quotaEndpoints = Mutex(quotaServices)
        self.edgeList = Mutex([])
    }

    /// `--inventory` of the edges and quota services: every replica.
    private static func inventoryList(_ inventories: [ServiceEndpoint]) -> String {
        inventories.map(\.address).joined(separator: ",")
    }

    /// Starts the inventories, then the quota services, then the edges, each once the one before is ready.
    public static func start(_ configuration: Configuration) async throws -> Platform {
        var inventories: [ServiceEndpoint] = []
        var quotaServices: [ServiceEndpoint] = []
        do {
            for index in 0..<max(1, configuration.inventories) {
                inventories.append(try await ServiceEndpoint.start(
                    inventoryArguments(configuration, port: 0), environment: configuration.inventoryProcessEnvironment,
                    name: index == 0 ? "inventory" : "inventory\(index + 1)"))
            }
            for index in 0..<max(1, configuration.quotaServices) {
                quotaServices.append(try await ServiceEndpoint.start(
                    quotaArguments(configuration, inventories: inventories, port: 0),
                    environment: configuration.quotaProcessEnvironment, name: index == 0 ? "quota" : "quota\(index + 1)"))
            }
        } catch {
            for service in quotaServices + inventories { await service.process.terminate() }
            throw error
        }
        let platform = Platform(configuration: configuration, inventories: inventories, quotaServices: quotaServices)
        do {
            for _ in 0..<configuration.edges { _ = try await platform.addEdge() }
        } catch {
            await platform.stop()
            throw error
        }
        return platform
    }

    private static func quotaArguments(_ configuration: Configuration, inventories: [ServiceEndpoint], port: Int) -> QuotaArguments {
        var arguments = QuotaArguments(
            zooKeeper: configuration.zooKeeperHosts, root: configuration.zooKeeperRoot, inventory: inventoryList(inventories))
        arguments.port = port
        arguments.logLevel = configuration.logLevel
        arguments.extra = (configuration.discoverInventories ? ["--discover-inventories"] : []) + configuration.quotaArguments
        return arguments
    }

    /// Starts one more edge; it registers in ZooKeeper and the quota service gives it a share. It knows every quota
    /// service, leader first: it refills through the next once one cannot be reached.
    @discardableResult
    /// `configure` sets what this edge does apart (its port, a proxy to ZooKeeper, the address it advertises).
    public func addEdge(
        extraArguments: [String] = [], configure: (inout EdgeArguments) -> Void = { _ in }
    ) async throws -> ServiceEndpoint {
        let index = edgeList.withLock { $0.count }
        var arguments = EdgeArguments(
            zooKeeper: configuration.zooKeeperHosts, root: configuration.zooKeeperRoot,
            inventory: Self.inventoryList(inventories), quota: quotaServices.map(\.address).joined(separator: ","))
        arguments.logLevel = configuration.logLevel
        arguments.threads = configuration.edgeThreads
        arguments.extra = (configuration.discoverInventories ? ["--discover-inventories"] : [])
            + configuration.edgeArguments + extraArguments
        configure(&arguments)
        let edge = try await ServiceEndpoint.start(
            arguments, environment: configuration.edgeProcessEnvironment, name: "edge\(index + 1)")
        edgeList.withLock { $0.append(edge) }
        return edge
    }

    /// A client of the inventory presenting the platform's service token: the services' calls (lookups) and reads.
    public func inventoryClient(connections: Int = 1, logger: Logger) -> InventoryClient {
        InventoryClient(rpc: RPCClient(
            configuration: RPCClientConfiguration(
                host: inventory.host, port: inventory.port, connections: connections, token: configuration.serviceToken),
            logger: logger))
    }

    /// A client of the quota service presenting the operator token.
    public func quotaClient(logger: Logger) -> QuotaClient {
        QuotaClient(host: quota.host, port: quota.port, token: configuration.operatorToken, logger: logger)
    }

    /// SIGTERM to every process (edges first, so they finish their calls in flight), SIGKILL after a grace.
    public func stop() async {
        for edge in edges { await edge.process.terminate() }
        for quota in quotaServices { await quota.process.terminate() }
        for inventory in inventories { await inventory.process.terminate() }
    }

    /// Kills the inventory service (SIGKILL, a crash) and starts it again on the same port, where the quota
    /// service and the edges expect it.
    public func crashAndRestartInventory(downtime: Duration = .milliseconds(500)) async throws {
        let old = inventory
        await old.process.kill9()
        try await Task.sleep(for: downtime)
        let restarted = try await ServiceEndpoint.start(
            Self.inventoryArguments(configuration, port: old.port), environment: configuration.inventoryProcessEnvironment,
            name: "inventory-restarted")
        inventoryEndpoints.withLock { $0[0] = restarted }
    }

    private static func inventoryArguments(_ configuration: Configuration, port: Int) -> InventoryArguments {
        let clusters = configuration.clusters.map { (name: $0.name, dsn: $0.dsn) }
        var arguments = configuration.servingRole.map {
            InventoryArguments.serving(
                as: $0, main: configuration.databaseDSN, hot: configuration.hotDatabaseDSN, clusters: clusters)
        } ?? {
            var arguments = InventoryArguments(dsn: configuration.databaseDSN, hotDSN: configuration.hotDatabaseDSN)
            arguments.clusters = clusters.map { ($0.name, $0.dsn, nil) }
            return arguments
        }()
        arguments.port = port
        arguments.logLevel = configuration.logLevel
        arguments.extra = configuration.inventoryArguments
        arguments.patroni = configuration.patroni
        if configuration.discoverInventories {
            arguments.extra += ["--zookeeper", configuration.zooKeeperHosts, "--root", configuration.zooKeeperRoot]
        }
        return arguments
    }
}
