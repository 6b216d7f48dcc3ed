#if canImport(Glibc)
import Glibc
#endif
import Cluster
import Foundation
import Logging
import ServiceKit
import Synchronization
import Testing
import TestSupport

/// The services do not outlive the harness that started them, however it ends (`ParentLifeline`): a `flashsale sale`
/// killed -9 left its inventory, quota service and edges running, retrying a ZooKeeper that was gone.
@Suite(.timeLimit(.minutes(2)))
struct ServiceLifelineTests {
    @Test func theServicesOfAKilledSaleShutDown() async throws {
        let environment = [
            "FLASHSALE_PG_DSN": try await TestServers.postgresDSN(), "FLASHSALE_ZK": try await TestServers.zooKeeperHosts(),
        ]
        // A sale far too long to end by itself: it sells out at once and then keeps asking.
        let sale = try ManagedProcess.start(
            product: "flashsale",
            arguments: ["sale", "--products", "1", "--stock", "10", "--attempts", "100000000", "--connections", "1",
                        "--depth", "1", "--edges", "1", "--log-level", "warning"],
            environment: environment, name: "sale-to-kill")
        let services = Mutex<[pid_t]>([])
        do {
            try await waitUntil(timeout: .seconds(60), what: "the sale's inventory, quota service and edge") {
                let found = Self.children(of: sale.pid)
                services.withLock { $0 = found }
                return found.count >= 3
            }
        } catch {
            await sale.kill9()
            throw error
        }
        let pids = services.withLock { $0 }
        await sale.kill9()
        try await waitUntil(timeout: .seconds(30), what: "the services to end") {
            pids.allSatisfy { !Self.isAlive($0) }
        }
        // They shut down (each says why), not killed: the edge's registration and final report went out as on SIGTERM.
        let logs = try FileManager.default.contentsOfDirectory(atPath: RepoPaths.logDirectory.path)
            .filter { $0.contains("-\(sale.pid)-") }
        #expect(logs.count >= 3, "the services' logs: \(logs)")
        for log in logs {
            let text = (try? String(contentsOfFile: RepoPaths.logDirectory.appendingPathComponent(log).path, encoding: .utf8)) ?? ""
            #expect(text.contains("the process that started this service is gone"), "\(log)")
        }
    }

    @Test func theStartersEndClosingRunsTheAction() async throws {
        var ends: [CInt] = [-1, -1]
        #expect(pipe(&ends) == 0)
        let gone = Atomic<Int>(0)
        await ParentLifeline.watch(environment: [ParentLifeline.environmentKey: "\(ends[0])"], logger: Self.logger) {
            gone.add(1, ordering: .relaxed)
        }
        try await Task.sleep(for: .milliseconds(100))
        #expect(gone.load(ordering: .relaxed) == 0, "nothing before the end")
        close(ends[1])  // as the kernel does when the starter ends
        try await waitUntil(timeout: .seconds(10), what: "the lifeline's action") { gone.load(ordering: .relaxed) == 1 }
    }

    @Test func aDescriptorThatIsNoPipeIsNotWatched() async throws {
        let file = open("/dev/null", O_RDONLY)
        defer { close(file) }
        let gone = Atomic<Int>(0)
        await ParentLifeline.watch(environment: [ParentLifeline.environmentKey: "\(file)"], logger: Self.logger) {
            gone.add(1, ordering: .relaxed)
        }
        try await Task.sleep(for: .milliseconds(300))
        #expect(gone.load(ordering: .relaxed) == 0)
        #expect(fcntl(file, F_GETFD) >= 0, "the descriptor is left alone")
    }

    static let logger = Logger(label: "lifeline-test")

    /// Processes whose parent is `pid` (field 4 of /proc/PID/stat, after the command name in parentheses).
    static func children(of pid: pid_t) -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { entry -> pid_t? in
            guard let child = pid_t(entry), let fields = stat(of: child), fields.count > 1, pid_t(fields[1]) == pid else { return nil }
            return child
        }
    }

    /// Running, or stopped: not gone and not a zombie nobody reaped yet.
    static func isAlive(_ pid: pid_t) -> Bool {
        guard let fields = stat(of: pid), let state = fields.first else { return false }
        return state != "Z" && state != "X"
    }

    /// The fields of /proc/PID/stat after the command name: state, parent, ...
    private static func stat(of pid: pid_t) -> [String]? {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/stat") else { return nil }
        let text = String(decoding: data, as: UTF8.self)
        guard let end = text.lastIndex(of: ")") else { return nil }
        return text[text.index(after: end)...].split(separator: " ").map(String.init)
    }
}
