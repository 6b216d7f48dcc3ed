import PostgresClient

/// The two databases of one sale run (main, and hot products'), created fresh and dropped afterwards.
struct SaleDatabases: Sendable {
    let adminDSN: String
    let names: [String]
    let main: String
    let hot: String

    static func create(adminDSN: String, name: String) async throws -> SaleDatabases {
        let connection = try await PostgresConnection.connect(adminDSN)
        defer { connection.close() }
        let names = [name, name + "_hot"]
        for database in names { try await connection.exec("CREATE DATABASE \(database)") }
        return SaleDatabases(
            adminDSN: adminDSN, names: names,
            main: adminDSN + " dbname=\(names[0])", hot: adminDSN + " dbname=\(names[1])")
    }

    func drop() async {
        guard let connection = try? await PostgresConnection.connect(adminDSN) else { return }
        defer { connection.close() }
        for database in names { _ = try? await connection.exec("DROP DATABASE IF EXISTS \(database) WITH (FORCE)") }
    }
}
