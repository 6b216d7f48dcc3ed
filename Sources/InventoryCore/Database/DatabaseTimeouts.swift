import PostgresClient

/// The bounds every database connection of the inventory runs with, from its command line: no blocking libpq call
/// waits without one (see `PostgresSettings`).
struct DatabaseTimeouts: Sendable {
    /// Seconds to establish a connection (libpq's `connect_timeout`, at least 2); reconnects (`PQreset`) too.
    var connectSeconds: Int
    /// The serving connections' `statement_timeout`: the server cancels a longer statement (nothing committed).
    var statementMilliseconds: Int
    /// The client gives up on an answer this long after the statement timeout (a silent or blackholed peer).
    var clientMargin: Duration = .seconds(2)
    /// A migration may run long (an index on a large table), but not forever.
    var migration: Duration = .seconds(600)
    /// Patroni's leader, when the cluster has one: every connection goes to the primary it names.
    var primary: PostgresPrimaryLocator?

    /// Keepalive probes and `tcp_user_timeout` notice a dead peer within a few seconds.
    private var network: PostgresSettings {
        PostgresSettings(
            connectTimeoutSeconds: connectSeconds, keepalives: (idle: 5, interval: 2, count: 3),
            tcpUserTimeoutMilliseconds: 10_000, primary: primary)
    }

    /// The consumers' and admin connections. `synchronous_commit=on` is pinned here: PURCHASED is answered after
    /// the commit, and that promise must not depend on the server's or the role's default (finding 20).
    var serving: PostgresSettings {
        var settings = network
        settings.queryTimeout = .milliseconds(statementMilliseconds) + clientMargin
        settings.serverSettings = [("synchronous_commit", "on"), ("statement_timeout", String(statementMilliseconds))]
        return settings
    }

    /// The schema owner's connection (migrations, creating the hot database).
    var owner: PostgresSettings {
        var settings = network
        settings.queryTimeout = migration
        return settings
    }
}
