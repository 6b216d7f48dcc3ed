import CZooKeeper
import Logging
import NIOPosix
import Synchronization

/// A ZooKeeper session over libzookeeper_mt.
///
/// Calls use the C library's asynchronous API: a request is queued without blocking and its completion
/// (on the library's completion thread) resumes the awaiting task, so no thread waits on the network.
/// Watch events and session state changes arrive on `events()` streams. When the session expires the
/// handle is dead: `reconnect()` opens a new session (re-presenting `addAuth` credentials); ephemerals and
/// watches must then be re-established by the caller.
public final class ZooKeeperClient: Sendable {
    public let hosts: String
    public let sessionTimeout: Duration
    private let logger: Logger
    private let hub = EventHub()
    private let state = Mutex(State())

    private struct State {
        var handle: Handle?
        var closed = false
        var auths: [(scheme: String, credentials: String)] = []
    }

    private init(hosts: String, sessionTimeout: Duration, logger: Logger) {
        self.hosts = hosts
        self.sessionTimeout = sessionTimeout
        self.logger = logger
    }

    deinit {
        // Normally closed already; otherwise end the session here (blocks briefly).
        state.withLock { $0.handle.take() }?.close()
        hub.finish()
    }

    /// Connects to `hosts` ("127.0.0.1:12181[,host:port...][/chroot]") and waits for the session to be CONNECTED.
    public static func connect(
        hosts: String, sessionTimeout: Duration = .seconds(10), connectTimeout: Duration = .seconds(10),
        logger: Logger = Logger(label: "zookeeper")
    ) async throws -> ZooKeeperClient {
        let client = ZooKeeperClient(hosts: hosts, sessionTimeout: sessionTimeout, logger: logger)
        try await client.open(timeout: connectTimeout)
        return client
    }

    /// A new stream of every event from now on (one per consumer; subscribe before setting watches).
    /// It finishes when the client is closed.
    public func events() -> AsyncStream<ZooKeeperEvent> {
        hub.subscribe()
    }

    public var sessionState: ZooKeeperSessionState {
        state.withLock { st in st.handle.map { ZooKeeperSessionState(raw: zoo_state($0.zh)) } ?? .notConnected }
    }

    /// The server-assigned session id (0 when not connected); an ephemeral node's `ephemeralOwner`.
    public var sessionID: Int64 {
        state.withLock { st in st.handle.flatMap { zoo_client_id($0.zh)?.pointee.client_id } ?? 0 }
    }

    /// The session timeout the server granted (it clamps the requested one to 2-20 ticks).
    public var negotiatedSessionTimeout: Duration {
        state.withLock { st in st.handle.map { .milliseconds(Int(zoo_recv_timeout($0.zh))) } ?? .zero }
    }

    /// Ends the current session (its ephemerals vanish) and opens a new one, re-adding auth credentials.
    public func reconnect(timeout: Duration = .seconds(10)) async throws {
        let old = state.withLock { $0.handle.take() }
        if let old { try await NIOThreadPool.singleton.runIfActive { old.close() } }
        try await open(timeout: timeout)
    }

    /// Ends the session; pending calls fail with `closing`, event streams finish.
    public func close() async {
        let old = state.withLock { st -> Handle? in
            st.closed = true
            return st.handle.take()
        }
        // Not in the caller's task: `runIfActive` skips work submitted by a cancelled task, and a service closes its
        // session precisely when it is being cancelled (graceful shutdown). Skipping the close would leave the
        // session, and its ephemeral nodes, to linger until the session timeout.
        if let old { await Task.detached { try? await NIOThreadPool.singleton.runIfActive { old.close() } }.value }
        hub.finish()
    }

    /// Fault injection for tests: makes the server expire this session, as it does when a client stays
    /// partitioned longer than the session timeout. A second connection takes the session over and closes
    /// it; this client then sees `.session(.expired)` and its calls fail with `sessionExpired`.
    ///
    /// The takeover races this client's own reconnect: the server drops this client's connection when the second
    /// one arrives, and if this client gets back before the second one's close, the close goes nowhere and the session
    /// lives on (a loaded CI machine lost that race). So it returns only once this client's handle is expired,
    /// taking over again as often as it must.
    public func expireSessionForTesting(timeout: Duration = .seconds(20)) async throws {
        guard let session = state.withLock({ st in st.handle.flatMap { zoo_client_id($0.zh)?.pointee } }) else {
            throw ZooKeeperError(code: .closing, message: "client closed")
        }
        let hosts = self.hosts
        let timeoutMs = Self.milliseconds(sessionTimeout)
        let deadline = ContinuousClock.now + timeout
        while true {
            try await NIOThreadPool.singleton.runIfActive {
                var id = session
                guard let zh = zookeeper_init(hosts, { _, _, _, _, _ in }, timeoutMs, &id, nil, 0) else {
                    throw ZooKeeperError(code: .badArguments, message: "zookeeper_init failed for \(hosts)")
                }
                defer { zookeeper_close(zh) }
                // Expired: an earlier takeover's close did end the session, and this client has yet to hear it.
                while zoo_state(zh) != cz_connected_state() && zoo_state(zh) != cz_expired_session_state() {
                    if ContinuousClock.now >= deadline {
                        throw ZooKeeperError(code: .connectTimeout, message: "could not take over the session")
                    }
                    usleep(5_000)
                }
            }
            let settle = min(ContinuousClock.now + .seconds(3), deadline)
            while ContinuousClock.now < settle {
                if sessionState == .expired { return }
                try await Task.sleep(for: .milliseconds(10))
            }
            if sessionState == .expired { return }
            if ContinuousClock.now >= deadline {
                throw ZooKeeperError(code: .connectTimeout, message: "the session outlived its takeover")
            }
        }
    }

    // MARK: - Operations

    /// Creates a node and returns its path (with the sequence suffix for sequential modes).
    /// With `createParents`, missing ancestors are created as empty persistent nodes first.
    @discardableResult
    public func create(
        _ path: String, data: [UInt8] = [], mode: ZooKeeperCreateMode = .persistent,
        acl: [ZooKeeperACL] = ZooKeeperACL.openUnsafe, createParents: Bool = false
    ) async throws -> String {
        do {
            return try await createOnce(path, data: data, mode: mode, acl: acl)
        } catch let error as ZooKeeperError where error.code == .noNode && createParents {
            if let parent = Self.parent(of: path) { try await ensurePath(parent, acl: acl) }
            return try await createOnce(path, data: data, mode: mode, acl: acl)
        }
    }

    /// Creates `path` and its missing ancestors as empty persistent nodes; existing ones are kept.
    public func ensurePath(_ path: String, acl: [ZooKeeperACL] = ZooKeeperACL.openUnsafe) async throws {
        var prefix = ""
        for component in path.split(separator: "/") {
            prefix += "/" + component
            do {
                _ = try await createOnce(prefix, data: [], mode: .persistent, acl: acl)
            } catch let error as ZooKeeperError where error.code == .nodeExists {
                continue
            }
        }
    }

    /// The node's data and stat; with `watch`, a one-shot `dataChanged`/`deleted` event follows the next change.
    public func get(_ path: String, watch: Bool = false) async throws -> (data: [UInt8], stat: ZooKeeperStat) {
        try await submit(path) { (zh, ctx: UnsafeRawPointer) in
            zoo_aget(zh, path, watch ? 1 : 0, { rc, value, length, stat, ctx in
                let op = Pending<([UInt8], ZooKeeperStat)>.take(ctx)
                guard rc == 0 else { return op.fail(rc) }
                var bytes: [UInt8] = []
                if let value, length > 0 {
                    bytes = Array(UnsafeRawBufferPointer(start: value, count: Int(length)))
                }
                op.succeed((bytes, stat.map { ZooKeeperStat($0.pointee) } ?? ZooKeeperStat()))
            }, ctx)
        }
    }

    /// Compare-and-set: writes only if the node's version is still `version` (`-1`: any), else `badVersion`.
    @discardableResult
    public func set(_ path: String, data: [UInt8], version: Int32 = -1) async throws -> ZooKeeperStat {
        try await submit(path) { (zh, ctx: UnsafeRawPointer) in
            data.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { chars in
                    zoo_aset(zh, path, chars.baseAddress, Int32(chars.count), version, { rc, stat, ctx in
                        let op = Pending<ZooKeeperStat>.take(ctx)
                        guard rc == 0 else { return op.fail(rc) }
                        op.succeed(stat.map { ZooKeeperStat($0.pointee) } ?? ZooKeeperStat())
                    }, ctx)
                }
            }
        }
    }

    /// Replaces the node's ACL if its ACL version matches (`-1`: any); needs the ADMIN permission on the node.
    public func setACL(_ path: String, _ acl: [ZooKeeperACL], version: Int32 = -1) async throws {
        let _: Void = try await submit(path) { (zh, ctx: UnsafeRawPointer) in
            // The request (ACL included) is serialized before zoo_aset_acl returns.
            withACLVector(acl) { aclVector in
                zoo_aset_acl(zh, path, version, UnsafeMutablePointer(mutating: aclVector), { rc, ctx in
                    let op = Pending<Void>.take(ctx)
                    guard rc == 0 else { return op.fail(rc) }
                    op.succeed(())
                }, ctx)
            }
        }
    }

    /// Deletes if the version matches (`-1`: any); a node with children fails with `notEmpty`.
    public func delete(_ path: String, version: Int32 = -1) async throws {
        let _: Void = try await submit(path) { (zh, ctx: UnsafeRawPointer) in
            zoo_adelete(zh, path, version, { rc, ctx in
                let op = Pending<Void>.take(ctx)
                guard rc == 0 else { return op.fail(rc) }
                op.succeed(())
            }, ctx)
        }
    }

    /// The node's stat, or nil if absent; with `watch`, a one-shot `created`/`deleted`/`dataChanged` event
    /// (set even when the node does not exist yet).
    public func exists(_ path: String, watch: Bool = false) async throws -> ZooKeeperStat? {
        try await submit(path) { (zh, ctx: UnsafeRawPointer) in
            zoo_aexists(zh, path, watch ? 1 : 0, { rc, stat, ctx in
                let op = Pending<ZooKeeperStat?>.take(ctx)
                if rc == -101 { return op.succeed(nil) }  // ZNONODE
                guard rc == 0 else { return op.fail(rc) }
                op.succeed(stat.map { ZooKeeperStat($0.pointee) } ?? ZooKeeperStat())
            }, ctx)
        }
    }

    /// The names (not paths) of the node's children; with `watch`, a one-shot `childrenChanged`/`deleted` event.
    public func children(_ path: String, watch: Bool = false) async throws -> [String] {
        try await submit(path) { (zh, ctx: UnsafeRawPointer) in
            zoo_aget_children(zh, path, watch ? 1 : 0, { rc, strings, ctx in
                let op = Pending<[String]>.take(ctx)
                guard rc == 0 else { return op.fail(rc) }
                var names: [String] = []
                if let vector = strings?.pointee, let items = vector.data {
                    for i in 0..<Int(vector.count) {
                        if let name = items[i] { names.append(String(cString: name)) }
                    }
                }
                op.succeed(names)
            }, ctx)
        }
    }

    /// Adds an identity to the session, e.g. `addAuth(scheme: "digest", credentials: "user:password")`.
    /// Remembered and presented again after `reconnect()`.
    public func addAuth(scheme: String, credentials: String) async throws {
        try await addAuthOnce(scheme: scheme, credentials: credentials)
        state.withLock { $0.auths.append((scheme, credentials)) }
    }

    // MARK: - Internals

    private func addAuthOnce(scheme: String, credentials: String) async throws {
        let bytes = Array(credentials.utf8)
        let _: Void = try await submit(nil) { (zh, ctx: UnsafeRawPointer) in
            bytes.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { chars in
                    zoo_add_auth(zh, scheme, chars.baseAddress, Int32(chars.count), { rc, ctx in
                        let op = Pending<Void>.take(ctx)
                        guard rc == 0 else { return op.fail(rc) }
                        op.succeed(())
                    }, ctx)
                }
            }
        }
    }

    private func createOnce(_ path: String, data: [UInt8], mode: ZooKeeperCreateMode, acl: [ZooKeeperACL]) async throws -> String {
        let flags: Int32 = switch mode {
        case .persistent: cz_persistent()
        case .ephemeral: cz_ephemeral()
        case .persistentSequential: cz_persistent_sequential()
        case .ephemeralSequential: cz_ephemeral_sequential()
        }
        return try await submit(path) { (zh, ctx: UnsafeRawPointer) in
            // The request (data and ACL included) is serialized before zoo_acreate returns.
            withACLVector(acl) { aclVector in
                data.withUnsafeBufferPointer { buffer in
                    buffer.withMemoryRebound(to: CChar.self) { chars in
                        zoo_acreate(zh, path, chars.baseAddress, Int32(chars.count), aclVector, flags, { rc, created, ctx in
                            let op = Pending<String>.take(ctx)
                            guard rc == 0 else { return op.fail(rc) }
                            op.succeed(created.map { String(cString: $0) } ?? "")
                        }, ctx)
                    }
                }
            }
        }
    }

    /// Queues one request with a retained `Pending` as its completion context; the completion releases it.
    private func submit<T: Sendable>(
        _ path: String?, _ start: (OpaquePointer, UnsafeRawPointer) -> Int32
    ) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let pending = Pending(continuation, path: path)
            let context = UnsafeRawPointer(Unmanaged.passRetained(pending).toOpaque())
            let rc: Int32 = state.withLock { st in
                guard let handle = st.handle else { return -116 }  // ZCLOSING
                let rc = start(handle.zh, context)
                // A dead handle refuses requests with ZINVALIDSTATE: say why.
                if rc == -9 {
                    let s = zoo_state(handle.zh)
                    if s == cz_expired_session_state() { return -112 }
                    if s == cz_auth_failed_state() { return -115 }
                }
                return rc
            }
            if rc != 0 {
                Pending<T>.take(context).fail(rc)
            }
        }
    }

    private func open(timeout: Duration) async throws {
        Self.configureLibraryLogging
        let context = WatchContext(hub: hub)
        let hosts = self.hosts
        let timeoutMs = Self.milliseconds(sessionTimeout)
        // zookeeper_init resolves host names and starts the library's threads: keep it off the caller's thread.
        let handle = try await NIOThreadPool.singleton.runIfActive { () throws -> Handle in
            let unmanaged = Unmanaged.passRetained(context)
            guard let zh = zookeeper_init(hosts, { _, type, state, path, ctx in
                guard let ctx else { return }
                let context = Unmanaged<WatchContext>.fromOpaque(ctx).takeUnretainedValue()
                context.deliver(type: type, state: state, path: path.map { String(cString: $0) } ?? "")
            }, timeoutMs, nil, unmanaged.toOpaque(), 0) else {
                unmanaged.release()
                throw ZooKeeperError(code: .badArguments, message: "zookeeper_init failed for \(hosts)")
            }
            return Handle(zh: zh, context: unmanaged)
        }
        enum Install { case installed, closed, raced }
        let outcome = state.withLock { st -> Install in
            if st.closed { return .closed }
            // A concurrent reconnect() already installed a session: keep that one.
            if st.handle != nil { return .raced }
            st.handle = handle
            return .installed
        }
        switch outcome {
        case .installed: break
        case .raced:
            try? await NIOThreadPool.singleton.runIfActive { handle.close() }
            return
        case .closed:
            try? await NIOThreadPool.singleton.runIfActive { handle.close() }
            throw ZooKeeperError(code: .closing, message: "client closed")
        }

        // Sessions connect in milliseconds on loopback; polling the state keeps this simple and bounded.
        let deadline = ContinuousClock.now + timeout
        while true {
            let s = state.withLock { st in st.handle === handle ? zoo_state(handle.zh) : -116 }
            if s == cz_connected_state() { break }
            if s == cz_expired_session_state() || s == cz_auth_failed_state() || s == -116 || ContinuousClock.now >= deadline {
                state.withLock { st in if st.handle === handle { st.handle = nil } }
                try? await NIOThreadPool.singleton.runIfActive { handle.close() }
                throw ZooKeeperError(
                    code: s == -116 ? .closing : .connectTimeout,
                    message: "could not open a session with \(hosts) (state \(ZooKeeperSessionState(raw: s)))")
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        logger.debug("zookeeper session open", metadata: ["hosts": "\(hosts)", "session": "\(sessionID)"])

        let auths = state.withLock { $0.auths }
        for auth in auths {
            try await addAuthOnce(scheme: auth.scheme, credentials: auth.credentials)
        }
    }

    private static let configureLibraryLogging: Void = {
        // The C client logs to stderr at INFO by default; keep only errors.
        zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR)
    }()

    private static func milliseconds(_ d: Duration) -> Int32 {
        Int32(clamping: d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)
    }

    static func parent(of path: String) -> String? {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return nil }
        return String(path[..<slash])
    }
}

/// One zhandle and the retained watcher context it points at.
/// `@unchecked Sendable`: `zh` is only used under the client's state lock or after being taken out of it,
/// and the C library's handle is thread-safe for requests.
private final class Handle: @unchecked Sendable {
    let zh: OpaquePointer
    private let context: Unmanaged<WatchContext>

    init(zh: OpaquePointer, context: Unmanaged<WatchContext>) {
        self.zh = zh
        self.context = context
    }

    /// Ends the session. After zookeeper_close returns the library calls nothing more, so the context can go.
    func close() {
        context.takeUnretainedValue().retire()
        zookeeper_close(zh)
        context.release()
    }
}

/// The watcher's context: turns C events into `ZooKeeperEvent`s for the hub until its handle is retired.
private final class WatchContext: Sendable {
    let hub: EventHub
    private let active = Atomic<Bool>(true)

    init(hub: EventHub) { self.hub = hub }

    func retire() { active.store(false, ordering: .releasing) }

    func deliver(type: Int32, state: Int32, path: String) {
        guard active.load(ordering: .acquiring) else { return }
        let event: ZooKeeperEvent
        switch type {
        case cz_session_event(): event = .session(ZooKeeperSessionState(raw: state))
        case cz_created_event(): event = .created(path: path)
        case cz_deleted_event(): event = .deleted(path: path)
        case cz_changed_event(): event = .dataChanged(path: path)
        case cz_child_event(): event = .childrenChanged(path: path)
        case cz_notwatching_event(): event = .notWatching(path: path)
        default: return
        }
        hub.publish(event)
    }
}

/// Fans events out to every subscribed stream.
private final class EventHub: Sendable {
    private struct Subscribers {
        var next = 0
        var streams: [Int: AsyncStream<ZooKeeperEvent>.Continuation] = [:]
        var finished = false
    }

    private let subscribers = Mutex(Subscribers())

    func subscribe() -> AsyncStream<ZooKeeperEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: ZooKeeperEvent.self)
        let id = subscribers.withLock { s -> Int? in
            if s.finished { return nil }
            s.next += 1
            s.streams[s.next] = continuation
            return s.next
        }
        guard let id else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.subscribers.withLock { $0.streams.removeValue(forKey: id) }
        }
        return stream
    }

    func publish(_ event: ZooKeeperEvent) {
        // Yield outside the lock: continuations may call back into onTermination.
        let streams = subscribers.withLock { Array($0.streams.values) }
        for stream in streams { stream.yield(event) }
    }

    func finish() {
        let streams = subscribers.withLock { s -> [AsyncStream<ZooKeeperEvent>.Continuation] in
            s.finished = true
            defer { s.streams.removeAll() }
            return Array(s.streams.values)
        }
        for stream in streams { stream.finish() }
    }
}

/// The awaiting task of one request, passed to C as the completion's context.
private final class Pending<T: Sendable>: Sendable {
    private let continuation: CheckedContinuation<T, any Error>
    private let path: String?

    init(_ continuation: CheckedContinuation<T, any Error>, path: String?) {
        self.continuation = continuation
        self.path = path
    }

    /// Balances the `passRetained` of `submit`: each completion context is taken exactly once.
    static func take(_ context: UnsafeRawPointer?) -> Pending<T> {
        Unmanaged<Pending<T>>.fromOpaque(context!).takeRetainedValue()
    }

    func succeed(_ value: T) { continuation.resume(returning: value) }

    func fail(_ rc: Int32) {
        continuation.resume(throwing: ZooKeeperError(code: .init(rc: rc), message: String(cString: zerror(rc)), path: path))
    }
}

/// Lends the ACL list to C as an `ACL_vector` for the duration of `body`.
private func withACLVector<R>(_ acl: [ZooKeeperACL], _ body: (UnsafePointer<ACL_vector>) -> R) -> R {
    let entries = UnsafeMutablePointer<ACL>.allocate(capacity: max(acl.count, 1))
    for (i, entry) in acl.enumerated() {
        entries[i] = ACL(perms: entry.permissions.rawValue, id: Id(scheme: strdup(entry.scheme), id: strdup(entry.id)))
    }
    defer {
        for i in 0..<acl.count {
            free(entries[i].id.scheme)
            free(entries[i].id.id)
        }
        entries.deallocate()
    }
    var vector = ACL_vector(count: Int32(acl.count), data: entries)
    return body(&vector)
}

extension ZooKeeperStat {
    init(_ s: Stat) {
        self.init(
            czxid: s.czxid, mzxid: s.mzxid, ctime: s.ctime, mtime: s.mtime, version: s.version, cversion: s.cversion,
            aversion: s.aversion, ephemeralOwner: s.ephemeralOwner, dataLength: s.dataLength,
            numChildren: s.numChildren, pzxid: s.pzxid)
    }
}

extension ZooKeeperSessionState {
    init(raw: Int32) {
        switch raw {
        case cz_connecting_state(): self = .connecting
        case cz_associating_state(): self = .associating
        case cz_connected_state(): self = .connected
        case cz_readonly_state(): self = .connectedReadOnly
        case cz_notconnected_state(): self = .notConnected
        case cz_expired_session_state(): self = .expired
        case cz_auth_failed_state(): self = .authFailed
        default: self = .unknown(raw)
        }
    }
}
