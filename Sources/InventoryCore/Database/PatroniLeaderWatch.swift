import Addressing
import Logging
import PostgresClient
import ServiceKit
import ServiceLifecycle
import Wire
import ZooKeeperClient

/// Keeps a `PostgresPrimaryLocator` on the primary Patroni's leader key names (`--patroni-zookeeper`,
/// `--patroni-leader-path`): the main database's connections go there, and leave a server once it is no longer the
/// leader. A multi-host connection string alone would keep using an orphaned primary (its Patroni killed, its
/// PostgreSQL still read-write and first in the list), where commits wait forever for a standby that left.
///
/// It reads the leader key and the leader's member node every `interval`. A store that cannot be read leaves the
/// last primary in place (with `failsafe_mode`, Patroni keeps a healthy primary through a ZooKeeper outage too);
/// no leader key, or one that does not decode, means no primary known: new connections wait for one (their
/// reconnects back off), and existing ones are kept. ZooKeeper calls are asynchronous and end with the session's
/// timeout when the store is unreachable, so no thread waits on them.
public struct PatroniLeaderWatch: Service {
    let zooKeeper: ZooKeeperClient
    let leaderPath: String
    public let locator: PostgresPrimaryLocator
    var interval: Duration = .milliseconds(200)
    var retryDelay = Backoff(initial: .milliseconds(200), max: .seconds(2))
    let logger: Logger

    /// Connects to the store and waits (up to `timeout`) for a primary: the inventory's first connections need one.
    public static func start(
        zooKeeper hosts: String, leaderPath: String, timeout: Duration, logger: Logger
    ) async throws -> PatroniLeaderWatch {
        let deadline = ContinuousClock.now + timeout
        let client = try await ZooKeeperClient.connect(
            hosts: hosts, sessionTimeout: .seconds(4), connectTimeout: timeout, logger: logger)
        let watch = PatroniLeaderWatch(
            zooKeeper: client, leaderPath: leaderPath, locator: PostgresPrimaryLocator(), logger: logger)
        var delays = watch.retryDelay.makeIterator()
        while true {
            do {
                if let primary = try await watch.read() {
                    watch.locator.update(primary)
                    logger.notice("database primary found", metadata: ["primary": "\(primary)", "leader": "\(leaderPath)"])
                    return watch
                }
            } catch {
                logger.warning("Patroni's leader unreadable", metadata: ["error": "\(error)"])
            }
            guard ContinuousClock.now < deadline else {
                await client.close()
                throw RPCError(.unavailable, "no PostgreSQL primary named at \(leaderPath) within \(timeout)")
            }
            try await Task.sleep(for: delays.next())
        }
    }

    public func run() async {
        await cancelWhenGracefulShutdown {
            var delays = retryDelay.makeIterator()
            var failures = 0
            while !Task.isCancelled {
                do {
                    let primary = try await read()
                    if primary != locator.current {
                        logger.notice("database primary changed", metadata: [
                            "from": "\(locator.current.map { "\($0)" } ?? "none")",
                            "to": "\(primary.map { "\($0)" } ?? "none")",
                        ])
                        locator.update(primary)
                    }
                    failures = 0
                    delays = retryDelay.makeIterator()
                    try? await Task.sleep(for: interval)
                } catch {
                    failures += 1
                    if failures == 1 || failures % 20 == 0 {
                        logger.warning("Patroni's leader unreadable: the last primary stays", metadata: [
                            "error": "\(error)", "failures": "\(failures)",
                        ])
                    }
                    if zooKeeper.sessionState == .expired { try? await zooKeeper.reconnect() }
                    try? await Task.sleep(for: delays.next())
                }
            }
        }
        await zooKeeper.close()
    }

    /// The primary the store names now; nil when there is no leader (or what is stored does not decode).
    func read() async throws -> HostPort? {
        guard let value = try await data(leaderPath), let member = PatroniLeader.memberName(leaderValue: value),
              let memberPath = PatroniLeader.memberPath(leaderPath: leaderPath, member: member),
              let json = try await data(memberPath)
        else { return nil }
        return PatroniLeader.endpoint(memberJSON: json)
    }

    private func data(_ path: String) async throws -> [UInt8]? {
        do {
            return try await zooKeeper.get(path).data
        } catch let error as ZooKeeperError where error.code == .noNode {
            return nil
        }
    }
}
