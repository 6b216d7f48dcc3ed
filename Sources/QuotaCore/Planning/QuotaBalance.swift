import Proto
import QuotaContract

/// Unit counts as the planner uses them: every input is clamped to 0...`QuotaLayout.maxUnits` where it is read and
/// sums saturate, so no record, registration or count, however forged, can make the planner trap.
enum Units {
    static func clamp(_ value: Int64) -> Int64 { min(max(value, 0), QuotaLayout.maxUnits) }

    static func sum<S: Sequence>(_ values: S) -> Int64 where S.Element == Int64 {
        values.reduce(Int64(0)) { total, value in
            let (sum, overflow) = total.addingReportingOverflow(clamp(value))
            return overflow ? .max : sum
        }
    }
}

/// An edge registered under `edges/` right now, as the quota service sees it.
struct RegisteredEdge: Sendable, Equatable {
    var name: String
    var id: UInt32
    var address: String
    /// What the edge reports in its registration node, per product: units it has handed back in total.
    var released: [String: Int64]
    /// Units it reports as used (sold or in flight), per product: for status only.
    var used: [String: Int64]
    /// The ZooKeeper session that made the node (its `ephemeralOwner`).
    var session: Int64 = 0
}

/// A unit move the planner wants made: ask `edge` to hand back up to `units` it has not used.
struct ReleaseRequest: Sendable, Equatable {
    var edge: String
    var edgeId: UInt32
    var address: String
    var units: Int64
}

/// The quota math of one product, pure: from what the product node records, who is registered and what the
/// database sold, it says how many units are free (the pool), what each live edge should hold, which edges should
/// hand units back and what to grant. The quota service performs the actions and records the results.
///
/// Accounting (all from records, never guesses): an edge's outstanding units are `granted - reclaimed - sold through
/// it`: what it may still sell, in flight included. The pool is `sellable - sum(outstanding)` over edges not
/// retired, where `sellable = capacity - sold`. A retired edge holds nothing: what it did not sell is in the pool
/// by construction, and a late order it forwarded still lowers `sellable`. The invariant is `pool >= 0`.
///
/// Registrations are written by edges, so they are not trusted blindly: an allotment trusts the registration of
/// one ZooKeeper session, the one the edge itself named when it answered a probe at its address for its id (the
/// coordinator binds it). Until then (a new edge, or one registered again after a session expiry, or a forgery)
/// the allotment counts as absent: it gets nothing and is probed, and if no such edge answers it is retired. A
/// retired allotment is never revived, and a name at or below the highest id ever allotted that has no allotment is
/// never given one, so a dead edge's name cannot be taken over.
struct QuotaBalance: Sendable, Equatable {
    /// Units the database will ever sell for this product (its total stock, after any limit).
    var capacity: Int64
    /// Orders of the product, from every edge (and none).
    var soldTotal: Int64
    var soldByEdge: [UInt32: Int64]
    var allotments: [EdgeAllotment]
    /// Edges registered now, by node name.
    var registered: [String: RegisteredEdge]
    /// The highest edge id ever given an allotment of this product (the record's `max_edge_id`).
    var maxEdgeID: UInt32 = 0

    /// Why a registration is not taken as its edge's.
    enum Distrust: Sendable, Equatable {
        /// Its allotment is retired: the edge is gone for good, whoever registers the name now.
        case retired
        /// No allotment, and its id is not above the highest one allotted: a pruned or never-seen dead edge's name.
        case reusedName
        /// Made by another ZooKeeper session than the one the allotment trusts (a re-registration not yet vouched
        /// for by the edge, or a forgery): the allotment counts as absent, so it is probed.
        case otherSession
    }

    enum Trigger: Sendable, Equatable {
        /// Hand out the pool; ask for units back only if more is granted than is sellable.
        case settle
        /// These edges must reach their fair share (they joined, or ran dry): ask others for their surplus if needed.
        case fill(Set<String>)
        /// New stock: every live edge gets an even part of `units` (as far as the pool has them), then settle.
        case spread(Int64)
    }

    struct Plan: Sendable, Equatable {
        var releases: [ReleaseRequest] = []
        /// Units added per edge.
        var grants: [String: Int64] = [:]
        var allotments: [EdgeAllotment] = []
        /// Free units after the grants.
        var pool: Int64 = 0
    }

    var sellable: Int64 { max(0, Units.clamp(capacity) - Units.clamp(soldTotal)) }

    func sold(_ allotment: EdgeAllotment) -> Int64 { Units.clamp(soldByEdge[allotment.edgeId] ?? 0) }

    /// Units the edge may still sell (in flight included); zero once retired.
    func outstanding(_ allotment: EdgeAllotment) -> Int64 {
        if allotment.retired { return 0 }
        return max(0, Units.clamp(allotment.granted) - Units.clamp(allotment.reclaimed) - sold(allotment))
    }

    var outstandingTotal: Int64 { Units.sum(allotments.lazy.map(outstanding)) }

    /// Free units; negative when more is outstanding than the database still sells (a limit was lowered).
    var pool: Int64 { sellable - outstandingTotal }

    /// Registered now, by the session the allotment trusts, and not retired.
    func isLive(_ allotment: EdgeAllotment) -> Bool {
        guard !allotment.retired, let edge = registered[allotment.edge] else { return false }
        return edge.session == allotment.session
    }

    /// Adds an allotment for every registered edge that may have one and has none, retires those in `dead`, and
    /// takes each trusted edge's own count
    /// of what it handed back where that is ahead of the record (both only grow, so the larger is still exact or
    /// short; never beyond what was granted). Returns the registrations it did not take, and why.
    @discardableResult
    mutating func reconcile(product: String, dead: Set<String> = []) -> [String: Distrust] {
        var distrusted: [String: Distrust] = [:]
        var known = Set<String>()
        maxEdgeID = allotments.reduce(maxEdgeID) { max($0, $1.edgeId) }
        for i in allotments.indices {
            let name = allotments[i].edge
            known.insert(name)
            if allotments[i].retired {
                if registered[name] != nil { distrusted[name] = .retired }
                continue
            }
            if dead.contains(name) {
                allotments[i].retired = true
                continue
            }
            guard let edge = registered[name] else { continue }
            guard edge.session == allotments[i].session else {
                if allotments[i].session != 0 { distrusted[name] = .otherSession }  // 0: not vouched for yet
                continue
            }
            if allotments[i].address.isEmpty { allotments[i].address = edge.address }
            let reported = min(Units.clamp(edge.released[product] ?? 0), Units.clamp(allotments[i].granted))
            allotments[i].reclaimed = max(Units.clamp(allotments[i].reclaimed), reported)
        }
        for edge in registered.values.sorted(by: { $0.id < $1.id }) where !known.contains(edge.name) {
            guard edge.id > maxEdgeID else {
                distrusted[edge.name] = .reusedName
                continue
            }
            // Nothing granted yet, so nothing handed back: the edge's report for the product cannot count. No session
            // trusted yet: the edge is probed at this address and vouches for its session first.
            allotments.append(EdgeAllotment(
                edge: edge.name, edgeId: edge.id, granted: 0, reclaimed: 0, retired: false, address: edge.address))
            maxEdgeID = edge.id
        }
        allotments.sort { $0.edgeId < $1.edgeId }
        return distrusted
    }

    /// Retired allotments are dropped from the record (the watermark `maxEdgeID` keeps their names from coming
    /// back), so the product node stays small however many edges come and go. Returns the names dropped.
    mutating func pruneRetired() -> [String] {
        let dropped = allotments.filter(\.retired).map(\.edge)
        allotments.removeAll(where: \.retired)
        return dropped
    }

    /// The fair share of each live edge: what the live edges may hold (sellable minus what absent edges still hold),
    /// split evenly; the remainder goes first to `favoured`, then by edge id.
    func targets(favoured: Set<String> = []) -> [String: Int64] {
        let live = allotments.filter(isLive)
        guard !live.isEmpty else { return [:] }
        let absentHeld = Units.sum(allotments.lazy.filter { !$0.retired && !isLive($0) }.map(outstanding))
        let distributable = max(0, sellable - absentHeld)
        let count = Int64(live.count)
        let base = distributable / count
        var remainder = distributable % count
        let ordered = live.filter { favoured.contains($0.edge) } + live.filter { !favoured.contains($0.edge) }
        var targets: [String: Int64] = [:]
        for allotment in ordered {
            var share = base
            if remainder > 0 {
                share += 1
                remainder -= 1
            }
            targets[allotment.edge] = share
        }
        return targets
    }

    /// What to do now. With `allowReleases` false (releases were already asked for in this round) only grants.
    func plan(_ trigger: Trigger, allowReleases: Bool) -> Plan {
        let favoured: Set<String> = if case .fill(let edges) = trigger { edges } else { [] }
        let targets = self.targets(favoured: favoured)
        let live = allotments.filter(isLive)
        let pool = self.pool
        var plan = Plan(allotments: allotments, pool: pool)

        if allowReleases {
            let deficitOfFavoured = Units.sum(live.lazy.filter { favoured.contains($0.edge) }
                .map { max(0, (targets[$0.edge] ?? 0) - outstanding($0)) })
            // Units must come back when more is out than is sellable, or when a favoured edge needs more than is free.
            if pool < 0 || deficitOfFavoured > pool {
                for allotment in live {
                    let surplus = outstanding(allotment) - (targets[allotment.edge] ?? 0)
                    if surplus > 0 {
                        plan.releases.append(ReleaseRequest(
                            edge: allotment.edge, edgeId: allotment.edgeId, address: allotment.address, units: surplus))
                    }
                }
            }
        }

        var free = max(0, pool)
        if case .spread(let units) = trigger, !live.isEmpty {
            // Raised stock reaches every edge at once, even one above its fair share: the next rounds even it out.
            let spread = min(free, Units.clamp(units))
            let count = Int64(live.count)
            for (i, allotment) in live.enumerated() {
                let share = spread / count + (Int64(i) < spread % count ? 1 : 0)
                guard share > 0 else { continue }
                free -= share
                plan.grants[allotment.edge, default: 0] += share
                if let j = plan.allotments.firstIndex(where: { $0.edge == allotment.edge }) {
                    plan.allotments[j].granted = Units.clamp(plan.allotments[j].granted) + share
                }
            }
        }

        // Grants from the pool: favoured edges first, then the largest deficits.
        let deficits = live.compactMap { allotment -> (String, Int64, Bool)? in
            let deficit = (targets[allotment.edge] ?? 0) - outstanding(allotment)
            return deficit > 0 ? (allotment.edge, deficit, favoured.contains(allotment.edge)) : nil
        }.sorted { a, b in a.2 != b.2 ? a.2 : (a.1 != b.1 ? a.1 > b.1 : a.0 < b.0) }
        for (edge, deficit, _) in deficits where free > 0 {
            let units = min(deficit - (plan.grants[edge] ?? 0), free)
            guard units > 0 else { continue }
            free -= units
            plan.grants[edge, default: 0] += units
            if let i = plan.allotments.firstIndex(where: { $0.edge == edge }) {
                plan.allotments[i].granted = Units.clamp(plan.allotments[i].granted) + units
            }
        }
        plan.pool = pool - Units.sum(plan.grants.values)
        return plan
    }
}

// model: Sources/QuotaCore/Planning/QuotaProtocol.pml (outstanding -> OUT(a); pool -> POOL; reconcile -> QS_LEARN,
// retire; plan -> QS_GRANT, QS_RELEASE). Update both together.
