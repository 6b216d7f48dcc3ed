import Synchronization
import Wire

/// The edge's lottery: keeps `keepPerMillion` of every million purchase attempts and sheds the rest (SHED,
/// the client may retry). The ratio comes from ZooKeeper's `config/shed` and changes live.
///
/// Draws are SplitMix64 over a shared atomic counter: no lock, and with a fixed seed the sequence of draws is
/// reproducible (tests check the kept share without flakiness).
public final class LoadShedder: Sendable {
    public static let million: UInt32 = 1_000_000

    private let keep: Atomic<UInt32>
    private let counter = Atomic<UInt64>(0)
    private let seed: UInt64

    public init(keepPerMillion: UInt32 = LoadShedder.million, seed: UInt64 = UInt64.random(in: .min ... .max)) {
        self.keep = Atomic(min(keepPerMillion, Self.million))
        self.seed = seed
    }

    public var keepPerMillion: UInt32 { self.keep.load(ordering: .relaxed) }

    public func setKeepPerMillion(_ value: UInt32) {
        self.keep.store(min(value, Self.million), ordering: .relaxed)
    }

    /// True: the attempt goes on to the quota counter. False: shed it.
    public func admit() -> Bool {
        let keep = self.keep.load(ordering: .relaxed)
        if keep >= Self.million { return true }
        if keep == 0 { return false }
        let draw = SplitMix64.mix(self.seed &+ self.counter.wrappingAdd(1, ordering: .relaxed).oldValue)
        return draw % UInt64(Self.million) < UInt64(keep)
    }
}
