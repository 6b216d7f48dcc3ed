import Addressing
import QuotaContract
import NIOCore
import ServiceKit
import Testing

@Suite struct BoundAddressTests {
    @Test func ipv4() throws {
        let address = HostPort(try SocketAddress(ipAddress: "127.0.0.1", port: 7100))
        #expect(address == HostPort(host: "127.0.0.1", port: 7100))
        #expect(address.description == "127.0.0.1:7100")
    }

    @Test func ipv6IsBracketedAndReadsBack() throws {
        for text in ["::1", "fe80::1", "2001:db8::42"] {
            let address = HostPort(try SocketAddress(ipAddress: text, port: 9200))
            #expect(address.host == text)
            #expect(address.description == "[\(text)]:9200")
            #expect(HostPort(address.description) == address, "the one parser reads what the one writer wrote")
        }
    }

    @Test func wildcardBindsAreWrittenAsBound() throws {
        #expect(HostPort(try SocketAddress(ipAddress: "0.0.0.0", port: 1)).description == "0.0.0.0:1")
        #expect(HostPort(try SocketAddress(ipAddress: "::", port: 1)).description == "[::]:1")
    }
}

@Suite struct AnnouncedLineTests {
    @Test func writesTheLinesTheScriptsRead() {
        let ready = AnnouncedLine(.ready, service: "inventory", address: HostPort(host: "127.0.0.1", port: 7100))
        #expect(ready.description == "READY inventory 127.0.0.1:7100")
        let metrics = AnnouncedLine(.metrics, service: "edge", address: HostPort(host: "::1", port: 9300))
        #expect(metrics.description == "METRICS edge [::1]:9300")
    }

    @Test func parsesWhatItWrites() {
        for line in [
            AnnouncedLine(.ready, service: "quota", address: HostPort(host: "10.0.0.7", port: 7200)),
            AnnouncedLine(.metrics, service: "inventory", address: HostPort(host: "2001:db8::1", port: 65535)),
        ] {
            #expect(AnnouncedLine(line.description) == line)
        }
    }

    @Test func readsTheOlderUnbracketedIPv6Form() {
        // Before the one writer, an IPv6 READY line was `READY edge ::1:7300`; the parser still reads it.
        #expect(AnnouncedLine("READY edge ::1:7300")?.address == HostPort(host: "::1", port: 7300))
    }

    @Test func refusesWhatIsNoAnnouncedLine() {
        for line in [
            "", "READY", "READY edge", "READY edge nowhere", "READY edge 127.0.0.1:0", "READY edge 127.0.0.1:70000",
            "ready edge 127.0.0.1:1", "STARTING edge 127.0.0.1:1", "METRICS  ",
        ] {
            #expect(AnnouncedLine(line) == nil, "\(line)")
        }
    }

    @Test func findsTheFirstLineOfAKindInALog() {
        let log = """
            2026-12-01T00:00:00 info inventory: migrated
            METRICS inventory 127.0.0.1:9100
            a READY line quoted in a log message: READY inventory 127.0.0.1:1
            READY inventory 127.0.0.1:7100
            READY inventory 127.0.0.1:7101
            """
        #expect(AnnouncedLine.first(.ready, in: log)?.address.port == 7100)
        #expect(AnnouncedLine.first(.metrics, in: log)?.address.port == 9100)
        #expect(AnnouncedLine.first(.ready, in: "nothing yet\n") == nil)
    }
}

@Suite struct SharedFlagTests {
    @Test func theDefaultRootIsTheContracts() {
        #expect(ZooKeeperOptions.defaultRoot == QuotaLayout.defaultRoot)
    }

    @Test func zooKeeperFlags() throws {
        let options = try ZooKeeperOptions.parse(["--zookeeper", "zk1:2181,zk2:2181"])
        #expect(options.zookeeper == "zk1:2181,zk2:2181" && options.root == "/flashsale")
        #expect(try options.required() == "zk1:2181,zk2:2181")
        #expect(throws: (any Error).self) { try ZooKeeperOptions.parse([]).required() }
        #expect(throws: (any Error).self) { try ZooKeeperOptions.parse(["--root", "flashsale"]) }
    }

    @Test func inventoryUpstreamFlags() throws {
        #expect(try InventoryUpstreamOptions.parse(["--inventory", "a:1,b:2"]).inventory == "a:1,b:2")
        #expect(try InventoryUpstreamOptions.parse(["--inventory", "", "--discover-inventories"]).discoverInventories)
        #expect(throws: (any Error).self) { try InventoryUpstreamOptions.parse([]) }
        #expect(throws: (any Error).self) { try InventoryUpstreamOptions.parse(["--inventory", "nowhere"]) }
    }

    @Test func advertiseIsHostPort() throws {
        #expect(try ServerOptions.parse(["--advertise", "[::1]:7300"]).advertise == "[::1]:7300")
        #expect(throws: (any Error).self) { try ServerOptions.parse(["--advertise", "edge-7"]) }
    }
}
