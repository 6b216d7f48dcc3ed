import Cluster
import Testing

/// The command lines the platform starts services with (pure: nothing is started).
@Suite struct ServiceArgumentsTests {
    @Test func anEdgesThreadsAreOnItsCommandLineOnlyWhenSet() {
        var arguments = EdgeArguments.standalone(zooKeeper: "127.0.0.1:2181", root: "/sale")
        #expect(!arguments.list.contains("--threads"), "the edge's own default")
        arguments.threads = 3
        let list = arguments.list
        let flag = list.firstIndex(of: "--threads")
        #expect(flag.map { list[$0 + 1] } == "3")
    }
}
