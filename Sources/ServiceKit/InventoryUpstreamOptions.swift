import Addressing
import ArgumentParser
import InventoryDiscovery
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Wire

/// `--inventory` and `--discover-inventories`: where the edge and the quota service find the inventory replicas.
/// The default is none listed, so one of the two must be given.
public struct InventoryUpstreamOptions: ParsableArguments, Sendable {
    @Option(help: "The inventory service (host:port), or its replicas (host:port,host:port...); empty with --discover-inventories.")
    public var inventory = ""

    @Flag(help: "Also use the inventory replicas registered in ZooKeeper (<root>/inventories/), as they come and go.")
    public var discoverInventories = false

    public init() {}

    public func validate() throws {
        guard let listed = HostPort.list(inventory) else { throw ValidationError("--inventory takes host:port[,host:port...]") }
        guard !listed.isEmpty || discoverInventories else {
            throw ValidationError("name the inventory (--inventory host:port[,...]) or --discover-inventories")
        }
    }

    /// The replicas these flags name, each a client made from `template`, and with `--discover-inventories` the
    /// directory that adds and removes the registered ones (list it before the services that call the inventory:
    /// it stops after them, and their final calls still find the replicas).
    public func replicas(
        template: RPCClientConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        zooKeeper: String, root: String, logger: Logger
    ) -> (replicas: InventoryReplicas, directory: [any Service]) {
        let replicas = InventoryReplicas(
            listed: HostPort.list(inventory) ?? [],  // checked by validate()
            template: template, group: group, logger: logger)
        let directory: [any Service] = discoverInventories
            ? [InventoryDirectory(zooKeeper: zooKeeper, root: root, replicas: replicas, logger: logger)] : []
        return (replicas, directory)
    }
}
