@testable import InventoryCore
import Testing
import Wire

/// The pure decisions of sharding: cluster names, where a new product goes, and the database flags resolved into
/// clusters (with every bad input refused).
@Suite struct ClusterPlacementTests {
    static func role(_ name: String) -> DatabaseRole { DatabaseRole(rawValue: name)! }

    static let placement = ClusterPlacement(candidates: [
        .init(role: .main, ready: true, products: 3),
        .init(role: .hot, ready: true, products: 0),
        .init(role: role("shard-2"), ready: true, products: 2),
        .init(role: role("shard-3"), ready: true, products: 2),
    ])

    @Test func clusterNames() {
        for good in ["main", "hot", "shard-2", "a", "eu-west-1", String(repeating: "x", count: 32)] {
            #expect(DatabaseRole(rawValue: good) != nil, "\(good)")
        }
        for bad in ["", "Shard", "2shard", "-a", "shard_2", "shard 2", "shård", String(repeating: "x", count: 33)] {
            #expect(DatabaseRole(rawValue: bad) == nil, "\(bad)")
        }
    }

    @Test func automaticPlacementTakesTheLeastLoadedColdClusterFirstInOrderOnATie() {
        #expect(Self.placement.decide(requested: "", hot: false) == .place(Self.role("shard-2")))
        var placement = Self.placement
        placement.candidates[2].ready = false  // shard-2 down: the next least loaded
        #expect(placement.decide(requested: "", hot: false) == .place(Self.role("shard-3")))
        placement.candidates[3].ready = false
        #expect(placement.decide(requested: "", hot: false) == .place(.main))
        placement.candidates[0].ready = false  // hot never takes cold products
        guard case .refuse(.unavailable, _) = placement.decide(requested: "", hot: false) else {
            Issue.record("no cold cluster up: UNAVAILABLE")
            return
        }
        // Only main and hot (today's set-up): cold products go to main.
        let two = ClusterPlacement(candidates: [.init(role: .main, ready: true, products: 9), .init(role: .hot, ready: true, products: 0)])
        #expect(two.decide(requested: "", hot: false) == .place(.main))
        #expect(ClusterPlacement.needsLoad(requested: "", hot: false))
        #expect(!ClusterPlacement.needsLoad(requested: "main", hot: false) && !ClusterPlacement.needsLoad(requested: "", hot: true))
    }

    @Test func theOperatorsChoiceWinsAndBadChoicesAreRefused() {
        #expect(Self.placement.decide(requested: "main", hot: false) == .place(.main))
        #expect(Self.placement.decide(requested: "", hot: true) == .place(.hot))
        #expect(Self.placement.decide(requested: "hot", hot: true) == .place(.hot))
        #expect(Self.placement.decide(requested: "hot", hot: false) == .place(.hot))
        for (requested, hot) in [("shard-9", false), ("Shard-2", false), ("shard-2", true), (String(repeating: "y", count: 40), false)] {
            guard case .refuse(.invalidArgument, let message) = Self.placement.decide(requested: requested, hot: hot) else {
                Issue.record("\(requested) hot \(hot) is refused")
                continue
            }
            #expect(!message.isEmpty)
        }
        guard case .refuse(_, let message) = Self.placement.decide(requested: "shard-9", hot: false) else { return }
        #expect(message.contains("unknown cluster shard-9") && message.contains("shard-3"), "\(message)")
    }

    static func flags(
        dsn: String? = "host=m", hotDSN: String? = nil, migrateDSN: String? = nil, hotMigrateDSN: String? = nil,
        databases: [String] = [], migrateDatabases: [String] = []
    ) -> DatabaseFlags {
        DatabaseFlags(
            dsn: dsn, hotDSN: hotDSN, migrateDSN: migrateDSN, hotMigrateDSN: hotMigrateDSN, databases: databases,
            migrateDatabases: migrateDatabases, consumers: 2, hotConsumers: 3)
    }

    static func refusal(_ flags: DatabaseFlags) -> String? {
        do {
            _ = try flags.clusters(mainDefault: "host=default", migrateDefault: "host=owner")
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func todaysFlagsMapToMainAndHot() throws {
        let plain = try Self.flags().clusters(mainDefault: "host=default", migrateDefault: "host=owner")
        #expect(plain == [
            ClusterSettings(name: "main", dsn: "host=m", migrateDSN: nil, consumers: 2),
            ClusterSettings(name: "hot", dsn: nil, migrateDSN: nil, consumers: 3),
        ])
        let defaults = try Self.flags(dsn: nil).clusters(mainDefault: "host=default", migrateDefault: "host=owner")
        #expect(defaults[0] == ClusterSettings(name: "main", dsn: "host=default", migrateDSN: "host=owner", consumers: 2))
        let owned = try Self.flags(hotDSN: "host=h", migrateDSN: "host=mo", hotMigrateDSN: "host=ho")
            .clusters(mainDefault: "", migrateDefault: nil)
        #expect(owned[1] == ClusterSettings(name: "hot", dsn: "host=h", migrateDSN: "host=ho", consumers: 3))
        // The same through --database.
        let named = try Self.flags(
            dsn: nil, databases: ["main=host=m dbname=x", "hot=host=h", "shard-2=host=s2 port=5433"],
            migrateDatabases: ["main=host=mo", "hot=host=ho", "shard-2=host=s2o"]
        ).clusters(mainDefault: "", migrateDefault: nil)
        #expect(named == [
            ClusterSettings(name: "main", dsn: "host=m dbname=x", migrateDSN: "host=mo", consumers: 2),
            ClusterSettings(name: "hot", dsn: "host=h", migrateDSN: "host=ho", consumers: 3),
            ClusterSettings(name: "shard-2", dsn: "host=s2 port=5433", migrateDSN: "host=s2o", consumers: 2),
        ])
        // A shard served as the migrating role (no separate owner) needs no owner's string.
        let sameRole = try Self.flags(databases: ["shard-2=host=s2"]).clusters(mainDefault: "", migrateDefault: nil)
        #expect(sameRole.map(\.name) == ["main", "hot", "shard-2"])
    }

    @Test func badFlagsAreRefusedWithWhatIsWrong() {
        let cases: [(DatabaseFlags, String)] = [
            (Self.flags(databases: ["nonsense"]), "takes NAME=DSN"),
            (Self.flags(databases: ["=host=x"]), "cluster name"),
            (Self.flags(databases: ["Shard=host=x"]), "cluster name Shard"),
            (Self.flags(databases: ["shard-2=  "]), "no connection string"),
            (Self.flags(databases: ["shard-2=host=a", "shard-2=host=b"]), "given twice"),
            (Self.flags(databases: ["main=host=a"]), "--dsn and --database main="),
            (Self.flags(hotDSN: "host=h", databases: ["hot=host=a"]), "--hot-dsn and --database hot="),
            (Self.flags(migrateDSN: "host=o", migrateDatabases: ["main=host=o2"]), "--migrate-dsn and --migrate-database main="),
            (Self.flags(migrateDSN: "host=o", databases: ["shard-2=host=a"]), "--migrate-database shard-2=DSN"),
            (Self.flags(dsn: nil, databases: ["shard-2=host=a"]), "--migrate-database shard-2=DSN"),
            (Self.flags(hotDSN: "host=h", migrateDSN: "host=o"), "--hot-migrate-dsn"),
            (Self.flags(migrateDatabases: ["shard-7=host=a"]), "names no cluster"),
            (Self.flags(migrateDatabases: ["x=1", "x=2"]), "given twice"),
        ]
        for (flags, says) in cases {
            let refusal = Self.refusal(flags)
            #expect(refusal?.contains(says) == true, "\(flags.databases) \(flags.migrateDatabases): \(refusal ?? "accepted")")
        }
    }
}
