import Addressing
import PostgresClient
import Testing

/// What Patroni keeps in ZooKeeper, decoded: good values to the primary's address, anything else to nil.
@Suite struct PatroniLeaderTests {
    private let member = """
        {"conn_url":"postgres://127.0.0.1:15443/postgres","api_url":"http://127.0.0.1:18009/patroni",\
        "state":"running","role":"master","version":"3.0.2","xlog_location":50331808,"timeline":2}
        """

    @Test func aLeaderKeyAndItsMemberNameThePrimary() throws {
        let name = try #require(PatroniLeader.memberName(leaderValue: Array("n2".utf8)))
        #expect(name == "n2")
        #expect(PatroniLeader.memberName(leaderValue: Array(" n-1_a.b\n".utf8)) == "n-1_a.b")
        let path = try #require(PatroniLeader.memberPath(leaderPath: "/flashsale-patroni-x/flashsale/leader", member: name))
        #expect(path == "/flashsale-patroni-x/flashsale/members/n2")
        #expect(PatroniLeader.endpoint(memberJSON: Array(member.utf8)) == HostPort(host: "127.0.0.1", port: 15443))
        #expect(PatroniLeader.endpoint(connectionURL: "postgresql://db.example:6432/x") == HostPort(host: "db.example", port: 6432))
        #expect(PatroniLeader.endpoint(connectionURL: "postgres://[::1]:5433/postgres") == HostPort(host: "::1", port: 5433))
        #expect(PatroniLeader.endpoint(connectionURL: "postgres://10.0.0.7/postgres") == HostPort(host: "10.0.0.7", port: 5432))
    }

    @Test func garbageDecodesToNoPrimary() {
        for value in [[], [0xff, 0xfe], Array("   ".utf8), Array("n1/../x".utf8), Array("a b".utf8),
                      Array(String(repeating: "n", count: 300).utf8)] as [[UInt8]] {
            #expect(PatroniLeader.memberName(leaderValue: value) == nil, "\(value)")
        }
        for path in ["", "leader", "/ns/scope/members", "/ns/scope/leader/"] {
            #expect(PatroniLeader.memberPath(leaderPath: path, member: "n1") == nil, "\(path)")
        }
        for json in ["", "{", "[]", "null", "{\"conn_url\":5}", "{\"api_url\":\"http://x\"}", "\u{0}\u{1}",
                     "{\"conn_url\":\"http://127.0.0.1:5432/x\"}", "{\"conn_url\":\"postgres://:5432/x\"}",
                     "{\"conn_url\":\"postgres://h:99999/x\"}", "{\"conn_url\":\"not a url at all\"}"] {
            #expect(PatroniLeader.endpoint(memberJSON: Array(json.utf8)) == nil, "\(json)")
        }
    }

    @Test func aLocatorLeavesAServerOnlyForAnotherKnownPrimary() {
        let one = HostPort(host: "127.0.0.1", port: 1)
        let two = HostPort(host: "127.0.0.1", port: 2)
        let locator = PostgresPrimaryLocator()
        #expect(locator.current == nil)
        #expect(!locator.hasMoved(from: one), "no primary known: nobody is left")
        locator.update(one)
        #expect(!locator.hasMoved(from: one))
        locator.update(two)
        #expect(locator.hasMoved(from: one) && !locator.hasMoved(from: two))
        locator.update(nil)
        #expect(!locator.hasMoved(from: one), "an election under way keeps what is connected")
    }

    @Test func aLocatedConnectionGoesToThePrimaryOnly() throws {
        let parsed = try PostgresConnection.parse(
            "host=127.0.0.1,127.0.0.1 port=15442,15443 dbname=postgres target_session_attrs=read-write user=u")
        let parameters = PostgresSettings().parameters(from: parsed, at: HostPort(host: "10.0.0.2", port: 6000))
        let values = { (keyword: String) in parameters.filter { $0.keyword == keyword }.map(\.value) }
        #expect(values("host") == ["10.0.0.2"] && values("port") == ["6000"] && values("hostaddr").isEmpty)
        #expect(values("target_session_attrs") == ["read-write"] && values("user") == ["u"])
    }

    @Test func withNoPrimaryKnownALocatedConnectFailsAtOnce() {
        let settings = PostgresSettings(primary: PostgresPrimaryLocator())
        #expect(throws: PostgresError.self) { try PostgresConnection.connect("host=127.0.0.1 port=1", settings: settings) }
    }
}
