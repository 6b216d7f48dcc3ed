/// What a sale looked like over time: samples taken about every 200 ms while it ran, and the moments something
/// happened (an operator action, a fault, a phase of the sale). Times are seconds since the sale's clock started.
public struct Timeline: Codable, Sendable, Equatable {
    public struct Sample: Codable, Sendable, Equatable {
        public var t: Double
        /// Attempts per second since the sample before, by outcome (purchased, sold_out, shed, already_purchased,
        /// error), as the edges counted them.
        public var attemptsPerSecond: [String: Double]
        /// The buyers' latency of the attempts that completed since the sample before (nil: none completed).
        public var latencyP50Ms: Double?
        public var latencyP99Ms: Double?
        /// Remaining stock per product (the database's).
        public var remaining: [String: Int64]
        /// Attempts per second at each edge, and the units each edge holds and can still sell (all products).
        public var edgeAttemptsPerSecond: [String: Double]
        public var edgeQuotaLeft: [String: Int64]

        public init(
            t: Double, attemptsPerSecond: [String: Double] = [:], latencyP50Ms: Double? = nil, latencyP99Ms: Double? = nil,
            remaining: [String: Int64] = [:], edgeAttemptsPerSecond: [String: Double] = [:], edgeQuotaLeft: [String: Int64] = [:]
        ) {
            self.t = t
            self.attemptsPerSecond = attemptsPerSecond
            self.latencyP50Ms = latencyP50Ms
            self.latencyP99Ms = latencyP99Ms
            self.remaining = remaining
            self.edgeAttemptsPerSecond = edgeAttemptsPerSecond
            self.edgeQuotaLeft = edgeQuotaLeft
        }
    }

    public struct Event: Codable, Sendable, Equatable {
        public enum Kind: String, Codable, Sendable {
            /// Something an operator did (a product created, the lottery set, stock raised).
            case action
            /// Something that broke or was broken on purpose.
            case fault
            /// A phase of the sale (buyers start, a product sells out, buyers done).
            case phase
        }

        public var t: Double
        public var kind: Kind
        public var label: String

        public init(t: Double, kind: Kind, label: String) {
            self.t = t
            self.kind = kind
            self.label = label
        }
    }

    public var samples: [Sample] = []
    public var events: [Event] = []

    public init(samples: [Sample] = [], events: [Event] = []) {
        self.samples = samples
        self.events = events
    }

    /// From the sale clock's start (0) to the last sample or event.
    public var timeRange: ClosedRange<Double> {
        let high = (samples.map(\.t) + events.map(\.t)).max() ?? 1
        return 0...max(high, 0.001)
    }

    /// One series per key of `values` (sorted by key), each point a sample holding that key.
    public func series(_ values: (Sample) -> [String: Double]) -> [(name: String, points: [Point])] {
        var byName: [String: [Point]] = [:]
        for sample in samples {
            for (name, value) in values(sample) where value.isFinite { byName[name, default: []].append(Point(x: sample.t, y: value)) }
        }
        return byName.keys.sorted().map { ($0, byName[$0]!) }
    }
}

/// A point of a chart, in the data's units.
public struct Point: Sendable, Equatable {
    public var x: Double
    public var y: Double

    public init(x: Double, y: Double) {
        self.x = x
        self.y = y
    }
}
