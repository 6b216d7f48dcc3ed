import Dispatch
import Foundation
import Proto
import Synchronization

/// `flashsale status --watch`: the status screen redrawn every `interval` until SIGINT or SIGTERM, like top, with
/// each edge's rates since the screen before. Returns the last screen's exit code (0, or 3 when something did not
/// answer), as `status` would have exited then.
struct StatusWatch {
    let interval: Double
    let read: () async -> StatusCommand.Screen

    /// Clear the screen and put the cursor home; at the end, show the cursor again.
    static let clear = "\u{1B}[H\u{1B}[2J"
    static let hideCursor = "\u{1B}[?25l"
    static let showCursor = "\u{1B}[?25h"

    func run() async -> Int32 {
        // Ctrl-C (or SIGTERM) ends the loop, not the process: the terminal is restored and the exit code is the
        // last screen's. A screen being read is finished first (each call is bounded by --timeout).
        let stop = StopFlag()
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let sources = [SIGINT, SIGTERM].map { number in
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { stop.set() }
            source.resume()
            return source
        }
        defer { sources.forEach { $0.cancel() } }

        let pause = Duration.milliseconds(Int64(interval * 1000))
        var previous: (edges: [EdgeView], at: ContinuousClock.Instant)?
        var code: Int32 = 0
        var count = 0
        write(Self.hideCursor)
        while !stop.isSet {
            let started = ContinuousClock.now
            let screen = await read()
            let now = ContinuousClock.now
            count += 1
            code = screen.down.isEmpty ? 0 : 3
            let rates = EdgeRates(
                previous: previous?.edges, current: screen.edges, seconds: previous.map { (now - $0.at).seconds } ?? 0)
            previous = (screen.edges, now)
            let stamp = Date().formatted(.iso8601.time(includingFractionalSeconds: false).timeSeparator(.colon))
            var text = Self.clear + "flashsale status --watch  \(stamp) UTC  screen \(count), every \(Self.seconds(interval)), Ctrl-C to stop\n\n"
            text += rates.render() + "\n\n" + screen.text + "\n"
            if !screen.down.isEmpty { text += "\nnot answering: \(screen.down.joined(separator: ", "))\n" }
            write(text)
            // Short naps, so Ctrl-C ends the wait at once.
            while !stop.isSet, ContinuousClock.now < started + pause { try? await Task.sleep(for: .milliseconds(20)) }
        }
        write(Self.showCursor + "\n")
        return code
    }

    static func seconds(_ value: Double) -> String {
        value == value.rounded() ? "\(Int(value)) s" : String(format: "%.1f s", value)
    }

    private func write(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}

/// Each edge's rates between two screens (per second), and what it holds in doubt now. Pure: the counters in, the
/// table out.
struct EdgeRates {
    struct Row: Equatable {
        var edge: UInt32
        var attempts: Double
        var purchased: Double
        var soldOut: Double
        var shed: Double
        var errors: Double
        var inDoubt: UInt64
    }

    /// nil before the second screen (no interval to measure over).
    var rows: [Row]?

    init(previous: [EdgeView]?, current: [EdgeView], seconds: Double) {
        guard let previous, seconds > 0 else {
            rows = nil
            return
        }
        let before = Dictionary(previous.compactMap { view in (try? view.stats.get()).map { (view.id, $0) } }) { $1 }
        rows = current.compactMap { view -> Row? in
            guard let now = try? view.stats.get() else { return nil }
            let then = before[view.id] ?? EdgeStatsResponse()
            // A restarted edge's counters start again from 0: its rate is from 0, never negative.
            func rate(_ key: KeyPath<EdgeStatsResponse, UInt64>) -> Double {
                let delta = now[keyPath: key] >= then[keyPath: key] ? now[keyPath: key] - then[keyPath: key] : now[keyPath: key]
                return Double(delta) / seconds
            }
            return Row(
                edge: view.id, attempts: rate(\.attempts), purchased: rate(\.purchased), soldOut: rate(\.soldOut),
                shed: rate(\.shed), errors: rate(\.errors), inDoubt: now.inDoubt)
        }
    }

    func render() -> String {
        guard let rows else { return "rates\n  (from the next screen on)" }
        var table = TextTable("edge", "attempts/s", "purchased/s", "sold out/s", "shed/s", "errors/s", "in doubt", indent: "  ")
        func perSecond(_ value: Double) -> String { Int(value.rounded()).grouped }
        for row in rows {
            table.add(
                String(row.edge), perSecond(row.attempts), perSecond(row.purchased), perSecond(row.soldOut),
                perSecond(row.shed), perSecond(row.errors), row.inDoubt.grouped)
        }
        let total = rows.reduce(into: Row(edge: 0, attempts: 0, purchased: 0, soldOut: 0, shed: 0, errors: 0, inDoubt: 0)) {
            $0.attempts += $1.attempts
            $0.purchased += $1.purchased
            $0.soldOut += $1.soldOut
            $0.shed += $1.shed
            $0.errors += $1.errors
            $0.inDoubt += $1.inDoubt
        }
        table.add(
            "all", perSecond(total.attempts), perSecond(total.purchased), perSecond(total.soldOut), perSecond(total.shed),
            perSecond(total.errors), total.inDoubt.grouped)
        return "rates\n" + table.render()
    }
}

/// Set once by a signal handler, read by the loop.
final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    var isSet: Bool { flag.load(ordering: .acquiring) }
    func set() { flag.store(true, ordering: .releasing) }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
