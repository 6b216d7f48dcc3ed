import Logging
import NIOCore
import PostgresClient
import ServiceLifecycle
import Wire

/// Brings up the clusters other than `main` (each migrated, named, checked, then its purchase pool started) without
/// holding up the inventory: while one is unreachable the inventory serves the others' products, its products answer
/// UNAVAILABLE, and this service tries it again in the background until it is up or the service group shuts down.
/// Each cluster has a loop of its own, so one that is down never delays another.
struct ClusterStartup: Service {
    /// A cluster not up yet: the owner's connection string it is migrated with, and its owner's and serving
    /// connections' bounds (the serving connection's role and durability are checked before it is marked ready).
    struct Pending: Sendable {
        let role: DatabaseRole
        let migrateDSN: String
        let owner: PostgresSettings
        let serving: PostgresSettings
    }

    let inventory: Inventory
    let pending: [Pending]
    let allow: ServingCheck.Allowances
    var retryDelay = Backoff(initial: .milliseconds(200), max: .seconds(2))
    let logger: Logger

    /// One attempt: connect as the schema's owner, migrate and claim the cluster's name, on the cluster's own thread
    /// (bounded by the owner's connect and statement timeouts; task cancellation abandons a statement in flight), then
    /// check the serving role (`ServingCheck`). Throws `ServingRefused` when the database is reachable but unfit
    /// (retrying will not help).
    static func bringUp(
        _ database: ProductDatabase, migrateDSN: String, settings: PostgresSettings, serving: PostgresSettings,
        allow: ServingCheck.Allowances, logger: Logger
    ) async throws {
        let owner = try await PostgresConnection.connect(
            migrateDSN, settings: settings, threadPool: database.threadPool, logger: logger)
        defer { owner.close() }
        try await withTaskCancellationHandler {
            try await database.threadPool.runIfActive {
                try Migrator.migrate(owner, logger: logger)
                try claim(database.role, on: owner)
            }
        } onCancel: {
            owner.cancel()
        }
        let server = try await PostgresConnection.connect(
            database.dsn, settings: serving, threadPool: database.threadPool, logger: logger)
        defer { server.close() }
        try await ServingCheck.require(server, database: database.role, allow: allow, logger: logger)
        database.markReady()
    }

    /// Blocking. Records `role` as the cluster this database is, or refuses when it is another's already.
    static func claim(_ role: DatabaseRole, on owner: PostgresConnection) throws {
        let claimed = try owner.query("SELECT claim_cluster($1)", [role.rawValue]).string(0, 0)
        guard claimed == role.rawValue else {
            throw ServingRefused(database: role, reasons: [
                "this database is cluster \(claimed ?? "?")'s, not \(role.rawValue)'s: check the connection strings",
            ])
        }
    }

    func run() async {
        let (inventory, allow, logger, retryDelay) = (inventory, allow, logger, retryDelay)
        let waiting = pending.filter { !inventory.database(for: $0.role).isReady }
        guard !waiting.isEmpty else { return }
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                for cluster in waiting {
                    group.addTask {
                        await Self.keepTrying(
                            cluster, inventory: inventory, allow: allow, retryDelay: retryDelay, logger: logger)
                    }
                }
            }
        }
    }

    private static func keepTrying(
        _ cluster: Pending, inventory: Inventory, allow: ServingCheck.Allowances, retryDelay: Backoff, logger: Logger
    ) async {
        var delays = retryDelay.makeIterator()
        var attempts = 0
        let metadata: Logger.Metadata = ["database": "\(cluster.role.rawValue)"]
        while true {
            do {
                try await bringUp(
                    inventory.database(for: cluster.role), migrateDSN: cluster.migrateDSN, settings: cluster.owner,
                    serving: cluster.serving, allow: allow, logger: logger)
                inventory.clusterReady(cluster.role)
                logger.notice("cluster reachable: its products sell", metadata: metadata.merging(["attempts": "\(attempts + 1)"]) { $1 })
                return
            } catch {
                if Task.isCancelled { return }  // the service group is shutting down
                attempts += 1
                if attempts % 10 == 0 {
                    logger.warning("cluster still unreachable", metadata: metadata.merging(
                        ["error": "\(error)", "attempts": "\(attempts)"]) { $1 })
                }
            }
            do { try await Task.sleep(for: delays.next()) } catch { return }
        }
    }
}
