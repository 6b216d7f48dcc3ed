import Addressing
import Logging
import NIOCore
import Proto
import ServiceKit
import Synchronization
import Wire

/// Asks edges to hand back units they have not used (`edge.ReleaseQuota`), by edge id, one pooled client per edge
/// address. A client unused for `idleLimit` is dropped (`forgetIdle`): dead edges' addresses do not keep
/// reconnecting forever, however many edges come and go.
final class EdgeReleaser: Sendable {
    enum Answer: Sendable, Equatable {
        /// The edge answered: all units it has handed back for the product, in total (this call included), and
        /// its ZooKeeper session now.
        case released(total: Int64, session: Int64)
        /// Nothing listens there or it did not answer in time: the edge is gone (or cut off).
        case unreachable
        /// Another edge answers at that address (FAILED_PRECONDITION): the edge named is gone.
        case anotherEdge
        /// It answered with another error (a wrong token, say): alive, but nothing was released.
        case refused
    }

    private let token: String
    private let timeout: TimeAmount
    private let idleLimit: Duration
    private let logger: Logger
    private let clients = Mutex<[String: (client: RPCClient, lastUse: ContinuousClock.Instant)]>([:])

    /// `serviceToken`: `edge.ReleaseQuota` needs it.
    init(serviceToken: String, timeout: TimeAmount = .seconds(1), idleLimit: Duration = .seconds(30), logger: Logger) {
        self.token = serviceToken
        self.timeout = timeout
        self.idleLimit = idleLimit
        self.logger = logger
    }

    var clientCount: Int { clients.withLock { $0.count } }

    func release(product: String, units: Int64, edgeID: UInt32, address: String) async -> Answer {
        guard let client = self.client(for: address) else { return .unreachable }
        do {
            let response = try await client.call(
                EdgeRPC.ReleaseQuota.self, ReleaseQuotaRequest(productId: product, maxUnits: units, edgeId: edgeID),
                timeout: timeout)
            return .released(total: response.releasedTotal, session: response.session)
        } catch let error as RPCError where error.code.isUnreachable {
            logger.info("edge unreachable", metadata: ["address": "\(address)", "edge": "\(edgeID)", "error": "\(error)"])
            // Its connection is broken: the next call connects afresh rather than failing at once while this client
            // backs off (an edge started since on that address, or the same one back, must get a real try).
            if error.code == .unavailable { await forget(address, client) }
            return .unreachable
        } catch let error as RPCError where error.code == .failedPrecondition {
            logger.info("another edge answers at the address", metadata: ["address": "\(address)", "edge": "\(edgeID)", "error": "\(error)"])
            return .anotherEdge
        } catch {
            logger.warning("edge refused to release", metadata: ["address": "\(address)", "edge": "\(edgeID)", "error": "\(error)"])
            return .refused
        }
    }

    private func forget(_ address: String, _ client: RPCClient) async {
        let removed = clients.withLock { clients -> Bool in
            guard clients[address]?.client === client else { return false }
            clients[address] = nil
            return true
        }
        if removed { await client.shutdown() }
    }

    /// Drops the clients no call used for `idleLimit` (no call is in flight on them: calls time out long before).
    func forgetIdle(now: ContinuousClock.Instant = .now) async {
        let idle = clients.withLock { clients -> [RPCClient] in
            let stale = clients.filter { now - $0.value.lastUse >= idleLimit }
            for address in stale.keys { clients[address] = nil }
            return stale.values.map(\.client)
        }
        for client in idle { await client.shutdown() }
    }

    func shutdown() async {
        let all = clients.withLock { clients in
            defer { clients.removeAll() }
            return clients.values.map(\.client)
        }
        for client in all { await client.shutdown() }
    }

    private func client(for address: String) -> RPCClient? {
        guard let (host, port) = HostPort(address).map({ ($0.host, $0.port) }) else { return nil }
        return clients.withLock { clients in
            if let known = clients[address] {
                clients[address]?.lastUse = .now
                return known.client
            }
            let client = RPCClient(
                configuration: RPCClientConfiguration(
                    host: host, port: port, connectTimeout: .milliseconds(500), token: token),
                logger: logger)
            clients[address] = (client, .now)
            return client
        }
    }
}
