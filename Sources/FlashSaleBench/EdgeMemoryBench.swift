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
        let edge = try ManagedProcess.start(
            RepoPaths.executable("Edge"),
            arguments: ["--port", "0", "--zookeeper", zookeeper, "--root", "/edge_rss_\(UInt32.random(in: 0...UInt32.max))",
                        "--inventory", "127.0.0.1:1", "--quota", "127.0.0.1:1", "--log-level", "error"],
            environment: ["FLASHSALE_SERVICE_TOKEN": Platform.newSecret()], name: "edge-rss")
        defer { Task { await edge.terminate() } }
        let (host, port) = try await edge.waitForReady()
        let idle = try Self.residentMiB(pid: edge.pid)

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
        let loaded = try Self.residentMiB(pid: edge.pid)
        print("edge-rss connections=\(connections) edge_rss_mib_idle=\(format(idle, decimals: 1)) edge_rss_mib=\(format(loaded, decimals: 1)) per_connection_kib=\(format((loaded - idle) * 1024 / Double(connections), decimals: 2))")
        for client in clients { await client.shutdown() }
        await edge.terminate()
        try await group.shutdownGracefully()
    }

    static func residentMiB(pid: Int32) throws -> Double {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kib = Double(line.split(separator: " ").dropFirst().first ?? "")
        else { throw ValidationError("no VmRSS for pid \(pid)") }
        return kib / 1024
    }
}
