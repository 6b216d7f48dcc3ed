import Cluster
import Foundation
import Testing
import TestSupport

extension OperatingTests {
    /// `flashsale status --watch` in a real terminal (tmux): it redraws in place every second, and Ctrl-C ends it
    /// cleanly with `status`'s exit code.
    @Suite(.serialized, .timeLimit(.minutes(2)))
    struct StatusWatchTests {
        @Test func redrawsUntilCtrlC() async throws {
            try await OperatedPlatform.with(edges: 1) { ops in
                try await ops.prepare(products: ["p1"], stock: 50, edges: 1)
                try await Terminal.with(command: [
                    try RepoPaths.executable("flashsale").path, "status", "--watch",
                    "--quota", ops.platform.quota.address, "--inventory", ops.platform.inventory.address,
                ]) { terminal in
                let first = try await terminal.waitFor("screen 1,")
                #expect(first.contains("rates") && first.contains("p1") && first.contains("products"), "\(first)")
                let third = try await terminal.waitFor("screen 3,")
                // Redrawn in place: the screen holds one status, not three stacked.
                #expect(!third.contains("screen 1,") && !third.contains("screen 2,"), "\(third)")
                #expect(third.components(separatedBy: "Flash sale status").count == 2, "\(third)")
                #expect(third.contains("attempts/s") && third.contains("in doubt"), "rates per edge from the second screen on:\n\(third)")
                try await terminal.sendKeys("C-c")
                let end = try await terminal.waitFor("EXIT ")
                #expect(end.contains("EXIT 0"), "\(end)")
                #expect(end.contains("screen 3,") || end.contains("screen 4,") || end.contains("screen 5,"),
                        "the last screen stays after the exit:\n\(end)")
                }
            }
        }

        /// Nothing answers: every screen says so, and Ctrl-C ends with `status`'s code for it, 3.
        @Test func exitCodeIsStatusCodeWhenServicesAreDown() async throws {
            try await Terminal.with(command: [
                try RepoPaths.executable("flashsale").path, "status", "--watch", "--timeout", "0.5",
                "--quota", "127.0.0.1:\(LocalPorts.free())", "--inventory", "127.0.0.1:\(LocalPorts.free())",
            ]) { terminal in
                let screen = try await terminal.waitFor("screen 2,")
                #expect(screen.contains("not answering: inventory service, quota service"), "\(screen)")
                try await terminal.sendKeys("C-c")
                let end = try await terminal.waitFor("EXIT ")
                #expect(end.contains("EXIT 3"), "\(end)")
            }
        }
    }
}

/// A tmux server of the test's own (its own socket), running one command in a 160 x 60 window; `EXIT <code>` is
/// printed when the command ends.
struct Terminal: Sendable {
    static let tmux = "/usr/bin/tmux"
    let socket: String

    /// Runs `body` with the terminal, and ends its tmux server afterwards.
    static func with(command: [String], _ body: (Terminal) async throws -> Void) async throws {
        let terminal = try await start(command: command)
        do {
            try await body(terminal)
        } catch {
            await terminal.stop()
            throw error
        }
        await terminal.stop()
    }

    private static func start(command: [String]) async throws -> Terminal {
        let terminal = Terminal(socket: "flashsale-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        let quoted = command.map { "'\($0)'" }.joined(separator: " ")
        let started = try await runCommand(tmux, [
            "-L", terminal.socket, "-f", "/dev/null", "new-session", "-d", "-s", "watch", "-x", "160", "-y", "60",
            // The shell traps SIGINT (Ctrl-C reaches the whole foreground group) so that it outlives the command and
            // prints its exit code; the command itself starts with SIGINT at its default, as from any shell.
            "sh -c \"trap : INT; \(quoted); echo EXIT \\$?; sleep 60\"",
        ], environment: ["TERM": "xterm-256color", "FLASHSALE_OPERATOR_TOKEN": "", "FLASHSALE_OPERATOR_TOKEN_FILE": ""])
        guard started.status == 0 else { throw ClusterError.commandFailed("tmux new-session: \(started.output)") }
        return terminal
    }

    /// What the window shows now.
    func capture() async throws -> String {
        try await runCommand(Self.tmux, ["-L", socket, "capture-pane", "-p", "-t", "watch"]).output
    }

    func sendKeys(_ keys: String...) async throws {
        _ = try await runCommand(Self.tmux, ["-L", socket, "send-keys", "-t", "watch"] + keys)
    }

    /// The screen once it shows `text`.
    func waitFor(_ text: String, timeout: Duration = .seconds(15)) async throws -> String {
        let deadline = ContinuousClock.now + timeout
        while true {
            let screen = try await capture()
            if screen.contains(text) { return screen }
            if ContinuousClock.now >= deadline {
                throw ClusterError.timeout("the terminal to show '\(text)'; it shows:\n\(screen)")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Ends this tmux server (and what runs in it).
    func stop() async {
        _ = try? await runCommand(Self.tmux, ["-L", socket, "kill-server"])
    }
}
