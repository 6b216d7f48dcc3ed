import FoundationEssentials
import ZooKeeperClient

/// Who may write what in the platform's ZooKeeper tree, with digest ACLs: the quota service owns every node (quotas,
/// products, config, the leader lock) and is the only one that may write them; edges may read, create their own
/// registration under `edges/` and write its data, nothing else (not delete another edge's node: that would make
/// the quota service reclaim units the edge still sells). Everyone may read: integrity is what is protected.
///
/// The executables read the secrets from the environment or a file (`FLASHSALE_ZK_QUOTA_SECRET[_FILE]`,
/// `FLASHSALE_ZK_EDGE_SECRET[_FILE]`, with ServiceKit's `Secret`); they are never logged. Without them nodes are open (`world:anyone` may do anything), as before.
public struct ZooKeeperAccess: Sendable {
    public static let quotaUser = "flashsale-quota"
    public static let edgeUser = "flashsale-edge"

    public let quotaSecret: String?
    public let edgeSecret: String?
    /// An identity of this process alone (random, never written anywhere): an edge presents it beside the edges'
    /// shared one, and only it may rewrite the edge's registration, so one edge cannot forge another's usage.
    private let processUser: String
    private let processPassword: String

    public init(quotaSecret: String? = nil, edgeSecret: String? = nil) {
        self.quotaSecret = quotaSecret.flatMap { $0.isEmpty ? nil : $0 }
        self.edgeSecret = edgeSecret.flatMap { $0.isEmpty ? nil : $0 }
        var random = SystemRandomNumberGenerator()
        self.processUser = "flashsale-edge-process-" + String(random.next() as UInt64, radix: 16)
        self.processPassword = (0..<4).map { _ in String(random.next() as UInt64, radix: 16) }.joined()
    }

    /// No ACLs: every node open.
    public static let open = ZooKeeperAccess()

    // MARK: the quota service

    /// The quota service writes with ACLs (it knows both secrets: its own, and the edges' to let them register).
    public var quotaEnforces: Bool { quotaSecret != nil }

    /// Checks the quota service has what it needs: both secrets, or neither.
    public func validateForQuotaService() throws {
        if (quotaSecret == nil) != (edgeSecret == nil) {
            throw ZooKeeperAccessError(
                message: "set both FLASHSALE_ZK_QUOTA_SECRET and FLASHSALE_ZK_EDGE_SECRET (the edges' digest goes into edges/'s ACL), or neither")
        }
    }

    /// Nodes only the quota service writes: every node but `edges/` and the registrations.
    public var quotaOwned: [ZooKeeperACL] {
        guard let quotaSecret else { return ZooKeeperACL.openUnsafe }
        return [ZooKeeperACL.digest(user: Self.quotaUser, password: quotaSecret)] + ZooKeeperACL.readUnsafe
    }

    /// `edges/`: the quota service owns it; edges may create their registration nodes under it (not delete).
    /// CREATE lets its holder pick any name, so the quota service never trusts a name alone: it takes a registration
    /// only from the session the edge itself names when it answers a probe, by id, at its recorded address, never
    /// revives a retired allotment, and refuses names it cannot have handed out (`QuotaStore.registeredEdges`).
    public var edgesFolder: [ZooKeeperACL] {
        guard let quotaSecret, let edgeSecret else { return ZooKeeperACL.openUnsafe }
        return [
            ZooKeeperACL.digest(user: Self.quotaUser, password: quotaSecret),
            ZooKeeperACL.digest(user: Self.edgeUser, password: edgeSecret, permissions: [.read, .create]),
        ] + ZooKeeperACL.readUnsafe
    }

    // MARK: an edge

    /// The edge authenticates and creates its registration with an ACL (and never creates the layout).
    public var edgeEnforces: Bool { edgeSecret != nil }

    /// An edge's registration node: only the process that made it may rewrite its data; everyone may read it.
    public var registration: [ZooKeeperACL] {
        guard edgeSecret != nil else { return ZooKeeperACL.openUnsafe }
        return [ZooKeeperACL.digest(user: processUser, password: processPassword, permissions: [.read, .write])]
            + ZooKeeperACL.readUnsafe
    }

    // MARK: sessions

    /// Presents the quota service's identity on `zk` (kept across `reconnect()`).
    public func authenticateQuotaService(_ zk: ZooKeeperClient) async throws {
        if let quotaSecret { try await zk.addAuth(scheme: "digest", credentials: "\(Self.quotaUser):\(quotaSecret)") }
    }

    /// Presents the edges' identity and this process's own on `zk` (both kept across `reconnect()`).
    public func authenticateEdge(_ zk: ZooKeeperClient) async throws {
        guard let edgeSecret else { return }
        try await zk.addAuth(scheme: "digest", credentials: "\(Self.edgeUser):\(edgeSecret)")
        try await zk.addAuth(scheme: "digest", credentials: "\(processUser):\(processPassword)")
    }
}

public struct ZooKeeperAccessError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
