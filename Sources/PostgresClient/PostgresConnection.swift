import CLibPQ
import Foundation
import Logging
import NIOPosix

/// One libpq connection. Blocking calls (`query`, `exec`, `reset`) run on the caller's thread;
/// their `async` twins run them on a blocking thread pool so event loops never wait on the database.
///
/// `@unchecked Sendable` is sound: every use of the `PGconn` happens under `lock`, so libpq sees one
/// caller at a time; the cancel handle is guarded by `cancelLock` and `PQcancel` is thread-safe.
/// Sharing one connection between tasks serializes their statements: give each consumer its own
/// connection, and never interleave other tasks' statements into an open transaction.
public final class PostgresConnection: @unchecked Sendable {
    /// Threads for the `async` API when none is given: one blocked thread per in-flight statement,
    /// so it is sized for a few dozen connections rather than the core count.
    public static let sharedThreadPool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 32)
        pool.start()
        return pool
    }()

    public let threadPool: NIOThreadPool
    private let logger: Logger
    private let notices: NoticeSink
    private let lock = NSLock()
    private var conn: OpaquePointer?

    private let cancelLock = NSLock()
    private var canceller: OpaquePointer?
    private var runningCall: UInt64 = 0
    private var nextCall: UInt64 = 0

    private init(conn: OpaquePointer, threadPool: NIOThreadPool, logger: Logger) {
        self.conn = conn
        self.threadPool = threadPool
        self.logger = logger
        self.notices = NoticeSink(logger: logger)
        installNoticeReceiver(conn)
        canceller = PQgetCancel(conn)
    }

    deinit {
        if let canceller { PQfreeCancel(canceller) }
        if let conn { PQfinish(conn) }
    }

    /// Connects with a libpq connection string (`host=127.0.0.1 port=15432 user=postgres dbname=x`
    /// or a `postgresql://` URI). Blocks until connected or failed.
    public static func connect(
        _ dsn: String, threadPool: NIOThreadPool = sharedThreadPool, logger: Logger = Logger(label: "postgres")
    ) throws -> PostgresConnection {
        guard let conn = PQconnectdb(dsn) else {
            throw PostgresError.connectionFailure("out of memory", code: "08001")
        }
        guard PQstatus(conn) == CONNECTION_OK else {
            let message = Self.errorMessage(conn)
            PQfinish(conn)
            throw PostgresError.connectionFailure(message, code: "08001")
        }
        return PostgresConnection(conn: conn, threadPool: threadPool, logger: logger)
    }

    public static func connect(
        _ dsn: String, threadPool: NIOThreadPool = sharedThreadPool, logger: Logger = Logger(label: "postgres")
    ) async throws -> PostgresConnection {
        try await threadPool.runIfActive { try connect(dsn, threadPool: threadPool, logger: logger) }
    }

    // MARK: - Blocking API

    /// Runs one statement with `$1, $2, ...` parameters in text format (`nil` is NULL).
    public func query(_ sql: String, _ params: [String?] = []) throws -> PostgresResult {
        try withConnection(call: newCallID()) { conn in
            let result = withCStrings(params) { values in
                PQexecParams(conn, sql, Int32(values.count), nil, values, nil, nil, 0)
            }
            return try consume(result, conn)
        }
    }

    /// Runs a script of one or more `;`-separated statements without parameters (migrations).
    /// Statements run in one implicit transaction unless the script has its own BEGIN/COMMIT;
    /// the result is the last statement's.
    @discardableResult
    public func exec(_ script: String) throws -> PostgresResult {
        try withConnection(call: newCallID()) { conn in
            try consume(PQexec(conn, script), conn)
        }
    }

    /// Re-establishes a lost connection with the same parameters (session state is gone).
    public func reset() throws {
        lock.lock()
        defer { lock.unlock() }
        guard let conn else { throw PostgresError.connectionFailure("connection closed", code: "08003") }
        PQreset(conn)
        cancelLock.withLock {
            if let canceller { PQfreeCancel(canceller) }
            canceller = PQgetCancel(conn)
        }
        guard PQstatus(conn) == CONNECTION_OK else {
            throw PostgresError.connectionFailure(Self.errorMessage(conn), code: "08001")
        }
    }

    /// False once the server went away (until `reset()`) or after `close()`.
    public var isConnected: Bool {
        lock.withLock { conn.map { PQstatus($0) == CONNECTION_OK } ?? false }
    }

    /// Asks the server to cancel the statement now running on this connection, if any.
    public func cancel() {
        cancelLock.withLock {
            if runningCall != 0 { sendCancel() }
        }
    }

    public func close() {
        lock.withLock {
            cancelLock.withLock {
                if let canceller { PQfreeCancel(canceller) }
                canceller = nil
            }
            if let conn { PQfinish(conn) }
            conn = nil
        }
    }

    // MARK: - Async API (runs the blocking calls on `threadPool`; task cancellation cancels the statement)

    public func query(_ sql: String, _ params: [String?] = []) async throws -> PostgresResult {
        try await offload { conn, call in
            try conn.withConnection(call: call) { pg in
                let result = withCStrings(params) { values in
                    PQexecParams(pg, sql, Int32(values.count), nil, values, nil, nil, 0)
                }
                return try conn.consume(result, pg)
            }
        }
    }

    @discardableResult
    public func exec(_ script: String) async throws -> PostgresResult {
        try await offload { conn, call in
            try conn.withConnection(call: call) { pg in try conn.consume(PQexec(pg, script), pg) }
        }
    }

    public func reset() async throws {
        try await threadPool.runIfActive { try self.reset() }
    }

    // MARK: - Internals

    private func offload<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection, UInt64) throws -> T
    ) async throws -> T {
        let call = newCallID()
        return try await withTaskCancellationHandler {
            try await threadPool.runIfActive { try body(self, call) }
        } onCancel: {
            self.cancel(call: call)
        }
    }

    private func newCallID() -> UInt64 {
        cancelLock.withLock {
            nextCall &+= 1
            if nextCall == 0 { nextCall = 1 }
            return nextCall
        }
    }

    /// Cancels only if `call` is the statement running now, so a late cancel cannot hit a later statement.
    private func cancel(call: UInt64) {
        cancelLock.withLock {
            if runningCall == call { sendCancel() }
        }
    }

    /// Caller holds `cancelLock`.
    private func sendCancel() {
        guard let canceller else { return }
        var buffer = [CChar](repeating: 0, count: 256)
        if PQcancel(canceller, &buffer, Int32(buffer.count)) == 0 {
            let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            logger.debug("cancel request failed", metadata: ["error": "\(text)"])
        }
    }

    private func withConnection<T>(call: UInt64, _ body: (OpaquePointer) throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        guard let conn else { throw PostgresError.connectionFailure("connection closed", code: "08003") }
        guard PQstatus(conn) == CONNECTION_OK else {
            throw PostgresError.connectionFailure("connection lost: \(Self.errorMessage(conn)); call reset()")
        }
        cancelLock.withLock { runningCall = call }
        defer { cancelLock.withLock { runningCall = 0 } }
        return try body(conn)
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
