import FlashSaleClient
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Proto
import Wire

/// Asks edges to hand back units they have not used (`edge.ReleaseQuota`), one pooled client per edge address.
final class EdgeReleaser: Sendable {
    enum Answer: Sendable, Equatable {
        /// The edge answered: all units it has handed back for the product, in total (this call included).
        case released(total: Int64)
        /// Nothing listens there or it did not answer in time: the edge is gone (or cut off).
        case unreachable
        /// It answered with an error (a wrong token, say): alive, but nothing was released.
        case refused
    }

    private let token: String
    private let timeout: TimeAmount
    private let logger: Logger
    private let clients = NIOLockedValueBox<[String: RPCClient]>([:])

    /// `serviceToken`: `edge.ReleaseQuota` needs it.
    init(serviceToken: String, timeout: TimeAmount = .seconds(1), logger: Logger) {
        self.token = serviceToken
        self.timeout = timeout
        self.logger = logger
    }

    func release(product: String, units: Int64, address: String) async -> Answer {
        guard let client = self.client(for: address) else { return .unreachable }
        do {
            let response = try await client.call(
                EdgeQuotaMethod.releaseQuota, ReleaseQuotaRequest(productId: product, maxUnits: units),
                as: ReleaseQuotaResponse.self, timeout: timeout)
            return .released(total: response.releasedTotal)
        } catch let error as RPCError where error.code == .unavailable || error.code == .deadlineExceeded {
            logger.info("edge unreachable", metadata: ["address": "\(address)", "error": "\(error)"])
            return .unreachable
        } catch {
            logger.warning("edge refused to release", metadata: ["address": "\(address)", "error": "\(error)"])
            return .refused
        }
    }

    /// Drops the client of an edge that is gone.
    func forget(address: String) async {
        let client = clients.withLockedValue { $0.removeValue(forKey: address) }
        await client?.shutdown()
    }

    func shutdown() async {
        let all = clients.withLockedValue { clients in
            defer { clients.removeAll() }
            return Array(clients.values)
        }
        for client in all { await client.shutdown() }
    }

    private func client(for address: String) -> RPCClient? {
        guard let (host, port) = HostPort.parse(address) else { return nil }
        return clients.withLockedValue { clients in
            if let client = clients[address] { return client }
            let client = RPCClient(
                configuration: RPCClientConfiguration(
                    host: host, port: port, connectTimeout: .milliseconds(500), token: token),
                logger: logger)
            clients[address] = client
            return client
        }
    }
}

/// "host:port" (the host may be a name, an IPv4 address or a bracketed IPv6 address).
enum HostPort {
    static func parse(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = String(text[..<colon])
        guard let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        return (host, port)
    }
}
