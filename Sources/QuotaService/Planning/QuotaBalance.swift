import Proto

/// An edge registered under `edges/` right now, as the quota service sees it.
struct RegisteredEdge: Sendable, Equatable {
    var name: String
    var id: UInt32
    var address: String
    /// What the edge reports in its registration node, per product: units it has handed back in total.
    var released: [String: Int64]
    /// Units it reports as used (sold or in flight), per product: for status only.
    var used: [String: Int64]
}

/// A unit move the planner wants made: ask `edge` to hand back up to `units` it has not used.
struct ReleaseRequest: Sendable, Equatable {
    var edge: String
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
struct QuotaBalance: Sendable, Equatable {
    /// Units the database will ever sell for this product (its total stock, after any limit).
    var capacity: Int64
    /// Orders of the product, from every edge (and none).
    var soldTotal: Int64
    var soldByEdge: [UInt32: Int64]
    var allotments: [EdgeAllotment]
    /// Edges registered now, by node name.
    var registered: [String: RegisteredEdge]

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

    var sellable: Int64 { max(0, capacity - soldTotal) }

    func sold(_ allotment: EdgeAllotment) -> Int64 { soldByEdge[allotment.edgeId] ?? 0 }

    /// Units the edge may still sell (in flight included); zero once retired.
    func outstanding(_ allotment: EdgeAllotment) -> Int64 {
        if allotment.retired { return 0 }
        return max(0, allotment.granted - allotment.reclaimed - sold(allotment))
    }

    var outstandingTotal: Int64 { allotments.reduce(0) { $0 + outstanding($1) } }

    /// Free units; negative when more is outstanding than the database still sells (a limit was lowered).
    var pool: Int64 { sellable - outstandingTotal }

    func isLive(_ allotment: EdgeAllotment) -> Bool { !allotment.retired && registered[allotment.edge] != nil }

    /// Adds an allotment for every registered edge that has none, revives a retired one whose edge registered again
    /// (the same edge id after a session expiry), retires those in `dead`, and takes each edge's own count of what it
    /// handed back where that is ahead of the record (both only grow, so the larger is still exact or short).
    mutating func reconcile(product: String, dead: Set<String> = []) {
        var known = Set<String>()
        for i in allotments.indices {
            known.insert(allotments[i].edge)
            if let edge = registered[allotments[i].edge] {
                allotments[i].retired = false
                allotments[i].address = edge.address
                allotments[i].reclaimed = max(allotments[i].reclaimed, edge.released[product] ?? 0)
            } else if dead.contains(allotments[i].edge) {
                allotments[i].retired = true
            }
        }
        for edge in registered.values.sorted(by: { $0.id < $1.id }) where !known.contains(edge.name) {
            allotments.append(EdgeAllotment(
                edge: edge.name, edgeId: edge.id, granted: 0, reclaimed: edge.released[product] ?? 0, retired: false,
                address: edge.address))
        }
        allotments.sort { $0.edgeId < $1.edgeId }
    }

    /// The fair share of each live edge: what the live edges may hold (sellable minus what absent edges still hold),
    /// split evenly; the remainder goes first to `favoured`, then by edge id.
    func targets(favoured: Set<String> = []) -> [String: Int64] {
        let live = allotments.filter(isLive)
        guard !live.isEmpty else { return [:] }
        let absentHeld = allotments.filter { !$0.retired && !isLive($0) }.reduce(0) { $0 + outstanding($1) }
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
            let deficitOfFavoured = live.filter { favoured.contains($0.edge) }
                .reduce(Int64(0)) { $0 + max(0, (targets[$1.edge] ?? 0) - outstanding($1)) }
            // Units must come back when more is out than is sellable, or when a favoured edge needs more than is free.
            if pool < 0 || deficitOfFavoured > pool {
                for allotment in live {
                    let surplus = outstanding(allotment) - (targets[allotment.edge] ?? 0)
                    if surplus > 0 {
                        plan.releases.append(ReleaseRequest(edge: allotment.edge, address: allotment.address, units: surplus))
                    }
                }
            }
        }

        var free = max(0, pool)
        if case .spread(let units) = trigger, !live.isEmpty {
            // Raised stock reaches every edge at once, even one above its fair share: the next rounds even it out.
            let spread = min(free, max(0, units))
            let count = Int64(live.count)
            for (i, allotment) in live.enumerated() {
                let share = spread / count + (Int64(i) < spread % count ? 1 : 0)
                guard share > 0 else { continue }
                free -= share
                plan.grants[allotment.edge, default: 0] += share
                if let j = plan.allotments.firstIndex(where: { $0.edge == allotment.edge }) { plan.allotments[j].granted += share }
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
            if let i = plan.allotments.firstIndex(where: { $0.edge == edge }) { plan.allotments[i].granted += units }
        }
        plan.pool = pool - plan.grants.values.reduce(0, +)
        return plan
    }
}

// model: Sources/QuotaService/Planning/QuotaProtocol.pml (outstanding -> OUT(a); pool -> POOL; reconcile -> QS_LEARN,
// retire; plan -> QS_GRANT, QS_RELEASE). Update both together.
