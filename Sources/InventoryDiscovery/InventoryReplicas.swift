import Addressing
import Logging
import NIOCore
import NIOPosix
import Proto
import Synchronization
import Wire

/// The inventory as its callers see it: any number of replicas, one `RPCClient` pool each, every call on the replica
/// `InventoryReplicaSet` chooses. The set is the `--inventory` list plus what `InventoryDirectory` finds in
/// ZooKeeper. Every replica answers every call the same (the databases are the truth), so a call may go anywhere; a
/// purchase whose answer was lost is settled by a lookup on whichever replica is up, which sees the same database.
public final class InventoryReplicas: Sendable {
    private struct State {
        var set: InventoryReplicaSet
        var listed: [HostPort]
        var discovered: [HostPort] = []
        var clients: [HostPort: RPCClient] = [:]
        /// Replicas that left the set, since when: their clients stay a while (a replica leaves before it drains, and
        /// its calls in flight are still answered), then `closeDeparted` closes them.
        var departed: [HostPort: NIODeadline] = [:]
    }

    private let template: RPCClientConfiguration
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state: Mutex<State>

    /// `template` is every replica's client configuration (its host and port are replaced by each replica's).
    public init(
        listed: [HostPort], template: RPCClientConfiguration,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger
    ) {
        self.template = template
        self.group = group
        self.logger = logger
        self.state = Mutex(State(set: InventoryReplicaSet(listed), listed: listed))
    }

    /// Clients open (the tests'): one per replica that took a call, until closed.
    var clientCount: Int { state.withLock { $0.clients.count } }
    /// The chooser's state (the tests').
    var replicaSet: InventoryReplicaSet { state.withLock { $0.set } }

    /// The replicas calls are spread over now.
    public var addresses: [HostPort] { state.withLock { $0.set.addresses } }

    /// What ZooKeeper holds now. An empty set changes nothing (a ZooKeeper hiccup must not leave the caller with no
    /// inventory; dead replicas fail fast and are skipped anyway).
    public func discovered(_ addresses: [HostPort]) {
        guard !addresses.isEmpty else { return }
        let changed = state.withLock { state -> [HostPort]? in
            guard state.discovered != addresses else { return nil }
            state.discovered = addresses
            state.set.replace(with: state.listed + addresses)
            let now = NIODeadline.now()
            let kept = Set(state.set.addresses)
            for address in state.clients.keys {
                if kept.contains(address) {
                    state.departed[address] = nil
                } else if state.departed[address] == nil {
                    state.departed[address] = now
                }
            }
            return state.set.addresses
        }
        if let changed { logger.info("inventory replicas", metadata: ["replicas": "\(changed.map(\.description))"]) }
    }

    /// Calls `method` on a chosen replica; the answer (or its absence) tells the set about the replica. A call that
    /// never left (the replica refused the connection, or is waiting out its backoff) goes to another replica at
    /// once, within the same deadline: it did nothing anywhere, so sending it elsewhere is safe for any method.
    public func callFuture<Request: ProtoMessage, Response: ProtoMessage>(
        _ method: String, _ request: Request, as: Response.Type = Response.self, timeout: TimeAmount? = nil
    ) -> EventLoopFuture<Response> {
        let deadline = (timeout ?? template.defaultTimeout).map { NIODeadline.now() + $0 }
        return attempt(method, request, as: Response.self, deadline: deadline, tried: [], failure: nil)
    }

    /// `failure`: the error of the last replica tried, which stands when no other is left.
    private func attempt<Request: ProtoMessage, Response: ProtoMessage>(
        _ method: String, _ request: Request, as: Response.Type, deadline: NIODeadline?, tried: Set<HostPort>,
        failure: RPCError?
    ) -> EventLoopFuture<Response> {
        let chosen = state.withLock { state -> (HostPort, RPCClient)? in
            guard let address = state.set.choose(now: .now(), excluding: tried) else { return nil }
            return (address, client(address, &state))
        }
        guard let (address, client) = chosen else {
            return group.next().makeFailedFuture(failure ?? RPCError.notSent(.unavailable, "no inventory replica known"))
        }
        let timeout = deadline.map { $0 - .now() }
        if let failure, let timeout, timeout <= .zero {
            state.withLock { $0.set.finished(address, .answered, now: .now()) }
            return client.eventLoop.makeFailedFuture(failure)
        }
        let future = client.callFuture(method, request, as: Response.self, timeout: timeout)
        future.whenComplete { result in
            let outcome: InventoryReplicaSet.Outcome
            switch result {
            case .success: outcome = .answered
            case .failure(let error): outcome = InventoryReplicaSet.outcome(of: error, connected: client.isConnected)
            }
            self.state.withLock { $0.set.finished(address, outcome, now: .now()) }
        }
        return future.flatMapError { error in
            guard let failure = error as? RPCError, failure.wasNotSent, failure.code == .unavailable else {
                return future
            }
            return self.attempt(
                method, request, as: Response.self, deadline: deadline, tried: tried.union([address]), failure: failure)
        }
    }

    public func call<Request: ProtoMessage, Response: ProtoMessage>(
        _ method: String, _ request: Request, as: Response.Type = Response.self, timeout: TimeAmount? = nil
    ) async throws -> Response {
        try await callFuture(method, request, as: Response.self, timeout: timeout).get()
    }

    private func client(_ address: HostPort, _ state: inout State) -> RPCClient {
        if let client = state.clients[address] { return client }
        var configuration = template
        configuration.host = address.host
        configuration.port = address.port
        let client = RPCClient(configuration: configuration, group: group, logger: logger)
        state.clients[address] = client
        return client
    }

    /// Closes the clients of replicas that left the set at least `grace` ago (a dead replica's client would
    /// otherwise keep reconnecting).
    public func closeDeparted(grace: TimeAmount) async {
        let now = NIODeadline.now()
        let closing = state.withLock { state -> [RPCClient] in
            let due = state.departed.filter { $0.value + grace <= now }.map(\.key)
            return due.compactMap { address in
                state.departed[address] = nil
                return state.clients.removeValue(forKey: address)
            }
        }
        for client in closing { await client.shutdown() }
    }

    public func shutdown() async {
        let clients = state.withLock { Array($0.clients.values) }
        for client in clients { await client.shutdown() }
    }
}

/// Calls by the generated method table, as on one `RPCClient`.
extension InventoryReplicas {
    public func callFuture<M: RPCMethod>(_ method: M.Type, _ request: M.Input, timeout: TimeAmount? = nil) -> EventLoopFuture<M.Output> {
        callFuture(M.name, request, as: M.Output.self, timeout: timeout)
    }

    public func call<M: RPCMethod>(_ method: M.Type, _ request: M.Input, timeout: TimeAmount? = nil) async throws -> M.Output {
        try await call(M.name, request, as: M.Output.self, timeout: timeout)
    }
}
