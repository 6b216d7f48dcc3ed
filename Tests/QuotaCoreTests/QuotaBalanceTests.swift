import FlashSaleClient
import Proto
import QuotaContract
import Wire
import Testing

@testable import QuotaCore

/// The quota math alone (no servers): splits, re-splits as edges join and die, grants to a dry edge, stock changes,
/// and a randomized run of all of them in which the invariant `sum(outstanding) <= sellable` must hold after every round.
@Suite struct QuotaBalanceTests {
    static func edge(_ id: UInt32, released: Int64 = 0) -> RegisteredEdge {
        RegisteredEdge(
            name: QuotaLayout.edgeName(id: id), id: id, address: "127.0.0.1:\(9000 + id)",
            released: ["tv": released], used: [:])
    }

    static func balance(capacity: Int64, sold: [UInt32: Int64] = [:], allotments: [EdgeAllotment] = [], live: [RegisteredEdge]) -> QuotaBalance {
        var balance = QuotaBalance(
            capacity: capacity, soldTotal: sold.values.reduce(0, +), soldByEdge: sold, allotments: allotments,
            registered: Dictionary(uniqueKeysWithValues: live.map { ($0.name, $0) }))
        balance.reconcile(product: "tv")
        return balance
    }

    static func granted(_ plan: QuotaBalance.Plan) -> [Int64] { plan.allotments.map(\.granted) }

    @Test func splitsEvenlyWithTheRemainderSpread() {
        let three = Self.balance(capacity: 1_000, live: [Self.edge(1), Self.edge(2), Self.edge(3)])
        let plan = three.plan(.settle, allowReleases: true)
        #expect(plan.releases.isEmpty)
        #expect(Self.granted(plan) == [334, 333, 333])
        #expect(plan.pool == 0)

        let eight = Self.balance(capacity: 1_000, live: (1...8).map { Self.edge($0) })
        #expect(Self.granted(eight.plan(.settle, allowReleases: true)) == Array(repeating: 125, count: 8))
    }

    @Test func aJoiningEdgeGetsItsShareFromTheOthersSurplus() {
        let edges = [Self.edge(1), Self.edge(2), Self.edge(3)]
        var balance = Self.balance(capacity: 1_000, live: edges)
        balance.allotments = balance.plan(.settle, allowReleases: true).allotments
        balance.registered[Self.edge(4).name] = Self.edge(4)
        balance.reconcile(product: "tv")
        let newcomer = Set([Self.edge(4).name])

        let ask = balance.plan(.fill(newcomer), allowReleases: true)
        #expect(ask.releases.map(\.units) == [84, 83, 83])
        #expect(ask.grants.isEmpty)

        // The edges hand back what they were asked for; their reports say so.
        for (i, release) in ask.releases.enumerated() { balance.allotments[i].reclaimed = release.units }
        let grant = balance.plan(.fill(newcomer), allowReleases: false)
        #expect(grant.grants == [Self.edge(4).name: 250])
        #expect(grant.pool == 0)
    }

    @Test func aDeadEdgesUnsoldUnitsGoToTheOthersFromItsSoldCount() {
        var balance = Self.balance(capacity: 1_000, live: [Self.edge(1), Self.edge(2), Self.edge(3)])
        balance.allotments = balance.plan(.settle, allowReleases: true).allotments  // 334, 333, 333
        balance.soldByEdge = [1: 50, 2: 100, 3: 10]
        balance.soldTotal = 160
        balance.registered[Self.edge(2).name] = nil
        #expect(balance.pool == 0)  // absent but not known dead: its units still count as held

        balance.reconcile(product: "tv", dead: [Self.edge(2).name])
        #expect(balance.allotments[1].retired)
        #expect(balance.pool == 233)  // 333 granted - 100 sold through edge 2
        let plan = balance.plan(.settle, allowReleases: true)
        #expect(plan.releases.isEmpty)
        // 840 sellable over two edges: 420 each; they hold 284 and 323.
        #expect(plan.grants == [Self.edge(1).name: 136, Self.edge(3).name: 97])
        #expect(plan.pool == 0)
    }

    @Test func aDryEdgeIsFilledFromTheOthersSurplus() {
        var balance = Self.balance(capacity: 300, live: [Self.edge(1), Self.edge(2), Self.edge(3)])
        balance.allotments = balance.plan(.settle, allowReleases: true).allotments  // 100 each
        balance.soldByEdge = [1: 100]
        balance.soldTotal = 100
        let dry = Set([Self.edge(1).name])
        let ask = balance.plan(.fill(dry), allowReleases: true)
        // 200 sellable: 67 for the dry edge (remainder first), 67 and 66 for the others, which hold 100 each.
        #expect(ask.releases.map(\.units) == [33, 34])
        balance.allotments[1].reclaimed = 33
        balance.allotments[2].reclaimed = 34
        let grant = balance.plan(.fill(dry), allowReleases: false)
        #expect(grant.grants == [Self.edge(1).name: 67])
        #expect(grant.pool == 0)
    }

    @Test func aLoweredLimitTakesUnitsBackAndARaiseHandsThemOut() {
        var balance = Self.balance(capacity: 900, live: [Self.edge(1), Self.edge(2), Self.edge(3)])
        balance.allotments = balance.plan(.settle, allowReleases: true).allotments  // 300 each
        balance.capacity = 500
        #expect(balance.pool == -400)
        let ask = balance.plan(.settle, allowReleases: true)
        #expect(ask.releases.map(\.units) == [133, 133, 134])  // targets 167, 167, 166
        #expect(ask.grants.isEmpty)

        balance.capacity = 1_200
        let raise = balance.plan(.settle, allowReleases: true)
        #expect(raise.releases.isEmpty)
        #expect(raise.grants.values.sorted() == [100, 100, 100])
    }

    @Test func raisedStockReachesEveryEdgeEvenOneAboveItsShare() {
        var balance = Self.balance(capacity: 600, live: [Self.edge(1), Self.edge(2), Self.edge(3)])
        balance.allotments = balance.plan(.settle, allowReleases: true).allotments  // 200 each
        balance.soldByEdge = [1: 150]
        balance.soldTotal = 150
        balance.capacity = 900
        let plan = balance.plan(.spread(300), allowReleases: true)
        #expect(plan.releases.isEmpty)
        #expect(plan.grants.values.sorted() == [100, 100, 100])
        #expect(plan.pool == 0)
    }

    @Test func theEdgesOwnCountOfReleasedUnitsIsTakenWhenAheadAndNeverBeyondItsGrant() {
        var balance = Self.balance(capacity: 100, live: [Self.edge(1, released: 7)])
        #expect(balance.allotments[0].reclaimed == 0)  // nothing granted yet: nothing can have come back
        balance.allotments[0].granted = 50
        balance.reconcile(product: "tv")
        #expect(balance.allotments[0].reclaimed == 7)
        balance.registered[Self.edge(1).name] = Self.edge(1, released: 3)  // a stale report never lowers it
        balance.reconcile(product: "tv")
        #expect(balance.allotments[0].reclaimed == 7)
        balance.registered[Self.edge(1).name] = Self.edge(1, released: 80)  // nor hands back more than was granted
        balance.reconcile(product: "tv")
        #expect(balance.allotments[0].reclaimed == 50)
    }

    // MARK: - Untrusted registrations (review findings 4 and 14)

    @Test func aRetiredAllotmentIsNeverRevived() {
        var balance = Self.balance(capacity: 300, live: [Self.edge(1), Self.edge(2)])
        balance.allotments = balance.plan(.settle, allowReleases: true).allotments  // 150 each
        balance.registered[Self.edge(2).name] = nil
        balance.reconcile(product: "tv", dead: [Self.edge(2).name])
        #expect(balance.pool == 150)
        // Someone creates the dead edge's name again, claiming it handed nothing back.
        balance.registered[Self.edge(2).name] = Self.edge(2, released: 0)
        let distrusted = balance.reconcile(product: "tv")
        #expect(distrusted == [Self.edge(2).name: .retired])
        #expect(balance.allotments[1].retired)
        #expect(balance.pool == 150)
        #expect(balance.plan(.settle, allowReleases: true).grants == [Self.edge(1).name: 150])
    }

    @Test func aRegistrationByAnotherSessionIsNotTrustedUntilRebound() {
        var first = Self.edge(1)
        first.session = 0x51
        var balance = Self.balance(capacity: 100, live: [first])
        #expect(!balance.isLive(balance.allotments[0]))  // new: nothing until the edge vouched for its session
        #expect(balance.plan(.settle, allowReleases: true).grants.isEmpty)
        balance.allotments[0].session = 0x51  // it answered a probe naming session 0x51
        balance.allotments = balance.plan(.settle, allowReleases: true).allotments
        #expect(balance.allotments[0].granted == 100)
        var forged = Self.edge(1, released: 100)
        forged.session = 0x99
        balance.registered[forged.name] = forged
        #expect(balance.reconcile(product: "tv") == [forged.name: .otherSession])
        #expect(!balance.isLive(balance.allotments[0]))  // absent: it is probed, by id, at the recorded address
        #expect(balance.allotments[0].reclaimed == 0)  // its claim that everything came back is not taken
        #expect(balance.pool == 0)
    }

    @Test func aNameAtOrBelowTheHighestIdAllottedGetsNoAllotment() {
        var balance = Self.balance(capacity: 100, live: [Self.edge(5)])
        #expect(balance.maxEdgeID == 5)
        balance.registered[Self.edge(3).name] = Self.edge(3)  // never seen while it lived, or pruned once retired
        balance.registered[Self.edge(9).name] = Self.edge(9)
        #expect(balance.reconcile(product: "tv") == [Self.edge(3).name: .reusedName])
        #expect(balance.allotments.map(\.edgeId) == [5, 9])
        #expect(balance.maxEdgeID == 9)
    }

    @Test func retiredAllotmentsArePrunedAndTheirNamesStayDead() {
        var balance = Self.balance(capacity: 100, live: [Self.edge(1), Self.edge(2)])
        balance.allotments = balance.plan(.settle, allowReleases: true).allotments
        balance.registered[Self.edge(1).name] = nil
        balance.reconcile(product: "tv", dead: [Self.edge(1).name])
        #expect(balance.pruneRetired() == [Self.edge(1).name])
        #expect(balance.allotments.map(\.edgeId) == [2])
        balance.registered[Self.edge(1).name] = Self.edge(1)
        #expect(balance.reconcile(product: "tv") == [Self.edge(1).name: .reusedName])
        #expect(balance.allotments.map(\.edgeId) == [2])
    }

    @Test func aRecordOutOfRangeIsSanitized() {
        let state = ProductQuotaState(totalStock: .min, saleLimit: .max, allotments: [
            EdgeAllotment(edge: Self.edge(1).name, edgeId: 77, granted: .max, reclaimed: .min),
            EdgeAllotment(edge: Self.edge(1).name, edgeId: 1, granted: 5),  // a second allotment for one name
            EdgeAllotment(edge: "not-an-edge", edgeId: 3, granted: 5),
            EdgeAllotment(edge: Self.edge(2).name, edgeId: 2, granted: 10, reclaimed: 11, address: "nowhere"),
        ])
        let clean = QuotaStore.sanitized(state)
        #expect(clean.totalStock == 0 && clean.saleLimit == QuotaLayout.maxUnits)
        #expect(clean.allotments == [
            EdgeAllotment(edge: Self.edge(1).name, edgeId: 1, granted: QuotaLayout.maxUnits, reclaimed: 0),
            EdgeAllotment(edge: Self.edge(2).name, edgeId: 2, granted: 10, reclaimed: 10, address: ""),
        ])
    }

    /// Property-style: any Int64 in any number the planner reads (the record, the registrations, the database's
    /// counts), extremes first. Before the clamps, `0 - Int64.min` in `outstanding` trapped the whole process.
    /// Whatever comes in: no trap, grants are never negative and never exceed the free units, and only live edges
    /// get any.
    @Test(arguments: [11, 12, 13, 14, 15, 16, 17, 18] as [UInt64]) func extremeNumbersNeverTrapThePlanner(seed: UInt64) {
        var rng = SplitMix64(seed)
        let extremes: [Int64] = [.min, .min + 1, -1, 0, 1, QuotaLayout.maxUnits, QuotaLayout.maxUnits + 1, .max - 1, .max]
        func number() -> Int64 {
            rng.next() % 2 == 0 ? extremes[Int(rng.next() % UInt64(extremes.count))] : Int64(bitPattern: rng.next())
        }
        for _ in 0..<300 {
            let count = Int(rng.next() % 6)
            var sold: [UInt32: Int64] = [:]
            var allotments: [EdgeAllotment] = []
            var registered: [String: RegisteredEdge] = [:]
            for id in 1...UInt32(count + 1) {
                sold[id] = number()
                if rng.next() % 3 != 0 {
                    allotments.append(EdgeAllotment(
                        edge: Self.edge(id).name, edgeId: id, granted: number(), reclaimed: number(),
                        retired: rng.next() % 4 == 0, address: Self.edge(id).address))
                }
                if rng.next() % 3 != 0 {
                    var edge = Self.edge(id, released: number())
                    edge.used = ["tv": number()]
                    registered[edge.name] = edge
                }
            }
            var balance = QuotaBalance(
                capacity: number(), soldTotal: number(), soldByEdge: sold, allotments: allotments, registered: registered,
                maxEdgeID: UInt32(rng.next() % 4))
            let dead: Set<String> = rng.next() % 2 == 0 ? [Self.edge(1).name] : []
            balance.reconcile(product: "tv", dead: dead)
            _ = balance.targets(favoured: [Self.edge(1).name])
            _ = QuotaCoordinator.quotas("tv", balance)
            let triggers: [QuotaBalance.Trigger] = [.settle, .fill([Self.edge(2).name]), .spread(number())]
            for trigger in triggers {
                for allowReleases in [true, false] {
                    let plan = balance.plan(trigger, allowReleases: allowReleases)
                    #expect(plan.grants.values.allSatisfy { $0 > 0 }, "seed \(seed)")
                    #expect(Units.sum(plan.grants.values) <= max(0, balance.pool), "seed \(seed)")
                    #expect(plan.releases.allSatisfy { $0.units > 0 }, "seed \(seed)")
                    for name in plan.grants.keys {
                        #expect(balance.allotments.contains { $0.edge == name && balance.isLive($0) }, "seed \(seed)")
                    }
                }
            }
        }
    }

    @Test func noEdgesNoGrants() {
        let balance = Self.balance(capacity: 100, live: [])
        let plan = balance.plan(.settle, allowReleases: true)
        #expect(plan.grants.isEmpty && plan.releases.isEmpty && plan.pool == 100)
    }

    /// Edges sell, join, die, hand back units and see the stock raised and limited at random; rounds run as the quota
    /// service runs them (ask, record what edges answer, grant). After every round nothing is granted beyond what is
    /// sellable, no edge sells more than it was granted, and the database never sells beyond its capacity.
    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8]) func randomizedRoundsKeepTheInvariant(seed: UInt64) {
        var rng = SplitMix64(seed)
        struct SimEdge { var granted: Int64 = 0; var sold: Int64 = 0; var released: Int64 = 0; var available: Int64 { granted - sold - released } }
        var edges: [UInt32: SimEdge] = [:]
        var live: Set<UInt32> = []
        var dead: Set<UInt32> = []
        var nextID: UInt32 = 1
        var balance = QuotaBalance(capacity: 1_000, soldTotal: 0, soldByEdge: [:], allotments: [], registered: [:])

        func register() -> [String: RegisteredEdge] {
            Dictionary(uniqueKeysWithValues: live.map { id in
                let e = Self.edge(id, released: edges[id]!.released)
                return (e.name, e)
            })
        }
        func runRound(_ trigger: QuotaBalance.Trigger) {
            balance.registered = register()
            balance.soldByEdge = edges.mapValues(\.sold)
            balance.reconcile(product: "tv", dead: Set(dead.map { Self.edge($0).name }))
            let ask = balance.plan(trigger, allowReleases: true)
            for release in ask.releases {
                let id = QuotaBalanceTests.id(release.edge)
                let units = min(release.units, edges[id]!.available)
                edges[id]!.released += units
            }
            balance.registered = register()
            balance.reconcile(product: "tv")
            let grant = balance.plan(trigger, allowReleases: false)
            balance.allotments = grant.allotments
            for (name, units) in grant.grants {
                edges[QuotaBalanceTests.id(name)]!.granted += units
            }
            #expect(balance.pool >= 0, "granted beyond sellable (seed \(seed))")
            // Nothing in flight here, so every release is complete: no unit is left unassigned while an edge lives.
            if !live.isEmpty { #expect(balance.pool == 0, "units left in the pool (seed \(seed))") }
            for allotment in balance.allotments where !allotment.retired {
                #expect(edges[allotment.edgeId]!.granted == allotment.granted)
                #expect(edges[allotment.edgeId]!.available >= 0)
            }
        }

        for _ in 0..<400 {
            switch rng.next() % 10 {
            case 0 where live.count < 8:
                live.insert(nextID)
                edges[nextID] = SimEdge()
                runRound(.fill([Self.edge(nextID).name]))
                nextID += 1
            case 1 where live.count > 1:
                let victim = live.sorted()[Int(rng.next() % UInt64(live.count))]
                live.remove(victim)
                dead.insert(victim)
                runRound(.settle)
            case 2:
                let raise = Int64(rng.next() % 200)
                balance.capacity += raise
                runRound(rng.next() % 2 == 0 ? .spread(raise) : .settle)
            case 3:
                balance.capacity = max(balance.soldTotal, balance.capacity - Int64(rng.next() % 200))
                runRound(.settle)
            default:
                guard let id = live.randomElement(using: &rng) else { continue }
                let want = Int64(rng.next() % 40)
                let sell = min(want, edges[id]!.available, balance.capacity - balance.soldTotal)
                edges[id]!.sold += sell
                balance.soldTotal += sell
                if edges[id]!.available == 0 { runRound(.fill([Self.edge(id).name])) }
            }
            #expect(balance.soldTotal <= balance.capacity)
        }
    }

    static func id(_ name: String) -> UInt32 { QuotaLayout.edgeID(name: name)! }
}

extension SplitMix64 {
    init(_ seed: UInt64) { self.init(seed: seed) }
}
