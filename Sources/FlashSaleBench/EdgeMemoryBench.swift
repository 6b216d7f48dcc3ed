import ArgumentParser
import Cluster
import FlashSaleClient
import Foundation
import NIOPosix
import ServiceKit
import Wire

/// `flashsale-bench edge-rss`: the edge's resident memory with many open client connections. Starts one Edge
/// process registered in ZooKeeper (no sale needed: connections are what is measured), opens the connections,
/// pings over each so the edge holds a served connection, and reads VmRSS from /proc.
struct EdgeMemoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "edge-rss", abstract: "Edge memory with many open connections.")

    @Option var zookeeper: String
    @Option var connections = 10_000

    func run() async throws {
        let logger = ServiceRuntime.makeLogger(label: "edge-rss", level: .warning)
        var arguments = EdgeArguments.standalone(zooKeeper: zookeeper, root: ZooKeeperRoot.unique("edge_rss"))
        arguments.logLevel = "error"
        let endpoint = try await ServiceEndpoint.start(
            arguments, environment: ["FLASHSALE_SERVICE_TOKEN": Platform.newSecret()], name: "edge-rss")
        let edge = endpoint.process
        defer { Task { await edge.terminate() } }
        let (host, port) = (endpoint.host, endpoint.port)
        let idle = try Self.resident(edge)
        let idleParts = Self.parts(edge)

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let clients = (0..<connections).map { _ in EdgeClient(host: host, port: port, group: group, logger: logger) }
        for chunk in stride(from: 0, to: clients.count, by: 500) {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for client in clients[chunk..<min(chunk + 500, clients.count)] {
                    tasks.addTask { _ = try await client.ping() }
                }
                try await tasks.waitForAll()
            }
        }
        try await Task.sleep(for: .milliseconds(500))
        let loaded = try Self.resident(edge)
        print("edge-rss idle: \(idleParts); with the connections: \(Self.parts(edge))")
        print("edge-rss connections=\(connections) edge_rss_mib_idle=\(format(idle, decimals: 1)) edge_rss_mib=\(format(loaded, decimals: 1)) per_connection_kib=\(format((loaded - idle) * 1024 / Double(connections), decimals: 2))")
        for client in clients { await client.shutdown() }
        await edge.terminate()
        try await group.shutdownGracefully()
    }

    /// The anonymous (heap, stacks) and file-backed (binaries' pages) parts of the RSS, for the report.
    static func parts(_ edge: ManagedProcess) -> String {
        ["RssAnon", "RssFile"].map { "\($0)=\(residentMiB(pid: edge.pid, field: $0).map { format($0, decimals: 1) } ?? "?")MiB" }
            .joined(separator: " ")
    }

    static func resident(_ edge: ManagedProcess) throws -> Double {
        guard let mib = residentMiB(pid: edge.pid) else { throw ValidationError("no VmRSS for pid \(edge.pid)") }
        return mib
    }
}
