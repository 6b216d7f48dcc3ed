import Cluster
import Foundation
import Testing

/// A service whose dependency never answers while it starts (ZooKeeper or PostgreSQL unreachable) still stops on
/// SIGTERM: an operator's Ctrl-C or a supervisor's stop must not need SIGKILL. An edge once sat 47 minutes after
/// SIGTERM, its READY announcer waiting for a registration that could never come. And it stops when the harness that
/// started it goes (its lifeline's end closes, as the kernel closes it when the harness dies), stuck or not.
@Suite(.serialized, .timeLimit(.minutes(2)))
struct StuckStartupTests {
    static let nowhere = "127.0.0.1:1"
    static let environment = [
        "FLASHSALE_SERVICE_TOKEN": Platform.newSecret(), "FLASHSALE_OPERATOR_TOKEN": Platform.newSecret(),
    ]

    /// How the service is told to stop.
    enum Stop: CaseIterable, Sendable {
        case sigterm
        /// The starter's end of the lifeline closes.
        case starterGone
    }

    /// `mustWait`: the service keeps trying (rather than exiting with an error, which is also a way to stop).
    static func exits(
        _ arguments: some ServiceArguments, name: String, mustWait: Bool = true, on stop: Stop = .sigterm
    ) async throws {
        let process = try ManagedProcess.start(
            try RepoPaths.executable(type(of: arguments).product), arguments: arguments.list,
            environment: environment, name: name, lifeline: true)
        // Long enough to be inside its start-up, trying to reach the dependency.
        try await Task.sleep(for: .seconds(2))
        if mustWait { #expect(process.isRunning, "\(name) gave up by itself: \(process.tail())") }
        switch stop {
        case .sigterm: kill(process.pid, SIGTERM)
        case .starterGone: process.releaseLifeline()
        }
        let exited = (try? await process.waitForExit(timeout: .seconds(15))) != nil
        #expect(exited, "\(name) ignored \(stop): \(process.tail())")
        if !exited { await process.kill9() }
    }

    @Test(arguments: Stop.allCases)
    func anEdgeThatCannotReachZooKeeperStops(on stop: Stop) async throws {
        try await Self.exits(EdgeArguments.standalone(zooKeeper: Self.nowhere, root: "/stuck"), name: "stuck-edge", on: stop)
    }

    @Test(arguments: Stop.allCases)
    func aQuotaServiceThatCannotReachZooKeeperStops(on stop: Stop) async throws {
        try await Self.exits(
            QuotaArguments(zooKeeper: Self.nowhere, root: "/stuck", inventory: Self.nowhere), name: "stuck-quota", on: stop)
    }

    @Test func anInventoryThatCannotReachItsDatabaseStops() async throws {
        let dsn = "host=127.0.0.1 port=1 dbname=nowhere user=nobody connect_timeout=1"
        try await Self.exits(InventoryArguments(dsn: dsn), name: "stuck-inventory", mustWait: false)
    }
}
