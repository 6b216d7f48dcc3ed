import Logging
import PostgresClient

/// Start-up of the two databases: the main one (the catalog of every product, and the cold products' stock and
/// orders) and the hot-item one (hot products' stock and orders), each migrated the same way.
enum DatabaseSetup {
    /// The hot-item database of `mainDSN` when none is named: same server, a database of its own (`<main>_hot`).
    static func defaultHotDSN(mainDSN: String, mainDatabase: String) -> String {
        let name = hotDatabaseName(mainDatabase: mainDatabase)
        for scheme in ["postgresql://", "postgres://"] where mainDSN.hasPrefix(scheme) {
            // URI: replace the path (the database), keep the query string.
            let rest = mainDSN.dropFirst(scheme.count)
            let query = rest.firstIndex(of: "?").map { String(rest[$0...]) } ?? ""
            let authority = rest.prefix { $0 != "/" && $0 != "?" }
            return "\(scheme)\(authority)/\(name)\(query)"
        }
        // key=value form: a later keyword overrides an earlier one.
        return "\(mainDSN) dbname='\(name)'"
    }

    static func hotDatabaseName(mainDatabase: String) -> String {
        "\(mainDatabase)_hot"
    }

    /// Blocking. Creates database `name` on `connection`'s server unless it exists; another process creating it
    /// at the same moment is fine.
    static func ensureDatabase(named name: String, using connection: PostgresConnection, logger: Logger) throws {
        let exists = try connection.query("SELECT 1 FROM pg_database WHERE datname = $1", [name])
        guard exists.isEmpty else { return }
        let quoted = "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        do {
            try connection.exec("CREATE DATABASE \(quoted)")
            logger.info("database created", metadata: ["database": "\(name)"])
        } catch let error as PostgresError where error.code == "42P04" || error.isUniqueViolation {
            // Created by a concurrent start-up.
        }
    }
}
