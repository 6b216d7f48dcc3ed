import Addressing
import Synchronization
import Wire

/// Where the other services reach this process: `--advertise`, else the address its server bound (port 0 picks
/// one). The parts that register this address are made before the server, whose router needs them, so the server
/// is named here once made (`serve`).
public final class AdvertisedAddress: Sendable {
    private let advertise: HostPort?
    private let state = Mutex<(server: RPCServer?, resolved: HostPort?)>((nil, nil))

    public init(advertise: HostPort?) {
        self.advertise = advertise
    }

    /// The server whose bound address this is (an edge's operator server, when it has one).
    public func serve(_ server: RPCServer) {
        state.withLock { $0.server = server }
    }

    /// Waits until the server has bound (so nobody is sent to a port not yet listening), then returns the address.
    /// Throws when no server was named, or when it could not bind.
    public func resolve() async throws -> HostPort {
        guard let server = state.withLock({ $0.server }) else { throw CancellationError() }
        let bound = try await server.localAddress()
        let address = advertise ?? HostPort(bound)
        state.withLock { $0.resolved = address }
        return address
    }

    /// What `resolve()` returned, nil until it has (for code that cannot wait).
    public var resolved: HostPort? { state.withLock { $0.resolved } }
}
