import Addressing
import ArgumentParser
import Logging
import Wire

/// The flags every service's RPC server takes, with the same names and defaults everywhere.
public struct ServerOptions: ParsableArguments, Sendable {
    @Option(help: "Address to listen on.")
    public var host = "127.0.0.1"

    @Option(help: "Port to listen on; 0 picks a free one (printed on the READY line).")
    public var port = 0

    @Option(help: """
        Address the other services reach this one at (host:port), as it registers it in ZooKeeper; defaults to the \
        bound address (an edge's operator port, when it has one).
        """)
    public var advertise: String?

    @Option(help: "Seconds after which a client connection with nothing read and nothing in flight is closed (0: never).")
    public var idleTimeout: Double = 300

    @Option(help: "Seconds a client connection may hold part of a frame before it is closed (slow clients; 0: never).")
    public var frameTimeout: Double = 10

    @Option(help: "Largest frame accepted, in bytes (default: 65536 at an edge, 1048576 at the other services).")
    public var maxFrameSize: Int?

    @Option(help: "trace|debug|info|notice|warning|error|critical")
    public var logLevel = "info"

    public init() {}

    public func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0...65535") }
        guard Logger.Level(name: logLevel) != nil else { throw ValidationError("unknown --log-level \(logLevel)") }
        if let maxFrameSize, maxFrameSize < 1 { throw ValidationError("--max-frame-size must be positive") }
        if let advertise, HostPort(advertise) == nil { throw ValidationError("--advertise must be host:port") }
    }

    /// `--advertise`, or the bound address once the server is named and bound.
    public func advertisedAddress() -> AdvertisedAddress {
        AdvertisedAddress(advertise: advertise.flatMap { HostPort($0) })
    }

    /// `--log-level`, checked by `validate()`.
    public var level: Logger.Level { Logger.Level(name: logLevel) ?? .info }

    /// The server these flags describe; `maxFrameSize` is the service's default frame limit.
    public func configuration(
        credentials: RPCCredentials, maxFrameSize defaultMaxFrameSize: Int = Framing.defaultMaxFrameSize
    ) -> RPCServerConfiguration {
        RPCServerConfiguration(
            host: host, port: port, maxFrameSize: maxFrameSize ?? defaultMaxFrameSize,
            idleTimeout: ServiceRuntime.timeout(seconds: idleTimeout), frameTimeout: ServiceRuntime.timeout(seconds: frameTimeout),
            credentials: credentials)
    }
}
