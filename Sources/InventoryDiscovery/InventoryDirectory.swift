import Logging
import ServiceLifecycle
import Wire
import ZooKeeperClient

/// Watches `<root>/inventories/` and hands the registered replicas to `InventoryReplicas`, as a `Service`: its own
/// ZooKeeper session (reads only: the registrations are world-readable), the children watched, every change re-read.
/// ZooKeeper unreachable or the session expired: the replicas keep the last set read, and the session comes back
/// with `Backoff`. Clients of replicas that left are closed after a grace.
public struct InventoryDirectory: Service {
    let zooKeeper: String
    let root: String
    let replicas: InventoryReplicas
    let logger: Logger

    public init(zooKeeper: String, root: String, replicas: InventoryReplicas, logger: Logger) {
        self.zooKeeper = zooKeeper
        self.root = root
        self.replicas = replicas
        self.logger = logger
    }

    static let retry = Backoff(initial: .milliseconds(100), max: .seconds(2))

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.follow() }
                group.addTask {
                    // Clients of replicas gone for a while are closed: their calls in flight had time to end.
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .seconds(5))
                        await self.replicas.closeDeparted(grace: .seconds(15))
                    }
                }
            }
        }
    }

    /// Sessions one after another, each watching the set until it expires.
    private func follow() async {
        var delays = Self.retry.makeIterator()
        while !Task.isCancelled {
            do {
                let zk = try await ZooKeeperClient.connect(
                    hosts: zooKeeper, sessionTimeout: .seconds(10), connectTimeout: .seconds(5), logger: logger)
                delays = Self.retry.makeIterator()
                do {
                    try await watch(zk)
                } catch {
                    await zk.close()
                    throw error
                }
                await zk.close()
            } catch is CancellationError {
                return
            } catch {
                logger.warning("inventory directory: zookeeper failed; retrying", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: delays.next())
        }
    }

    /// Reads the set, then again on every change, until the session expires (thrown, to start a new one).
    private func watch(_ zk: ZooKeeperClient) async throws {
        let folder = InventoryRegistration.folder(root: root)
        let events = zk.events()
        try await read(zk, folder)
        for await event in events {
            try Task.checkCancellation()
            switch event {
            case .session(.expired), .session(.authFailed):
                throw ZooKeeperError(code: .sessionExpired, message: "session expired")
            case .session(.connected), .childrenChanged(folder), .created(folder), .deleted(folder):
                // Reconnected (watches may have fired unseen) or the set changed: read it again.
                do { try await read(zk, folder) } catch {
                    logger.debug("inventory directory: read failed", metadata: ["error": "\(error)"])
                }
            default:
                break
            }
        }
    }

    private func read(_ zk: ZooKeeperClient, _ folder: String) async throws {
        let names: [String]
        do {
            names = try await zk.children(folder, watch: true)
        } catch let error as ZooKeeperError where error.code == .noNode {
            _ = try await zk.exists(folder, watch: true)  // no replica registered yet: wait for the folder
            return
        }
        var nodes: [(name: String, data: [UInt8])] = []
        for name in names {
            do {
                nodes.append((name, try await zk.get(folder + "/" + name).data))
            } catch let error as ZooKeeperError where error.code == .noNode {
                continue  // gone meanwhile
            }
        }
        let (addresses, ignored) = InventoryRegistration.decodeSet(nodes)
        if ignored > 0 {
            logger.warning("inventory directory: nodes ignored", metadata: ["ignored": "\(ignored)", "folder": "\(folder)"])
        }
        replicas.discovered(addresses)
    }
}
