import Foundation
import NIOCore
import ServiceLifecycle

/// Prints `READY <service> <host>:<port>` once the service serves, then waits for shutdown: scripts and tests
/// wait for this line. `serving` returns the address once the service can be called (the server bound, and
/// whatever else the service needs first); if it throws, no line is printed and the group ends with its error.
/// Put it last in the group: it is the first to go.
public struct ReadyAnnouncer: Service {
    let service: String
    let serving: @Sendable () async throws -> SocketAddress

    public init(service: String, serving: @escaping @Sendable () async throws -> SocketAddress) {
        self.service = service
        self.serving = serving
    }

    public func run() async throws {
        let address = try await serving()
        Self.announce(service: service, address: address)
        try? await gracefulShutdown()
    }

    /// The line itself, for a process that is no ServiceGroup (the benchmarks' servers).
    public static func announce(service: String, address: SocketAddress) {
        print("READY \(service) \(address.ipAddress ?? "?"):\(address.port ?? 0)")
        fflush(nil)  // all streams: Swift 6 refuses a reference to the global `stdout`
    }
}
