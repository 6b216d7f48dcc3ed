import Foundation
import Wire

/// The name of one database cluster of the inventory: `main` (the catalog of every product, the binding of every
/// request id, and the stock and orders of the products placed there), `hot` (hot products), or a shard of the
/// operator's naming (`shard-2`, ...). Each cluster is its own server (or Patroni cluster), with its own admin thread,
/// purchase pool and consumers. 1-32 characters: a lower-case letter, then lower-case letters, digits and '-' (the
/// same rule as the CHECK of `products.database`, migration 6).
struct DatabaseRole: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    let rawValue: String

    init?(rawValue: String) {
        guard Self.isValid(rawValue) else { return nil }
        self.rawValue = rawValue
    }

    private init(known: String) { rawValue = known }

    static let main = DatabaseRole(known: "main")
    static let hot = DatabaseRole(known: "hot")

    static func isValid(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...32).contains(bytes.count), (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(bytes[0]) else { return false }
        return bytes.allSatisfy {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                || $0 == UInt8(ascii: "-")
        }
    }

    var description: String { rawValue }
}

/// Where a new product goes, pure: the operator's choice (`cluster`, or `hot`) when given, otherwise the least loaded
/// of the clusters that take cold products (every cluster but `hot`) and are up. Load is the number of products
/// placed on a cluster (the catalog's rows per cluster); a tie goes to the cluster named first (`main` first).
struct ClusterPlacement: Sendable, Equatable {
    struct Candidate: Sendable, Equatable {
        var role: DatabaseRole
        var ready: Bool
        var products: Int
    }

    enum Decision: Sendable, Equatable {
        case place(DatabaseRole)
        case refuse(RPCError.Code, String)
    }

    /// The clusters this inventory was given, in their order (`main` first).
    var candidates: [Candidate]

    /// Whether the choice needs the products per cluster (an automatic placement does).
    static func needsLoad(requested: String, hot: Bool) -> Bool { requested.isEmpty && !hot }

    func decide(requested: String, hot: Bool) -> Decision {
        if !requested.isEmpty {
            guard let role = DatabaseRole(rawValue: requested) else {
                return .refuse(.invalidArgument, "cluster must be 1-32 lower-case letters, digits and '-', starting with a letter")
            }
            if hot && role != .hot { return .refuse(.invalidArgument, "a hot product lives on the hot cluster: drop hot or cluster") }
            guard candidates.contains(where: { $0.role == role }) else {
                return .refuse(.invalidArgument, "unknown cluster \(requested): this inventory has "
                    + candidates.map(\.role.rawValue).joined(separator: ", "))
            }
            return .place(role)
        }
        if hot { return .place(.hot) }
        let cold = candidates.enumerated().filter { $0.element.role != .hot && $0.element.ready }
        guard let least = cold.min(by: { ($0.element.products, $0.offset) < ($1.element.products, $1.offset) }) else {
            return .refuse(.unavailable, "no cluster that takes cold products is reachable; retry")
        }
        return .place(least.element.role)
    }
}

/// One cluster of the inventory's command line: its name, the connection string it is served with, the owner's it is
/// migrated with (nil: the serving one), and its consumers. `dsn` nil: the default hot database (`<main>_hot` on the
/// main server).
public struct ClusterSettings: Sendable, Equatable {
    public var name: String
    public var dsn: String?
    public var migrateDSN: String?
    public var consumers: Int

    public init(name: String, dsn: String?, migrateDSN: String?, consumers: Int) {
        self.name = name
        self.dsn = dsn
        self.migrateDSN = migrateDSN
        self.consumers = consumers
    }
}

/// The inventory's database flags resolved into its clusters, pure: `--dsn`/`--migrate-dsn` are `main`,
/// `--hot-dsn`/`--hot-migrate-dsn` are `hot`, and each repeatable `--database NAME=DSN` (with
/// `--migrate-database NAME=DSN`) adds a cluster, or names `main` or `hot` in place of the flags above. Shards get
/// `--consumers` consumers, as `main` does.
public struct DatabaseFlags: Sendable {
    public struct Invalid: Error, Sendable, Equatable, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    public var dsn: String?
    public var hotDSN: String?
    public var migrateDSN: String?
    public var hotMigrateDSN: String?
    /// `NAME=DSN`, as typed.
    public var databases: [String] = []
    public var migrateDatabases: [String] = []
    public var consumers: Int
    public var hotConsumers: Int

    public init(
        dsn: String?, hotDSN: String?, migrateDSN: String?, hotMigrateDSN: String?, databases: [String] = [],
        migrateDatabases: [String] = [], consumers: Int, hotConsumers: Int
    ) {
        self.dsn = dsn
        self.hotDSN = hotDSN
        self.migrateDSN = migrateDSN
        self.hotMigrateDSN = hotMigrateDSN
        self.databases = databases
        self.migrateDatabases = migrateDatabases
        self.consumers = consumers
        self.hotConsumers = hotConsumers
    }

    /// `NAME=DSN` split at its first '=' (a DSN holds '=' of its own), the name checked.
    static func pair(_ flag: String, _ option: String) throws -> (name: String, dsn: String) {
        guard let equals = flag.firstIndex(of: "=") else { throw Invalid("\(option) takes NAME=DSN, got \(flag)") }
        let name = String(flag[..<equals]), dsn = String(flag[flag.index(after: equals)...])
        guard DatabaseRole.isValid(name) else {
            throw Invalid("\(option): cluster name \(name) must be 1-32 lower-case letters, digits and '-', starting with a letter")
        }
        guard !dsn.trimmingCharacters(in: .whitespaces).isEmpty else { throw Invalid("\(option) \(name)= has no connection string") }
        return (name, dsn)
    }

    /// Every cluster, `main` first, then `hot`, then the others in the order given. `owner`: whether the migrations
    /// run as another role than the serving one (`--migrate-dsn` given, or no `--dsn`), so that each cluster named
    /// by its serving connection string needs its owner's too.
    public func clusters(mainDefault: String, migrateDefault: String?) throws -> [ClusterSettings] {
        var serving: [(name: String, dsn: String)] = []
        for flag in databases {
            let pair = try Self.pair(flag, "--database")
            guard !serving.contains(where: { $0.name == pair.name }) else { throw Invalid("--database \(pair.name) is given twice") }
            serving.append(pair)
        }
        var owners: [String: String] = [:]
        for flag in migrateDatabases {
            let pair = try Self.pair(flag, "--migrate-database")
            guard owners[pair.name] == nil else { throw Invalid("--migrate-database \(pair.name) is given twice") }
            owners[pair.name] = pair.dsn
        }
        func named(_ name: String) -> String? { serving.first { $0.name == name }?.dsn }
        if dsn != nil && named("main") != nil { throw Invalid("--dsn and --database main= name the same cluster: give one") }
        if hotDSN != nil && named("hot") != nil { throw Invalid("--hot-dsn and --database hot= name the same cluster: give one") }
        if migrateDSN != nil && owners["main"] != nil {
            throw Invalid("--migrate-dsn and --migrate-database main= name the same owner: give one")
        }
        if hotMigrateDSN != nil && owners["hot"] != nil {
            throw Invalid("--hot-migrate-dsn and --migrate-database hot= name the same owner: give one")
        }
        let mainServing = dsn ?? named("main")
        let mainOwner = migrateDSN ?? owners["main"] ?? (mainServing == nil ? migrateDefault : nil)
        let separateOwner = mainOwner != nil
        let hotServing = hotDSN ?? named("hot")
        let hotOwner = hotMigrateDSN ?? owners["hot"]
        if separateOwner && hotServing != nil && hotOwner == nil {
            throw Invalid("with --migrate-dsn and --hot-dsn, give the hot database's owner as --hot-migrate-dsn too")
        }
        var clusters = [
            ClusterSettings(name: "main", dsn: mainServing ?? mainDefault, migrateDSN: mainOwner, consumers: consumers),
            ClusterSettings(name: "hot", dsn: hotServing, migrateDSN: hotOwner, consumers: hotConsumers),
        ]
        for (name, dsn) in serving where name != "main" && name != "hot" {
            let owner = owners[name]
            if separateOwner && owner == nil {
                throw Invalid("the migrations run as the owner: give cluster \(name)'s owner as --migrate-database \(name)=DSN too")
            }
            clusters.append(ClusterSettings(name: name, dsn: dsn, migrateDSN: owner, consumers: consumers))
        }
        for name in owners.keys.sorted() where !clusters.contains(where: { $0.name == name }) {
            throw Invalid("--migrate-database \(name)= names no cluster: add --database \(name)=DSN")
        }
        return clusters
    }
}
