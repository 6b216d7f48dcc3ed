import NIOCore

public struct RPCServerConfiguration: Sendable {
    public var host: String
    /// 0 picks a free port; the bound address is reported by `RPCServer.localAddress`.
    public var port: Int
    public var maxFrameSize: Int
    /// Back-pressure: past this many calls in flight on one connection the server stops reading from it.
    public var maxCallsInFlightPerConnection: Int
    /// A connection with nothing read and nothing in flight for this long is closed.
    public var idleTimeout: TimeAmount?
    /// A connection holding part of a frame for this long is closed: a slow client (a frame a byte at a time)
    /// keeps the idle timeout from firing, not this one. Time the server itself stops reading the connection
    /// (back-pressure) does not count.
    public var frameTimeout: TimeAmount?
    /// The tokens methods that are not public need (see `RPCAccess`).
    public var credentials: RPCCredentials

    public init(
        host: String = "127.0.0.1",
        port: Int = 0,
        maxFrameSize: Int = Framing.defaultMaxFrameSize,
        maxCallsInFlightPerConnection: Int = 1024,
        idleTimeout: TimeAmount? = .seconds(300),
        frameTimeout: TimeAmount? = .seconds(10),
        credentials: RPCCredentials = RPCCredentials()
    ) {
        self.host = host
        self.port = port
        self.maxFrameSize = maxFrameSize
        self.maxCallsInFlightPerConnection = maxCallsInFlightPerConnection
        self.idleTimeout = idleTimeout
        self.frameTimeout = frameTimeout
        self.credentials = credentials
    }
}
