import Addressing
import Testing

@testable import InventoryDiscovery

/// What is read back from `inventories/` and from `--inventory`: anything that is not a registration is ignored.
@Suite struct InventoryRegistrationTests {
    func node(_ sequence: Int, _ text: String) -> (name: String, data: [UInt8]) {
        let digits = String(sequence)
        return (InventoryRegistration.prefix + String(repeating: "0", count: 10 - digits.count) + digits, Array(text.utf8))
    }

    @Test func addressesRoundTrip() {
        for address in [HostPort(host: "127.0.0.1", port: 7100), HostPort(host: "::1", port: 65535), HostPort(host: "inv-2.internal", port: 1)] {
            #expect(InventoryRegistration.decode(InventoryRegistration.encode(address)) == address)
        }
    }

    @Test func garbageIsNoAddress() {
        let bad: [[UInt8]] = [
            [], Array("nonsense".utf8), Array("127.0.0.1".utf8), Array("127.0.0.1:0".utf8), Array("127.0.0.1:65536".utf8),
            Array("127.0.0.1:-1".utf8), Array("127.0.0.1:99999999999999999999".utf8), Array(":7100".utf8),
            Array("a:1,b:2".utf8), Array("127.0.0.1:7100\n".utf8), Array(" 127.0.0.1:7100".utf8), [0xFF, 0xFE, 0x3A, 0x31],
            Array((String(repeating: "h", count: 400) + ":7100").utf8),
        ]
        for data in bad { #expect(InventoryRegistration.decode(data) == nil, "\(data)") }
    }

    @Test func theSetIsSortedDeduplicatedAndIgnoresForgedNodes() {
        let (addresses, ignored) = InventoryRegistration.decodeSet([
            node(3, "10.0.0.3:7100"),
            node(1, "10.0.0.1:7100"),
            node(2, "10.0.0.1:7100"),  // the same address twice (a restart within the session timeout)
            ("inventory-12", Array("10.0.0.9:7100".utf8)),  // not a sequential name
            ("edge-0000000001", Array("10.0.0.9:7100".utf8)),
            node(4, "garbage"),
            node(5, "10.0.0.5:0"),
        ])
        #expect(addresses == [HostPort(host: "10.0.0.1", port: 7100), HostPort(host: "10.0.0.3", port: 7100)])
        #expect(ignored == 4)
        #expect(InventoryRegistration.decodeSet([]).addresses.isEmpty)
    }

    @Test func registrationNames() {
        #expect(InventoryRegistration.isRegistrationName("inventory-0000000000"))
        #expect(!InventoryRegistration.isRegistrationName("inventory-000000000"))
        #expect(!InventoryRegistration.isRegistrationName("inventory-00000000001"))
        #expect(!InventoryRegistration.isRegistrationName("inventory-00000000x1"))
        #expect(!InventoryRegistration.isRegistrationName("inventory-٠٠٠٠٠٠٠٠٠٠"))  // digits, but not ASCII
    }

    @Test func inventoryListFlag() {
        #expect(HostPort.list("") == [])
        #expect(HostPort.list("127.0.0.1:7100") == [HostPort(host: "127.0.0.1", port: 7100)])
        #expect(HostPort.list("a:1, b:2,a:1") == [HostPort(host: "a", port: 1), HostPort(host: "b", port: 2)])
        #expect(HostPort.list("[::1]:7100,b:2") == [HostPort(host: "::1", port: 7100), HostPort(host: "b", port: 2)])
        for bad in ["a:1,", ",a:1", "a:1,,b:2", "a", "a:0", "a:70000", "a:1 b:2"] {
            #expect(HostPort.list(bad) == nil, "\(bad)")
        }
    }

    @Test func folderUnderTheRoot() {
        #expect(InventoryRegistration.folder(root: "/flashsale") == "/flashsale/inventories")
        #expect(InventoryRegistration.folder(root: "/sale-7/") == "/sale-7/inventories")
    }
}
