import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A folder of this process's own, `<checkout>/.data/runs/<name>-<pid>`: the data of the servers one run starts,
/// which no other run (another checkout, a benchmark beside a test run) shares or stops.
public struct RunFolder: Sendable {
    public let url: URL

    /// Where run folders live; /tmp when the checkout's path would make PostgreSQL's socket path too long.
    static var parent: URL {
        let inCheckout = RepoPaths.root.appendingPathComponent(".data/runs")
        return inCheckout.path.count < 48 ? inCheckout : URL(fileURLWithPath: "/tmp/flashsale-runs")
    }

    /// This process's folder named `name`.
    public static func mine(_ name: String) -> RunFolder {
        RunFolder(url: parent.appendingPathComponent("\(name)-\(getpid())"))
    }

    /// Folders named `name` of runs whose process is gone: what a killed run left behind.
    public static func abandoned(_ name: String) -> [RunFolder] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: parent.path)) ?? []
        return entries.compactMap { entry in
            guard entry.hasPrefix(name + "-"), let pid = Int32(entry.dropFirst(name.count + 1)), pid != getpid(),
                  kill(pid, 0) != 0, errno == ESRCH
            else { return nil }
            return RunFolder(url: parent.appendingPathComponent(entry))
        }
    }

    public func path(_ component: String) -> String { url.appendingPathComponent(component).path }

    public func remove() { try? FileManager.default.removeItem(at: url) }
}

/// PostgreSQL and ZooKeeper of one run's own, in its `RunFolder`, on free ports picked once (a restart keeps them).
/// Servers a killed run of the same name left are stopped first.
public struct RunServers: Sendable {
    public let folder: RunFolder
    public let postgresEnvironment: [String: String]
    public let zooKeeperEnvironment: [String: String]
    /// The owner's DSN of the `postgres` database.
    public let adminDSN: String
    public let zooKeeper: String

    /// `cleanUp` stops whatever else the run keeps in its folder (a ZooKeeper ensemble), for a killed run's folder.
    /// Once `owner` (this process by default) is gone the servers are stopped (`stopWhenGone`).
    public static func start(
        _ name: String, owner: pid_t = getpid(), cleanUp: @Sendable (RunFolder) async -> Void = { _ in }
    ) async throws -> RunServers {
        for old in RunFolder.abandoned(name) {
            await cleanUp(old)
            await ServerScript.zookeeper.stop(environment: ["FLASHSALE_ZK_BASE": old.path("zookeeper")])
            await ServerScript.postgres.stop(environment: ["FLASHSALE_PG_BASE": old.path("postgres")])
            old.remove()
        }
        let folder = RunFolder.mine(name)
        try FileManager.default.createDirectory(at: folder.url, withIntermediateDirectories: true)
        let postgresPort = LocalPorts.free()
        var zooKeeperPort = LocalPorts.free()
        while zooKeeperPort == postgresPort { zooKeeperPort = LocalPorts.free() }
        let postgres = ["FLASHSALE_PG_PORT": "\(postgresPort)", "FLASHSALE_PG_BASE": folder.path("postgres")]
        let zooKeeper = ["FLASHSALE_ZK_PORT": "\(zooKeeperPort)", "FLASHSALE_ZK_BASE": folder.path("zookeeper")]
        // Before the servers start, so that nothing of them outlives this process, however it ends.
        await stopWhenGone(owner: owner, folder: folder)
        do {
            let (dsn, _) = try await ServerScript.postgres.ensureRunning(environment: postgres)
            let (hosts, _) = try await ServerScript.zookeeper.ensureRunning(environment: zooKeeper)
            return RunServers(
                folder: folder, postgresEnvironment: postgres, zooKeeperEnvironment: zooKeeper, adminDSN: dsn, zooKeeper: hosts)
        } catch {
            await ServerScript.zookeeper.stop(environment: zooKeeper)
            await ServerScript.postgres.stop(environment: postgres)
            folder.remove()
            throw error
        }
    }

    /// Stops the folder's servers and removes it once `owner` is gone, however it went: a bare `swift test` has no
    /// hook at its end and a kill -9 runs none, and servers left running cost whoever comes next (a benchmark above
    /// all) until the next run of the same name stops them (`abandoned`). A shell in a session of its own (so a
    /// Ctrl-C of the owner's terminal spares it) polls the owner every 2 s; stopping what is already stopped, after
    /// a clean `stop()`, does nothing; `keep()` spares them.
    static func stopWhenGone(owner: pid_t, folder: RunFolder) async {
        func quoted(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let script = """
            while kill -0 \(owner) 2>/dev/null; do sleep 2; done
            [ -e \(quoted(folder.path(keepMarker))) ] && exit 0
            FLASHSALE_ZK_BASE=\(quoted(folder.path("zookeeper"))) bash \(quoted(ServerScript.zookeeper.path)) stop
            FLASHSALE_PG_BASE=\(quoted(folder.path("postgres"))) bash \(quoted(ServerScript.postgres.path)) stop
            rm -rf \(quoted(folder.url.path))
            """
        guard let setsid = try? ManagedProcess.start(
            URL(fileURLWithPath: "/usr/bin/setsid"), arguments: ["-f", "/bin/sh", "-c", script], name: "run-watchdog")
        else { return }
        // `setsid -f` forks the shell and exits at once: reap it (the shell lives on, reparented).
        _ = try? await setsid.waitForExit(timeout: .seconds(10))
    }

    /// In the folder, it says the servers are to outlive their owner (`keep`).
    static let keepMarker = "keep"

    /// The servers outlive this process (`flashsale sale --keep-data`): the owner's end does not stop them; the next
    /// run of the same name does (`abandoned`).
    public func keep() {
        _ = FileManager.default.createFile(atPath: folder.path(Self.keepMarker), contents: nil)
    }

    /// Stops both servers and removes the folder.
    public func stop() async {
        await ServerScript.zookeeper.stop(environment: zooKeeperEnvironment)
        await ServerScript.postgres.stop(environment: postgresEnvironment)
        folder.remove()
    }

    public func restartPostgres() async throws {
        await ServerScript.postgres.stop(environment: postgresEnvironment)
        try await Task.sleep(for: .milliseconds(300))
        _ = try await ServerScript.postgres.ensureRunning(environment: postgresEnvironment)
    }

    public func restartZooKeeper() async throws {
        await ServerScript.zookeeper.stop(environment: zooKeeperEnvironment)
        try await Task.sleep(for: .seconds(1))
        _ = try await ServerScript.zookeeper.ensureRunning(environment: zooKeeperEnvironment)
    }
}
