import Foundation

/// libpq connection strings, in either form (`key=value ...` or a `postgresql://` URI): the one place a DSN is
/// rewritten (another user, another database on the same server).
public enum PostgresDSN {
    /// The same connection as `user`: how the platform derives its serving DSN from the owner's.
    public static func with(user: String, _ dsn: String) -> String {
        if isURI(dsn), var parts = URLComponents(string: dsn) {
            parts.user = user
            parts.password = nil
            return parts.string ?? dsn
        }
        // In key=value form a later keyword wins.
        return dsn + " user=\(user)"
    }

    /// The same server and credentials, database `database` (a URI keeps its query string).
    public static func with(database: String, _ dsn: String) -> String {
        for scheme in ["postgresql://", "postgres://"] where dsn.hasPrefix(scheme) {
            let rest = dsn.dropFirst(scheme.count)
            let query = rest.firstIndex(of: "?").map { String(rest[$0...]) } ?? ""
            let authority = rest.prefix { $0 != "/" && $0 != "?" }
            return "\(scheme)\(authority)/\(database)\(query)"
        }
        // In key=value form a later keyword wins.
        return "\(dsn) dbname='\(database)'"
    }

    /// The same server and credentials through another port (a proxy in front of the server).
    public static func with(port: Int, _ dsn: String) -> String {
        if isURI(dsn), var parts = URLComponents(string: dsn) {
            parts.port = port
            return parts.string ?? dsn
        }
        // In key=value form a later keyword wins.
        return dsn + " port=\(port)"
    }

    /// The value `dsn` gives `keyword` (either form, as libpq reads it); nil when it gives none or does not parse.
    public static func value(of keyword: String, in dsn: String) -> String? {
        (try? PostgresConnection.parse(dsn))?.first { $0.keyword == keyword }?.value
    }

    private static func isURI(_ dsn: String) -> Bool { dsn.hasPrefix("postgres://") || dsn.hasPrefix("postgresql://") }
}
