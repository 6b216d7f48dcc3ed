import NIOCore
import Proto
import Testing

@testable import Wire

/// Whether a request may start, as plain function calls: required fields, method, token, deadline.
@Suite struct CallAdmissionTests {
    private func admission(_ credentials: RPCCredentials = RPCCredentials()) -> CallAdmission {
        var router = RPCRouter(serviceName: "svc")
        router.register("op.Do", access: .operator) { (_: WirePingRequest, _, responder: RPCResponder<WirePingResponse>) in
            responder.succeed(WirePingResponse())
        }
        return CallAdmission(router: router, credentials: credentials)
    }

    private func at(_ milliseconds: Int64) -> NIODeadline { .uptimeNanoseconds(UInt64(milliseconds) * 1_000_000) }

    private func rejection(_ decision: CallAdmission.Decision) -> (UInt64, RPCError.Code, String)? {
        guard case .reject(let callID, let error) = decision else { return nil }
        return (callID, error.code, error.message)
    }

    private func started(_ decision: CallAdmission.Decision) -> CallAdmission.Call? {
        guard case .start(let call) = decision else { return nil }
        return call
    }

    @Test func theEnvelopesRequiredFields() throws {
        var admission = admission()
        let v1 = admission.admit(WireRequest(callId: 0, method: CommonRPC.Ping.name), arrival: nil, now: at(0))
        let noID = try #require(rejection(v1))
        #expect(noID.0 == 0 && noID.1 == .invalidArgument && noID.2 == "call_id is required")
        let v2 = admission.admit(WireRequest(callId: 3, method: ""), arrival: nil, now: at(0))
        let noMethod = try #require(rejection(v2))
        #expect(noMethod.0 == 3 && noMethod.1 == .invalidArgument && noMethod.2 == "method is required")
    }

    @Test func anUnknownMethodIsUnimplemented() throws {
        var admission = admission()
        let v3 = admission.admit(WireRequest(callId: 1, method: "no.Such"), arrival: nil, now: at(0))
        let refused = try #require(rejection(v3))
        #expect(refused.0 == 1 && refused.1 == .unimplemented && refused.2.contains("no.Such"))
    }

    @Test func aMethodTakesItsOwnToken() throws {
        var admission = admission(RPCCredentials(operatorToken: "op", serviceToken: "svc"))
        let v4 = admission.admit(WireRequest(callId: 1, method: "op.Do"), arrival: nil, now: at(0))
        let none = try #require(rejection(v4))
        #expect(none.1 == .unauthenticated)
        let v5 = admission.admit(WireRequest(callId: 2, method: "op.Do", token: "svc"), arrival: nil, now: at(0))
        let other = try #require(rejection(v5))
        #expect(other.1 == .permissionDenied)
        let v6 = admission.admit(WireRequest(callId: 3, method: "op.Do", token: "op"), arrival: nil, now: at(0))
        let call = try #require(started(v6))
        #expect(call.callID == 3 && call.method == "op.Do" && call.deadline == nil && call.admittedAt == nil)
        let v7 = admission.admit(WireRequest(callId: 4, method: CommonRPC.Ping.name, token: "anything"), arrival: nil, now: at(0))
        #expect(started(v7) != nil)
    }

    @Test func theDeadlineCountsFromArrival() throws {
        var admission = admission()
        let v8 = admission.admit(WireRequest(callId: 1, method: CommonRPC.Ping.name, timeoutUs: 5_000), arrival: nil, now: at(100))
        let now = try #require(started(v8))
        #expect(now.deadline == at(105))
        #expect(now.admittedAt == at(100), "the clock as read for the deadline, for the handler's first budget check")
        let v9 = admission.admit(WireRequest(callId: 2, method: CommonRPC.Ping.name, timeoutUs: 5_000), arrival: at(98), now: at(100))
        let queued = try #require(started(v9))
        #expect(queued.deadline == at(103), "a call that waited in the queue: its budget counts from when it was read")
        #expect(queued.admittedAt == at(100))
    }

    @Test func aCallPastItsDeadlineIsNotStarted() throws {
        var admission = admission()
        let v10 = admission.admit(WireRequest(callId: 1, method: CommonRPC.Ping.name, timeoutUs: -1), arrival: nil, now: at(0))
        let passed = try #require(rejection(v10))
        #expect(passed.1 == .deadlineExceeded && passed.2 == "deadline already passed")
        let v11 = admission.admit(WireRequest(callId: 2, method: CommonRPC.Ping.name, timeoutUs: 1_000), arrival: at(10), now: at(20))
        let waited = try #require(rejection(v11))
        #expect(waited.0 == 2 && waited.1 == .deadlineExceeded && waited.2 == "deadline passed before the call started")
    }

    @Test func theClockIsReadOnlyForACallWithABudget() {
        var admission = admission()
        var reads = 0
        func now() -> NIODeadline { reads += 1; return at(0) }
        _ = admission.admit(WireRequest(callId: 1, method: CommonRPC.Ping.name), arrival: nil, now: now())
        _ = admission.admit(WireRequest(callId: 2, method: CommonRPC.Ping.name), arrival: nil, now: now())
        #expect(reads == 0)
        _ = admission.admit(WireRequest(callId: 3, method: CommonRPC.Ping.name, timeoutUs: 10), arrival: nil, now: now())
        #expect(reads == 1)
    }

    @Test func theRouteCacheFollowsTheMethod() throws {
        var admission = admission(RPCCredentials(operatorToken: "op"))
        let v12 = admission.admit(WireRequest(callId: 1, method: CommonRPC.Ping.name), arrival: nil, now: at(0))
        #expect(started(v12) != nil)
        // The previous route is cached: a different method must not reuse it (op.Do needs a token, Ping does not).
        let v13 = admission.admit(WireRequest(callId: 2, method: "op.Do"), arrival: nil, now: at(0))
        #expect(rejection(v13)?.1 == .unauthenticated)
        let v14 = admission.admit(WireRequest(callId: 3, method: CommonRPC.Ping.name), arrival: nil, now: at(0))
        #expect(started(v14)?.method == CommonRPC.Ping.name)
    }
}
