import Foundation
import PostgresClient
import TestSupport
import Testing
import ZooKeeperClient

/// The infrastructure against the real servers (started by the scripts when not running).
@Suite(.serialized, .timeLimit(.minutes(2)))
struct SmokeTests {
    // MARK: PostgreSQL

    @Test func postgresSelectWithParameters() async throws {
        let conn = try await PostgresConnection.connect(try await TestServers.postgresDSN())
        defer { conn.close() }
        let result = try await conn.query("SELECT 1 AS one, $1::text AS word, $2::text AS missing", ["flash", nil])
        #expect(result.columns == ["one", "word", "missing"])
        #expect(result.int64(0, 0) == 1)
        #expect(result.string(0, "word") == "flash")
        #expect(result.string(0, 2) == nil)
        #expect(conn.isConnected)
    }

    @Test func postgresErrorsCarrySQLSTATE() async throws {
        let conn = try await PostgresConnection.connect(try await TestServers.postgresDSN())
        defer { conn.close() }
        let error = await #expect(throws: PostgresError.self) { try await conn.query("SELEC 1") }
        #expect(error?.code == "42601")
        let missing = await #expect(throws: PostgresError.self) { try await conn.query("SELECT * FROM no_such_table") }
        #expect(missing?.code == "42P01")
        // The connection stays usable after a statement error.
        #expect(try await conn.query("SELECT 2").int64(0, 0) == 2)
    }

    @Test func postgresScriptsConstraintsAndOwnDatabase() async throws {
        try await TestDatabase.with(prefix: "t_smoke") { db in
            let conn = try await PostgresConnection.connect(db.dsn)
            defer { conn.close() }
            #expect(try await conn.query("SELECT current_database()").string(0, 0) == db.name)
            try await conn.exec("""
                CREATE TABLE item (id bigint PRIMARY KEY, stock int NOT NULL CHECK (stock >= 0));
                INSERT INTO item VALUES (1, 2), (2, 0);
                """)
            let update = try await conn.query("UPDATE item SET stock = stock - 1 WHERE stock > 0")
            #expect(update.affectedRows == 1)
            let duplicate = await #expect(throws: PostgresError.self) { try await conn.query("INSERT INTO item VALUES (1, 5)") }
            #expect(duplicate?.isUniqueViolation == true)
            #expect(duplicate?.constraint == "item_pkey")
            let negative = await #expect(throws: PostgresError.self) { try await conn.query("UPDATE item SET stock = -1 WHERE id = 2") }
            #expect(negative?.isCheckViolation == true)
        }
    }

    @Test func postgresLostConnectionIsReportedAndReset() async throws {
        let dsn = try await TestServers.postgresDSN()
        let victim = try await PostgresConnection.connect(dsn)
        let admin = try await PostgresConnection.connect(dsn)
        defer { victim.close(); admin.close() }
        let pid = try #require(try await victim.query("SELECT pg_backend_pid()").string(0, 0))
        _ = try await admin.query("SELECT pg_terminate_backend($1::int)", [pid])
        let error = await #expect(throws: PostgresError.self) { try await victim.query("SELECT 1") }
        #expect(error?.isConnectionFailure == true)
        #expect(!victim.isConnected)
        try await victim.reset()
        #expect(try await victim.query("SELECT 1").int64(0, 0) == 1)
    }

    @Test func postgresTaskCancellationAbandonsTheStatement() async throws {
        let conn = try await PostgresConnection.connect(try await TestServers.postgresDSN())
        defer { conn.close() }
        let started = ContinuousClock.now
        let sleeper = Task { try await conn.query("SELECT pg_sleep(30)") }
        try await Task.sleep(for: .milliseconds(300))
        sleeper.cancel()
        let outcome = await sleeper.result
        #expect(ContinuousClock.now - started < .seconds(10))
        #expect(throws: PostgresError.self) { try outcome.get() }
        // Abandoned without waiting on the network (no PQcancel): the connection is closed until reset.
        #expect(!conn.isConnected)
        try await conn.reset()
        #expect(try await conn.query("SELECT 3").int64(0, 0) == 3)
    }

    @Test func postgresQueryTimeoutBoundsAStatementAndResetRecovers() async throws {
        var settings = PostgresSettings.standard
        settings.queryTimeout = .milliseconds(500)
        let conn = try await PostgresConnection.connect(try await TestServers.postgresDSN(), settings: settings)
        defer { conn.close() }
        let started = ContinuousClock.now
        let error = await #expect(throws: PostgresError.self) { try await conn.query("SELECT pg_sleep(20)") }
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(error?.isConnectionFailure == true, "the outcome of an abandoned statement is unknown: a lost connection")
        #expect(!conn.isConnected)
        try await conn.reset()
        #expect(try await conn.query("SELECT 4").int64(0, 0) == 4)
    }

    /// A peer that accepts and never answers (a blackholed host behind a proxy): connecting and a statement on an
    /// open connection both end within their bounds.
    @Test func postgresConnectAndStatementsEndAgainstABlackholedServer() async throws {
        let dsn = try await TestServers.postgresDSN()
        let port = try #require(PostgresDSN.value(of: "port", in: dsn).flatMap { Int($0) })
        let proxy = try await BlackholeProxy.start(port: port, mode: .requests)
        defer { Task { await proxy.stop() } }
        var settings = PostgresSettings.standard
        settings.connectTimeoutSeconds = 2
        settings.queryTimeout = .seconds(1)
        let proxied = PostgresDSN.with(port: proxy.port, dsn)
        let conn = try await PostgresConnection.connect(proxied, settings: settings)
        defer { conn.close() }
        #expect(try await conn.query("SELECT 1").int64(0, 0) == 1)
        proxy.blackhole()
        var started = ContinuousClock.now
        await #expect(throws: PostgresError.self) { try await conn.query("SELECT 2") }
        #expect(ContinuousClock.now - started < .seconds(4))
        started = ContinuousClock.now
        await #expect(throws: PostgresError.self) { try await conn.reset() }
        await #expect(throws: PostgresError.self) { try await PostgresConnection.connect(proxied, settings: settings) }
        #expect(ContinuousClock.now - started < .seconds(8), "two connect attempts of 2 s each")
        proxy.restore()
        try await conn.reset()
        #expect(try await conn.query("SELECT 5").int64(0, 0) == 5)
    }

    @Test func postgresPinnedServerSettingsWinOverTheConnectionString() async throws {
        var settings = PostgresSettings.standard
        settings.serverSettings = [("synchronous_commit", "on"), ("statement_timeout", "1234")]
        let dsn = try await TestServers.postgresDSN() + " options='-c synchronous_commit=off -c work_mem=5MB'"
        let conn = try await PostgresConnection.connect(dsn, settings: settings)
        defer { conn.close() }
        #expect(try await conn.query("SHOW synchronous_commit").string(0, 0) == "on")
        #expect(try await conn.query("SHOW statement_timeout").string(0, 0) == "1234ms")
        #expect(try await conn.query("SHOW work_mem").string(0, 0) == "5MB", "the string's own options are kept")
    }

    // MARK: ZooKeeper

    @Test func zooKeeperWatchSeesAnotherClientsWrite() async throws {
        let hosts = try await TestServers.zooKeeperHosts()
        let reader = try await ZooKeeperClient.connect(hosts: hosts)
        let writer = try await ZooKeeperClient.connect(hosts: hosts)
        let root = Self.uniqueRoot()
        let path = try await writer.create("\(root)/config", data: Array("v1".utf8), createParents: true)
        #expect(path == "\(root)/config")

        let events = reader.events()
        let (data, stat) = try await reader.get(path, watch: true)
        #expect(data == Array("v1".utf8))
        #expect(stat.version == 0)

        let newStat = try await writer.set(path, data: Array("v2".utf8), version: stat.version)
        #expect(newStat.version == 1)
        let event = try await Self.next(events) { $0 == .dataChanged(path: path) }
        #expect(event == .dataChanged(path: path))
        #expect(try await reader.get(path).data == Array("v2".utf8))

        try await writer.deleteTree(root)
        await reader.close()
        await writer.close()
    }

    @Test func zooKeeperCompareAndSetWithStaleVersionFails() async throws {
        let zk = try await ZooKeeperClient.connect(hosts: try await TestServers.zooKeeperHosts())
        let root = Self.uniqueRoot()
        let path = try await zk.create("\(root)/quota", data: Array("125".utf8), createParents: true)
        let first = try await zk.get(path).stat
        try await zk.set(path, data: Array("130".utf8), version: first.version)
        let error = await #expect(throws: ZooKeeperError.self) {
            try await zk.set(path, data: Array("999".utf8), version: first.version)
        }
        #expect(error?.code == .badVersion)
        #expect(try await zk.get(path).data == Array("130".utf8))
        let exists = await #expect(throws: ZooKeeperError.self) { try await zk.create(path) }
        #expect(exists?.code == .nodeExists)
        let missing = await #expect(throws: ZooKeeperError.self) { try await zk.get("\(root)/absent") }
        #expect(missing?.code == .noNode)
        try await zk.deleteTree(root)
        await zk.close()
    }

    @Test func zooKeeperEphemeralNodeVanishesWithItsSession() async throws {
        let hosts = try await TestServers.zooKeeperHosts()
        let observer = try await ZooKeeperClient.connect(hosts: hosts)
        let edge = try await ZooKeeperClient.connect(hosts: hosts)
        let root = Self.uniqueRoot()
        try await observer.ensurePath("\(root)/edges")
        let node = try await edge.create("\(root)/edges/edge-", data: Array("127.0.0.1:1".utf8), mode: .ephemeralSequential)
        #expect(node.hasPrefix("\(root)/edges/edge-") && node.count == "\(root)/edges/edge-".count + 10)

        let events = observer.events()
        let stat = try #require(try await observer.exists(node, watch: true))
        #expect(stat.ephemeralOwner == edge.sessionID)
        #expect(try await observer.children("\(root)/edges", watch: true) == [String(node.split(separator: "/").last!)])

        await edge.close()
        _ = try await Self.next(events) { $0 == .deleted(path: node) }
        #expect(try await observer.exists(node) == nil)
        #expect(try await observer.children("\(root)/edges").isEmpty)

        try await observer.deleteTree(root)
        await observer.close()
    }

    @Test func zooKeeperDigestACLAndReconnect() async throws {
        let hosts = try await TestServers.zooKeeperHosts()
        #expect(ZooKeeperACL.digestID(user: "alice", password: "s3cret") == "alice:uLxpHc/uhT86OXPoSjJTp1M8CJY=")
        let owner = try await ZooKeeperClient.connect(hosts: hosts)
        let stranger = try await ZooKeeperClient.connect(hosts: hosts)
        try await owner.addAuth(scheme: "digest", credentials: "alice:s3cret")
        let root = Self.uniqueRoot()
        try await owner.ensurePath(root)
        let acl = [ZooKeeperACL.digest(user: "alice", password: "s3cret")] + ZooKeeperACL.readUnsafe
        let path = try await owner.create("\(root)/secret", data: [1, 2, 3], acl: acl)

        #expect(try await stranger.get(path).data == [1, 2, 3])
        let denied = await #expect(throws: ZooKeeperError.self) { try await stranger.set(path, data: [9]) }
        #expect(denied?.code == .noAuth)

        // A new session keeps the credentials: the owner can still write.
        let oldSession = owner.sessionID
        try await owner.reconnect()
        #expect(owner.sessionID != oldSession)
        #expect(owner.sessionState == .connected)
        try await owner.set(path, data: [4])
        #expect(try await stranger.get(path).data == [4])

        try await owner.deleteTree(root)
        await owner.close()
        await stranger.close()
        let closed = await #expect(throws: ZooKeeperError.self) { try await owner.get("/") }
        #expect(closed?.code == .closing)
    }

    @Test func zooKeeperSessionExpiryIsAnEventAndReconnectRecovers() async throws {
        let zk = try await ZooKeeperClient.connect(hosts: try await TestServers.zooKeeperHosts())
        let root = Self.uniqueRoot()
        try await zk.ensurePath(root)
        let node = try await zk.create("\(root)/edge", mode: .ephemeral)
        let events = zk.events()

        try await zk.expireSessionForTesting()
        _ = try await Self.next(events) { $0 == .session(.expired) }
        #expect(zk.sessionState == .expired)
        let expired = await #expect(throws: ZooKeeperError.self) { try await zk.get(root) }
        #expect(expired?.code == .sessionExpired)

        try await zk.reconnect()
        _ = try await Self.next(events) { $0 == .session(.connected) }
        #expect(try await zk.exists(node) == nil)  // the ephemeral went with the old session
        try await zk.create(node, mode: .ephemeral)
        try await zk.deleteTree(root)
        await zk.close()
    }

    // MARK: Helpers

    static func uniqueRoot() -> String {
        ZooKeeperRoot.unique("smoke")
    }

    /// The first event matching `predicate`, within 10 s.
    static func next(
        _ events: AsyncStream<ZooKeeperEvent>, _ predicate: @escaping @Sendable (ZooKeeperEvent) -> Bool
    ) async throws -> ZooKeeperEvent {
        try await withTimeout(.seconds(10), "ZooKeeper event") {
            for await event in events where predicate(event) { return event }
            throw TestSupportError.notFound("event stream ended")
        }
    }
}
