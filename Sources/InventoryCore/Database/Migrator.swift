import Logging
import PostgresClient

/// Applies `Schema.migrations` that a database has not seen yet. Safe to run twice and from several processes at
/// once: a session advisory lock serializes migrators of one database, and each migration commits together with
/// its row in `schema_migrations`.
enum Migrator {
    /// Any constant works, as long as every version of the service uses the same one.
    static let advisoryLockKey: Int64 = 0x1F1A_5E11_0000_0008

    /// Blocking: call it from a thread that may block (start-up, or the connection's thread pool).
    static func migrate(_ connection: PostgresConnection, logger: Logger) throws {
        _ = try connection.query("SELECT pg_advisory_lock($1)", [String(advisoryLockKey)])
        defer { _ = try? connection.query("SELECT pg_advisory_unlock($1)", [String(advisoryLockKey)]) }

        try connection.exec("""
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())
            """)
        let applied = try connection.query("SELECT coalesce(max(version), 0) FROM schema_migrations").int64(0, 0) ?? 0
        for migration in Schema.migrations where migration.version > applied {
            do {
                // One simple-query message: the migration and its bookkeeping row commit together or not at all.
                try connection.exec("""
                    BEGIN;
                    \(migration.sql);
                    INSERT INTO schema_migrations (version, name) VALUES (\(migration.version), '\(migration.name)');
                    COMMIT;
                    """)
            } catch {
                _ = try? connection.exec("ROLLBACK")
                logger.error("migration failed", metadata: ["version": "\(migration.version)", "error": "\(error)"])
                throw error
            }
            logger.info("migration applied", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
        }
    }
}
