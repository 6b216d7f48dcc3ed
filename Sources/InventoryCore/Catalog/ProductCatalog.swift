import Foundation

/// A product as the purchase path sees it: its key in its database, and which database (pool) serves it.
struct CatalogEntry: Sendable, Equatable {
    let key: Int32
    let name: String
    let role: DatabaseRole
}

/// Every known product by name, in memory: the purchase path resolves names without a database round trip.
/// Filled at start-up from the main database's catalog and on CreateProduct.
final class ProductCatalog: @unchecked Sendable {
    // @unchecked: `entries` is only touched under `lock`.
    private let lock = NSLock()
    private var entries: [String: CatalogEntry] = [:]

    func entry(named name: String) -> CatalogEntry? {
        lock.withLock { entries[name] }
    }

    func insert(_ entry: CatalogEntry) {
        lock.withLock { entries[entry.name] = entry }
    }

    var all: [CatalogEntry] {
        lock.withLock { entries.values.sorted { $0.key < $1.key } }
    }
}
