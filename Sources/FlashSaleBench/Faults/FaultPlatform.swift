import Cluster
import FlashSaleClient
import Foundation
import Logging
import NIOPosix
import Wire

/// The secrets of one case's platform, made fresh per case. The suite's own clients hold the operator token
/// (operator calls) and the service token (the lookups of the checks, service to service as an edge makes them);
/// the poisoned-registration case presents the edges' ZooKeeper secret, as a compromised edge would.
struct FaultSecrets: Sendable {
    let operatorToken = "fault-operator-\(UInt64.random(in: 0...UInt64.max))"
    let serviceToken = "fault-service-\(UInt64.random(in: 0...UInt64.max))"
    let zooKeeperQuotaSecret = "fault-zk-quota-\(UInt64.random(in: 0...UInt64.max))"
    let zooKeeperEdgeSecret = "fault-zk-edge-\(UInt64.random(in: 0...UInt64.max))"
}

/// Where the fault suite starts processes: every choice of tokens, secrets, roles and ports for a case's platform
/// is here and nowhere else in the suite, so a change to how services start touches this file only.
enum FaultPlatform {
    /// Service token (FLASHSALE_SERVICE_TOKEN, service-to-service calls such as inventory.Purchase) for every
    /// service, the operator token, and ZooKeeper digest ACLs on (the quota service holds both ZooKeeper secrets,
    /// edges the edges' one).
    static func configuration(
        databases: RunDatabases, zooKeeper: String, root: String, secrets: FaultSecrets
    ) -> Platform.Configuration {
        var configuration = Platform.Configuration(
            databaseDSN: databases.main.dsn, hotDatabaseDSN: databases.hot.dsn, zooKeeperHosts: zooKeeper,
            operatorToken: secrets.operatorToken)
        configuration.clusters = databases.shardClusters
        configuration.zooKeeperRoot = root
        configuration.logLevel = "error"
        let service = ["FLASHSALE_SERVICE_TOKEN": secrets.serviceToken]
        configuration.inventoryEnvironment = service
        configuration.quotaEnvironment = service.merging([
            "FLASHSALE_ZK_QUOTA_SECRET": secrets.zooKeeperQuotaSecret,
            "FLASHSALE_ZK_EDGE_SECRET": secrets.zooKeeperEdgeSecret,
        ]) { $1 }
        configuration.edgeEnvironment = service.merging(["FLASHSALE_ZK_EDGE_SECRET": secrets.zooKeeperEdgeSecret]) { $1 }
        return configuration
    }

    /// Starts the inventory, the quota service and `edges` edges.
    static func start(_ configuration: Platform.Configuration, edges: Int) async throws -> Platform {
        var configuration = configuration
        configuration.edges = edges
        return try await Platform.start(configuration)
    }

    /// One more edge on a port of our choosing (a dead edge's, for one case).
    static func addEdge(to platform: Platform, port: Int) async throws -> ServiceEndpoint {
        try await platform.addEdge { $0.port = port }
    }

    /// One more edge whose ZooKeeper connection goes through `zooKeeperProxy` and that the quota service reaches
    /// through `edgeProxy` (which must forward to `port`): both can be blackholed, a partition of that edge alone.
    static func addPartitionableEdge(
        to platform: Platform, port: Int, zooKeeperProxy: BlackholeProxy, edgeProxy: BlackholeProxy
    ) async throws -> ServiceEndpoint {
        try await platform.addEdge {
            $0.port = port
            $0.zooKeeper = zooKeeperProxy.address
            $0.advertise = edgeProxy.address
        }
    }

    /// The checks' client of the inventory: lookups are service calls (service token); audit and stock are read.
    static func inventoryClient(_ platform: Platform, secrets: FaultSecrets, logger: Logger) -> InventoryClient {
        InventoryClient(rpc: RPCClient(
            configuration: RPCClientConfiguration(
                host: platform.inventory.host, port: platform.inventory.port, connections: 2,
                defaultTimeout: .seconds(5), maxBackoff: .milliseconds(200), token: secrets.serviceToken),
            logger: logger))
    }

    /// A client of the inventory that presents `token` (empty: none): the tokenless case's direct buyer.
    static func inventoryClient(_ platform: Platform, token: String, logger: Logger) -> InventoryClient {
        InventoryClient(rpc: RPCClient(
            configuration: RPCClientConfiguration(
                host: platform.inventory.host, port: platform.inventory.port, connections: 1,
                defaultTimeout: .seconds(2), maxBackoff: .milliseconds(200), token: token),
            logger: logger))
    }

    static func quotaClient(_ platform: Platform, secrets: FaultSecrets, logger: Logger) -> QuotaClient {
        // The last started: with a leader and a standby, the standby, which outlives the leader's kill.
        let quota = platform.quotaServices.last ?? platform.quota
        return QuotaClient(host: quota.host, port: quota.port, token: secrets.operatorToken, logger: logger)
    }

    /// A client of an edge's purchase port.
    static func purchaseClient(_ edge: ServiceEndpoint, secrets: FaultSecrets, logger: Logger) -> EdgeClient {
        edgeClient(host: edge.host, port: edge.port, secrets: secrets, logger: logger)
    }

    /// A client of an edge's read-only and operator methods (edge.Stats, edge.QuotaUsage): its purchase port, as
    /// these edges are started without --operator-port.
    static func operatorClient(_ edge: ServiceEndpoint, secrets: FaultSecrets, logger: Logger) -> EdgeClient {
        edgeClient(host: edge.host, port: edge.port, secrets: secrets, logger: logger)
    }

    private static func edgeClient(host: String, port: Int, secrets: FaultSecrets, logger: Logger) -> EdgeClient {
        EdgeClient(rpc: RPCClient(
            configuration: RPCClientConfiguration(
                host: host, port: port, connections: 1, connectTimeout: .seconds(1),
                defaultTimeout: .seconds(2), maxBackoff: .milliseconds(200), token: secrets.operatorToken),
            logger: logger))
    }
}
