import ArgumentParser

/// `--metrics-host` and `--metrics-port`, shared by every service executable.
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
}
