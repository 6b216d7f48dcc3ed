import Foundation

/// Why starting or waiting for a process of the platform failed.
public enum ClusterError: Error, CustomStringConvertible {
    case notFound(String)
    case timeout(String)
    case commandFailed(String)

    public var description: String {
        switch self {
        case .notFound(let s): "not found: \(s)"
        case .timeout(let s): "timed out: \(s)"
        case .commandFailed(let s): "command failed: \(s)"
        }
    }
}

/// Where the checkout and the built executables are.
public enum RepoPaths {
    /// The checkout: the first folder holding `Package.swift` above the running executable (built in its
    /// `.build/`), else above this source file.
    public static let root: URL = {
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"), exe.contains("/.build/") {
            var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
            while dir.path != "/" {
                if FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) { return dir }
                dir.deleteLastPathComponent()
            }
        }
        var dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while dir.path != "/" {
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) { return dir }
            dir.deleteLastPathComponent()
        }
        return URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
    }()

    public static var scripts: URL { root.appendingPathComponent("scripts") }

    /// The build products folder (`.build/<triple>/debug` or `release`): where the running binary lives,
    /// so tests and the CLI start the executables of the same build. `FLASHSALE_BIN_DIR` overrides.
    public static let binDirectory: URL = {
        if let dir = ProcessInfo.processInfo.environment["FLASHSALE_BIN_DIR"], !dir.isEmpty {
            return URL(fileURLWithPath: dir)
        }
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"),
           exe.contains("/.build/")
        {
            return URL(fileURLWithPath: exe).deletingLastPathComponent()
        }
        return root.appendingPathComponent(".build/debug")
    }()

    /// A built executable (`Edge`, `InventoryService`, `QuotaService`, `flashsale`).
    public static func executable(_ name: String) throws -> URL {
        let url = binDirectory.appendingPathComponent(name)
        guard FileManager.default.isExecutableFile(atPath: url.path) else {
            throw ClusterError.notFound("\(url.path) (run `swift build --build-tests` first)")
        }
        return url
    }

    /// Logs of the processes started here: `<checkout>/.data/logs` (ignored by git).
    public static let logDirectory: URL = {
        let dir = root.appendingPathComponent(".data/logs")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }()
}
