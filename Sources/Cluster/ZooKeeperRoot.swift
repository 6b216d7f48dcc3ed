import ZooKeeperClient

/// The ZooKeeper root of one run (a test, a sale, a benchmark): the platform's nodes live under it, apart from
/// every other run's on the same server.
public enum ZooKeeperRoot {
    /// `/<prefix>_<random>`.
    public static func unique(_ prefix: String) -> String {
        "/\(prefix)_\(UInt64.random(in: 0...UInt64.max))"
    }
}

extension ZooKeeperClient {
    /// Deletes `path` and everything under it; what is already gone is skipped, any other error thrown.
    public func deleteTree(_ path: String) async throws {
        do {
            for child in try await children(path) { try await deleteTree(path + "/" + child) }
            try await delete(path)
        } catch let error as ZooKeeperError where error.code == .noNode {
            return
        }
    }
}
