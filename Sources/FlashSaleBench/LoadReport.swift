import Histogram
import NIOCore
import Synchronization

/// Latencies and counts of one load run, merged from every connection's own histogram at the end.
final class LoadRecorder: Sendable {
    private let state = Mutex(State())

    private struct State {
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        var completed = 0
        var failed = 0
    }

    func merge(_ histogram: Histogram<UInt64>, completed: Int, failed: Int) {
        state.withLock { state in
            state.histogram.add(histogram)
            state.completed += completed
            state.failed += failed
        }
    }

    var completed: Int { state.withLock { $0.completed } }
    var failed: Int { state.withLock { $0.failed } }

    /// Latency percentile in milliseconds (recorded in microseconds).
    func percentileMs(_ p: Double) -> Double {
        state.withLock { Double($0.histogram.valueAtPercentile(p)) / 1000 }
    }
}

func newLatencyHistogram() -> Histogram<UInt64> {
    Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
}

func format(_ value: Double, decimals: Int = 2) -> String {
    var multiplier = 1.0
    for _ in 0..<decimals { multiplier *= 10 }
    let rounded = (value * multiplier).rounded() / multiplier
    return "\(rounded)"
}
