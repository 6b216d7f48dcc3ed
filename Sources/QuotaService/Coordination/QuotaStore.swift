import FlashSaleClient
import Logging
import Proto
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
                if current >= granted { return }
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

    /// Every registered edge with what it reports. An edge whose node vanishes meanwhile is left out.
    func registeredEdges() async throws -> [String: RegisteredEdge] {
        var edges: [String: RegisteredEdge] = [:]
        for name in try await edgeNames() {
            guard let id = QuotaLayout.edgeID(name: name) else { continue }
            let data: [UInt8]
            do {
                data = try await zk.get(layout.edge(name)).data
            } catch let error as ZooKeeperError where error.code == .noNode {
                continue
            }
            // A node that does not hold a registration is still an edge (its id is in the name), just not reachable.
            let registration = (try? EdgeRegistration(decoding: data)) ?? EdgeRegistration(edgeId: id)
            var released: [String: Int64] = [:]
            var used: [String: Int64] = [:]
            for usage in registration.usage {
                released[usage.productId] = usage.released
                used[usage.productId] = usage.used
            }
            edges[name] = RegisteredEdge(name: name, id: id, address: registration.address, released: released, used: used)
        }
        return edges
    }

    // MARK: - Shed

    func shed() async throws -> UInt32? {
        do {
            return try ShedConfig(decoding: try await zk.get(layout.shed).data).keepPerMillion
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
            return try ProductQuotaState(decoding: data)
        } catch {
            throw RPCError(.dataLoss, "the product node does not hold a quota record")
        }
    }
}
