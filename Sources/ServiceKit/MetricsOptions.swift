import ArgumentParser
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import ServiceMetrics

/// `--metrics-host` and `--metrics-port`, shared by every service executable, and the metrics port they ask for.
public struct MetricsOptions: ParsableArguments, Sendable {
    @Option(help: "Serve Prometheus metrics (GET /metrics) on this port; 0 picks a free one (printed on the METRICS line). Off when absent.")
    public var metricsPort: Int?

    @Option(help: "Address the metrics port listens on.")
    public var metricsHost = "127.0.0.1"

    public init() {}

    public func validate() throws {
        if let metricsPort, !(0...65535).contains(metricsPort) {
            throw ValidationError("--metrics-port must be 0...65535")
        }
    }

    /// Points swift-metrics at the Prometheus registry when the port is asked for. Call it before the service's
    /// parts are made: a metric handle made earlier records nowhere.
    public func bootstrap() {
        if metricsPort != nil { ServiceMetrics.bootstrap() }
    }

    /// The metrics port and its METRICS line, when `--metrics-port` asks for one (else none). `install` adds the
    /// service's scrape hooks (its parts' `installMetrics`). List these first in the group, so that the port stops
    /// last and the other services' final figures stay visible while they drain.
    public func services(
        service: String, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger,
        install: (ScrapeHooks) -> Void
    ) -> [ServiceGroupConfiguration.ServiceConfiguration] {
        guard let metricsPort else { return [] }
        let hooks = ScrapeHooks()
        install(hooks)
        let server = MetricsServer(
            service: service, host: metricsHost, port: metricsPort, registry: ServiceMetrics.bootstrap(), hooks: hooks,
            group: group, logger: logger)
        return [
            .init(service: server),
            .init(service: ReadyAnnouncer(.metrics, service: service) { try await server.localAddress() }),
        ]
    }
}
