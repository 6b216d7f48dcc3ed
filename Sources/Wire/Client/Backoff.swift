/// Exponential backoff with jitter, as a value: `initial`, then each delay `multiplier` times the last, capped at
/// `max`, every delay after the first moved by up to `jitter` of itself either way (so a fleet of waiters spreads
/// out instead of retrying in lock-step). Modelled on grpc-swift-nio-transport's `Backoff`.
public struct Backoff: Sendable, Hashable {
    public var initial: Duration
    public var max: Duration
    public var multiplier: Double
    /// 0...1: the share of a delay it may move by.
    public var jitter: Double

    public init(initial: Duration, max: Duration, multiplier: Double = 2, jitter: Double = 0.2) {
        self.initial = initial
        self.max = Swift.max(initial, max)
        self.multiplier = Swift.max(1, multiplier)
        self.jitter = Swift.min(1, Swift.max(0, jitter))
    }

    public func makeIterator() -> Iterator { Iterator(self) }

    /// The delays in order; never ends (so not an `IteratorProtocol`).
    public struct Iterator: Sendable, Hashable {
        private var first = true
        private var current: Double
        private let maxSeconds: Double
        private let multiplier: Double
        private let jitter: Double

        init(_ backoff: Backoff) {
            self.current = Self.seconds(backoff.initial)
            self.maxSeconds = Self.seconds(backoff.max)
            self.multiplier = backoff.multiplier
            self.jitter = backoff.jitter
        }

        public mutating func next() -> Duration {
            var random = SystemRandomNumberGenerator()
            return self.next(using: &random)
        }

        public mutating func next<Random: RandomNumberGenerator>(using random: inout Random) -> Duration {
            if self.first {
                self.first = false
                return Self.duration(self.current)
            }
            self.current = Swift.min(self.current * self.multiplier, self.maxSeconds)
            let spread = self.jitter * self.current
            let delay = spread > 0 ? self.current + Double.random(in: -spread...spread, using: &random) : self.current
            return Self.duration(delay)
        }

        private static func seconds(_ duration: Duration) -> Double {
            Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        }

        private static func duration(_ seconds: Double) -> Duration { .nanoseconds(Int64(seconds * 1e9)) }
    }
}
