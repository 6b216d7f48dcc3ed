import PostgresClient
import Testing

/// How the connection settings meet the operator's connection string: libpq parses it, no server needed.
@Suite struct PostgresSettingsTests {
    @Test func postgresSettingsAddBoundsTheStringDoesNotNameAndPinServerSettingsLast() throws {
        var settings = PostgresSettings(
            connectTimeoutSeconds: 3, keepalives: (idle: 4, interval: 1, count: 2), tcpUserTimeoutMilliseconds: 7000)
        settings.serverSettings = [("synchronous_commit", "on"), ("application_name", "a b")]
        let parsed = try PostgresConnection.parse("host=h port=1 connect_timeout=9 options='-c x=1'")
        let parameters = settings.parameters(from: parsed)
        let value = { (keyword: String) in parameters.last { $0.keyword == keyword }?.value }
        #expect(value("connect_timeout") == "9", "the operator's own bound wins")
        #expect(value("keepalives") == "1" && value("keepalives_idle") == "4" && value("keepalives_count") == "2")
        #expect(value("tcp_user_timeout") == "7000")
        #expect(value("options") == "-c x=1 -c synchronous_commit=on -c application_name=a\\ b")
        #expect(parameters.filter { $0.keyword == "options" }.count == 1)
        #expect(throws: PostgresError.self) { try PostgresConnection.parse("host='unterminated") }
    }
}
