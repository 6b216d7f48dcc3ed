import Logging
import NIOCore
import PostgresClient
import ServiceLifecycle
import Wire

/// Brings the hot-item database up (migrated, then its purchase pool started) without holding up the inventory:
/// while it is unreachable the inventory serves the cold products and hot products answer UNAVAILABLE, and this
/// service tries again in the background until it succeeds or the service group shuts down.
struct HotDatabaseStartup: Service {
    let inventory: Inventory
    let migrateDSN: String
    let settings: PostgresSettings
    /// The serving connection's role and durability are checked before the hot database is marked ready.
    let serving: PostgresSettings
    let allow: ServingCheck.Allowances
    var retryDelay = Backoff(initial: .milliseconds(200), max: .seconds(2))
    let logger: Logger

    /// One attempt: connect as the schema's owner and migrate, on the hot database's own thread (bounded by the
    /// owner's connect and statement timeouts; task cancellation abandons a statement in flight), then check the
    /// serving role (`ServingCheck`: throws `ServingRefused`).
    static func bringUp(
        _ database: ProductDatabase, migrateDSN: String, settings: PostgresSettings, serving: PostgresSettings,
        allow: ServingCheck.Allowances, logger: Logger
    ) async throws {
        let owner = try await PostgresConnection.connect(
            migrateDSN, settings: settings, threadPool: database.threadPool, logger: logger)
        defer { owner.close() }
        try await withTaskCancellationHandler {
            try await database.threadPool.runIfActive { try Migrator.migrate(owner, logger: logger) }
        } onCancel: {
            owner.cancel()
        }
        let server = try await PostgresConnection.connect(
            database.dsn, settings: serving, threadPool: database.threadPool, logger: logger)
        defer { server.close() }
        try await ServingCheck.require(server, database: .hot, allow: allow, logger: logger)
        database.markReady()
    }

    func run() async {
        guard !inventory.hot.isReady else { return }
        let (inventory, migrateDSN, settings, serving, allow, logger, retryDelay) =
            (inventory, migrateDSN, settings, serving, allow, logger, retryDelay)
        await cancelWhenGracefulShutdown {
            var delays = retryDelay.makeIterator()
            var attempts = 0
            while true {
                do {
                    try await Self.bringUp(
                        inventory.hot, migrateDSN: migrateDSN, settings: settings, serving: serving, allow: allow,
                        logger: logger)
                    inventory.hotDatabaseReady()
                    logger.notice("hot database reachable: hot products sell", metadata: ["attempts": "\(attempts + 1)"])
                    return
                } catch {
                    if Task.isCancelled { return }  // the service group is shutting down
                    attempts += 1
                    if attempts % 10 == 0 {
                        logger.warning("hot database still unreachable", metadata: ["error": "\(error)", "attempts": "\(attempts)"])
                    }
                }
                do { try await Task.sleep(for: delays.next()) } catch { return }
            }
        }
    }
}
