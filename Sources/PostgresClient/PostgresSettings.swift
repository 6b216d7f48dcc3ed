import Addressing

/// Bounds on every blocking libpq call of a connection, and server settings pinned for its session.
///
/// libpq waits on the network in three places, and each gets its bound here: establishing a connection
/// (`connect_timeout`, which `PQreset` honours too, so a reconnect never waits out the kernel's SYN retries), a silent
/// established socket (TCP keepalives and `tcp_user_timeout`), and a statement whose answer never comes
/// (`queryTimeout`, enforced on the client side: it also covers a peer that accepts bytes but never answers, which no
/// TCP option can detect). `statement_timeout` (in `serverSettings`) lets the server cancel a statement that runs too
/// long, which, unlike the client-side bound, is a definite "not committed".
public struct PostgresSettings: Sendable {
    /// Seconds to establish a connection, per host (libpq treats values below 2 as 2). Nil: libpq's default (none).
    public var connectTimeoutSeconds: Int?
    /// TCP keepalives: idle seconds before the first probe, seconds between probes, probes before the socket is dead.
    public var keepalives: (idle: Int, interval: Int, count: Int)?
    /// Milliseconds transmitted data may stay unacknowledged before the kernel drops the connection.
    public var tcpUserTimeoutMilliseconds: Int?
    /// Longest wait for a statement's answer; past it the connection is closed (the statement may or may not have
    /// run) and `reset()` reconnects. Nil: no client-side bound.
    public var queryTimeout: Duration?
    /// Server settings for the session (sent as `options=-c name=value`), after any the connection string names,
    /// so that they win: e.g. `synchronous_commit=on`, `statement_timeout=5000`.
    public var serverSettings: [(name: String, value: String)]
    /// Where the cluster's primary is now (Patroni's leader): when set, a connection goes to that server only (the
    /// string's other keywords, `target_session_attrs=read-write` included, still apply), and is left once another
    /// server is the primary. Nil: the connection string alone decides.
    public var primary: PostgresPrimaryLocator?

    public init(
        connectTimeoutSeconds: Int? = 10, keepalives: (idle: Int, interval: Int, count: Int)? = (idle: 10, interval: 3, count: 3),
        tcpUserTimeoutMilliseconds: Int? = 30_000, queryTimeout: Duration? = nil,
        serverSettings: [(name: String, value: String)] = [], primary: PostgresPrimaryLocator? = nil
    ) {
        self.connectTimeoutSeconds = connectTimeoutSeconds
        self.keepalives = keepalives
        self.tcpUserTimeoutMilliseconds = tcpUserTimeoutMilliseconds
        self.queryTimeout = queryTimeout
        self.serverSettings = serverSettings
        self.primary = primary
    }

    /// Bounded network waits, no statement bound and no pinned server settings: for tools and tests.
    public static let standard = PostgresSettings()

    /// The keyword/value pairs libpq connects with: the connection string's own (already parsed), with these
    /// settings' network bounds where it names none (an operator's explicit choice wins), and its `options` extended
    /// with the pinned server settings (which win over its own).
    /// With `endpoint`, the string's hosts and ports give way to that one server.
    public func parameters(
        from parsed: [(keyword: String, value: String)], at endpoint: HostPort? = nil
    ) -> [(keyword: String, value: String)] {
        var result = parsed.filter { $0.keyword != "options" }
        if let endpoint {
            result.removeAll { ["host", "hostaddr", "port"].contains($0.keyword) }
            result += [("host", endpoint.host), ("port", String(endpoint.port))]
        }
        let named = Set(parsed.map(\.keyword))
        func add(_ keyword: String, _ value: Int?) {
            if let value, !named.contains(keyword) { result.append((keyword, String(value))) }
        }
        add("connect_timeout", connectTimeoutSeconds)
        if let keepalives {
            add("keepalives", 1)
            add("keepalives_idle", keepalives.idle)
            add("keepalives_interval", keepalives.interval)
            add("keepalives_count", keepalives.count)
        }
        add("tcp_user_timeout", tcpUserTimeoutMilliseconds)
        let own = parsed.last { $0.keyword == "options" }?.value
        let pinned = serverSettings.map { "-c \(Self.escaped($0.name))=\(Self.escaped($0.value))" }
        let options = ([own].compactMap { $0 }.filter { !$0.isEmpty } + pinned).joined(separator: " ")
        if !options.isEmpty { result.append(("options", options)) }
        return result
    }

    /// libpq splits `options` at spaces; a backslash keeps one inside a value.
    private static func escaped(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: " ", with: "\\ ")
    }
}
