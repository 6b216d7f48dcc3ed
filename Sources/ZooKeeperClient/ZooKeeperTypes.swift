import FoundationEssentials

/// A failure of a ZooKeeper call: the C client's error code, its text, and the path involved.
public struct ZooKeeperError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: Sendable, Hashable {
        case noNode, nodeExists, badVersion, notEmpty, noChildrenForEphemerals
        case noAuth, authFailed, invalidACL
        case connectionLoss, operationTimeout, sessionExpired, sessionMoved, closing, invalidState
        case badArguments, marshallingError, systemError, runtimeInconsistency, dataInconsistency
        case unimplemented, notReadOnly, throttled
        /// The session did not reach CONNECTED within the connect timeout.
        case connectTimeout
        case other(Int32)

        /// From the C client's `ZOO_ERRORS` values (stable: they mirror the server protocol).
        init(rc: Int32) {
            switch rc {
            case -1: self = .systemError
            case -2: self = .runtimeInconsistency
            case -3: self = .dataInconsistency
            case -4: self = .connectionLoss
            case -5: self = .marshallingError
            case -6: self = .unimplemented
            case -7: self = .operationTimeout
            case -8: self = .badArguments
            case -9: self = .invalidState
            case -101: self = .noNode
            case -102: self = .noAuth
            case -103: self = .badVersion
            case -108: self = .noChildrenForEphemerals
            case -110: self = .nodeExists
            case -111: self = .notEmpty
            case -112: self = .sessionExpired
            case -114: self = .invalidACL
            case -115: self = .authFailed
            case -116: self = .closing
            case -118: self = .sessionMoved
            case -119: self = .notReadOnly
            case -127: self = .throttled
            default: self = .other(rc)
            }
        }
    }

    public var code: Code
    public var message: String
    public var path: String?

    public init(code: Code, message: String, path: String? = nil) {
        self.code = code
        self.message = message
        self.path = path
    }

    /// The outcome of the call is unknown (it may or may not have been applied): re-read before retrying.
    public var isConnectionProblem: Bool {
        code == .connectionLoss || code == .operationTimeout
    }

    /// ZooKeeper cannot be used now (no connection, no session): retry later, after a reconnect.
    public var isUnreachable: Bool {
        switch code {
        case .connectionLoss, .operationTimeout, .sessionExpired, .closing, .invalidState, .connectTimeout: true
        default: false
        }
    }

    public var description: String {
        "ZooKeeperError \(code): \(message)" + (path.map { " (\($0))" } ?? "")
    }
}

/// Node metadata; `version` is what compare-and-set (`set`, `delete`) checks.
public struct ZooKeeperStat: Sendable, Equatable {
    public var czxid: Int64
    public var mzxid: Int64
    public var ctime: Int64
    public var mtime: Int64
    public var version: Int32
    public var cversion: Int32
    public var aversion: Int32
    /// The owning session of an ephemeral node, 0 for a persistent one.
    public var ephemeralOwner: Int64
    public var dataLength: Int32
    public var numChildren: Int32
    public var pzxid: Int64

    public init(
        czxid: Int64 = 0, mzxid: Int64 = 0, ctime: Int64 = 0, mtime: Int64 = 0, version: Int32 = 0,
        cversion: Int32 = 0, aversion: Int32 = 0, ephemeralOwner: Int64 = 0, dataLength: Int32 = 0,
        numChildren: Int32 = 0, pzxid: Int64 = 0
    ) {
        self.czxid = czxid
        self.mzxid = mzxid
        self.ctime = ctime
        self.mtime = mtime
        self.version = version
        self.cversion = cversion
        self.aversion = aversion
        self.ephemeralOwner = ephemeralOwner
        self.dataLength = dataLength
        self.numChildren = numChildren
        self.pzxid = pzxid
    }
}

public enum ZooKeeperCreateMode: Sendable, Hashable {
    case persistent, ephemeral, persistentSequential, ephemeralSequential
}

public enum ZooKeeperSessionState: Sendable, Hashable {
    case connecting, associating, connected, connectedReadOnly, notConnected
    /// The server dropped the session: ephemerals and watches are gone; call `reconnect()`.
    case expired
    case authFailed
    case unknown(Int32)
}

extension ZooKeeperSessionState {
    /// The state's name in metrics and logs: connecting, associating, connected, read_only, not_connected, expired,
    /// auth_failed or unknown.
    public var name: String {
        switch self {
        case .connecting: "connecting"
        case .associating: "associating"
        case .connected: "connected"
        case .connectedReadOnly: "read_only"
        case .notConnected: "not_connected"
        case .expired: "expired"
        case .authFailed: "auth_failed"
        case .unknown: "unknown"
        }
    }
}

/// A watch firing (one-shot: set it again with the next read) or a change of the session's state.
public enum ZooKeeperEvent: Sendable, Hashable {
    case created(path: String)
    case deleted(path: String)
    case dataChanged(path: String)
    case childrenChanged(path: String)
    case notWatching(path: String)
    case session(ZooKeeperSessionState)

    public var path: String? {
        switch self {
        case .created(let p), .deleted(let p), .dataChanged(let p), .childrenChanged(let p), .notWatching(let p): p
        case .session: nil
        }
    }
}

/// One access-control entry: who (`scheme:id`) may do what.
public struct ZooKeeperACL: Sendable, Hashable {
    public struct Permissions: OptionSet, Sendable, Hashable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        public static let read = Permissions(rawValue: 1)
        public static let write = Permissions(rawValue: 2)
        public static let create = Permissions(rawValue: 4)
        public static let delete = Permissions(rawValue: 8)
        public static let admin = Permissions(rawValue: 16)
        public static let all: Permissions = [.read, .write, .create, .delete, .admin]
    }

    public var permissions: Permissions
    public var scheme: String
    public var id: String

    public init(permissions: Permissions, scheme: String, id: String) {
        self.permissions = permissions
        self.scheme = scheme
        self.id = id
    }

    /// Anyone may do anything (ZooKeeper's OPEN_ACL_UNSAFE).
    public static let openUnsafe: [ZooKeeperACL] = [ZooKeeperACL(permissions: .all, scheme: "world", id: "anyone")]
    /// Anyone may read (READ_ACL_UNSAFE).
    public static let readUnsafe: [ZooKeeperACL] = [ZooKeeperACL(permissions: .read, scheme: "world", id: "anyone")]
    /// Whoever created the node, by the identities the session authenticated with (CREATOR_ALL_ACL).
    public static let creatorAll: [ZooKeeperACL] = [ZooKeeperACL(permissions: .all, scheme: "auth", id: "")]

    /// A `digest` entry for `user:password`, as `addAuth(scheme: "digest", credentials: "user:password")` presents it.
    public static func digest(user: String, password: String, permissions: Permissions = .all) -> ZooKeeperACL {
        ZooKeeperACL(permissions: permissions, scheme: "digest", id: digestID(user: user, password: password))
    }

    /// `user:base64(sha1("user:password"))`, the id form the server's DigestAuthenticationProvider uses.
    public static func digestID(user: String, password: String) -> String {
        let hash = SHA1.hash(Array("\(user):\(password)".utf8))
        return "\(user):\(Data(hash).base64EncodedString())"
    }
}
