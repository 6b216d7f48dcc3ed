import Foundation

/// A one-line progress bar on standard error, redrawn in place; silent when standard error is not a terminal
/// (CI logs get the final report only).
struct ProgressBar {
    let total: Int
    let isTerminal = isatty(STDERR_FILENO) != 0
    let started = Date()

    func draw(done: Int) {
        guard isTerminal else { return }
        let fraction = total > 0 ? min(1, Double(done) / Double(total)) : 1
        let width = 40
        let filled = Int(fraction * Double(width))
        let elapsed = max(Date().timeIntervalSince(started), 0.001)
        let rate = Int(Double(done) / elapsed)
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        FileHandle.standardError.write(
            "\r[\(bar)] \(Int(fraction * 100))%  \(done.formatted())/\(total.formatted()) attempts  \(rate.formatted())/s ".data(using: .utf8)!)
    }

    func finish() {
        guard isTerminal else { return }
        FileHandle.standardError.write("\n".data(using: .utf8)!)
    }
}
