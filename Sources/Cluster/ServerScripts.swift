import Foundation

/// The real PostgreSQL and ZooKeeper, run by the checkout's scripts (`scripts/postgres.sh`, `scripts/zookeeper.sh`).
public enum ServerScript: String, Sendable, CaseIterable {
    case postgres
    case zookeeper

    var path: String { RepoPaths.scripts.appendingPathComponent("\(rawValue).sh").path }

    /// What `env` exports to reach the server: a libpq DSN, or a ZooKeeper connection string.
    var connectionKey: String { self == .postgres ? "FLASHSALE_PG_DSN" : "FLASHSALE_ZK" }

    /// Starts the server unless it is running; returns how to reach it and whether this call started it.
    /// `environment` overrides the scripts' settings (`FLASHSALE_PG_PORT`, `FLASHSALE_PG_BASE`, ...): a private
    /// instance for tests that restart it.
    public func ensureRunning(environment: [String: String] = [:]) async throws -> (connection: String, startedHere: Bool) {
        let start = try await runCommand(path, ["start"], environment: environment, timeout: .seconds(90))
        guard start.status == 0 else {
            throw ClusterError.commandFailed("\(rawValue).sh start (\(start.status)):\n\(start.output)")
        }
        let env = try await runCommand(path, ["env"], environment: environment, timeout: .seconds(30))
        guard env.status == 0, let value = Self.exported(connectionKey, in: env.output) else {
            throw ClusterError.commandFailed("\(rawValue).sh env:\n\(env.output)")
        }
        return (value, start.output.contains(" started "))
    }

    public func stop(environment: [String: String] = [:]) async {
        _ = try? await runCommand(path, ["stop"], environment: environment, timeout: .seconds(60))
    }

    /// The value of `export KEY=value` or `export KEY='value'` in a script's output.
    public static func exported(_ key: String, in output: String) -> String? {
        for line in output.split(separator: "\n") {
            let prefix = "export \(key)="
            guard line.hasPrefix(prefix) else { continue }
            var value = line.dropFirst(prefix.count)
            if value.hasPrefix("'"), value.hasSuffix("'"), value.count >= 2 { value = value.dropFirst().dropLast() }
            return String(value)
        }
        return nil
    }
}
