import Addressing
import ArgumentParser
import FlashSaleClient
import Foundation
import Logging
import NIOCore
import Proto
import ServiceKit
import Wire

/// Where the running platform is, shared by every operator command: `--quota` and `--inventory` (defaults from
/// `FLASHSALE_QUOTA` and `FLASHSALE_INVENTORY`), and how long to wait for an answer.
struct PlatformOptions: ParsableArguments {
    @Option(help: "The quota service, host:port ($FLASHSALE_QUOTA sets the default).")
    var quota: String = ProcessInfo.processInfo.environment["FLASHSALE_QUOTA"] ?? "127.0.0.1:7200"

    @Option(help: "The inventory service, host:port ($FLASHSALE_INVENTORY sets the default).")
    var inventory: String = ProcessInfo.processInfo.environment["FLASHSALE_INVENTORY"] ?? "127.0.0.1:7100"

    @Option(help: "Seconds to wait for each answer.")
    var timeout: Double = 5

    @Option(help: "Log level of the tool's own clients, on standard error: trace|debug|info|notice|warning|error|critical.")
    var logLevel = "error"

    func validate() throws {
        guard HostPort(quota) != nil else { throw ValidationError("--quota takes host:port, not '\(quota)'") }
        guard HostPort(inventory) != nil else { throw ValidationError("--inventory takes host:port, not '\(inventory)'") }
        guard timeout > 0, timeout <= 600 else { throw ValidationError("--timeout must be in (0, 600] seconds") }
        guard Logger.Level(name: logLevel) != nil else { throw ValidationError("unknown --log-level \(logLevel)") }
    }
}

/// Why an operator command failed, and the exit code it ends with (the README's table).
struct OperatorFailure: Error, CustomStringConvertible {
    /// 1: the service refused (bad value, precondition); 3: unreachable; 4: unknown product; 5: no or wrong token.
    let exitCode: Int32
    let description: String

    static func unreachable(_ service: String, _ endpoint: HostPort, _ error: RPCError) -> OperatorFailure {
        OperatorFailure(exitCode: 3, description: "cannot reach the \(service) at \(endpoint): \(error.message)")
    }

    static let noToken = OperatorFailure(
        exitCode: 5,
        description: "this command needs the operator token: set FLASHSALE_OPERATOR_TOKEN or FLASHSALE_OPERATOR_TOKEN_FILE")
}

/// The clients of one command run. Each call goes through `quota`/`inventory`/`edge`, which turn wire errors into
/// `OperatorFailure`s naming the service and the product.
struct Operator: Sendable {
    let quotaEndpoint: HostPort
    let inventoryEndpoint: HostPort
    let quotaClient: QuotaClient
    let inventoryClient: InventoryClient
    let token: String?
    let timeout: TimeAmount
    let logger: Logger

    init(_ options: PlatformOptions, requireToken: Bool) throws {
        let token: String?
        do {
            token = try ServiceRuntime.operatorToken(environment: ProcessInfo.processInfo.environment)
        } catch {
            throw OperatorFailure(exitCode: 5, description: "cannot read the operator token file (FLASHSALE_OPERATOR_TOKEN_FILE)")
        }
        if requireToken && token == nil { throw OperatorFailure.noToken }
        self.token = token
        self.quotaEndpoint = HostPort(options.quota)!
        self.inventoryEndpoint = HostPort(options.inventory)!
        self.timeout = .milliseconds(Int64(options.timeout * 1000))
        self.logger = ServiceRuntime.makeLogger(label: "flashsale", level: Logger.Level(name: options.logLevel) ?? .error)
        let connectTimeout = TimeAmount.milliseconds(Int64(min(options.timeout, 2) * 1000))
        self.quotaClient = QuotaClient(rpc: RPCClient(
            configuration: RPCClientConfiguration(
                host: quotaEndpoint.host, port: quotaEndpoint.port, connectTimeout: connectTimeout,
                defaultTimeout: timeout, token: token ?? ""),
            logger: logger))
        // No token: an operator only reads the inventory (changes go through the quota service), and the operator
        // token is not sent where no method takes it.
        self.inventoryClient = InventoryClient(rpc: RPCClient(
            configuration: RPCClientConfiguration(
                host: inventoryEndpoint.host, port: inventoryEndpoint.port, connectTimeout: connectTimeout,
                defaultTimeout: timeout),
            logger: logger))
    }

    func shutdown() async {
        await quotaClient.shutdown()
        await inventoryClient.shutdown()
    }

    func quota<T: Sendable>(product: String? = nil, _ body: (QuotaClient) async throws -> T) async throws -> T {
        do {
            return try await body(quotaClient)
        } catch {
            throw Self.failure(error, service: "quota service", endpoint: quotaEndpoint, product: product)
        }
    }

    func inventory<T: Sendable>(product: String? = nil, _ body: (InventoryClient) async throws -> T) async throws -> T {
        do {
            return try await body(inventoryClient)
        } catch {
            throw Self.failure(error, service: "inventory service", endpoint: inventoryEndpoint, product: product)
        }
    }

    /// `Ping`: the round trip in milliseconds, or the failure.
    static func ping(_ rpc: RPCClient) async -> Result<Double, RPCError> {
        let started = ContinuousClock.now
        do {
            _ = try await rpc.call(CommonRPC.Ping.self, WirePingRequest())
            let elapsed = ContinuousClock.now - started
            return .success(Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1000)
        } catch {
            return .failure(RPCError.wrapping(error))
        }
    }

    /// A short-lived client of one edge (its address from the quota service or ZooKeeper).
    func edgeClient(_ address: String) -> EdgeClient? {
        guard let endpoint = HostPort(address) else { return nil }
        return EdgeClient(rpc: RPCClient(
            configuration: RPCClientConfiguration(
                host: endpoint.host, port: endpoint.port, connectTimeout: .seconds(1), defaultTimeout: timeout),
            logger: logger))
    }

    static func failure(_ error: any Error, service: String, endpoint: HostPort, product: String?) -> any Error {
        if error is OperatorFailure { return error }
        let rpc = RPCError.wrapping(error)
        if rpc.code.isUnreachable { return OperatorFailure.unreachable(service, endpoint, rpc) }
        switch rpc.code {
        case .notFound:
            if let product { return OperatorFailure(exitCode: 4, description: "unknown product '\(product)'") }
            return OperatorFailure(exitCode: 4, description: "the \(service) at \(endpoint) found nothing: \(rpc.message)")
        case .unauthenticated, .permissionDenied:
            return OperatorFailure(
                exitCode: 5,
                description: "the \(service) at \(endpoint) refused the operator token (\(rpc.message)): check FLASHSALE_OPERATOR_TOKEN")
        default:
            return OperatorFailure(exitCode: 1, description: "the \(service) at \(endpoint) refused: \(rpc.message) (\(rpc.code))")
        }
    }
}

/// Runs an operator command: makes the clients, runs `body`, closes them; a failure is printed on standard error as
/// `error: ...` and ends the process with its exit code.
func operate(
    _ options: PlatformOptions, requireToken: Bool = false, _ body: (Operator) async throws -> Void
) async throws {
    let op: Operator
    do {
        op = try Operator(options, requireToken: requireToken)
    } catch let failure as OperatorFailure {
        standardError("error: \(failure.description)")
        throw ExitCode(failure.exitCode)
    }
    do {
        try await body(op)
        await op.shutdown()
    } catch let failure as OperatorFailure {
        await op.shutdown()
        standardError("error: \(failure.description)")
        throw ExitCode(failure.exitCode)
    } catch {
        await op.shutdown()
        throw error
    }
}

func standardError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// Checks a product id on the command line (the same rule the services apply).
func validateProductID(_ id: String) throws {
    if let problem = ProductRules.idProblem(id) {
        throw ValidationError("product id '\(id)': \(problem)")
    }
}

/// A plain text table: a header row, then rows; columns padded to their widest cell.
struct TextTable {
    var header: [String]
    var rows: [[String]] = []
    var indent = ""

    init(_ header: String..., indent: String = "") {
        self.header = header
        self.indent = indent
    }

    mutating func add(_ cells: String...) { rows.append(cells) }
    mutating func add(_ cells: [String]) { rows.append(cells) }

    func render() -> String {
        var widths = header.map(\.count)
        for row in rows {
            for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            let padded = cells.enumerated().map { index, cell in
                index == cells.count - 1 ? cell : cell.padding(toLength: widths[min(index, widths.count - 1)], withPad: " ", startingAt: 0)
            }
            return indent + padded.joined(separator: "  ")
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }
}

extension BinaryInteger {
    /// 1,000,000
    var grouped: String { Int64(self).formatted() }
}

/// "1 in 10" for 100,000 per million.
func keepDescription(_ keepPerMillion: UInt32) -> String {
    if keepPerMillion >= 1_000_000 { return "keep all (1,000,000 per million)" }
    if keepPerMillion == 0 { return "keep none (0 per million: every attempt is shed)" }
    let oneIn = 1_000_000.0 / Double(keepPerMillion)
    let ratio = oneIn == oneIn.rounded() ? String(Int(oneIn)) : String(format: "%.1f", oneIn)
    return "keep \(keepPerMillion.grouped) per million (1 in \(ratio))"
}
