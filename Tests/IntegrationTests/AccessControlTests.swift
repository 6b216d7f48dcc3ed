import Cluster
import FlashSaleClient
import Foundation
import Logging
import PostgresClient
import Proto
import Testing
import TestSupport
import Wire

/// Access rules, each tried against the real processes: operator methods refuse a missing token (UNAUTHENTICATED) and
/// a wrong one (PERMISSION_DENIED) on every service; an edge with an operator port serves only purchases (and Ping)
/// on its public port; the token never shows in any service's log, even at trace level.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct AccessControlTests {
    let logger = Logger(label: "access-test")
    static let token = "access-test-token-\(UInt64.random(in: 0...UInt64.max))"
    static let wrongToken = "wrong-token-\(UInt64.random(in: 0...UInt64.max))"

    /// Every method of every service and whether it needs the operator token (Fuzz/Messages.swift lists the same).
    static let methods: [(service: String, method: String, operatorOnly: Bool)] = [
        ("edge", "Ping", false),
        ("edge", "edge.Purchase", false),
        ("edge", "edge.Stats", false),
        ("edge", "edge.QuotaUsage", false),
        ("edge", "edge.ReleaseQuota", true),
        ("inventory", "Ping", false),
        ("inventory", "inventory.Purchase", false),
        ("inventory", "inventory.CreateProduct", true),
        ("inventory", "inventory.GetStock", false),
        ("inventory", "inventory.ListProducts", false),
        ("inventory", "inventory.AdjustStock", true),
        ("inventory", "inventory.SoldCounts", false),
        ("inventory", "inventory.Audit", false),
        ("quota", "Ping", false),
        ("quota", "quota.CreateProduct", true),
        ("quota", "quota.RaiseStock", true),
        ("quota", "quota.LimitStock", true),
        ("quota", "quota.SetShed", true),
        ("quota", "quota.GrantMore", true),
        ("quota", "quota.Status", false),
    ]

    /// The call's status: nil for OK. Requests are empty messages: the token is checked before the payload is read,
    /// and an empty operator request is refused as invalid further on, so no call changes anything.
    static func status(_ rpc: RPCClient, _ method: String, token: String) async -> RPCError.Code? {
        do {
            _ = try await rpc.call(method, ListProductsRequest(), as: ListProductsRequest.self, timeout: .seconds(10), token: token)
            return nil
        } catch let error as RPCError {
            return error.code
        } catch {
            return .unknown
        }
    }

    static func client(_ endpoint: (host: String, port: Int), logger: Logger) -> RPCClient {
        RPCClient(configuration: RPCClientConfiguration(host: endpoint.host, port: endpoint.port, connections: 1), logger: logger)
    }

    @Test func operatorMethodsNeedTheTokenOnEveryServiceAndTheTokenIsNeverLogged() async throws {
        let main = try await TestDatabase.create(prefix: "access")
        let hot = try await TestDatabase.create(prefix: "access_hot")
        var configuration = Platform.Configuration(
            databaseDSN: main.dsn, hotDatabaseDSN: hot.dsn, zooKeeperHosts: try await TestServers.zooKeeperHosts(),
            operatorToken: Self.token)
        configuration.zooKeeperRoot = "/access_test_\(UInt32.random(in: 0...UInt32.max))"
        configuration.edges = 1
        configuration.logLevel = "trace"
        let platform = try await Platform.start(configuration)
        var processes = [platform.inventory.process, platform.quota.process]
        do {
            let operatorPort = LocalPorts.free()
            let split = try await platform.addEdge(extraArguments: ["--operator-port", "\(operatorPort)"])
            processes += platform.edges.map(\.process)
            let endpoints: [String: (host: String, port: Int)] = [
                "edge": (platform.edges[0].host, platform.edges[0].port),
                "inventory": (platform.inventory.host, platform.inventory.port),
                "quota": (platform.quota.host, platform.quota.port),
            ]
            for (service, method, operatorOnly) in Self.methods {
                let rpc = Self.client(endpoints[service]!, logger: logger)
                let missing = await Self.status(rpc, method, token: "")
                let wrong = await Self.status(rpc, method, token: Self.wrongToken)
                let right = await Self.status(rpc, method, token: Self.token)
                if operatorOnly {
                    #expect(missing == .unauthenticated, "\(method) without a token: \(String(describing: missing))")
                    #expect(wrong == .permissionDenied, "\(method) with a wrong token: \(String(describing: wrong))")
                } else {
                    #expect(missing != .unauthenticated && missing != .permissionDenied, "\(method) is public")
                }
                #expect(right != .unauthenticated && right != .permissionDenied && right != .unimplemented,
                        "\(method) with the token: \(String(describing: right))")
                await rpc.shutdown()
            }

            // The edge with an operator port: purchases and Ping on the public port, nothing else.
            let publicPort = Self.client((split.host, split.port), logger: logger)
            let operatorSide = Self.client(("127.0.0.1", operatorPort), logger: logger)
            for method in ["edge.Stats", "edge.QuotaUsage", "edge.ReleaseQuota"] {
                #expect(await Self.status(publicPort, method, token: Self.token) == .unimplemented, "\(method) on the public port")
            }
            #expect(await Self.status(publicPort, "edge.Purchase", token: "") == .invalidArgument, "an empty purchase is served (and refused as invalid)")
            #expect(await Self.status(publicPort, "Ping", token: "") == nil)
            #expect(await Self.status(operatorSide, "edge.Purchase", token: Self.token) == .unimplemented, "no purchases on the operator port")
            #expect(await Self.status(operatorSide, "edge.Stats", token: "") == nil)
            #expect(await Self.status(operatorSide, "edge.ReleaseQuota", token: "") == .unauthenticated)
            #expect(await Self.status(operatorSide, "edge.ReleaseQuota", token: Self.wrongToken) == .permissionDenied)
            await publicPort.shutdown()
            await operatorSide.shutdown()
        } catch {
            await platform.stop()
            try? await main.drop()
            try? await hot.drop()
            throw error
        }
        await platform.stop()
        try? await main.drop()
        try? await hot.drop()

        // Secrets never in the logs: not the token, not a wrong one a caller tried.
        for process in processes {
            let log = process.log()
            #expect(!log.isEmpty, "\(process.name) logged nothing at trace level")
            #expect(!log.contains(Self.token), "\(process.name) logged the operator token")
            #expect(!log.contains(Self.wrongToken), "\(process.name) logged a presented token")
        }
    }

    /// The inventory migrates as the owner and serves as a login role that is only a member of flashsale_service:
    /// purchases (the procedures) work, on cold and hot products; writing a table directly is refused.
    @Test func theServiceRoleMayCallTheProceduresButNotWriteTables() async throws {
        let main = try await TestDatabase.create(prefix: "role")
        let hot = try await TestDatabase.create(prefix: "role_hot")
        let login = "flashsale_app_\(UInt32.random(in: 0...UInt32.max))"
        let admin = try await PostgresConnection.connect(main.adminDSN)
        // The same statement as the migration: the group role may exist already (roles are per server).
        _ = try await admin.exec("""
            DO $r$ BEGIN CREATE ROLE flashsale_service NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $r$;
            CREATE ROLE \(login) LOGIN IN ROLE flashsale_service;
            """)
        let serving = main.dsn + " user=\(login)"
        let servingHot = hot.dsn + " user=\(login)"
        let inventory = try ManagedProcess.start(
            product: "InventoryService",
            arguments: ["--port", "0", "--dsn", serving, "--hot-dsn", servingHot, "--migrate-dsn", main.dsn,
                        "--hot-migrate-dsn", hot.dsn, "--log-level", "info"],
            environment: ["FLASHSALE_OPERATOR_TOKEN": Self.token], name: "inventory-role")
        let client: InventoryClient
        do {
            let (host, port) = try await inventory.waitForReady()
            client = InventoryClient(rpc: RPCClient(
                configuration: RPCClientConfiguration(host: host, port: port, token: Self.token), logger: logger))
        } catch {
            await inventory.terminate()
            throw error
        }
        do {
            for (product, isHot) in [("cold", false), ("hot", true)] {
                _ = try await client.createProduct(CreateProductRequest(productId: product, totalStock: 10, hot: isHot))
                let bought = try await client.purchase(PurchaseRequest(requestId: isHot ? 2 : 1, userId: 7, productId: product))
                #expect(bought.outcome == .purchased, "\(product): \(bought)")
            }
            _ = try await client.adjustStock(AdjustStockRequest(productId: "cold", change: .raiseBy(5)))
            let audit = try await client.audit()
            #expect(audit.clean && audit.products.count == 2, "\(audit)")
            #expect(!inventory.log().contains("may write tables directly"), "the serving role is the restricted one")

            for dsn in [serving, servingHot] {
                let restricted = try await PostgresConnection.connect(dsn)
                for statement in [
                    "UPDATE stock_slot SET remaining = remaining + 100",
                    "INSERT INTO orders (request_id, product_id, user_id) VALUES (99, 1, 99)",
                    "DELETE FROM orders",
                    "UPDATE products SET total_stock = 1000000",
                    "INSERT INTO stock_slot (product_id, slot, remaining) VALUES (1, 99, 1000)",
                    "TRUNCATE orders",
                ] {
                    let error = await #expect(throws: PostgresError.self, "\(statement)") { _ = try await restricted.exec(statement) }
                    #expect(error?.code == "42501", "\(statement): permission denied, got \(String(describing: error))")
                }
                // Reading is allowed.
                _ = try await restricted.query("SELECT count(*) FROM orders")
                restricted.close()
            }
        } catch {
            await client.shutdown()
            await inventory.terminate()
            throw error
        }
        await client.shutdown()
        await inventory.terminate()
        try? await main.drop()
        try? await hot.drop()
        _ = try? await admin.exec("DROP ROLE IF EXISTS \(login)")
        admin.close()
    }
}
