import Cluster
import FlashSaleClient
import Foundation
import PostgresClient
import Proto
import Synchronization
import TestSupport
import Testing
import Wire

/// Products sharded over database clusters (issue 13 item 4) against the real InventoryService: main, hot and two
/// shards (databases of their own on the run's PostgreSQL, each a cluster to the inventory). Placement by the
/// operator and by load, reads that say where a product lives, request ids bound across clusters, one shard down
/// while the others sell, and the bad inputs: an unknown cluster, a product on a cluster the inventory was not given,
/// connection strings swapped between clusters, and garbage or duplicate flags.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct ShardTests {
    static let token = InventoryHarness.token
    static let arguments = ["--connect-timeout", "2", "--statement-timeout-ms", "1000", "--consumers", "1", "--hot-consumers", "1"]

    /// The inventory on `databases` (every shard unless `shards` says which), as every launch path runs it.
    static func arguments(_ databases: RunDatabases, port: Int, shards: [(name: String, dsn: String)]? = nil) -> InventoryArguments {
        var arguments = InventoryArguments.serving(
            as: Platform.defaultServingRole, main: databases.main.dsn, hot: databases.hot.dsn,
            clusters: shards ?? databases.shards.map { ($0.cluster, $0.database.dsn) })
        arguments.port = port
        arguments.extra = Self.arguments
        return arguments
    }

    static func start(_ arguments: InventoryArguments) async throws -> ServiceEndpoint {
        try await ServiceEndpoint.start(arguments, environment: InventoryHarness.environment, name: "inventory-shards")
    }

    /// After a restart on the same port: until the client has reconnected (its backoff runs up to a second or two).
    static func reconnected(_ client: InventoryClient) async throws {
        try await waitUntil(timeout: .seconds(10), what: "the client to reconnect") {
            (try? await client.getStock(productId: "a", timeout: .seconds(1))) != nil
        }
    }

    static func with(_ body: (RunDatabases, Int, InventoryClient) async throws -> Void) async throws {
        let databases = try await RunDatabases.create(adminDSN: try await TestServers.postgresDSN(), prefix: "t_shards", shards: 2)
        let port = LocalPorts.free()
        let client = InventoryClient(port: port, connections: 2, token: token, logger: .init(label: "shards-test"))
        do {
            try await body(databases, port, client)
        } catch {
            await client.shutdown()
            await databases.drop()
            throw error
        }
        await client.shutdown()
        await databases.drop()
    }

    static func request(_ product: String, id: UInt64? = nil) -> PurchaseRequest {
        let id = id ?? TestIds.make()[0]
        return PurchaseRequest(requestId: id, userId: id, productId: product)
    }

    static func code(_ body: () async throws -> some Sendable) async -> RPCError.Code? {
        do {
            _ = try await body()
            return nil
        } catch {
            return RPCError.code(of: error)
        }
    }

    static func query(_ dsn: String, _ sql: String, _ parameters: [String?] = []) async throws -> PostgresResult {
        let connection = try await PostgresConnection.connect(dsn)
        defer { connection.close() }
        return try await connection.query(sql, parameters)
    }

    /// One test in two parts on one set of databases (creating and migrating four costs seconds).
    @Test func shardedProducts() async throws {
        try await Self.with { databases, port, client in
            let inventory = try await Self.start(Self.arguments(databases, port: port))
            do {
                try await Self.placedOnClustersSellThereAndReportWhereTheyLive(databases, client)
            } catch {
                await inventory.process.terminate()
                throw error
            }
            try await Self.oneShardDownLeavesTheOtherClustersSellingAndBadConfigurationsAreRefused(
                databases, port, client, inventory)
        }
    }

    static func placedOnClustersSellThereAndReportWhereTheyLive(_ databases: RunDatabases, _ client: InventoryClient) async throws {
        do {

            // By load: main, then the shards in turn (hot takes only hot products); by choice: any cluster given.
            for id in ["a", "b", "c"] { _ = try await client.createProduct(CreateProductRequest(productId: id, totalStock: 10)) }
            _ = try await client.createProduct(CreateProductRequest(productId: "d", totalStock: 10, cluster: "shard-2"))
            _ = try await client.createProduct(CreateProductRequest(productId: "h", totalStock: 10, hot: true))
            _ = try await client.createProduct(CreateProductRequest(productId: "m", totalStock: 10, cluster: "main"))
            let placed = ["a": "main", "b": "shard-2", "c": "shard-3", "d": "shard-2", "h": "hot", "m": "main"]
            for (id, cluster) in placed {
                #expect(try await client.getStock(productId: id).database == cluster, "\(id) on \(cluster)")
            }
            // The next automatic one goes to the least loaded: shard-3 (main and shard-2 have two each).
            _ = try await client.createProduct(CreateProductRequest(productId: "e", totalStock: 10))
            #expect(try await client.getStock(productId: "e").database == "shard-3")

            // Bad input: an unknown cluster, a malformed name, hot on another cluster; nothing is created.
            #expect(await Self.code { try await client.createProduct(.init(productId: "x", totalStock: 1, cluster: "shard-9")) } == .invalidArgument)
            #expect(await Self.code { try await client.createProduct(.init(productId: "x", totalStock: 1, cluster: "Shard_2")) } == .invalidArgument)
            #expect(await Self.code { try await client.createProduct(.init(productId: "x", totalStock: 1, hot: true, cluster: "shard-2")) } == .invalidArgument)
            #expect(await Self.code { try await client.getStock(productId: "x") } == .notFound)

            // Each sells on its own cluster; every request id is bound in main, so one id never buys on two.
            var ids: [String: UInt64] = [:]
            for id in placed.keys.sorted() {
                let request = Self.request(id)
                #expect(try await client.purchase(request, timeout: .seconds(5)).outcome == .purchased, "\(id)")
                ids[id] = request.requestId
            }
            let reused = PurchaseRequest(requestId: ids["b"]!, userId: ids["b"]!, productId: "c")
            #expect(await Self.code { try await client.purchase(reused, timeout: .seconds(5)) } == .failedPrecondition)
            let shard2 = databases.shards[0].database.dsn, shard3 = databases.shards[1].database.dsn
            let onShard2 = try await Self.query(shard2, "SELECT count(*) FROM orders WHERE request_id = ANY($1::bigint[])",
                                                ["{\(Int64(bitPattern: ids["b"]!)),\(Int64(bitPattern: ids["d"]!))}"])
            #expect(onShard2.int64(0, 0) == 2)
            let bound = try await Self.query(databases.main.dsn, "SELECT count(*) FROM requests WHERE request_id = $1",
                                             [String(Int64(bitPattern: ids["c"]!))])
            #expect(bound.int64(0, 0) == 1, "shard-3's request id is bound in main")
            // Each database knows which cluster it is.
            for (dsn, name) in [(databases.main.dsn, "main"), (databases.hot.dsn, "hot"), (shard2, "shard-2"), (shard3, "shard-3")] {
                #expect(try await Self.query(dsn, "SELECT name FROM cluster_identity").string(0, 0) == name)
            }

            // Every cluster in the lists, the sold counts and the audit.
            #expect(try await client.listProducts().map(\.productId).sorted() == ["a", "b", "c", "d", "e", "h", "m"])
            #expect(try await client.soldCounts().filter { $0.sold == 1 }.count == placed.count)
            let audit = try await client.audit()
            #expect(audit.clean && audit.products.count == 7)
        }
    }

    static func oneShardDownLeavesTheOtherClustersSellingAndBadConfigurationsAreRefused(
        _ databases: RunDatabases, _ port: Int, _ client: InventoryClient, _ started: ServiceEndpoint
    ) async throws {
        var inventory = started
        defer { Task { [inventory] in await inventory.process.terminate() } }
        do {
            for (id, cluster) in [("oa", "main"), ("ob", "shard-2"), ("oc", "shard-3"), ("oh", "hot")] {
                _ = try await client.createProduct(CreateProductRequest(productId: id, totalStock: 50, hot: cluster == "hot", cluster: cluster))
            }
            let admin = try await PostgresConnection.connect(databases.main.adminDSN)
            defer { admin.close() }
            let down = databases.shards[0].database.name
            func refuse(_ refused: Bool) async throws {
                try await admin.exec("ALTER DATABASE \(down) ALLOW_CONNECTIONS \(refused ? "false" : "true")")
                if refused {
                    _ = try await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [down])
                }
            }
            // shard-2 away, then the inventory restarted without it: the other clusters' products sell in time, its
            // own product is refused UNAVAILABLE at once (nothing bought).
            try await refuse(true)
            for restart in [false, true] {
                if restart {
                    await inventory.process.terminate()
                    inventory = try await Self.start(Self.arguments(databases, port: port))
                    try await Self.reconnected(client)
                }
                for id in ["oa", "oc", "oh"] {
                    let started = ContinuousClock.now
                    #expect(try await client.purchase(Self.request(id), timeout: .seconds(3)).outcome == .purchased, "\(id)")
                    #expect(ContinuousClock.now - started < .seconds(1), "\(id) answered in time while shard-2 was away")
                }
                let started = ContinuousClock.now
                #expect(await Self.code { try await client.purchase(Self.request("ob"), timeout: .seconds(3)) } == .unavailable)
                #expect(ContinuousClock.now - started < .seconds(2))
            }
            // Back: shard-2 is brought up in the background and its product sells.
            try await refuse(false)
            try await waitUntil(timeout: .seconds(15), what: "shard-2 to sell again") {
                (try? await client.purchase(Self.request("ob"), timeout: .seconds(2)))?.outcome == .purchased
            }
            await inventory.process.terminate()

            // A product whose cluster this inventory was not given: refused UNAVAILABLE, naming the cluster; the
            // others sell.
            let shard2Only = [(name: "shard-2", dsn: databases.shards[0].database.dsn)]
            inventory = try await Self.start(Self.arguments(databases, port: port, shards: shard2Only))
            try await Self.reconnected(client)
            #expect(try await client.purchase(Self.request("oa"), timeout: .seconds(3)).outcome == .purchased)
            #expect(try await client.purchase(Self.request("ob"), timeout: .seconds(3)).outcome == .purchased)
            #expect(await Self.code { try await client.purchase(Self.request("oc"), timeout: .seconds(3)) } == .unavailable)
            do {
                _ = try await client.getStock(productId: "oc")
                Issue.record("oc answered without its cluster")
            } catch let error as RPCError {
                #expect(error.code == .unavailable && error.message.contains("shard-3"), "\(error)")
            }
            await inventory.process.terminate()

            // Connection strings swapped between two clusters: refused at start, naming both.
            let swapped = [("shard-2", databases.shards[1].database.dsn), ("shard-3", databases.shards[0].database.dsn)]
            let log = try await Self.startFailure(Self.arguments(databases, port: port, shards: swapped.map { ($0.0, $0.1) }))
            #expect(!log.hasPrefix("exit 0"), "\(log)")
            #expect(log.contains("cluster shard-3's, not shard-2's") || log.contains("cluster shard-2's, not shard-3's"), "\(log)")

            // Garbage and duplicates on the command line: refused before any connection, with the usage.
            let executable = try RepoPaths.executable(InventoryArguments.product)
            let base = Self.arguments(databases, port: port, shards: []).list
            for (flags, says) in [
                (["--database", "nonsense"], "takes NAME=DSN"),
                (["--database", "Shard_2=host=x"], "cluster name Shard_2"),
                (["--database", "shard-2="], "has no connection string"),
                (["--database", "shard-2=host=a", "--database", "shard-2=host=b"], "given twice"),
                (["--database", "main=host=a"], "--dsn and --database main="),
                (["--database", "shard-2=host=a"], "--migrate-database shard-2=DSN"),
                (["--migrate-database", "shard-7=host=a"], "names no cluster"),
            ] {
                let result = try await runCommand(executable.path, base + flags, environment: InventoryHarness.environment, timeout: .seconds(20))
                #expect(result.status == 64 && result.output.contains(says), "\(flags): \(result.output)")
            }
        }
    }

    /// The output of an inventory that exits before its READY line.
    static func startFailure(_ arguments: InventoryArguments) async throws -> String {
        let result = try await runCommand(
            try RepoPaths.executable(InventoryArguments.product).path, arguments.list, environment: InventoryHarness.environment,
            timeout: .seconds(20))
        return "exit \(result.status): \(result.output)"
    }
}
