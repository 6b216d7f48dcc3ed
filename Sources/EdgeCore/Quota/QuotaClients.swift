import Addressing
import FlashSaleClient
import Logging
import Wire

extension EdgeQuotaAgent {
    /// Clients of the quota services of `quotaService` (`host:port[,host:port...]`, `--quota`), as an edge calls
    /// them: a short connect timeout and deadline (a refill that waits longer is worth less than the next attempt's
    /// own), with the service token (`quota.GrantMore` needs it). No address at all gives one client of port 0,
    /// whose calls fail UNAVAILABLE: the edge then sells only what its quota nodes grant.
    public static func quotaClients(_ quotaService: String, serviceToken: String?, logger: Logger) -> [QuotaClient] {
        let addresses = HostPort.list(quotaService, defaultHost: "127.0.0.1").flatMap { $0.isEmpty ? nil : $0 }
            ?? [HostPort(host: "127.0.0.1", port: 0)]
        return addresses.map { address in
            QuotaClient(
                rpc: RPCClient(
                    configuration: RPCClientConfiguration(
                        host: address.host, port: address.port, connectTimeout: .seconds(1), defaultTimeout: .seconds(3),
                        token: serviceToken ?? ""),
                    logger: logger))
        }
    }
}
