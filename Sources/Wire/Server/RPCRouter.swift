import Logging
import NIOCore
import Proto

/// What a handler knows about the call it serves.
public struct ServerCallContext: Sendable {
    public let method: String
    public let callID: UInt64
    /// Set when the caller sent a budget; handlers that queue work check it before starting.
    public let deadline: NIODeadline?
    /// When the call was admitted, as read for its deadline (nil without one). A handler that looks at its budget as
    /// it starts, on the call's event loop, reads it here: the same instant as a clock read, without the read.
    public let admittedAt: NIODeadline?
    let connection: ServerConnection

    public var eventLoop: any EventLoop { self.connection.eventLoop }
    /// The server's logger, with the caller's address as metadata `peer`.
    public var logger: Logger { self.connection.logger.logger }
    /// Where the connection runs its async handlers.
    var calls: ConnectionCalls { self.connection.calls }

    public var isExpired: Bool {
        guard let deadline else { return false }
        return deadline <= .now()
    }
}

/// Completes one call exactly once, from any thread. Later completions are ignored.
public struct RPCResponder<Response: ProtoMessage>: Sendable {
    let raw: RawResponder

    public func succeed(_ response: Response) {
        self.raw.succeed(response)
    }

    public func fail(_ error: RPCError) {
        self.raw.complete(.failure(error))
    }

    public func complete(_ result: Result<Response, RPCError>) {
        switch result {
        case .success(let response): self.succeed(response)
        case .failure(let error): self.fail(error)
        }
    }
}

extension RPCResponder {
    /// Completes many calls from any thread with one task per event loop and one flush per connection, instead of a
    /// hop and a write syscall per call: for answers produced together (a queue consumer answering a whole batch).
    /// Successful answers are serialized on the loop, straight into the connection's outgoing buffer.
    public static func completeAll(_ answers: [(responder: RPCResponder<Response>, result: Result<Response, RPCError>)]) {
        var byLoop: [ObjectIdentifier: (loop: any EventLoop, answers: [(RawResponder, Result<Response, RPCError>)])] = [:]
        for answer in answers {
            let raw = answer.responder.raw
            let loop = raw.connection.eventLoop
            byLoop[ObjectIdentifier(loop), default: (loop, [])].answers.append((raw, answer.result))
        }
        for (_, group) in byLoop {
            let answers = group.answers
            group.loop.execute {
                // On the loop now: group by connection handler, then one batch (and one flush) per connection.
                var byHandler: [ObjectIdentifier: (handler: RPCServerHandler, answers: [(serial: UInt64, result: Result<Response, RPCError>)])] = [:]
                for (raw, result) in answers {
                    let handler = raw.connection.handler.value
                    byHandler[ObjectIdentifier(handler), default: (handler, [])].answers.append((raw.serial, result))
                }
                for (_, entry) in byHandler { entry.handler.completeBatch(entry.answers) }
            }
        }
    }
}

/// The methods a server answers. Built before the server starts; immutable once it runs.
public struct RPCRouter: Sendable {
    struct Route: Sendable {
        let access: RPCAccess
        let invoke: @Sendable (ByteBuffer, ServerCallContext, RawResponder) -> Void
    }

    private(set) var routes: [String: Route] = [:]

    public init(serviceName: String) {
        CommonMethods(serviceName: serviceName).register(into: &self)
    }

    public var methods: [String] { routes.keys.sorted() }

    /// An async handler: runs as a child task of the connection (see `ConnectionCalls`), cancelled at the call's
    /// deadline and when the connection closes; its thrown `RPCError` becomes the call's status.
    public mutating func register<Request: ProtoMessage, Response: ProtoMessage>(
        _ method: String,
        access: RPCAccess = .public,
        _ handler: @escaping @Sendable (Request, ServerCallContext) async throws -> Response
    ) {
        self.routes[method] = Route(access: access) { payload, context, raw in
            guard let request: Request = Self.decode(payload, raw) else { return }
            context.calls.run(deadline: context.deadline) {
                do {
                    raw.succeed(try await handler(request, context))
                } catch {
                    raw.complete(.failure(Self.status(of: error, deadline: context.deadline)))
                }
            }
        }
    }

    /// A handler's error as its call's status. A handler cancelled at its call's deadline (`ConnectionCalls`) throws
    /// whatever its await throws, typically CancellationError: that is DEADLINE_EXCEEDED, as the client would say
    /// itself, not INTERNAL (a loaded client whose own timer fires late saw INTERNAL first).
    static func status(of error: any Error, deadline: NIODeadline?, now: NIODeadline = .now()) -> RPCError {
        if !(error is RPCError), let deadline, deadline <= now {
            return RPCError(.deadlineExceeded, "deadline exceeded while the call ran", cause: error)
        }
        return RPCError.wrapping(error)
    }

    /// A handler called on the connection's event loop, for hot paths where a task hop per call costs too much
    /// (measured by `scripts/bench.sh wire`). It must not block; it completes the responder now or later.
    public mutating func register<Request: ProtoMessage, Response: ProtoMessage>(
        _ method: String,
        access: RPCAccess = .public,
        onEventLoop handler: @escaping @Sendable (Request, ServerCallContext, RPCResponder<Response>) -> Void
    ) {
        self.routes[method] = Route(access: access) { payload, context, raw in
            guard let request: Request = Self.decode(payload, raw) else { return }
            handler(request, context, RPCResponder(raw: raw))
        }
    }

    private static func decode<Request: ProtoMessage>(_ payload: ByteBuffer, _ raw: RawResponder) -> Request? {
        do {
            return try Request(decoding: payload)
        } catch {
            raw.complete(.failure(RPCError(.invalidArgument, "payload is not a valid \(Request.self)")))
            return nil
        }
    }
}

/// `flashsale.Common`, which every router answers: Ping echoes the data and names the service.
struct CommonMethods: CommonRPCServer {
    let serviceName: String

    func ping(_ request: WirePingRequest, context: ServerCallContext, responder: RPCResponder<WirePingResponse>) {
        responder.succeed(WirePingResponse(data: request.data, service: self.serviceName))
    }
}
