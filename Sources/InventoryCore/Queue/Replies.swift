import Proto
import Wire

/// The answers of one batch, sent together: the wire runtime then writes each connection's share with one flush
/// instead of a thread hop and a syscall per answer.
struct Replies {
    private var answers: [(responder: RPCResponder<PurchaseResponse>, result: Result<PurchaseResponse, RPCError>)] = []

    init(capacity: Int = 0) {
        answers.reserveCapacity(capacity)
    }

    mutating func succeed(_ purchase: PendingPurchase, _ response: PurchaseResponse) {
        answers.append((purchase.responder, .success(response)))
    }

    mutating func fail(_ purchase: PendingPurchase, _ error: RPCError) {
        answers.append((purchase.responder, .failure(error)))
    }

    func send() {
        RPCResponder.completeAll(answers)
    }
}
