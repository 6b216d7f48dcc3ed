import NIOCore
import Testing

@testable import Wire

/// What an async handler's error becomes on the wire.
struct HandlerStatusTests {
    @Test func aHandlerCancelledAtItsDeadlineAnswersDeadlineExceeded() {
        let now = NIODeadline.now()
        #expect(RPCRouter.status(of: CancellationError(), deadline: now - .milliseconds(1), now: now).code == .deadlineExceeded)
    }

    @Test func anErrorBeforeTheDeadlineIsItsOwnStatus() {
        let now = NIODeadline.now()
        #expect(RPCRouter.status(of: CancellationError(), deadline: now + .seconds(1), now: now).code == .internal)
        #expect(RPCRouter.status(of: CancellationError(), deadline: nil, now: now).code == .internal)
    }

    @Test func aStatusTheHandlerChoseIsKeptPastTheDeadline() {
        let now = NIODeadline.now()
        let chosen = RPCError(.unavailable, "try another replica")
        #expect(RPCRouter.status(of: chosen, deadline: now - .seconds(1), now: now).code == .unavailable)
    }
}
