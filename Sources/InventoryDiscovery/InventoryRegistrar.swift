import Addressing
import Logging
import QuotaContract
import ServiceLifecycle
import Wire
import ZooKeeperClient

/// Registers this inventory replica in ZooKeeper, as a `Service`: an ephemeral sequential node under
/// `<root>/inventories/` holding the address it serves at, made by a session of its own, so that the node vanishes
/// with the process (kill -9 included, after the session timeout) and edges move off it. The same ACL scheme as the
/// edges' registrations: with `FLASHSALE_ZK_EDGE_SECRET`, the replica presents the services' identity (which may
/// create under the folder the quota service made) and its node is writable by this process alone.
///
/// An expired session or a deleted node registers again. On graceful shutdown the session is closed, which deletes
/// the node at once (list this service after the server, so the group stops it before the server drains): callers
/// stop choosing the replica while its calls in flight finish.
public struct InventoryRegistrar: Service {
    let zooKeeper: String
    let root: String
    let access: ZooKeeperAccess
    let sessionTimeout: Duration
    /// Where this replica serves, once bound.
    let address: @Sendable () async throws -> HostPort
    let logger: Logger

    public init(
        zooKeeper: String, root: String, access: ZooKeeperAccess, sessionTimeout: Duration = .seconds(4),
        address: @escaping @Sendable () async throws -> HostPort, logger: Logger
    ) {
        self.zooKeeper = zooKeeper
        self.root = root
        self.access = access
        self.sessionTimeout = sessionTimeout
        self.address = address
        self.logger = logger
    }

    static let retry = Backoff(initial: .milliseconds(100), max: .seconds(2))

    public func run() async throws {
        let address = try await self.address()
        let folder = InventoryRegistration.folder(root: root)
        var delays = Self.retry.makeIterator()
        while !Task.isCancelled, !Task.isShuttingDownGracefully {
            let zk: ZooKeeperClient
            do {
                zk = try await ZooKeeperClient.connect(
                    hosts: zooKeeper, sessionTimeout: sessionTimeout, connectTimeout: .seconds(5), logger: logger)
            } catch {
                logger.warning("inventory registration: zookeeper unreachable; retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: delays.next())
                continue
            }
            let events = zk.events()
            do {
                try await access.authenticateEdge(zk)
                let path = try await register(zk, folder: folder, address: address)
                delays = Self.retry.makeIterator()
                logger.info("inventory registered", metadata: ["node": "\(path)", "address": "\(address)"])
                // Until shutdown, or the session ends (then a new session registers again).
                try await cancelWhenGracefulShutdown {
                    var path = path
                    for await event in events {
                        switch event {
                        case .session(.expired), .session(.authFailed):
                            throw ZooKeeperError(code: .sessionExpired, message: "session expired")
                        case .deleted(let deleted) where deleted == path:
                            path = try await register(zk, folder: folder, address: address)
                        default:
                            break
                        }
                    }
                }
            } catch {
                if !Task.isShuttingDownGracefully {
                    logger.warning("inventory registration lost; registering again", metadata: ["error": "\(error)"])
                }
            }
            // Closing the session deletes its ephemeral node at once: callers stop choosing this replica.
            await zk.close()
            if !Task.isShuttingDownGracefully, !Task.isCancelled { try? await Task.sleep(for: delays.next()) }
        }
    }

    /// Creates the node and watches it (someone deleting it makes us register again).
    private func register(_ zk: ZooKeeperClient, folder: String, address: HostPort) async throws -> String {
        let path = try await zk.create(
            folder + "/" + InventoryRegistration.prefix, data: InventoryRegistration.encode(address),
            mode: .ephemeralSequential, acl: access.registration, createParents: !access.edgeEnforces)
        _ = try await zk.exists(path, watch: true)
        return path
    }
}
