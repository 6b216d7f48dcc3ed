import NIOCore
import Proto
import Wire

/// The answers of one batch, delivered with one task per event loop instead of one per answer: the connection
/// handlers then see them in one loop tick and write them with one flush per connection.
struct Replies {
    private var byLoop: [ObjectIdentifier: (loop: any EventLoop, answers: [Answer])] = [:]

    struct Answer: Sendable {
        let responder: RPCResponder<PurchaseResponse>
        let result: Result<PurchaseResponse, RPCError>
    }

    mutating func add(_ purchase: PendingPurchase, _ result: Result<PurchaseResponse, RPCError>) {
        let key = ObjectIdentifier(purchase.eventLoop)
        if byLoop[key] == nil { byLoop[key] = (purchase.eventLoop, []) }
        byLoop[key]!.answers.append(Answer(responder: purchase.responder, result: result))
    }

    mutating func succeed(_ purchase: PendingPurchase, _ response: PurchaseResponse) {
        add(purchase, .success(response))
    }

    mutating func fail(_ purchase: PendingPurchase, _ error: RPCError) {
        add(purchase, .failure(error))
    }

    func send() {
        for (_, group) in byLoop {
            let answers = group.answers
            group.loop.execute {
                for answer in answers { answer.responder.complete(answer.result) }
            }
        }
    }
}
