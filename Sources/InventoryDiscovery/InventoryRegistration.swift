import Addressing
import FoundationEssentials

/// Where inventory replicas register in ZooKeeper and what their nodes hold: `<root>/inventories/inventory-NNNNNNNNNN`,
/// ephemeral sequential, made by the replica's own session (it vanishes with the process), its data the address the
/// replica serves at as UTF-8 `host:port`. Edges and the quota service read the set and spread their calls over it.
///
/// Readers distrust what they read, as with every node: a node not named like a sequential registration, data that
/// is not a `host:port` with a port in 1...65535, or longer than any address, is ignored (and counted).
public enum InventoryRegistration {
    public static let folder = "inventories"
    public static let prefix = "inventory-"
    /// No address is longer; anything longer is not one.
    public static let maxDataBytes = 300

    /// `<root>/inventories`, `root` as the services take it ("/flashsale"; trailing slashes dropped).
    public static func folder(root: String) -> String {
        var root = root
        while root.hasSuffix("/") { root.removeLast() }
        return root + "/" + folder
    }

    public static func encode(_ address: HostPort) -> [UInt8] { Array(address.description.utf8) }

    /// The address a node's data names, or nil for anything else.
    public static func decode(_ data: [UInt8]) -> HostPort? {
        guard !data.isEmpty, data.count <= maxDataBytes, let text = String(validating: data, as: UTF8.self),
              !text.contains(where: { $0.isWhitespace || $0.isNewline || $0 == "," })
        else { return nil }
        return HostPort(text)
    }

    /// True for a name a sequential create under `inventories/` can have made.
    public static func isRegistrationName(_ name: String) -> Bool {
        guard name.hasPrefix(prefix) else { return false }
        let digits = name.dropFirst(prefix.count)
        return digits.count == 10 && digits.allSatisfy { $0.isASCII && $0.isNumber }
    }

    /// What the folder's children say: the addresses, sorted by node name (so every reader sees one order) without
    /// duplicates, and how many nodes were ignored. `nodes` pairs each child's name with its data.
    public static func decodeSet(_ nodes: [(name: String, data: [UInt8])]) -> (addresses: [HostPort], ignored: Int) {
        var addresses: [HostPort] = []
        var seen = Set<HostPort>()
        var ignored = 0
        for node in nodes.sorted(by: { $0.name < $1.name }) {
            guard isRegistrationName(node.name), let address = decode(node.data) else {
                ignored += 1
                continue
            }
            if seen.insert(address).inserted { addresses.append(address) }
        }
        return (addresses, ignored)
    }
}
