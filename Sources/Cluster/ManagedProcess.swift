import Foundation
import ServiceKit
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A child process of the platform (a service, a server script): output (stdout and stderr) goes to a log file; every wait has a timeout.
///
/// Spawned with `posix_spawn` and reaped with `waitpid`, not Foundation's `Process`: that one learns of
/// an exit only when every holder of an inherited descriptor is gone, so a script that starts a daemon
/// (pg_ctl, the ZooKeeper JVM) would look alive forever. Descriptors above 2 are closed in the child.
public final class ManagedProcess: Sendable {
    public let name: String
    public let logURL: URL
    public let pid: pid_t
    /// nil while running; then the exit code, or 128 + signal number when killed by a signal.
    private let exit = Mutex<Int32?>(nil)
    /// This end of the child's lifeline (`ParentLifeline`), if it has one: closed by the kernel when this process
    /// ends however it ends, and then the child shuts down.
    private let lifeline: Mutex<CInt?>

    private init(name: String, pid: pid_t, logURL: URL, lifeline: CInt?) {
        self.name = name
        self.pid = pid
        self.logURL = logURL
        self.lifeline = Mutex(lifeline)
    }

    deinit {
        if isRunning {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            _ = waitpid(pid, &status, 0)
        }
        releaseLifeline()
    }

    /// Closes this end of the child's lifeline, as this process's end would: the child shuts down gracefully.
    public func releaseLifeline() {
        lifeline.withLock { descriptor in
            if let open = descriptor { close(open) }
            descriptor = nil
        }
    }

    /// The descriptor a child with a lifeline reads it on (`ParentLifeline.environmentKey` names it).
    static let lifelineDescriptor: CInt = 3

    /// Starts `executable` with `arguments`; `environment` is added to this process's environment. With `lifeline`
    /// (a service of the platform, which reads it with `ParentLifeline`), the child ends when this process ends: a
    /// harness killed -9 leaves no service behind.
    public static func start(
        _ executable: URL, arguments: [String] = [], environment: [String: String] = [:], name: String? = nil,
        lifeline: Bool = false
    ) throws -> ManagedProcess {
        let name = name ?? executable.lastPathComponent
        let serial = counter.add(1, ordering: .relaxed).newValue
        let logURL = RepoPaths.logDirectory.appendingPathComponent("\(name)-\(getpid())-\(serial).log")
        let logFD = open(logURL.path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o644)
        guard logFD >= 0 else { throw ClusterError.commandFailed("cannot open \(logURL.path)") }
        defer { close(logFD) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, logFD, 1)
        posix_spawn_file_actions_adddup2(&actions, logFD, 2)
        // Both ends close-on-exec here: only the child's copy of the read end (dup2 clears the flag) outlives exec.
        var pipeEnds: [CInt] = [-1, -1]
        if lifeline {
            // pipe2 is a GNU extension the Glibc module hides; a descriptor another thread's spawn inherits in the
            // moment before fcntl is closed in that child by closefrom.
            guard pipe(&pipeEnds) == 0 else { throw ClusterError.commandFailed("cannot make a lifeline pipe") }
            for end in pipeEnds { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
            posix_spawn_file_actions_adddup2(&actions, pipeEnds[0], lifelineDescriptor)
        }
        defer { if lifeline { close(pipeEnds[0]) } }
        if let closeFrom = addCloseFrom { _ = closeFrom(&actions, lifeline ? lifelineDescriptor + 1 : 3) }

        var env = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        env[ParentLifeline.environmentKey] = lifeline ? "\(lifelineDescriptor)" : nil
        let argv = ([executable.path] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        // A child starts with no signal blocked and every signal at its default: the test runner (and NIO) block
        // signals such as SIGALRM on their threads, and an inherited mask kept `timeout 3` in the server scripts
        // from ever firing, so a script could hang its caller.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable.path, &actions, &attributes, argv, envp)
        guard rc == 0 else {
            if lifeline { close(pipeEnds[1]) }
            throw ClusterError.commandFailed("cannot start \(executable.path): \(String(cString: strerror(rc)))")
        }
        return ManagedProcess(name: name, pid: pid, logURL: logURL, lifeline: lifeline ? pipeEnds[1] : nil)
    }

    /// Starts a built executable of this package by name (see `RepoPaths.executable`).
    public static func start(
        product: String, arguments: [String] = [], environment: [String: String] = [:], name: String? = nil
    ) throws -> ManagedProcess {
        try start(RepoPaths.executable(product), arguments: arguments, environment: environment, name: name)
    }

    private static let counter = Atomic<Int>(0)

    /// glibc 2.34+ has it, but Swift's Glibc module hides GNU extensions: look it up at run time.
    private static let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
    }()

    /// The exit status once the process has ended (reaping it), else nil.
    public var exitStatus: Int32? {
        exit.withLock { exit in
            if exit == nil {
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid {
                    let signal = status & 0x7F
                    exit = signal == 0 ? (status >> 8) & 0xFF : 128 + signal
                }
            }
            return exit
        }
    }

    public var isRunning: Bool { exitStatus == nil }

    public func log() -> String {
        (try? String(contentsOf: logURL, encoding: .utf8)) ?? ""
    }

    /// Waits until the log holds a line containing `text`; fails early if the process exits.
    public func waitForLine(containing text: String, timeout: Duration = .seconds(20)) async throws {
        try await waitUntil(timeout: timeout, what: "\(name) to print \"\(text)\"") {
            if self.log().split(separator: "\n").contains(where: { $0.contains(text) }) { return true }
            if let status = self.exitStatus {
                throw ClusterError.commandFailed("\(self.name) exited (\(status)) before printing \"\(text)\":\n\(self.tail())")
            }
            return false
        }
    }

    /// Waits until something accepts TCP connections on 127.0.0.1:`port`; fails early if the process exits.
    public func waitForPort(_ port: Int, timeout: Duration = .seconds(20)) async throws {
        try await waitUntil(timeout: timeout, what: "\(name) to listen on port \(port)") {
            if LocalPorts.isListening(port) { return true }
            if let status = self.exitStatus {
                throw ClusterError.commandFailed("\(self.name) exited (\(status)) before listening on \(port):\n\(self.tail())")
            }
            return false
        }
    }

    /// Waits for the process to exit by itself and returns its status.
    @discardableResult
    public func waitForExit(timeout: Duration = .seconds(20)) async throws -> Int32 {
        try await waitUntil(timeout: timeout, what: "\(name) to exit") { !self.isRunning }
        return exitStatus ?? -1
    }

    /// SIGTERM, then SIGKILL after `grace`; returns the exit status.
    @discardableResult
    public func terminate(grace: Duration = .seconds(5)) async -> Int32 {
        if let status = exitStatus { return status }
        kill(pid, SIGTERM)
        if (try? await waitForExit(timeout: grace)) == nil {
            kill(pid, SIGKILL)
            _ = try? await waitForExit(timeout: .seconds(5))
        }
        return exitStatus ?? -1
    }

    /// SIGKILL at once (a crash, for fault tests) and wait for it to be gone.
    public func kill9() async {
        guard isRunning else { return }
        kill(pid, SIGKILL)
        _ = try? await waitForExit(timeout: .seconds(5))
    }

    /// Stops the process (SIGSTOP) or lets it go on (SIGCONT): a hung peer, for fault tests.
    public func pause() { kill(pid, SIGSTOP) }
    public func resume() { kill(pid, SIGCONT) }

    public func tail(lines: Int = 30) -> String {
        log().split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }
}

/// Polls `condition` every 20 ms until it is true or `timeout` passes.
public func waitUntil(
    timeout: Duration, what: String, _ condition: @Sendable () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while true {
        if try await condition() { return }
        if ContinuousClock.now >= deadline { throw ClusterError.timeout("waiting \(timeout) for \(what)") }
        try await Task.sleep(for: .milliseconds(20))
    }
}

public enum LocalPorts {
    /// True if a TCP connect to 127.0.0.1:`port` succeeds.
    public static func isListening(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = loopback(port)
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    /// A port in 20000..<32000 that is free now: below the ephemeral range, so a test's own
    /// outgoing connections cannot take it before the server binds it.
    public static func free() -> Int {
        for _ in 0..<200 {
            let port = Int.random(in: 20000..<32000)
            if canBind(port) { return port }
        }
        return Int.random(in: 20000..<32000)
    }

    private static func canBind(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = loopback(port)
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    private static func loopback(_ port: Int) -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = in_addr_t(0x7F00_0001).bigEndian
        return addr
    }
}

/// The result of a short-lived command.
public struct CommandResult: Sendable {
    public var status: Int32
    public var output: String
}

/// Runs a command to completion (output of both streams to a temporary file, so a daemon it starts
/// cannot hold a pipe open), killing it after `timeout`.
public func runCommand(
    _ executable: String, _ arguments: [String], environment: [String: String] = [:], timeout: Duration = .seconds(60)
) async throws -> CommandResult {
    let process = try ManagedProcess.start(
        URL(fileURLWithPath: executable), arguments: arguments, environment: environment,
        name: "cmd-" + URL(fileURLWithPath: executable).lastPathComponent)
    do {
        let status = try await process.waitForExit(timeout: timeout)
        let output = process.log()
        try? FileManager.default.removeItem(at: process.logURL)
        return CommandResult(status: status, output: output)
    } catch {
        await process.kill9()
        throw ClusterError.timeout("\(executable) \(arguments.joined(separator: " ")): \(process.tail())")
    }
}

/// Runs `body`, failing with `ClusterError.timeout` if it takes longer than `timeout` (`body` is cancelled).
public func withTimeout<T: Sendable>(
    _ timeout: Duration, _ what: String = "operation", _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else {
            throw ClusterError.timeout("\(what) after \(timeout)")
        }
        return value
    }
}

/// Resident memory of process `pid` in MiB (`field` of /proc/PID/status: VmRSS in all, or its parts RssAnon, the
/// heap and stacks, and RssFile, the mapped binaries); nil when it cannot be read (the process is gone).
public func residentMiB(pid: pid_t, field: String = "VmRSS") -> Double? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("\(field):") }),
          let kib = Double(line.split(separator: " ").dropFirst().first ?? "")
    else { return nil }
    return kib / 1024
}
