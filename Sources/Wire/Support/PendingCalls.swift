import NIOCore

/// The calls in flight of one connection, by an id this hands out in order (from 1): the client's call ids, the
/// server's serials.
///
/// So the calls live in a ring indexed by `id - first`: adding is an append, an answer clears its slot, and the
/// cleared slots at the front go. A dictionary did the same with a hash, a probe and a delete per call: 7 % of the
/// sale's load generator at 16 in flight (`perf record -a` of `flashsale sale`: find, hash, delete, removeValue),
/// ~2 % of an edge. Alternating builds of the wire benchmark at 16 in flight, client CPU per call went
/// 2.75 -> 2.69 us on average (3 runs each, within this VM's noise).
///
/// A call that stays unanswered (one without a deadline whose answer is late or never comes) would hold the ring's
/// front while later calls pile up behind it: once the ring spans `window` ids, its oldest call moves to a dictionary
/// of stragglers, so the ring stays within `window` slots whatever the peer does.
struct PendingCalls<Value> {
    private var ring: CircularBuffer<Value?>
    /// The id (client call id or server serial) of the ring's first slot.
    private var first: UInt64 = 1
    private var stragglers: [UInt64: Value] = [:]
    /// Calls in flight.
    private(set) var count = 0
    let window: Int

    /// `initialCapacity`: the ring's first slots (it doubles as calls pile up). A server holds one table per
    /// connection, most of them idle: 1 slot there, where 16 would be ~2.5 MiB more at 10,000 connections.
    init(window: Int = 4_096, initialCapacity: Int = 16) {
        self.window = max(1, window)
        self.ring = CircularBuffer(initialCapacity: max(1, min(initialCapacity, self.window)))
    }

    /// Slots the ring spans (at most `window`).
    var ringSlots: Int { self.ring.count }

    /// The id the next `add` hands out.
    var nextID: UInt64 { self.first &+ UInt64(self.ring.count) }

    /// Adds a call and returns its id.
    mutating func add(_ value: Value) -> UInt64 {
        let id = self.nextID
        self.ring.append(value)
        self.count += 1
        while self.ring.count > self.window {
            if let oldest = self.ring.removeFirst() { self.stragglers[self.first] = oldest }
            self.first &+= 1
            self.dropAnsweredFront()
        }
        return id
    }

    func contains(_ id: UInt64) -> Bool {
        guard id >= self.first else { return self.stragglers[id] != nil }
        return self.ringIndex(of: id).map { self.ring[$0] != nil } ?? false
    }

    /// The call `id`, out of the table; nil if it is not in flight (answered, failed, or never sent).
    mutating func remove(_ id: UInt64) -> Value? {
        guard id >= self.first else {
            guard let value = self.stragglers.removeValue(forKey: id) else { return nil }
            self.count -= 1
            return value
        }
        // Moved out in place: a copy out and a nil in were a retain and a release of every answered call's value
        // (a closure on the client), and so was looking at the front below; together a quarter of the load
        // generator's retains (`perf` of a sale at 16 in flight).
        guard let index = self.ringIndex(of: id), let value = self.ring.modify(index, { $0.take() }) else { return nil }
        self.count -= 1
        self.dropAnsweredFront()
        return value
    }

    /// Every call in flight, out of the table (ids keep counting on).
    mutating func removeAll() -> [Value] {
        var all = Array(self.stragglers.values)
        for case let value? in self.ring { all.append(value) }
        self.first = self.nextID
        self.ring.removeAll(keepingCapacity: true)
        self.stragglers.removeAll()
        self.count = 0
        return all
    }

    /// Where call `id` (not below `first`) sits in the ring; nil past its end (an id not handed out yet).
    private func ringIndex(of id: UInt64) -> CircularBuffer<Value?>.Index? {
        let offset = id - self.first
        guard offset < UInt64(self.ring.count) else { return nil }
        return self.ring.index(self.ring.startIndex, offsetBy: Int(offset))
    }

    private mutating func dropAnsweredFront() {
        while !self.ring.isEmpty, self.ring.modify(self.ring.startIndex, { $0 == nil }) {
            self.ring.removeFirst()
            self.first &+= 1
        }
    }
}
