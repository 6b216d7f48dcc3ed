import ArgumentParser

/// `--zookeeper` and `--root`, the same two flags with the same meaning in every service: where the ensemble is and
/// under which node the flash sale lives. The edge and the quota service need ZooKeeper (`required()`); an
/// inventory given it registers itself under `<root>/inventories/`, and without it does not.
public struct ZooKeeperOptions: ParsableArguments, Sendable {
    /// The root every process uses unless told otherwise. It is the contract's `QuotaLayout.defaultRoot`, which sits
    /// above this module; ServiceKitTests checks the two agree.
    public static let defaultRoot = "/flashsale"

    @Option(help: """
        ZooKeeper connection string (host:port[,host:port...]). Needed by an edge and the quota service; an inventory \
        given it registers under <root>/inventories/ (without it, it does not).
        """)
    public var zookeeper: String?

    @Option(help: "The flash sale's root node in ZooKeeper.")
    public var root = ZooKeeperOptions.defaultRoot

    public init() {}

    public func validate() throws {
        guard root.hasPrefix("/") else { throw ValidationError("--root must start with /") }
        if let zookeeper, zookeeper.isEmpty { throw ValidationError("--zookeeper takes host:port[,host:port...]") }
    }

    /// `--zookeeper`, for a service that cannot run without it (call it from `validate()` too).
    public func required() throws -> String {
        guard let zookeeper else { throw ValidationError("--zookeeper is required (host:port[,host:port...])") }
        return zookeeper
    }
}
