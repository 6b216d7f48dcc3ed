import ArgumentParser
import Foundation
import InventoryCore
import ServiceKit
import ServiceLifecycle
import Wire

/// `InventoryService`: the only process that talks to PostgreSQL. Migrates every database cluster, loads the catalog,
/// serves the inventory methods and prints `READY inventory HOST:PORT`; SIGTERM drains (in-flight batches commit
/// and are answered) before exit. Secrets come from the environment only: the service token
/// (FLASHSALE_SERVICE_TOKEN[_FILE]) that purchases and stock changes need; the inventory serves no operator method.
@main
struct InventoryServiceMain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "InventoryService",
        abstract: "Slot-split stock in PostgreSQL, purchases in batches of one stored-procedure call each.")

    @OptionGroup var server: ServerOptions

    @OptionGroup var storage: DatabaseOptions

    @OptionGroup var metrics: MetricsOptions
    // Registration as a replica (optional): edges and the quota service with --discover-inventories find it.
    @OptionGroup var zooKeeper: ZooKeeperOptions

    func run() async throws {
        let logger = ServiceRuntime.makeLogger(label: "inventory", level: server.level)
        let environment = ProcessInfo.processInfo.environment
        await ParentLifeline.watch(environment: environment, logger: logger)
        let credentials = try ServiceRuntime.credentials(environment: environment, operator: false)
        metrics.bootstrap()  // before the pools exist: their metric handles are made when they are

        // Before any connection: they go to the primary it names.
        let patroni = try await storage.patroniWatches(logger: logger)
        let inventory = try await InventoryServiceParts.open(
            try storage.settings(environment: environment, patroni: patroni), logger: logger)

        var router = RPCRouter(serviceName: "inventory")
        inventory.register(into: &router)
        let server = RPCServer(configuration: server.configuration(credentials: credentials), router: router, logger: logger)
        let address = self.server.advertisedAddress()
        address.serve(server)

        // Shut down in reverse order: the registration goes, the server drains its calls, the consumers stop, then
        // the metrics port (if any) closes, and the Patroni watch last (the consumers draining still need the primary).
        let services = patroni.services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) }
            + metrics.services(service: "inventory", logger: logger) { inventory.installMetrics(into: $0, server: server) }
            + [
                .init(service: inventory.consumers, successTerminationBehavior: .gracefullyShutdownGroup,
                      failureTerminationBehavior: .gracefullyShutdownGroup),
                .init(service: inventory.catalogRefresh),
                // A server that cannot bind ends the process with its error (no READY line).
                .init(service: server, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .cancelGroup),
                .init(service: inventory.clusterStartup, successTerminationBehavior: .ignore),
                .init(service: ReadyAnnouncer(service: "inventory") { try await server.localAddress() }),
            ]
            + (try InventoryServiceParts.registration(
                zooKeeper: zooKeeper.zookeeper, root: zooKeeper.root, environment: environment, address: address, logger: logger
            )).map { .init(service: $0) }
        try await ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        ).run()
    }
}
