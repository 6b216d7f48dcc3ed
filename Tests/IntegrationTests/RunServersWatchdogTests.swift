import Cluster
import Foundation
import Testing

/// A run's own PostgreSQL and ZooKeeper do not outlive the process that started them, however it ends.
@Suite(.timeLimit(.minutes(2)))
struct RunServersWatchdogTests {
    @Test func theServersOfAKilledOwnerStopAndItsFolderGoes() async throws {
        // The owner stands in for a bare `swift test` or a `flashsale sale` that is killed: a process that ends with
        // no hook run.
        let owner = try ManagedProcess.start(URL(fileURLWithPath: "/bin/sleep"), arguments: ["600"], name: "owner")
        let servers = try await RunServers.start("watchdog-test", owner: owner.pid)
        let folder = servers.folder.url.path
        #expect(Self.processes(mentioning: folder) >= 2, "PostgreSQL and ZooKeeper run from the folder")

        await owner.kill9()
        do {
            try await waitUntil(timeout: .seconds(60), what: "the servers to stop and the folder to go") {
                Self.processes(mentioning: folder) == 0 && !FileManager.default.fileExists(atPath: folder)
            }
        } catch {
            await servers.stop()  // not left to cost the suites after this one
            throw error
        }
    }

    /// `flashsale sale --keep-data`: kept servers outlive their owner (until the next run of the name stops them).
    @Test func keptServersOutliveTheirOwner() async throws {
        let owner = try ManagedProcess.start(URL(fileURLWithPath: "/bin/sleep"), arguments: ["600"], name: "owner")
        let servers = try await RunServers.start("watchdog-kept", owner: owner.pid)
        servers.keep()
        await owner.kill9()
        try await Task.sleep(for: .seconds(5))  // the watchdog looks every 2 s
        let folder = servers.folder.url.path
        let running = Self.processes(mentioning: folder)
        await servers.stop()
        #expect(running >= 2, "PostgreSQL and ZooKeeper still run")
    }

    /// Processes whose command line names `path` (the servers' data folders are on theirs).
    static func processes(mentioning path: String) -> Int {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.filter { entry in
            guard Int32(entry) != nil, let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { return false }
            return String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self).contains(path)
        }.count
    }
}
