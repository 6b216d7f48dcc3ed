import Addressing
import CLibPQ
import Foundation
import Logging
import NIOPosix
import Synchronization

/// One libpq connection. Blocking calls (`query`, `exec`, `reset`) run on the caller's thread;
/// their `async` twins run them on a blocking thread pool so event loops never wait on the database.
///
/// Every wait is bounded (`PostgresSettings`): connecting and `reset()` by `connect_timeout`, a statement by the
/// settings' `queryTimeout` (the socket is non-blocking and polled, so a peer that never answers cannot hold the
/// caller). A statement abandoned at its timeout, or by task cancellation, closes the connection: its outcome is
/// unknown to this client, and `reset()` reconnects.
///
/// `@unchecked Sendable` is sound: the `PGconn` lives in `link` and is used only under its lock, so libpq sees one
/// caller at a time (a statement holds it to the end); the running and abandoned call ids live in `calls`. Sharing one connection between tasks serializes
/// their statements: give each consumer its own connection, and never interleave other tasks' statements into an open
/// transaction.
public final class PostgresConnection: @unchecked Sendable {
    /// Threads for the `async` API when none is given: one blocked thread per in-flight statement,
    /// so it is sized for a few dozen connections rather than the core count. A service that talks to several
    /// databases gives each its own pool, so that one database's stalls cannot take the others' threads.
    public static let sharedThreadPool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 32)
        pool.start()
        return pool
    }()

    public let threadPool: NIOThreadPool
    public let settings: PostgresSettings
    private let logger: Logger
    private let notices: NoticeSink
    /// `@unchecked Sendable`: the pointer is only ever used under `link`'s lock.
    private struct Link: @unchecked Sendable {
        var conn: OpaquePointer?
        /// The server connected to when `settings.primary` chose it.
        var endpoint: HostPort?
    }
    private let link: Mutex<Link>
    /// The connection string's keywords, for a reconnect to wherever the primary is by then.
    private let parsed: [(keyword: String, value: String)]

    private struct Calls {
        var running: UInt64 = 0
        /// A call whose caller gave up (task cancelled): abandoned when it runs, or at once if it is running.
        var abandoned: UInt64 = 0
        var next: UInt64 = 0
    }
    private let calls = Mutex(Calls())

    private init(
        conn: OpaquePointer, parsed: [(keyword: String, value: String)], endpoint: HostPort?,
        settings: PostgresSettings, threadPool: NIOThreadPool, logger: Logger
    ) {
        self.link = Mutex(Link(conn: conn, endpoint: endpoint))
        self.parsed = parsed
        self.settings = settings
        self.threadPool = threadPool
        self.logger = logger
        self.notices = NoticeSink(logger: logger)
        installNoticeReceiver(conn)
        PQsetnonblocking(conn, 1)
    }

    deinit {
        link.withLock { link in
            if let conn = link.conn { PQfinish(conn) }
        }
    }

    /// Connects with a libpq connection string (`host=127.0.0.1 port=15432 user=postgres dbname=x`
    /// or a `postgresql://` URI), bounded by `settings`; to the primary `settings.primary` names, when it is set.
    /// Blocks until connected or failed.
    public static func connect(
        _ dsn: String, settings: PostgresSettings = .standard, threadPool: NIOThreadPool = sharedThreadPool,
        logger: Logger = Logger(label: "postgres")
    ) throws -> PostgresConnection {
        let parsed = try parse(dsn)
        let endpoint = try located(settings)
        let conn = try open(settings.parameters(from: parsed, at: endpoint))
        return PostgresConnection(
            conn: conn, parsed: parsed, endpoint: endpoint, settings: settings, threadPool: threadPool, logger: logger)
    }

    /// The primary to connect to, when the settings locate one; none known yet is a connection failure (retried).
    private static func located(_ settings: PostgresSettings) throws -> HostPort? {
        guard let locator = settings.primary else { return nil }
        guard let endpoint = locator.current else {
            throw PostgresError.connectionFailure("no primary known yet: the cluster's leader is not elected", code: "08001")
        }
        return endpoint
    }

    private static func open(_ parameters: [(keyword: String, value: String)]) throws -> OpaquePointer {
        let keywords = parameters.map { Optional($0.keyword) }
        let values = parameters.map { Optional($0.value) }
        let made = withCStrings(keywords + [nil]) { keywords in
            withCStrings(values + [nil]) { values in PQconnectdbParams(keywords, values, 0) }
        }
        guard let conn = made else {
            throw PostgresError.connectionFailure("out of memory", code: "08001")
        }
        guard PQstatus(conn) == CONNECTION_OK else {
            let message = Self.errorMessage(conn)
            PQfinish(conn)
            throw PostgresError.connectionFailure(message, code: "08001")
        }
        return conn
    }

    public static func connect(
        _ dsn: String, settings: PostgresSettings = .standard, threadPool: NIOThreadPool = sharedThreadPool,
        logger: Logger = Logger(label: "postgres")
    ) async throws -> PostgresConnection {
        try await threadPool.runIfActive { try connect(dsn, settings: settings, threadPool: threadPool, logger: logger) }
    }

    /// The keywords a connection string names (either form), without libpq's defaults.
    public static func parse(_ dsn: String) throws -> [(keyword: String, value: String)] {
        var error: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(dsn, &error) else {
            let message = error.map { trimmed(String(cString: $0)) } ?? "out of memory"
            if let error { PQfreemem(error) }
            throw PostgresError.connectionFailure("invalid connection string: \(message)", code: "08001")
        }
        defer { PQconninfoFree(options) }
        var parsed: [(keyword: String, value: String)] = []
        var index = 0
        while let keyword = options[index].keyword {
            if let value = options[index].val { parsed.append((String(cString: keyword), String(cString: value))) }
            index += 1
        }
        return parsed
    }

    // MARK: - Blocking API

    /// Runs one statement with `$1, $2, ...` parameters in text format (`nil` is NULL).
    public func query(_ sql: String, _ params: [String?] = []) throws -> PostgresResult {
        try run(call: newCallID(), Self.sender(sql, params))
    }

    /// Runs a script of one or more `;`-separated statements without parameters (migrations).
    /// Statements run in one implicit transaction unless the script has its own BEGIN/COMMIT;
    /// the result is the last statement's (or the first error).
    @discardableResult
    public func exec(_ script: String) throws -> PostgresResult {
        try run(call: newCallID()) { PQsendQuery($0, script) }
    }

    /// Re-establishes a lost connection with the same parameters (session state is gone); bounded by
    /// `connect_timeout`. A located connection goes to wherever the primary is now.
    public func reset() throws {
        try link.withLock { link in
            guard let conn = link.conn else { throw PostgresError.connectionFailure("connection closed", code: "08003") }
            if settings.primary != nil {
                let endpoint = try Self.located(settings)
                let fresh = try Self.open(settings.parameters(from: parsed, at: endpoint))
                PQfinish(conn)
                link = Link(conn: fresh, endpoint: endpoint)
                installNoticeReceiver(fresh)
                PQsetnonblocking(fresh, 1)
                return
            }
            PQreset(conn)
            guard PQstatus(conn) == CONNECTION_OK else {
                throw PostgresError.connectionFailure(Self.errorMessage(conn), code: "08001")
            }
            PQsetnonblocking(conn, 1)
        }
    }

    /// False once the server went away (until `reset()`), after an abandoned statement, or after `close()`. An idle
    /// connection whose server closed it (restart, `pg_terminate_backend`) is noticed here, before a statement is
    /// sent on it. A located connection to a server that is no longer the primary is not connected either.
    public var isConnected: Bool {
        link.withLock { link in
            guard let conn = link.conn, PQstatus(conn) == CONNECTION_OK, !primaryMoved(from: link.endpoint) else {
                return false
            }
            Self.readPending(conn)
            return PQstatus(conn) == CONNECTION_OK
        }
    }

    /// Abandons the statement now running on this connection, if any: the connection is closed (the statement may
    /// or may not complete on the server) and `reset()` reconnects. Unlike libpq's `PQcancel`, it never waits on
    /// the network.
    public func cancel() {
        calls.withLock { calls in
            if calls.running != 0 { calls.abandoned = calls.running }
        }
    }

    public func close() {
        link.withLock { link in
            if let conn = link.conn { PQfinish(conn) }
            link.conn = nil
        }
    }

    // MARK: - Async API (runs the blocking calls on `threadPool`; task cancellation abandons the statement)

    public func query(_ sql: String, _ params: [String?] = []) async throws -> PostgresResult {
        let send = Self.sender(sql, params)
        return try await offload { conn, call in try conn.run(call: call, send) }
    }

    @discardableResult
    public func exec(_ script: String) async throws -> PostgresResult {
        try await offload { conn, call in try conn.run(call: call) { PQsendQuery($0, script) } }
    }

    public func reset() async throws {
        try await threadPool.runIfActive { try self.reset() }
    }

    // MARK: - Internals

    private static func sender(_ sql: String, _ params: [String?]) -> @Sendable (OpaquePointer) -> Int32 {
        { conn in
            withCStrings(params) { values in
                PQsendQueryParams(conn, sql, Int32(values.count), nil, values, nil, nil, 0)
            }
        }
    }

    private func offload<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection, UInt64) throws -> T
    ) async throws -> T {
        let call = newCallID()
        return try await withTaskCancellationHandler {
            try await threadPool.runIfActive { try body(self, call) }
        } onCancel: {
            self.calls.withLock { $0.abandoned = call }
        }
    }

    private func newCallID() -> UInt64 {
        calls.withLock { calls in
            calls.next &+= 1
            if calls.next == 0 { calls.next = 1 }
            return calls.next
        }
    }

    private func isAbandoned(_ call: UInt64) -> Bool {
        calls.withLock { $0.abandoned == call }
    }

    /// Sends one statement (or script) and collects its results, never waiting past the query timeout.
    private func run(call: UInt64, _ send: (OpaquePointer) -> Int32) throws -> PostgresResult {
        try link.withLock { link in
            guard let conn = link.conn else { throw PostgresError.connectionFailure("connection closed", code: "08003") }
            return try run(call: call, send, on: conn, endpoint: link.endpoint)
        }
    }

    /// Under `link`'s lock.
    private func run(
        call: UInt64, _ send: (OpaquePointer) -> Int32, on conn: OpaquePointer, endpoint: HostPort?
    ) throws -> PostgresResult {
        guard PQstatus(conn) == CONNECTION_OK else {
            throw PostgresError.connectionFailure("connection lost: \(Self.errorMessage(conn)); call reset()")
        }
        guard !isAbandoned(call) else {
            throw PostgresError.connectionFailure("the statement was cancelled before it was sent", code: "57014")
        }
        calls.withLock { $0.running = call }
        defer { calls.withLock { $0.running = 0 } }
        let deadline = settings.queryTimeout.map { ContinuousClock.now + $0 }

        guard send(conn) == 1 else { throw PostgresError.connectionFailure(Self.errorMessage(conn)) }
        // A non-blocking connection may hold part of the statement until the socket takes it.
        while true {
            let flushed = PQflush(conn)
            if flushed == 0 { break }
            if flushed < 0 { throw PostgresError.connectionFailure(Self.errorMessage(conn)) }
            let events = try wait(conn, for: Int16(POLLOUT | POLLIN), call: call, deadline: deadline, endpoint: endpoint)
            if events & Int16(POLLIN) != 0, PQconsumeInput(conn) == 0 {
                throw PostgresError.connectionFailure(Self.errorMessage(conn))
            }
        }
        // Like PQexec: every result until the end; the first error wins, else the last result.
        var chosen: OpaquePointer?
        defer { if let chosen { PQclear(chosen) } }
        while true {
            while PQisBusy(conn) != 0 {
                _ = try wait(conn, for: Int16(POLLIN), call: call, deadline: deadline, endpoint: endpoint)
                if PQconsumeInput(conn) == 0 { throw PostgresError.connectionFailure(Self.errorMessage(conn)) }
            }
            guard let result = PQgetResult(conn) else { break }
            switch PQresultStatus(result) {
            case PGRES_COPY_IN, PGRES_COPY_OUT, PGRES_COPY_BOTH:
                PQclear(result)
                abandon(conn)
                throw PostgresError(code: "0A000", message: "COPY is not supported by this client")
            default:
                break
            }
            if let kept = chosen, PQresultStatus(kept) == PGRES_FATAL_ERROR {
                PQclear(result)
            } else {
                if let kept = chosen { PQclear(kept) }
                chosen = result
            }
        }
        guard let result = chosen else { throw PostgresError.connectionFailure(Self.errorMessage(conn)) }
        chosen = nil
        return try consume(result, conn)
    }

    /// Polls the socket in short slices (so that an abandoned call is noticed) until `events`, the deadline or
    /// abandonment. Caller holds `link`'s lock.
    private func wait(
        _ conn: OpaquePointer, for events: Int16, call: UInt64, deadline: ContinuousClock.Instant?,
        endpoint: HostPort?
    ) throws -> Int16 {
        let socket = PQsocket(conn)
        guard socket >= 0 else { throw PostgresError.connectionFailure("connection lost: no socket") }
        while true {
            if isAbandoned(call) {
                abandon(conn)
                throw PostgresError.connectionFailure("the statement was cancelled; the connection is closed", code: "57014")
            }
            // An orphaned primary may hold a commit in its synchronous-replication wait forever: leave it.
            if primaryMoved(from: endpoint) {
                abandon(conn)
                throw PostgresError.connectionFailure(
                    "the server is no longer the primary; the connection is closed and the statement's outcome is unknown")
            }
            var slice: Int32 = 100
            if let deadline {
                let left = deadline - ContinuousClock.now
                if left <= .zero {
                    abandon(conn)
                    throw PostgresError.connectionFailure(
                        "no answer within \(settings.queryTimeout.map { "\($0)" } ?? ""); the connection is closed and the statement's outcome is unknown")
                }
                slice = Int32(min(100, left / .milliseconds(1) + 1))
            }
            var descriptor = pollfd(fd: socket, events: events, revents: 0)
            let ready = poll(&descriptor, 1, slice)
            if ready > 0 { return descriptor.revents }
            if ready < 0 && errno != EINTR {
                throw PostgresError.connectionFailure("poll failed: errno \(errno)")
            }
        }
    }

    /// Another server is the primary now than the one this located connection went to.
    private func primaryMoved(from endpoint: HostPort?) -> Bool {
        guard let endpoint, let locator = settings.primary else { return false }
        return locator.hasMoved(from: endpoint)
    }

    /// Closes the socket under libpq, which then reports the connection lost until `reset()`. Caller holds
    /// `link`'s lock.
    private func abandon(_ conn: OpaquePointer) {
        let socket = PQsocket(conn)
        if socket >= 0 { _ = shutdown(socket, Int32(SHUT_RDWR)) }
        Self.readPending(conn)
        logger.debug("postgres statement abandoned")
    }

    /// Lets libpq read whatever waits on an idle socket (notices, or the end of a connection the server closed: its
    /// FATAL message and the end of the stream may take two reads).
    private static func readPending(_ conn: OpaquePointer) {
        for _ in 0..<8 {
            let socket = PQsocket(conn)
            guard socket >= 0, PQstatus(conn) == CONNECTION_OK else { return }
            var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, 0) > 0, PQconsumeInput(conn) != 0 else { return }
        }
    }

    private func consume(_ result: OpaquePointer?, _ conn: OpaquePointer) throws -> PostgresResult {
        guard let result else {
            throw PostgresError.connectionFailure(Self.errorMessage(conn))
        }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_EMPTY_QUERY, PGRES_SINGLE_TUPLE:
            return Self.decode(result)
        case PGRES_COPY_IN, PGRES_COPY_OUT, PGRES_COPY_BOTH:
            throw PostgresError(code: "0A000", message: "COPY is not supported by this client")
        default:
            throw Self.error(result, conn)
        }
    }

    private static func decode(_ result: OpaquePointer) -> PostgresResult {
        let rowCount = Int(PQntuples(result))
        let columnCount = Int(PQnfields(result))
        let columns = (0..<columnCount).map { String(cString: PQfname(result, Int32($0))) }
        var rows: [[String?]] = []
        rows.reserveCapacity(rowCount)
        for r in 0..<rowCount {
            var row: [String?] = []
            row.reserveCapacity(columnCount)
            for c in 0..<columnCount {
                if PQgetisnull(result, Int32(r), Int32(c)) != 0 {
                    row.append(nil)
                } else {
                    row.append(String(cString: PQgetvalue(result, Int32(r), Int32(c))))
                }
            }
            rows.append(row)
        }
        let tag = String(cString: PQcmdStatus(result))
        let affected = Int(String(cString: PQcmdTuples(result))) ?? 0
        return PostgresResult(columns: columns, rows: rows, commandTag: tag, affectedRows: affected)
    }

    private static func error(_ result: OpaquePointer, _ conn: OpaquePointer) -> PostgresError {
        func field(_ code: UInt8) -> String? {
            PQresultErrorField(result, Int32(code)).map { String(cString: $0) }
        }
        let lost = PQstatus(conn) != CONNECTION_OK
        // libpq's own failures (e.g. the server went away) carry no SQLSTATE.
        let code = field(UInt8(ascii: "C")) ?? (lost ? "08006" : "XX000")
        let message = field(UInt8(ascii: "M")) ?? trimmed(String(cString: PQresultErrorMessage(result)))
        return PostgresError(
            code: code, message: message.isEmpty ? errorMessage(conn) : message,
            detail: field(UInt8(ascii: "D")), hint: field(UInt8(ascii: "H")), constraint: field(UInt8(ascii: "n")))
    }

    private static func errorMessage(_ conn: OpaquePointer) -> String {
        trimmed(String(cString: PQerrorMessage(conn)))
    }

    private static func trimmed(_ s: String) -> String {
        s.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private func installNoticeReceiver(_ conn: OpaquePointer) {
        // Without a receiver libpq prints NOTICEs to stderr; route them to the logger instead.
        let context = Unmanaged.passUnretained(notices).toOpaque()
        _ = PQsetNoticeReceiver(conn, { context, result in
            guard let context, let result else { return }
            let sink = Unmanaged<NoticeSink>.fromOpaque(context).takeUnretainedValue()
            sink.logger.debug(
                "postgres notice",
                metadata: ["notice": "\(String(cString: PQresultErrorMessage(result)).trimmingCharacters(in: .newlines))"])
        }, context)
    }
}

/// Owned by the connection, so it outlives the `PGconn` that points at it.
private final class NoticeSink: Sendable {
    let logger: Logger
    init(logger: Logger) { self.logger = logger }
}

/// Passes `strings` to C as `const char * const *`, NULL for nil; the copies live for the call.
private func withCStrings<T>(_ strings: [String?], _ body: ([UnsafePointer<CChar>?]) throws -> T) rethrows -> T {
    let copies: [UnsafeMutablePointer<CChar>?] = strings.map { $0.flatMap { strdup($0) } }
    defer { copies.forEach { free($0) } }
    return try body(copies.map { $0.map { UnsafePointer($0) } })
}
