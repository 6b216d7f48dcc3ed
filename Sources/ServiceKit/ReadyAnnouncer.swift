import Addressing
import NIOCore
import ServiceLifecycle

/// Prints an `AnnouncedLine` (`READY <service> <host:port>` by default) once the service serves, then waits for
/// shutdown: scripts and tests wait for this line. `serving` returns the address once the service can be called
/// (the server bound, and whatever else the service needs first); if it throws, no line is printed and the group
/// ends with its error. Put a READY one last in the group: it is the first to go.
public struct ReadyAnnouncer: Service {
    let kind: AnnouncedLine.Kind
    let service: String
    let serving: @Sendable () async throws -> SocketAddress

    public init(
        _ kind: AnnouncedLine.Kind = .ready, service: String, serving: @escaping @Sendable () async throws -> SocketAddress
    ) {
        self.kind = kind
        self.service = service
        self.serving = serving
    }

    public func run() async throws {
        let address: SocketAddress
        do {
            // The first service the group stops: waiting here for a dependency that never came (ZooKeeper down while
            // the edge registers) would hold every other service's shutdown, and SIGTERM with it.
            address = try await cancelWhenGracefulShutdown { try await self.serving() }
        } catch where Task.isShuttingDownGracefully {
            return  // stopped before it served: nothing to announce
        }
        AnnouncedLine(kind, service: service, address: HostPort(address)).announce()
        try? await gracefulShutdown()
    }

    /// The READY line itself, for a process that is no ServiceGroup (the benchmarks' servers).
    public static func announce(service: String, address: SocketAddress) {
        AnnouncedLine(.ready, service: service, address: HostPort(address)).announce()
    }
}
