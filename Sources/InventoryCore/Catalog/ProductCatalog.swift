import Synchronization

/// A product as the purchase path sees it: its key in its cluster, and which cluster (pool) serves it.
struct CatalogEntry: Sendable, Equatable {
    let key: Int32
    let name: String
    let role: DatabaseRole
}

/// Every known product by name, in memory: the purchase path resolves names without a database round trip.
/// Filled at start-up from the main database's catalog and on CreateProduct.
final class ProductCatalog: Sendable {
    private let entries = Mutex<[String: CatalogEntry]>([:])

    func entry(named name: String) -> CatalogEntry? {
        entries.withLock { $0[name] }
    }

    func insert(_ entry: CatalogEntry) {
        entries.withLock { $0[entry.name] = entry }
    }

    var all: [CatalogEntry] {
        entries.withLock { $0.values.sorted { $0.key < $1.key } }
    }
}
