/// `host:port`, the one parser of the platform's addresses: a name, an IPv4 address, or an IPv6 address in brackets
/// (`[::1]:80`; a bare `::1:80` is read up to its last colon, as a READY line prints it). The port is 1...65535.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Nil unless `text` is `host:port`. An empty host is refused, or read as `defaultHost` when one is given
    /// (`:7200`).
    public init?(_ text: some StringProtocol, defaultHost: String? = nil) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (1...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty, let defaultHost { host = defaultHost }
        guard !host.isEmpty else { return nil }
        self.init(host: host, port: port)
    }

    /// A comma-separated list (`a:1, b:2`): nil unless every entry is `host:port`; repeats are dropped, and "" is
    /// the empty list.
    public static func list(_ text: some StringProtocol, defaultHost: String? = nil) -> [HostPort]? {
        let entries = text.split(separator: ",", omittingEmptySubsequences: false).map {
            $0.trimmingWhitespace
        }
        if entries == [""] { return [] }
        var addresses: [HostPort] = []
        for entry in entries {
            guard !entry.contains(where: \.isWhitespace), let address = HostPort(entry, defaultHost: defaultHost) else {
                return nil
            }
            if !addresses.contains(address) { addresses.append(address) }
        }
        return addresses
    }

    /// `host:port`, the IPv6 host in brackets.
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

extension StringProtocol {
    /// Without leading and trailing whitespace; here rather than Foundation's `trimmingCharacters(in:)` because
    /// the edge does not link Foundation (its pages cost 6 MiB of every edge's RSS; `flashsale-bench edge-rss`).
    public var trimmingWhitespace: String {
        guard let first = self.firstIndex(where: { !$0.isWhitespace }) else { return "" }
        let last = self.lastIndex(where: { !$0.isWhitespace })!
        return String(self[first...last])
    }
}
