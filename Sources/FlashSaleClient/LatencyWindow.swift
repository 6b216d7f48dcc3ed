import Histogram
import Synchronization

/// The latencies of a swarm's attempts completed since the last `take()`: what a sampler reads every 200 ms or so
/// while a sale runs (`flashsale sale --html`). Lanes record into shards (one lock each, picked by lane), so lanes on
/// different event loops rarely wait for one another.
public final class LatencyWindow: Sendable {
    final class Shard: Sendable {
        let histogram = Mutex(LatencyWindow.empty())
    }

    private let shards: [Shard]

    public init(shards: Int = 8) {
        self.shards = (0..<max(1, shards)).map { _ in Shard() }
    }

    static func empty() -> Histogram<UInt64> {
        Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .two)
    }

    /// One completed attempt's latency in microseconds; `lane` picks the shard.
    func record(_ micros: UInt64, lane: Int) {
        shards[lane % shards.count].histogram.withLock { _ = $0.record(micros) }
    }

    /// Latencies recorded since the last take (microseconds), and a fresh window.
    public func take() -> Histogram<UInt64> {
        var all = Self.empty()
        for shard in shards {
            let taken = shard.histogram.withLock { histogram in
                defer { histogram = Self.empty() }
                return histogram
            }
            if taken.totalCount > 0 { all.add(taken) }
        }
        return all
    }
}
