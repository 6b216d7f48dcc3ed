/// SplitMix64 (Steele, Lea and Flood): a fast, well-mixed 64-bit generator, seeded for reproducible draws (the
/// edge's lottery, the load generators' ids, the tests' random inputs). Not for secrets.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64

    public init(seed: UInt64) { self.state = seed }

    public mutating func next() -> UInt64 {
        defer { state &+= 0x9E37_79B9_7F4A_7C15 }
        return Self.mix(state)
    }

    /// The n-th draw of the generator seeded with 0 is `mix(n * gamma)`: a stateless draw from a counter, so many
    /// threads can share one atomic counter instead of one generator.
    public static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
