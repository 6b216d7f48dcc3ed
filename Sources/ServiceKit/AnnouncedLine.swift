import Addressing
import Glibc
import NIOCore

extension HostPort {
    /// The address a socket bound, as the platform writes it (`HostPort.description`: an IPv6 host in brackets).
    /// The servers bind TCP only; a socket with no IP address (a Unix one) would read as 127.0.0.1 port 0.
    public init(_ address: SocketAddress) {
        self.init(host: address.ipAddress ?? "127.0.0.1", port: address.port ?? 0)
    }
}

/// A line a service prints on standard output for the scripts and tests that started it: `READY <service>
/// <host:port>` once it serves, `METRICS <service> <host:port>` once its metrics port listens. Written and read
/// only here, so the writers and the readers cannot drift apart.
public struct AnnouncedLine: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        case ready = "READY"
        case metrics = "METRICS"

        /// What a line of this kind starts with (a log's lines can be searched for it).
        public var marker: String { rawValue + " " }
    }

    public var kind: Kind
    public var service: String
    public var address: HostPort

    public init(_ kind: Kind, service: String, address: HostPort) {
        self.kind = kind
        self.service = service
        self.address = address
    }

    /// Nil unless `line` is `<KIND> <service> <host:port>` (more fields after it are ignored).
    public init?(_ line: some StringProtocol) {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 3, let kind = Kind(rawValue: String(fields[0])), let address = HostPort(fields[2]) else {
            return nil
        }
        self.init(kind, service: String(fields[1]), address: address)
    }

    /// The first line of `kind` in a process's output.
    public static func first(_ kind: Kind, in output: some StringProtocol) -> AnnouncedLine? {
        for line in output.split(separator: "\n") where line.hasPrefix(kind.marker) {
            if let announced = AnnouncedLine(line), announced.kind == kind { return announced }
        }
        return nil
    }

    public var description: String { "\(kind.rawValue) \(service) \(address)" }

    /// Prints the line and flushes it: whoever waits for it reads it at once, even through a pipe.
    public func announce() {
        print(description)
        fflush(nil)  // all streams: Swift 6 refuses a reference to the global `stdout`
    }
}
