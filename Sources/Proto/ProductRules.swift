/// The rules of a product's id and stock, for every service and client (flashsale.proto's product_id and stock
/// fields). One rule for ids everywhere: the quota service makes ZooKeeper nodes of them, so an id it would refuse in
/// quota.CreateProduct can never name a product, and the edge and the inventory refuse it the same way.
public enum ProductRules {
    /// The longest product id, in UTF-8 bytes (which the rule below makes ASCII characters).
    public static let maxIDBytes = 128

    /// The most units of stock a product, a raise or a sale limit may name: far beyond any sale, far below where
    /// sums of units (in Swift or in the database's bigints) could overflow.
    public static let maxStock: Int64 = 1_000_000_000_000

    /// Why an id is not a product id.
    public enum IDProblem: Sendable, Hashable, CaseIterable, CustomStringConvertible {
        case empty
        case tooLong
        /// Not a node name: a byte other than a letter, a digit, '.', '_' or '-', or the id "." or "..".
        case notANodeName

        public var description: String {
            switch self {
            case .empty: "product_id is empty"
            case .tooLong: "product_id is longer than \(ProductRules.maxIDBytes) bytes"
            case .notANodeName: "product_id must be letters, digits, '.', '_' or '-' (and not '.' or '..')"
            }
        }
    }

    /// nil for a valid id: 1-128 bytes of ASCII letters, digits, '.', '_' and '-', and neither "." nor "..".
    public static func idProblem(_ id: String) -> IDProblem? {
        let bytes = id.utf8
        if bytes.isEmpty { return .empty }
        if bytes.count > maxIDBytes { return .tooLong }
        if id == "." || id == ".." { return .notANodeName }
        let nodeNameSafe = bytes.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == 0x2E || byte == 0x5F || byte == 0x2D
        }
        return nodeNameSafe ? nil : .notANodeName
    }

    public static func isValidID(_ id: String) -> Bool { idProblem(id) == nil }
}
