import FlashSaleClient
import Foundation
import Logging
import PostgresClient
import Proto
import Synchronization
import TestSupport
import Wire

/// A real `InventoryService` process on a database of its own (plus its `_hot` database), with a client and
/// direct SQL access for checking what the database holds.
final class InventoryHarness: Sendable {
    /// The service token: the tests stand in for the edges and the quota service.
    static let token = "inventory-test-token"
    static let environment = ["FLASHSALE_SERVICE_TOKEN": token]

    let database: TestDatabase
    let port: Int
    let extraArguments: [String]
    private let processBox = ProcessBox()

    var process: ManagedProcess { processBox.current! }
    var hotDSN: String { database.hotCompanion.dsn }
    /// Served as the login role, migrated as the owner (both made by scripts/postgres.sh), as every launch path does;
    /// on this harness's port, with its extra flags.
    var arguments: InventoryArguments {
        var arguments = InventoryArguments.serving(as: Platform.defaultServingRole, main: database.dsn, hot: nil)
        arguments.port = port
        arguments.extra = extraArguments
        return arguments
    }

    private init(database: TestDatabase, port: Int, extraArguments: [String]) {
        self.database = database
        self.port = port
        self.extraArguments = extraArguments
    }

    /// Runs `body` against a fresh service and databases; everything is stopped and dropped afterwards. `prepare`
    /// runs before the service starts and returns more arguments for it (e.g. a `--hot-dsn` of the test's making).
    static func with<T: Sendable>(
        _ arguments: [String] = [], prepare: ((TestDatabase) async throws -> [String])? = nil,
        _ body: (InventoryHarness) async throws -> T
    ) async throws -> T {
        let database = try await TestDatabase.create(prefix: "t_inventory")
        let prepared: [String]
        do {
            prepared = try await prepare?(database) ?? []
        } catch {
            try? await database.drop()
            throw error
        }
        let harness = InventoryHarness(database: database, port: LocalPorts.free(), extraArguments: arguments + prepared)
        do {
            try await harness.start()
            let result = try await body(harness)
            await harness.tearDown()
            return result
        } catch {
            print("service log tail:\n\(harness.processBox.current?.tail(lines: 40) ?? "")")
            await harness.tearDown()
            throw error
        }
    }

    /// Starts (or restarts) the service on the same port and databases and waits for its READY line.
    func start() async throws {
        processBox.set(try await ServiceEndpoint.start(arguments, environment: Self.environment, name: "inventory-\(database.name)").process)
    }

    private func tearDown() async {
        if let process = processBox.current { await process.terminate(grace: .seconds(5)) }
        await RunDatabases(main: database).drop()
    }

    func client(connections: Int = 4, token: String = InventoryHarness.token) -> InventoryClient {
        var logger = Logger(label: "inventory-test")
        logger.logLevel = .critical
        return InventoryClient(port: port, connections: connections, token: token, logger: logger)
    }

    /// One statement on the main (or hot) database.
    func sql(_ statement: String, _ parameters: [String?] = [], hot: Bool = false) async throws -> PostgresResult {
        let connection = try await PostgresConnection.connect(hot ? hotDSN : database.dsn)
        defer { connection.close() }
        return try await connection.query(statement, parameters)
    }

    /// Orders in the database of `hot`, by request id.
    func orders(hot: Bool = false) async throws -> [Int64: (order: Int64, user: Int64, product: Int64)] {
        let result = try await sql("SELECT request_id, order_id, user_id, product_id FROM orders", hot: hot)
        var orders: [Int64: (Int64, Int64, Int64)] = [:]
        for row in 0..<result.count {
            orders[result.int64(row, 0)!] = (result.int64(row, 1)!, result.int64(row, 2)!, result.int64(row, 3)!)
        }
        return orders
    }
}

/// The harness's current process (it changes on restart).
private final class ProcessBox: Sendable {
    private let process = Mutex<ManagedProcess?>(nil)
    var current: ManagedProcess? { process.withLock { $0 } }
    func set(_ process: ManagedProcess) { self.process.withLock { $0 = process } }
}

/// Request ids unique within a test run.
enum TestIds {
    private static let next = Atomic<UInt64>(UInt64(Date().timeIntervalSince1970) << 20)
    static func make(_ count: Int = 1) -> [UInt64] {
        let first = next.wrappingAdd(UInt64(count), ordering: .relaxed).oldValue
        return (0..<UInt64(count)).map { first + $0 }
    }
}

extension RPCError {
    /// The status of any error a call threw (INTERNAL for an error that is not an RPCError).
    static func code(of error: any Error) -> RPCError.Code { RPCError.wrapping(error).code }
}
