import Addressing
import ArgumentParser
import FlashSaleClient
import Foundation
import Proto
import ServiceKit
import Wire

/// `flashsale order show|confirm|cancel PRODUCT (--request-id N | --order-id N)`: what a payment service or checkout
/// does with a hold, by hand. These inventory methods take the service token (`FLASHSALE_SERVICE_TOKEN`).
struct OrderCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "order", abstract: "Show, confirm (pay) or cancel one order of a product with a hold time.",
        subcommands: [Show.self, Confirm.self, Cancel.self])

    struct Key: ParsableArguments {
        @Argument(help: "Product id.") var product: String
        @Option(help: "The request id that made the order.") var requestId: UInt64?
        @Option(help: "The order id.") var orderId: UInt64?

        func validate() throws {
            try validateProductID(product)
            guard (requestId == nil) != (orderId == nil) else { throw ValidationError("give --request-id or --order-id (one)") }
            guard requestId != 0, orderId != 0 else { throw ValidationError("ids are non-zero") }
        }

        var request: OrderRequest {
            if let requestId { return .byRequest(product, requestId) }
            return .byOrder(product, orderId ?? 0)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one order: its state, pay-by time and end.")
        @OptionGroup var key: Key
        @OptionGroup var platform: PlatformOptions
        func run() async throws { try await OrderCommand.call(platform, key) { try await $0.getOrder($1) } }
    }

    struct Confirm: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Mark a hold paid (idempotent); a released hold is refused (exit 1): refund the payment.")
        @OptionGroup var key: Key
        @OptionGroup var platform: PlatformOptions
        func run() async throws { try await OrderCommand.call(platform, key) { try await $0.confirmOrder($1) } }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Release a hold: its unit goes back on sale (idempotent); a paid order is refused (exit 1).")
        @OptionGroup var key: Key
        @OptionGroup var platform: PlatformOptions
        func run() async throws { try await OrderCommand.call(platform, key) { try await $0.cancelOrder($1) } }
    }

    static func call(
        _ platform: PlatformOptions, _ key: Key, _ body: @Sendable (InventoryClient, OrderRequest) async throws -> Order
    ) async throws {
        let token: String?
        do {
            token = try ServiceRuntime.serviceToken(environment: ProcessInfo.processInfo.environment)
        } catch {
            token = nil
        }
        guard let token else {
            standardError("error: this command needs the service token: set FLASHSALE_SERVICE_TOKEN or FLASHSALE_SERVICE_TOKEN_FILE")
            throw ExitCode(5)
        }
        let endpoint = HostPort(platform.inventory)!
        let client = InventoryClient(rpc: RPCClient(
            configuration: RPCClientConfiguration(
                host: endpoint.host, port: endpoint.port, connectTimeout: .seconds(2),
                defaultTimeout: .milliseconds(Int64(platform.timeout * 1000)), token: token),
            logger: ServiceRuntime.makeLogger(label: "flashsale", level: .error)))
        defer { Task { await client.shutdown() } }
        let order: Order
        do {
            order = try await body(client, key.request)
        } catch {
            let failure = Operator.failure(error, service: "inventory service", endpoint: endpoint, product: nil)
            standardError("error: \((failure as? OperatorFailure)?.description ?? "\(failure)")")
            throw ExitCode((failure as? OperatorFailure)?.exitCode ?? 1)
        }
        print(describe(order))
    }

    static func describe(_ order: Order) -> String {
        func time(_ ms: Int64) -> String {
            ms == 0 ? "-" : ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
        }
        let state: String
        switch order.state {
        case .held: state = "held"
        case .paid: state = "paid"
        case .released: state = "released (\(order.reason == .cancelled ? "cancelled" : "expired"))"
        default: state = "\(order.state)"
        }
        return [
            "product     \(order.productId)", "order       \(order.orderId)", "request id  \(order.requestId)",
            "user        \(order.userId)", "state       \(state)\(order.replayed ? " (already)" : "")",
            "pay by      \(time(order.payByUnixMs))", "ended       \(time(order.endedUnixMs))",
        ].joined(separator: "\n")
    }
}
