import Cluster
import Foundation
import Proto
import Testing
import TestSupport
import Wire

/// proto/services.proto against what the real servers register: every server answers exactly the methods the
/// contract gives its service (Common's included), each with the access class the contract says. A method registered
/// but not declared fails, and so does one declared but not registered, or registered with other access.
extension AccessControlTests {
    @Test func everyServerServesExactlyTheContractsMethods() async throws {
        try await withPlatform(prefix: "contract", logLevel: "info") { platform, _, _ in
            let serviceToken = platform.configuration.serviceToken
            // An edge with an operator port serves the same methods over its two servers.
            let operatorPort = LocalPorts.free()
            let split = try await platform.addEdge(extraArguments: ["--operator-port", "\(operatorPort)"])
            let processes: [(service: String, process: ManagedProcess, endpoints: [(host: String, port: Int)])] = [
                ("edge", platform.edges[0].process, [(platform.edges[0].host, platform.edges[0].port)]),
                ("edge", split.process, [(split.host, split.port), ("127.0.0.1", operatorPort)]),
                ("inventory", platform.inventory.process, [(platform.inventory.host, platform.inventory.port)]),
                ("quota", platform.quota.process, [(platform.quota.host, platform.quota.port)]),
            ]
            for (service, process, endpoints) in processes {
                let declared = try #require(Self.served.first { $0.service == service }).methods
                // What its routers registered: each server logs its router's methods when it listens.
                let registered = Self.registeredMethods(in: process.log())
                #expect(registered.count == endpoints.count, "\(process.name): one router per server")
                let union = Set(registered.flatMap { $0 })
                #expect(union == Set(declared.map(\.name)),
                        "\(process.name): registered but not in proto/services.proto: \(union.subtracting(declared.map(\.name)).sorted()); declared but not registered: \(Set(declared.map(\.name)).subtracting(union).sorted())")
                // The access each registration enforces, as a caller finds it: the one token it is served with.
                for method in declared {
                    var found: [RPCAccess] = []
                    for endpoint in endpoints {
                        let rpc = Self.client(endpoint, logger: logger)
                        if let access = await Self.observedAccess(rpc, method.name, serviceToken: serviceToken) {
                            found.append(access)
                        }
                        await rpc.shutdown()
                    }
                    #expect(found == [method.access] || (method.name == CommonRPC.Ping.name && Set(found) == [.public]),
                            "\(process.name): \(method.name) is \(method.access) in the contract, served as \(found)")
                }
            }
        }
    }

    /// The methods of each "server listening" line (`RPCServer` logs its router's `methods`), one list per server.
    static func registeredMethods(in log: String) -> [[String]] {
        log.split(separator: "\n").filter { $0.contains("server listening") }.compactMap { line in
            guard let start = line.range(of: "methods=[")?.upperBound, let end = line[start...].firstIndex(of: "]") else {
                return nil
            }
            return line[start..<end].split(separator: ",").map {
                $0.trimmingCharacters(in: CharacterSet(charactersIn: "\" "))
            }.filter { !$0.isEmpty }
        }
    }

    /// Who may call `method` here: public when it is served without a token, else the kind of token it is served
    /// with; nil when this server does not serve it (UNIMPLEMENTED).
    static func observedAccess(_ rpc: RPCClient, _ method: String, serviceToken: String) async -> RPCAccess? {
        func refused(_ status: RPCError.Code?) -> Bool { status == .unauthenticated || status == .permissionDenied }
        let anonymous = await status(rpc, method, token: "")
        if anonymous == .unimplemented { return nil }
        if !refused(anonymous) { return .public }
        if !refused(await status(rpc, method, token: serviceToken)) { return .service }
        if !refused(await status(rpc, method, token: token)) { return .operator }
        return nil
    }
}
