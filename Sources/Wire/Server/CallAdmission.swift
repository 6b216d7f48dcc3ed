import NIOCore
import Proto

/// Whether a decoded request may start, without I/O: the envelope's required fields, the method, the caller's
/// token and the deadline. A refusal is answered on the call's id (0 when it has none); the stream stays usable.
struct CallAdmission {
    enum Decision {
        case reject(callID: UInt64, RPCError)
        case start(Call)
    }

    struct Call {
        let route: RPCRouter.Route
        let callID: UInt64
        let method: String
        /// Set when the caller sent a budget.
        let deadline: NIODeadline?
        /// The clock as read for the deadline (nil without one): the handler's first look at its budget uses it
        /// instead of reading the clock again.
        let admittedAt: NIODeadline?
    }

    private let routes: [String: RPCRouter.Route]
    private let credentials: RPCCredentials
    /// The route of the previous call: a connection nearly always calls the same few methods, and comparing a
    /// (usually small) string is cheaper than hashing it for the router's dictionary.
    private var lastMethod = ""
    private var lastRoute: RPCRouter.Route?

    init(router: RPCRouter, credentials: RPCCredentials) {
        self.routes = router.routes
        self.credentials = credentials
    }

    /// `arrival` is set for a call that waited in the queue: its budget counts from when it was read. `now` is
    /// read only for a call with a budget.
    mutating func admit(_ request: WireRequest, arrival: NIODeadline?, now: @autoclosure () -> NIODeadline) -> Decision {
        guard request.callId != 0 else { return .reject(callID: 0, RPCError(.invalidArgument, "call_id is required")) }
        guard !request.method.isEmpty else {
            return .reject(callID: request.callId, RPCError(.invalidArgument, "method is required"))
        }
        let route: RPCRouter.Route
        if let last = self.lastRoute, request.method == self.lastMethod {
            route = last
        } else if let found = self.routes[request.method] {
            route = found
            self.lastMethod = request.method
            self.lastRoute = found
        } else {
            return .reject(callID: request.callId, RPCError(.unimplemented, "unknown method \(request.method)"))
        }
        if let refusal = self.credentials.refusal(route.access, token: request.token) {
            return .reject(callID: request.callId, refusal)
        }
        var deadline: NIODeadline?
        var admittedAt: NIODeadline?
        if request.timeoutUs < 0 {
            return .reject(callID: request.callId, RPCError(.deadlineExceeded, "deadline already passed"))
        } else if request.timeoutUs > 0 {
            let now = now()
            let expiry = (arrival ?? now) + .microseconds(request.timeoutUs)
            guard expiry > now else {
                return .reject(callID: request.callId, RPCError(.deadlineExceeded, "deadline passed before the call started"))
            }
            deadline = expiry
            admittedAt = now
        }
        return .start(Call(route: route, callID: request.callId, method: request.method, deadline: deadline, admittedAt: admittedAt))
    }
}
