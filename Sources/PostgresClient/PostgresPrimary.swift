import Addressing
import Foundation
import Synchronization

/// Where a cluster's primary is now, as its failover manager (Patroni) says: connections given one in their
/// settings go to that server alone, not to the first writable host of a multi-host connection string. A primary
/// whose Patroni died lives on read-write (an orphan) and stays first in such a list; only the leader key knows it
/// is no longer the primary.
///
/// Someone else keeps it current (`PatroniLeaderWatch` in the inventory): reading it never waits on the network.
/// A connection made to another server than the current one stops being used (`PostgresConnection.isConnected`),
/// and a statement waiting on it is abandoned (its outcome unknown, as for any lost connection).
public final class PostgresPrimaryLocator: Sendable {
    private let state: Mutex<HostPort?>

    public init(_ initial: HostPort? = nil) {
        state = Mutex(initial)
    }

    /// The primary last seen; nil while none is known (before the first answer, or while there is no leader).
    public var current: HostPort? { state.withLock { $0 } }

    /// Records what the failover manager says now; nil: no primary (an election is under way).
    public func update(_ primary: HostPort?) {
        state.withLock { $0 = primary }
    }

    /// Whether a connection made to `endpoint` must be left: another server is the primary now. Not while no primary
    /// is known (a failover manager that cannot be read, e.g. its store is down, demotes nobody).
    public func hasMoved(from endpoint: HostPort) -> Bool {
        guard let current else { return false }
        return current != endpoint
    }
}

/// What Patroni (3.x) keeps in its ZooKeeper store, decoded purely: the leader key holds the leading member's name,
/// and each member's node (`<namespace>/<scope>/members/<name>`) holds its JSON, whose `conn_url` is where its
/// PostgreSQL listens (`postgres://host:port/db`). Anything else (empty, not UTF-8, not JSON, no or a malformed
/// `conn_url`) decodes to nil: no primary known, never a crash.
public enum PatroniLeader {
    /// The member named by the leader key's value (trimmed); nil for an empty or implausible name.
    public static func memberName(leaderValue: [UInt8]) -> String? {
        guard let text = String(validating: leaderValue, as: UTF8.self) else { return nil }
        let name = text.trimmingCharacters(in: .whitespacesAndNewlines)
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-_."))
        guard !name.isEmpty, name.count <= 255, name.unicodeScalars.allSatisfy(allowed.contains) else { return nil }
        return name
    }

    /// The member's node, next to the leader key (`/ns/scope/leader` -> `/ns/scope/members/NAME`).
    public static func memberPath(leaderPath: String, member: String) -> String? {
        guard leaderPath.hasPrefix("/"), let slash = leaderPath.lastIndex(of: "/"),
              leaderPath[leaderPath.index(after: slash)...] == "leader"
        else { return nil }
        return "\(leaderPath[..<slash])/members/\(member)"
    }

    /// Where the member's PostgreSQL listens, from its JSON's `conn_url`.
    public static func endpoint(memberJSON: [UInt8]) -> HostPort? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(memberJSON)) as? [String: Any],
              let url = object["conn_url"] as? String
        else { return nil }
        return endpoint(connectionURL: url)
    }

    /// `postgres://host:port/db` (or `postgresql://`, IPv6 in brackets) to its host and port (5432 when none).
    public static func endpoint(connectionURL: String) -> HostPort? {
        guard let parts = URLComponents(string: connectionURL), parts.scheme == "postgres" || parts.scheme == "postgresql",
              var host = parts.host, !host.isEmpty
        else { return nil }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let port = parts.port ?? 5432
        guard (1...65535).contains(port) else { return nil }
        return HostPort(host: host, port: port)
    }
}
