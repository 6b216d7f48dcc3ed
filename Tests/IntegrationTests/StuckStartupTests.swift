import Cluster
import Foundation
import Testing

/// A service whose dependency never answers while it starts (ZooKeeper or PostgreSQL unreachable) still stops on
/// SIGTERM: an operator's Ctrl-C or a supervisor's stop must not need SIGKILL. An edge once sat 47 minutes after
/// SIGTERM, its READY announcer waiting for a registration that could never come.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct StuckStartupTests {
    static let nowhere = "127.0.0.1:1"
    static let environment = [
        "FLASHSALE_SERVICE_TOKEN": Platform.newSecret(), "FLASHSALE_OPERATOR_TOKEN": Platform.newSecret(),
    ]

    /// `mustWait`: the service keeps trying (rather than exiting with an error, which is also a way to stop).
    static func exitsOnSIGTERM(_ arguments: some ServiceArguments, name: String, mustWait: Bool = true) async throws {
        let process = try ManagedProcess.start(
            try RepoPaths.executable(type(of: arguments).product), arguments: arguments.list,
            environment: environment, name: name)
        // Long enough to be inside its start-up, trying to reach the dependency.
        try await Task.sleep(for: .seconds(2))
        if mustWait { #expect(process.isRunning, "\(name) gave up by itself: \(process.tail())") }
        kill(process.pid, SIGTERM)
        let exited = (try? await process.waitForExit(timeout: .seconds(15))) != nil
        #expect(exited, "\(name) ignored SIGTERM: \(process.tail())")
        if !exited { await process.kill9() }
    }

    @Test func anEdgeThatCannotReachZooKeeperStopsOnSIGTERM() async throws {
        try await Self.exitsOnSIGTERM(EdgeArguments.standalone(zooKeeper: Self.nowhere, root: "/stuck"), name: "stuck-edge")
    }

    @Test func aQuotaServiceThatCannotReachZooKeeperStopsOnSIGTERM() async throws {
        try await Self.exitsOnSIGTERM(
            QuotaArguments(zooKeeper: Self.nowhere, root: "/stuck", inventory: Self.nowhere), name: "stuck-quota")
    }

    @Test func anInventoryThatCannotReachItsDatabaseStops() async throws {
        let dsn = "host=127.0.0.1 port=1 dbname=nowhere user=nobody connect_timeout=1"
        try await Self.exitsOnSIGTERM(InventoryArguments(dsn: dsn), name: "stuck-inventory", mustWait: false)
    }
}
