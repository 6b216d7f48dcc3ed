/// One rebalancing round at a time per product within this process (rounds of different products run side by side).
/// Across processes the product node's compare-and-set serializes them; this only keeps one process from duelling
/// with itself.
actor ProductLocks {
    private var held: Set<String> = []
    private var waiters: [String: [CheckedContinuation<Void, Never>]] = [:]

    func withLock<T: Sendable>(_ product: String, _ body: @Sendable () async throws -> T) async throws -> T {
        await acquire(product)
        defer { release(product) }
        return try await body()
    }

    private func acquire(_ product: String) async {
        if !held.contains(product) {
            held.insert(product)
            return
        }
        await withCheckedContinuation { waiters[product, default: []].append($0) }
    }

    private func release(_ product: String) {
        if var queue = waiters[product], !queue.isEmpty {
            let next = queue.removeFirst()
            waiters[product] = queue.isEmpty ? nil : queue
            next.resume()  // ownership passes to the next waiter
        } else {
            held.remove(product)
        }
    }
}
