import Proto
import Wire

/// The edge's methods for the quota service: they only need the ledger.
extension EdgeAPI {
    /// Service token: hands back up to `max_units` not yet used.
    public func releaseQuota(_ request: ReleaseQuotaRequest, context: ServerCallContext) async throws -> ReleaseQuotaResponse {
        guard !request.productId.isEmpty else { throw RPCError(.invalidArgument, "product_id is empty") }
        guard request.maxUnits >= 0 else { throw RPCError(.invalidArgument, "max_units is negative") }
        // An edge is an identity, not an address: a release meant for an edge that used to listen here (or
        // for any edge while this one is not registered yet) is not ours to answer.
        let holder = ledger.edgeID
        guard holder != 0, request.edgeId == holder else {
            throw RPCError(.failedPrecondition, "this is edge \(holder), not edge \(request.edgeId)")
        }
        let released = ledger.release(request.productId, maxUnits: request.maxUnits)
        // After a session expiry: the allotment is not retired, so sell again. The answer names the session
        // vouched for (the quota service trusts its registration from then on), never one set after it.
        let session = ledger.vouch()
        return ReleaseQuotaResponse(
            released: released, releasedTotal: ledger.usage(of: request.productId)?.released ?? 0, session: session)
    }

    /// Read only, the counters as applied now. On the event loop: a few atomic loads, no reason for a task hop (the
    /// quota benchmark polls it).
    public func quotaUsage(_ request: QuotaStatusRequest, context: ServerCallContext, responder: RPCResponder<EdgeRegistration>) {
        let usage = request.productId.isEmpty ? ledger.usage() : ledger.usage(of: request.productId).map { [$0] } ?? []
        responder.succeed(EdgeRegistration(usage: usage.map(\.message)))
    }
}

extension QuotaLedger.Usage {
    /// As the quota service reads it (the registration node, `edge.QuotaUsage`).
    var message: ProductUsage {
        ProductUsage(productId: product, used: used, released: released, granted: granted)
    }
}
