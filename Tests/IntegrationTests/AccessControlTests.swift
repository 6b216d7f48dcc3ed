import Cluster
import FlashSaleClient
import Foundation
import Logging
import PostgresClient
import Proto
import Testing
import TestSupport
import Wire
import ZooKeeperClient

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
            _ = try await client.adjustStock(AdjustStockRequest(productId: "cold", changeId: 1, change: .raiseBy(5)))
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
                    "TRUNCATE requests",  // orders is a view of it (Schema.requestIds)
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

    /// ZooKeeper with digest ACLs: the quota service (its own secret) writes every node; an edge (the edges' secret)
    /// registers and reads, and may not write a quota, the config or a product, nor delete anything; a client
    /// without credentials may only read. The sale still works, and neither secret shows in any log.
    @Test func onlyTheQuotaServiceMayWriteQuotasAndConfig() async throws {
        let quotaSecret = "zk-quota-\(UInt64.random(in: 0...UInt64.max))"
        let edgeSecret = "zk-edge-\(UInt64.random(in: 0...UInt64.max))"
        let main = try await TestDatabase.create(prefix: "zkacl")
        let hot = try await TestDatabase.create(prefix: "zkacl_hot")
        let hosts = try await TestServers.zooKeeperHosts()
        var configuration = Platform.Configuration(
            databaseDSN: main.dsn, hotDatabaseDSN: hot.dsn, zooKeeperHosts: hosts, operatorToken: Self.token)
        configuration.zooKeeperRoot = "/zkacl_test_\(UInt32.random(in: 0...UInt32.max))"
        configuration.edges = 1
        configuration.logLevel = "debug"
        configuration.quotaEnvironment = ["FLASHSALE_ZK_QUOTA_SECRET": quotaSecret, "FLASHSALE_ZK_EDGE_SECRET": edgeSecret]
        configuration.edgeEnvironment = ["FLASHSALE_ZK_EDGE_SECRET": edgeSecret]
        let platform = try await Platform.start(configuration)
        let layout = QuotaLayout(root: configuration.zooKeeperRoot)
        let edgeSession = try await ZooKeeperClient.connect(hosts: hosts)
        let anonymous = try await ZooKeeperClient.connect(hosts: hosts)
        let quota = QuotaClient(host: platform.quota.host, port: platform.quota.port, token: Self.token, logger: logger)
        let edge = EdgeClient(host: platform.edges[0].host, port: platform.edges[0].port, logger: logger)
        do {
            // Another edge: the edges' identity, and an identity of its own (as an Edge process presents).
            let access = ZooKeeperAccess(edgeSecret: edgeSecret)
            try await access.authenticateEdge(edgeSession)
            try await quota.setShed(keepPerMillion: 1_000_000)
            _ = try await quota.createProduct(CreateProductRequest(productId: "p1", totalStock: 20))
            let edgeName = try #require(try await edgeSession.children(layout.edges).first)
            let quotaNode = layout.quota("p1", edge: edgeName)
            try await waitUntil(timeout: .seconds(20), what: "the edge's quota node") {
                (try? await edgeSession.exists(quotaNode)) != nil
            }

            func expectNoAuth(_ what: String, _ body: () async throws -> Void) async {
                let error = await #expect(throws: ZooKeeperError.self, "\(what)") { try await body() }
                #expect(error?.code == .noAuth, "\(what): \(String(describing: error))")
            }
            let grant = QuotaGrant(granted: 1_000_000).serializedBytes()
            for (who, zk) in [("edge", edgeSession), ("anonymous", anonymous)] {
                await expectNoAuth("\(who) raises its quota") { _ = try await zk.set(quotaNode, data: grant) }
                await expectNoAuth("\(who) sets the shed ratio") {
                    _ = try await zk.set(layout.shed, data: ShedConfig(keepPerMillion: 1_000_000).serializedBytes())
                }
                await expectNoAuth("\(who) writes a product") { _ = try await zk.set(layout.product("p1"), data: [1]) }
                await expectNoAuth("\(who) creates a product") { _ = try await zk.create(layout.product("evil"), data: []) }
                await expectNoAuth("\(who) creates a quota node") { _ = try await zk.create(layout.quota("p1", edge: "edge-9999999999"), data: grant) }
                await expectNoAuth("\(who) deletes a quota node") { try await zk.delete(quotaNode) }
                await expectNoAuth("\(who) deletes an edge's registration") { try await zk.delete(layout.edge(edgeName)) }
                await expectNoAuth("\(who) opens a quota node's ACL") { try await zk.setACL(quotaNode, ZooKeeperACL.openUnsafe) }
                await expectNoAuth("\(who) takes the leader lock") { _ = try await zk.create(layout.leader + "-x", data: []) }
                #expect(try await zk.get(quotaNode).data.isEmpty == false, "\(who) may read its quota")
            }
            await expectNoAuth("anonymous registers as an edge") {
                _ = try await anonymous.create(layout.edges + "/edge-", data: [], mode: .ephemeralSequential)
            }
            await expectNoAuth("an edge rewrites another edge's registration") {
                _ = try await edgeSession.set(layout.edge(edgeName), data: [])
            }
            // What an edge may do: register itself and write its own registration.
            let mine = try await edgeSession.create(
                layout.edges + "/edge-", data: [], mode: .ephemeralSequential, acl: access.registration)
            _ = try await edgeSession.set(mine, data: EdgeRegistration(address: "127.0.0.1:1").serializedBytes())
            // Not even its own: no DELETE under edges/ (an ephemeral node goes with its session).
            await expectNoAuth("an edge deletes a registration") { try await edgeSession.delete(mine) }
        } catch {
            await edgeSession.close()
            await anonymous.close()
            await quota.shutdown()
            await edge.shutdown()
            await platform.stop()
            throw error
        }
        // The sale works under the ACLs: quota applied, a purchase goes through.
        try await waitUntil(timeout: .seconds(20), what: "the edge to hold its quota") {
            (try? await edge.purchase(requestID: 1, userID: 1, product: "p1"))?.outcome == .purchased
        }
        let processes = [platform.inventory.process, platform.quota.process] + platform.edges.map(\.process)
        await edgeSession.close()
        await anonymous.close()
        await quota.shutdown()
        await edge.shutdown()
        await platform.stop()
        try? await main.drop()
        try? await hot.drop()
        for process in processes {
            let log = process.log()
            #expect(!log.contains(quotaSecret) && !log.contains(edgeSecret), "\(process.name) logged a ZooKeeper secret")
        }
        #expect(!platform.quota.process.log().contains("quota nodes are open"), "the quota service enforces ACLs")
    }
}
