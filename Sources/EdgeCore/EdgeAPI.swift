import Proto
import Wire

/// The edge's side of the contract (`EdgeRPCServer`, generated from proto/services.proto): purchases and counters
/// from the purchase path, the quota methods from the ledger (Quota/EdgeQuotaAPI.swift). Both only need what exists
/// before the server binds: the agent, which needs the bound address, is not among them.
public struct EdgeAPI: EdgeRPCServer {
    let purchases: PurchasePath
    let ledger: QuotaLedger

    public init(purchases: PurchasePath, ledger: QuotaLedger) {
        self.purchases = purchases
        self.ledger = ledger
    }

    /// The methods that stay on the public port when the edge has an operator port: the purchase alone (Ping is
    /// every router's).
    public static func isPublic(_ method: RPCMethodDescriptor) -> Bool { method.name == EdgeRPC.Purchase.name }

    public func purchase(_ request: PurchaseRequest, context: ServerCallContext, responder: RPCResponder<PurchaseResponse>) {
        purchases.purchase(request, context: context, responder: responder)
    }

    /// Read-only counters (on the operator port when the edge has one).
    public func stats(_ request: EdgeStatsRequest, context: ServerCallContext) async throws -> EdgeStatsResponse {
        purchases.stats()
    }
}
