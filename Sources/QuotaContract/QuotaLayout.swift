/// Where things live in ZooKeeper under one root (default `/flashsale`); shared by the quota service and the edges.
public struct QuotaLayout: Sendable, Hashable {
    public static let defaultRoot = "/flashsale"

    public let root: String

    /// `root` without a trailing slash ("/" is refused by ZooKeeper as a prefix, so "/" becomes "").
    public init(root: String = QuotaLayout.defaultRoot) {
        var root = root
        while root.hasSuffix("/") { root.removeLast() }
        self.root = root
    }

    public var edges: String { root + "/edges" }
    public var products: String { root + "/products" }
    public var quotas: String { root + "/quotas" }
    public var config: String { root + "/config" }
    public var shed: String { root + "/config/shed" }
    /// Ephemeral: held by the quota service process that runs the edge watch and the periodic rebalancing.
    public var leader: String { root + "/leader" }

    public func edge(_ name: String) -> String { edges + "/" + name }
    public func product(_ product: String) -> String { products + "/" + product }
    public func quotas(of product: String) -> String { quotas + "/" + product }
    public func quota(_ product: String, edge: String) -> String { quotas + "/" + product + "/" + edge }

    /// The most units any quota number read from ZooKeeper may hold (a grant, a release, a sold count): far beyond
    /// any stock (10^12 per change), and small enough that sums over many edges never overflow. Readers clamp to
    /// 0...maxUnits and log what was out of range, so no node's data, however forged, makes a service trap.
    public static let maxUnits: Int64 = 1 << 52

    /// The prefix of edges' sequential nodes: ZooKeeper appends a 10-digit sequence number, from 0.
    public static let edgePrefix = "edge-"

    /// The edge id is the node's sequence number plus one: orders use 0 for "no edge", and the first sequence
    /// number under a fresh `edges/` is 0. `edge-0000000000` is edge 1, `edge-0000000006` edge 7.
    public static func edgeName(id: UInt32) -> String {
        let digits = String(max(id, 1) - 1)
        return edgePrefix + String(repeating: "0", count: max(0, 10 - digits.count)) + digits
    }

    /// 7 for "edge-0000000006"; nil for anything that is not an edge's node name.
    public static func edgeID(name: String) -> UInt32? {
        guard name.hasPrefix(edgePrefix) else { return nil }
        let digits = name.dropFirst(edgePrefix.count)
        guard digits.count == 10, digits.allSatisfy(\.isASCII), let sequence = UInt32(digits), sequence < UInt32.max else {
            return nil
        }
        return sequence + 1
    }
}
