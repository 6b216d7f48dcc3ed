import Logging
import NIOCore
import Proto
import Wire

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

/// A typed client of the quota service. Errors are thrown as `RPCError` with the service's status
/// (NOT_FOUND for an unknown product, INVALID_ARGUMENT, FAILED_PRECONDITION, UNAVAILABLE, ...).
public struct QuotaClient: Sendable {
    /// The generated stub underneath (proto/services.proto's names and types); this type adds the conveniences.
    public let calls: QuotaRPCClient
    public var rpc: RPCClient { calls.rpc }

    public init(rpc: RPCClient) {
        self.calls = QuotaRPCClient(rpc)
    }

    /// A client of the service at host:port; `token` is the operator token (operator methods) or, for an edge, the
    /// service token (`grantMore`).
    public init(host: String = "127.0.0.1", port: Int, token: String = "", logger: Logger) {
        self.calls = QuotaRPCClient(
            RPCClient(configuration: RPCClientConfiguration(host: host, port: port, token: token), logger: logger))
    }

    /// Operator only. Creates the product in the inventory and splits its stock over the live edges.
    /// Returns the product's quotas after the split.
    public func createProduct(_ request: CreateProductRequest, timeout: TimeAmount? = nil) async throws -> ProductQuotas {
        try await calls.createProduct(request, timeout: timeout)
    }

    /// Operator only. Adds `units` to the product's stock (database first), then grants them to the edges. The
    /// database applies one `changeId` once: retry a raise that failed or timed out with the same one.
    public func raiseStock(
        productId: String, by units: Int64, changeId: UInt64 = StockChangeId.make(), timeout: TimeAmount? = nil
    ) async throws -> ProductQuotas {
        try await calls.raiseStock(
            AdjustStockRequest(productId: productId, changeId: changeId, change: .raiseBy(units)), timeout: timeout)
    }

    /// Operator only. Stops the sale after `limit` sold in total (database first), then takes the surplus back from
    /// the edges. FAILED_PRECONDITION when more than `limit` are sold already.
    public func limitStock(productId: String, to limit: Int64, timeout: TimeAmount? = nil) async throws -> ProductQuotas {
        try await calls.limitStock(AdjustStockRequest(productId: productId, change: .saleLimit(limit)), timeout: timeout)
    }

    /// Operator only. Every edge keeps `keepPerMillion` of each million attempts (1,000,000 keeps all).
    public func setShed(keepPerMillion: UInt32, timeout: TimeAmount? = nil) async throws {
        _ = try await calls.setShed(SetShedRequest(keepPerMillion: keepPerMillion), timeout: timeout)
    }

    /// What an edge calls when it runs dry: the edge's new total grant, or sold out.
    public func grantMore(_ request: GrantMoreRequest, timeout: TimeAmount? = nil) async throws -> GrantMoreResponse {
        try await calls.grantMore(request, timeout: timeout)
    }

    /// Per product (or the one named): sellable units, units outstanding on edges, and each edge's grant, use and sales.
    public func status(productId: String = "", timeout: TimeAmount? = nil) async throws -> QuotaStatusResponse {
        try await calls.status(QuotaStatusRequest(productId: productId), timeout: timeout)
    }

    public func shutdown() async {
        await rpc.shutdown()
    }
}
