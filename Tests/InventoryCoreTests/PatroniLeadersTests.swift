import Testing

@testable import InventoryCore

/// Which database cluster follows which Patroni leader key (`--patroni-leader-path`, `--patroni-cluster`).
struct PatroniLeadersTests {
    @Test func mainAndEachNamedClusterFollowTheirOwnLeaderKey() throws {
        let leaders = try PatroniLeaders(
            mainLeaderPath: "/ns/a/leader", clusters: ["shard-2=/ns/b/leader", "hot=/ns/a/leader"])
        #expect(leaders.leaderPaths == ["main": "/ns/a/leader", "shard-2": "/ns/b/leader", "hot": "/ns/a/leader"])
    }

    @Test func aShardMayFollowPatroniWhileMainDoesNot() throws {
        let leaders = try PatroniLeaders(mainLeaderPath: nil, clusters: ["shard-2=/ns/b/leader"])
        #expect(leaders.leaderPaths == ["shard-2": "/ns/b/leader"])
    }

    @Test(arguments: [
        "shard-2", "=/ns/b/leader", "Shard=/ns/b/leader", "shard-2=/ns/b/members", "shard-2=ns/b/leader", "shard-2=",
    ])
    func aMalformedEntryIsRefused(_ entry: String) {
        #expect(throws: DatabaseFlags.Invalid.self) { try PatroniLeaders(mainLeaderPath: nil, clusters: [entry]) }
    }

    @Test func aClusterGivenTwiceIsRefused() {
        #expect(throws: DatabaseFlags.Invalid.self) {
            try PatroniLeaders(mainLeaderPath: "/ns/a/leader", clusters: ["main=/ns/b/leader"])
        }
        #expect(throws: DatabaseFlags.Invalid.self) {
            try PatroniLeaders(mainLeaderPath: nil, clusters: ["shard-2=/ns/a/leader", "shard-2=/ns/b/leader"])
        }
    }

    @Test func aMalformedMainLeaderKeyIsRefused() {
        #expect(throws: DatabaseFlags.Invalid.self) { try PatroniLeaders(mainLeaderPath: "leader", clusters: []) }
    }
}
