import Cluster
import FlashSaleClient
import Foundation
import Logging
import PostgresClient
import Proto
import QuotaContract
import Testing
import TestSupport
import Wire
import ZooKeeperClient

/// Access rules, each tried against the real processes. Every method of every service takes only its own kind of
/// token: UNAUTHENTICATED without one, PERMISSION_DENIED with a wrong one or the other kind's (the service token is
/// what the services present to one another, the operator token what an operator presents). An edge with an operator
/// port serves only purchases (and Ping) on its public port. No secret ever shows in a service's log, even at trace
/// level. By default the platform serves as the restricted database role and runs ZooKeeper with digest ACLs, and the
/// inventory refuses to serve as a privileged role or without durable commits.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct AccessControlTests {
    let logger = Logger(label: "access-test")
    static let token = "access-test-token-\(UInt64.random(in: 0...UInt64.max))"
    static let wrongToken = "wrong-token-\(UInt64.random(in: 0...UInt64.max))"

    /// The methods each process serves, from the generated method table (proto/services.proto): every server
    /// answers the Common methods and its own service's.
    static let served: [(service: String, methods: [RPCMethodDescriptor])] = [
        ("edge", CommonRPC.descriptors + EdgeRPC.descriptors),
        ("inventory", CommonRPC.descriptors + InventoryRPC.descriptors),
        ("quota", CommonRPC.descriptors + QuotaRPC.descriptors),
    ]

    /// Every method of every service and the token it needs.
    static let methods: [(service: String, method: String, access: RPCAccess)] = served.flatMap { service in
        service.methods.map { (service.service, $0.name, $0.access) }
    }

    /// The call's status: nil for OK. Requests are empty messages: the token is checked before the payload is read,
    /// and an empty request to a method that changes state is refused as invalid further on, so no call changes
    /// anything.
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

    /// A platform as `flashsale sale` starts one (defaults: its own service token and ZooKeeper secrets, the
    /// restricted database role), with its own databases and root; stopped and dropped after `body`.
    func withPlatform(
        prefix: String, logLevel: String = "warning", _ body: (Platform, TestDatabase, TestDatabase) async throws -> Void
    ) async throws {
        try await Platform.withTestPlatform(prefix: prefix, operatorToken: Self.token) {
            $0.edges = 1
            $0.logLevel = logLevel
        } _: { platform, databases in
            try await body(platform, databases.main, databases.hot)
        }
    }

    @Test func everyMethodTakesOnlyItsOwnKindOfTokenAndNoSecretIsLogged() async throws {
        var processes: [ManagedProcess] = []
        var secrets: [String] = [Self.token, Self.wrongToken]
        try await withPlatform(prefix: "access", logLevel: "trace") { platform, _, _ in
            let serviceToken = platform.configuration.serviceToken
            secrets.append(serviceToken)
            let operatorPort = LocalPorts.free()
            let split = try await platform.addEdge(extraArguments: ["--operator-port", "\(operatorPort)"])
            processes = [platform.inventory.process, platform.quota.process] + platform.edges.map(\.process)
            let endpoints: [String: (host: String, port: Int)] = [
                "edge": (platform.edges[0].host, platform.edges[0].port),
                "inventory": (platform.inventory.host, platform.inventory.port),
                "quota": (platform.quota.host, platform.quota.port),
            ]
            for (service, method, access) in Self.methods {
                let rpc = Self.client(endpoints[service]!, logger: logger)
                let missing = await Self.status(rpc, method, token: "")
                let wrong = await Self.status(rpc, method, token: Self.wrongToken)
                let (right, otherKind) = access == .operator ? (Self.token, serviceToken) : (serviceToken, Self.token)
                let other = await Self.status(rpc, method, token: otherKind)
                let answered = await Self.status(rpc, method, token: access == .public ? "" : right)
                if access == .public {
                    #expect(missing != .unauthenticated && missing != .permissionDenied, "\(method) is public")
                } else {
                    #expect(missing == .unauthenticated, "\(method) without a token: \(String(describing: missing))")
                    #expect(wrong == .permissionDenied, "\(method) with a wrong token: \(String(describing: wrong))")
                    #expect(other == .permissionDenied, "\(method) (\(access)) with the other kind's token: \(String(describing: other))")
                }
                #expect(answered != .unauthenticated && answered != .permissionDenied && answered != .unimplemented,
                        "\(method) with its token: \(String(describing: answered))")
                await rpc.shutdown()
            }

            // The edge with an operator port: purchases and Ping on the public port, nothing else.
            let publicPort = Self.client((split.host, split.port), logger: logger)
            let operatorSide = Self.client(("127.0.0.1", operatorPort), logger: logger)
            for method in EdgeRPC.descriptors.map(\.name) where method != EdgeRPC.Purchase.name {
                #expect(await Self.status(publicPort, method, token: serviceToken) == .unimplemented, "\(method) on the public port")
            }
            #expect(await Self.status(publicPort, EdgeRPC.Purchase.name, token: "") == .invalidArgument, "an empty purchase is served (and refused as invalid)")
            #expect(await Self.status(publicPort, CommonRPC.Ping.name, token: "") == nil)
            #expect(await Self.status(operatorSide, EdgeRPC.Purchase.name, token: serviceToken) == .unimplemented, "no purchases on the operator port")
            #expect(await Self.status(operatorSide, EdgeRPC.Stats.name, token: "") == nil)
            #expect(await Self.status(operatorSide, EdgeRPC.ReleaseQuota.name, token: "") == .unauthenticated)
            #expect(await Self.status(operatorSide, EdgeRPC.ReleaseQuota.name, token: Self.token) == .permissionDenied)
            await publicPort.shutdown()
            await operatorSide.shutdown()
            if let zooKeeper = platform.configuration.zooKeeperSecrets { secrets += [zooKeeper.quota, zooKeeper.edge] }
        }
        // Secrets never in the logs: no token, no ZooKeeper secret, not a wrong token a caller tried.
        #expect(processes.count == 4)
        for process in processes {
            let log = process.log()
            #expect(!log.isEmpty, "\(process.name) logged nothing at trace level")
            for secret in secrets { #expect(!log.contains(secret), "\(process.name) logged a secret") }
        }
    }

    /// Review finding 13, reproduced: a stranger who reaches the inventory port books an order to any edge id (here 7),
    /// which corrupts the per-edge accounting the quota service reclaims by. Without a token, or with the operator's,
    /// the purchase is refused and nothing is booked.
    @Test func aPurchaseStraightToTheInventoryNeedsTheServiceToken() async throws {
        try await withPlatform(prefix: "access_buy") { platform, _, _ in
            let quota = QuotaClient(host: platform.quota.host, port: platform.quota.port, token: Self.token, logger: logger)
            _ = try await quota.createProduct(CreateProductRequest(productId: "p1", totalStock: 10))
            await quota.shutdown()
            let inventory = platform.inventory
            for (token, refusal) in [("", RPCError.Code.unauthenticated), (Self.token, .permissionDenied)] {
                let stranger = InventoryClient(rpc: RPCClient(
                    configuration: RPCClientConfiguration(host: inventory.host, port: inventory.port, token: token), logger: logger))
                for lookupOnly in [false, true] {
                    let error = await #expect(throws: RPCError.self) {
                        _ = try await stranger.purchase(PurchaseRequest(
                            requestId: 1_000_007, userId: 7, productId: "p1", edgeId: 7, lookupOnly: lookupOnly))
                    }
                    #expect(error?.code == refusal, "token '\(token.prefix(6))', lookup \(lookupOnly): \(String(describing: error))")
                }
                await stranger.shutdown()
            }
            let reader = InventoryClient(host: inventory.host, port: inventory.port, logger: logger)
            let sold = try await reader.soldCounts(productId: "p1")
            #expect(sold.first?.sold == 0 && sold.first?.edges.contains { $0.edgeId == 7 } != true, "nothing booked to edge 7: \(sold)")
            #expect(try await reader.getStock(productId: "p1").remaining == 10)
            await reader.shutdown()
        }
    }

    /// The default platform (as `flashsale sale` and every test start it) serves both databases as the login role
    /// `flashsale_app`, a member of flashsale_service: its connections are that role, and through its DSN a table
    /// cannot be written. Purchases (the procedures) work, on a cold and a hot product.
    @Test func theDefaultPlatformServesAsTheRestrictedRole() async throws {
        try await withPlatform(prefix: "access_role") { platform, main, hot in
            let role = try #require(platform.configuration.servingRole)
            let quota = QuotaClient(host: platform.quota.host, port: platform.quota.port, token: Self.token, logger: logger)
            try await quota.setShed(keepPerMillion: 1_000_000)
            _ = try await quota.createProduct(CreateProductRequest(productId: "cold", totalStock: 10))
            _ = try await quota.createProduct(CreateProductRequest(productId: "hot", totalStock: 10, hot: true))
            await quota.shutdown()
            let edge = EdgeClient(host: platform.edges[0].host, port: platform.edges[0].port, logger: logger)
            for (index, product) in ["cold", "hot"].enumerated() {
                try await waitUntil(timeout: .seconds(20), what: "a purchase of \(product) through the edge") {
                    (try? await edge.purchase(requestID: UInt64(index + 1), userID: 1, product: product))?.outcome == .purchased
                }
            }
            await edge.shutdown()

            let admin = try await PostgresConnection.connect(main.adminDSN)
            for database in [main, hot] {
                let users = try await admin.query(
                    "SELECT DISTINCT usename::text FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
                    [database.name])
                #expect(users.rows.map { $0[0] } == [role], "\(database.name) is served as \(role) only: \(users.rows)")
                let serving = try await PostgresConnection.connect(PostgresDSN.with(user: role, database.dsn))
                let error = await #expect(throws: PostgresError.self) {
                    _ = try await serving.exec("UPDATE stock_slot SET remaining = remaining + 100")
                }
                #expect(error?.code == "42501", "\(database.name): permission denied, got \(String(describing: error))")
                serving.close()
            }
            admin.close()
        }
    }

    /// The inventory checks each database's serving connection at start: a superuser (or the tables' owner) is
    /// refused, on the main database and on the hot one, unless a developer's flag allows it (and then the log says
    /// so); synchronous_commit is pinned on by the service whatever the DSN asks.
    @Test func theInventoryRefusesAPrivilegedRoleAndCommitsDurably() async throws {
        let main = try await TestDatabase.create(prefix: "access_start")
        let hot = try await TestDatabase.create(prefix: "access_start_hot")
        let serving = PostgresDSN.with(user: Platform.defaultServingRole, main.dsn)
        let servingHot = PostgresDSN.with(user: Platform.defaultServingRole, hot.dsn)
        let environment = ["FLASHSALE_SERVICE_TOKEN": Self.token]
        /// Serving `dsn` and `hotDSN`, migrating as the owner.
        func owned(_ dsn: String, _ hotDSN: String) -> InventoryArguments {
            InventoryArguments(dsn: dsn, hotDSN: hotDSN, migrateDSN: main.dsn, hotMigrateDSN: hot.dsn)
        }
        func run(_ name: String, _ arguments: InventoryArguments) async throws -> (status: Int32?, log: String) {
            // Not `ServiceEndpoint.start`: these are expected to exit without a READY line.
            let process = try ManagedProcess.start(
                product: InventoryArguments.product, arguments: arguments.list, environment: environment, name: name)
            let status = try? await process.waitForExit(timeout: .seconds(30))
            if status == nil { await process.terminate() }
            return (status, process.log())
        }
        func started(_ name: String, _ arguments: InventoryArguments) async throws -> String {
            let process = try await ServiceEndpoint.start(arguments, environment: environment, name: name).process
            await process.terminate()
            return process.log()
        }
        do {
            // As the superuser that owns the tables (the old default): refused, no READY line.
            let superuser = try await run(
                "inventory-superuser", InventoryArguments(dsn: main.dsn, hotDSN: hot.dsn, hotMigrateDSN: hot.dsn))
            #expect(superuser.status != nil && superuser.status != 0, "exits: \(superuser.log.suffix(2000))")
            #expect(superuser.log.contains("refusing to serve the main database") && superuser.log.contains("is a superuser"))
            #expect(!superuser.log.contains("READY"))
            // The hot database is checked too: superuser there alone is refused.
            let hotSuperuser = try await run("inventory-hot-superuser", owned(serving, hot.dsn))
            #expect(hotSuperuser.status != nil && hotSuperuser.status != 0)
            #expect(hotSuperuser.log.contains("refusing to serve the hot database"), "\(hotSuperuser.log.suffix(2000))")
            // A DSN asking for commits that do not wait for the disk, on either database: the serving connections pin
            // synchronous_commit=on after the DSN's own options (PostgresSettings), so the check finds it on and the
            // inventory serves durably (the pin itself: SmokeTests).
            let lazy = " options='-c synchronous_commit=off'"
            for (name, arguments) in [
                ("inventory-async-main", owned(serving + lazy, servingHot)),
                ("inventory-async-hot", owned(serving, servingHot + lazy)),
            ] {
                let log = try await started(name, arguments)
                #expect(!log.contains("durable commits") && !log.contains("refusing"), "\(log.suffix(2000))")
            }
            // A developer's flag allows a privileged role, and the log says so.
            var privileged = InventoryArguments(dsn: main.dsn, hotDSN: servingHot, hotMigrateDSN: hot.dsn)
            privileged.extra = ["--allow-privileged-role"]
            let allowed = try await started("inventory-allowed", privileged)
            #expect(allowed.contains("serving with a privileged role"))
            // The restricted role with durable commits: served, without a warning.
            let fine = try await started("inventory-restricted", owned(serving, servingHot))
            #expect(!fine.contains("privileged role") && !fine.contains("durable commits"))
        } catch {
            try? await main.drop()
            try? await hot.drop()
            throw error
        }
        try? await main.drop()
        try? await hot.drop()
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
        let endpoint = try await ServiceEndpoint.start(
            InventoryArguments(dsn: serving, hotDSN: servingHot, migrateDSN: main.dsn, hotMigrateDSN: hot.dsn),
            environment: ["FLASHSALE_SERVICE_TOKEN": Self.token], name: "inventory-role")
        let inventory = endpoint.process
        let client = InventoryClient(rpc: RPCClient(
            configuration: RPCClientConfiguration(host: endpoint.host, port: endpoint.port, token: Self.token), logger: logger))
        do {
            for (product, isHot) in [("cold", false), ("hot", true)] {
                _ = try await client.createProduct(CreateProductRequest(productId: product, totalStock: 10, hot: isHot))
                let bought = try await client.purchase(PurchaseRequest(requestId: isHot ? 2 : 1, userId: 7, productId: product))
                #expect(bought.outcome == .purchased, "\(product): \(bought)")
            }
            _ = try await client.adjustStock(AdjustStockRequest(productId: "cold", changeId: 1, change: .raiseBy(5)))
            let audit = try await client.audit()
            #expect(audit.clean && audit.products.count == 2, "\(audit)")
            #expect(!inventory.log().contains("privileged role"), "the serving role is the restricted one")

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

    /// ZooKeeper with digest ACLs, on by default (the platform makes the secrets): the quota service (its own secret)
    /// writes every node; an edge (the edges' secret) registers and reads, and may not write a quota, the config or a
    /// product, nor delete anything; a client without credentials may only read. The sale still works, and neither
    /// secret shows in any log.
    @Test func onlyTheQuotaServiceMayWriteQuotasAndConfig() async throws {
        let main = try await TestDatabase.create(prefix: "zkacl")
        let hot = try await TestDatabase.create(prefix: "zkacl_hot")
        let hosts = try await TestServers.zooKeeperHosts()
        var configuration = Platform.Configuration(
            databaseDSN: main.dsn, hotDatabaseDSN: hot.dsn, zooKeeperHosts: hosts, operatorToken: Self.token)
        configuration.zooKeeperRoot = ZooKeeperRoot.unique("zkacl_test")
        configuration.edges = 1
        configuration.logLevel = "debug"
        let secrets = try #require(configuration.zooKeeperSecrets, "ZooKeeper ACLs are on by default")
        let (quotaSecret, edgeSecret) = (secrets.quota, secrets.edge)
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
