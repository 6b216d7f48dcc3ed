import Addressing
import InventoryDiscovery
import Logging
import Proto
import QuotaContract
import ServiceKit
import Wire
import ZooKeeperClient

/// The quota service's nodes in ZooKeeper. Every write is a compare-and-set on the version it read, so two quota
/// service processes can never overwrite each other's decisions: the loser re-reads and decides again.
struct QuotaStore: Sendable {
    let zk: ZooKeeperClient
    let layout: QuotaLayout
    let logger: Logger
    /// Digest ACLs of the nodes this service creates (open when no secrets are configured).
    var access: ZooKeeperAccess = .open

    struct Versioned: Sendable, Equatable {
        var state: ProductQuotaState
        var version: Int32
    }

    /// `edges/`, `products/`, `quotas/`, `config/` (existing ones are kept). With ACLs, existing nodes of the tree
    /// get them too (a tree made before ACLs were turned on, or a layout an edge made while it was open).
    func ensureLayout() async throws {
        // products first: the root (made on the way) takes the quota service's ACL, not edges/'s.
        for path in [layout.products, layout.quotas, layout.config] {
            try await zk.ensurePath(path, acl: access.quotaOwned)
        }
        try await zk.ensurePath(layout.edges, acl: access.edgesFolder)
        // Inventory replicas register like the edges, with the services' identity.
        try await zk.ensurePath(InventoryRegistration.folder(root: layout.root), acl: access.edgesFolder)
        guard access.quotaEnforces else { return }
        if !layout.root.isEmpty { try await zk.setACL(layout.root, access.quotaOwned) }
        for path in [layout.products, layout.quotas, layout.config] {
            try await zk.setACL(path, access.quotaOwned)
            for child in try await zk.children(path) {
                try await zk.setACL(path + "/" + child, access.quotaOwned)
                guard path == layout.quotas else { continue }
                for edge in try await zk.children(path + "/" + child) {
                    try await zk.setACL(path + "/" + child + "/" + edge, access.quotaOwned)
                }
            }
        }
        try await zk.setACL(layout.edges, access.edgesFolder)
        try await zk.setACL(InventoryRegistration.folder(root: layout.root), access.edgesFolder)
    }

    func productIDs() async throws -> [String] {
        try await zk.children(layout.products).sorted()
    }

    /// The product's record, or nil when there is no such product.
    func read(_ product: String) async throws -> Versioned? {
        do {
            let (data, stat) = try await zk.get(layout.product(product))
            return Versioned(state: try Self.decode(data), version: stat.version)
        } catch let error as ZooKeeperError where error.code == .noNode {
            return nil
        }
    }

    /// Creates the product's node and its quota folder; false if the product node exists already.
    func create(_ product: String, state: ProductQuotaState) async throws -> Bool {
        try await zk.ensurePath(layout.quotas(of: product), acl: access.quotaOwned)
        do {
            try await zk.create(layout.product(product), data: state.serializedBytes(), acl: access.quotaOwned)
            return true
        } catch let error as ZooKeeperError where error.code == .nodeExists {
            return false
        }
    }

    /// Compare-and-set; throws `badVersion` when someone else wrote since `version` was read.
    func write(_ product: String, state: ProductQuotaState, version: Int32) async throws {
        try await zk.set(layout.product(product), data: state.serializedBytes(), version: version)
    }

    /// Read-modify-write until the compare-and-set succeeds. `change` returns false to write nothing.
    @discardableResult
    func update(_ product: String, _ change: (inout ProductQuotaState) throws -> Bool) async throws -> ProductQuotaState {
        while true {
            guard let current = try await read(product) else { throw RPCError(.notFound, "unknown product") }
            var state = current.state
            guard try change(&state) else { return current.state }
            do {
                try await write(product, state: state, version: current.version)
                return state
            } catch let error as ZooKeeperError where error.code == .badVersion {
                continue
            }
        }
    }

    /// Publishes each edge's total grant in `quotas/<product>/<edge>`, raising a node only (never lowering it: a
    /// second quota service publishing an older record changes nothing). Edges watch these nodes.
    func publish(_ product: String, allotments: [EdgeAllotment]) async throws {
        for allotment in allotments where !allotment.retired && allotment.granted > 0 {
            try await raise(layout.quota(product, edge: allotment.edge), to: allotment.granted)
        }
    }

    private func raise(_ path: String, to granted: Int64) async throws {
        let data = QuotaGrant(granted: granted).serializedBytes()
        while true {
            do {
                let (bytes, stat) = try await zk.get(path)
                let current = (try? QuotaGrant(decoding: bytes))?.granted ?? 0
                // Raise only, unless the node holds what no record can have granted (then it is rewritten).
                if current >= granted && current <= QuotaLayout.maxUnits { return }
                try await zk.set(path, data: data, version: stat.version)
                return
            } catch let error as ZooKeeperError where error.code == .noNode {
                do {
                    try await zk.create(path, data: data, acl: access.quotaOwned, createParents: true)
                    return
                } catch let error as ZooKeeperError where error.code == .nodeExists {
                    continue
                }
            } catch let error as ZooKeeperError where error.code == .badVersion {
                continue
            }
        }
    }

    /// The total grant published for an edge (0 when there is no node yet).
    func published(_ product: String, edge: String) async throws -> Int64 {
        do {
            return (try QuotaGrant(decoding: try await zk.get(layout.quota(product, edge: edge)).data)).granted
        } catch let error as ZooKeeperError where error.code == .noNode {
            return 0
        }
    }

    /// Names of the registered edges (`edge-NNNNNNNNNN`); with `watch`, a one-shot event follows the next change.
    func edgeNames(watch: Bool = false) async throws -> [String] {
        try await zk.children(layout.edges, watch: watch).filter { QuotaLayout.edgeID(name: $0) != nil }
    }

    /// Every registered edge with what it reports, and the nodes under `edges/` that are not taken as edges, with
    /// why. Registrations are edge-written, so each is checked: its name must be one a sequential create can have
    /// made (below the folder's `cversion`, which names the next sequence number), its node ephemeral (it records
    /// the session that made it), its address `host:port`, and every number is clamped to 0...maxUnits. An edge
    /// whose node vanishes meanwhile is left out.
    func registeredEdges() async throws -> (edges: [String: RegisteredEdge], rejected: [String: String]) {
        var edges: [String: RegisteredEdge] = [:]
        var rejected: [String: String] = [:]
        let names = try await edgeNames()
        // Read after the listing: every listed name's sequence number is below it.
        let nextSequence = Int64(try await zk.exists(layout.edges)?.cversion ?? 0)
        for name in names {
            guard let id = QuotaLayout.edgeID(name: name) else { continue }
            guard Int64(id) <= nextSequence else {
                rejected[name] = "a sequence number ZooKeeper has not handed out yet"
                continue
            }
            let data: [UInt8]
            let stat: ZooKeeperStat
            do {
                (data, stat) = try await zk.get(layout.edge(name))
            } catch let error as ZooKeeperError where error.code == .noNode {
                continue
            }
            guard stat.ephemeralOwner != 0 else {
                rejected[name] = "not an ephemeral node"
                continue
            }
            // A node that does not hold a registration is still an edge (its id is in the name), just not reachable.
            let registration = (try? EdgeRegistration(decoding: data)) ?? EdgeRegistration(edgeId: id)
            var released: [String: Int64] = [:]
            var used: [String: Int64] = [:]
            var clamped = false
            for usage in registration.usage {
                let (releasedNow, usedNow) = (Units.clamp(usage.released), Units.clamp(usage.used))
                clamped = clamped || releasedNow != usage.released || usedNow != usage.used
                released[usage.productId] = max(released[usage.productId] ?? 0, releasedNow)
                used[usage.productId] = max(used[usage.productId] ?? 0, usedNow)
            }
            if clamped { rejected[name] = "numbers out of range (clamped)" }
            let address = registration.address.utf8.count <= 300 && HostPort(registration.address) != nil
                ? registration.address : ""
            if address != registration.address { rejected[name] = "an address that is not host:port" }
            edges[name] = RegisteredEdge(
                name: name, id: id, address: address, released: released, used: used, session: stat.ephemeralOwner)
        }
        return (edges, rejected)
    }

    /// Deletes the quota nodes of `product` for edges that are gone (their allotments were pruned).
    func removeQuotas(_ product: String, edges: [String]) async {
        for edge in edges {
            do {
                try await zk.delete(layout.quota(product, edge: edge))
            } catch let error as ZooKeeperError where error.code == .noNode {
                continue
            } catch {
                logger.warning("quota node of a gone edge not deleted", metadata: [
                    "product": "\(product)", "edge": "\(edge)", "error": "\(error)",
                ])
            }
        }
    }

    // MARK: - Shed

    func shed() async throws -> UInt32? {
        do {
            return min(try ShedConfig(decoding: try await zk.get(layout.shed).data).keepPerMillion, 1_000_000)
        } catch let error as ZooKeeperError where error.code == .noNode {
            return nil
        }
    }

    /// Creates or compare-and-sets `config/shed`.
    func setShed(_ keepPerMillion: UInt32) async throws {
        let data = ShedConfig(keepPerMillion: keepPerMillion).serializedBytes()
        while true {
            do {
                let stat = try await zk.get(layout.shed).stat
                try await zk.set(layout.shed, data: data, version: stat.version)
                return
            } catch let error as ZooKeeperError where error.code == .noNode {
                do {
                    try await zk.create(layout.shed, data: data, acl: access.quotaOwned, createParents: true)
                    return
                } catch let error as ZooKeeperError where error.code == .nodeExists {
                    continue
                }
            } catch let error as ZooKeeperError where error.code == .badVersion {
                continue
            }
        }
    }

    static func decode(_ data: [UInt8]) throws -> ProductQuotaState {
        do {
            return sanitized(try ProductQuotaState(decoding: data))
        } catch {
            throw RPCError(.dataLoss, "the product node does not hold a quota record")
        }
    }

    /// The record as the planner may use it: one allotment per edge name, whose id is the name's, with counts in
    /// 0...maxUnits and nothing reclaimed beyond what was granted. (The node is writable by the quota service alone
    /// when ACLs are on; without them anyone may write it.) A sanitized record is written back by the next round.
    static func sanitized(_ state: ProductQuotaState) -> ProductQuotaState {
        var state = state
        var seen = Set<String>()
        state.allotments = state.allotments.compactMap { allotment in
            guard let id = QuotaLayout.edgeID(name: allotment.edge), seen.insert(allotment.edge).inserted else { return nil }
            var allotment = allotment
            allotment.edgeId = id
            allotment.granted = Units.clamp(allotment.granted)
            allotment.reclaimed = min(Units.clamp(allotment.reclaimed), allotment.granted)
            if HostPort(allotment.address) == nil { allotment.address = "" }
            return allotment
        }
        state.totalStock = Units.clamp(state.totalStock)
        state.saleLimit = Units.clamp(state.saleLimit)
        return state
    }
}
