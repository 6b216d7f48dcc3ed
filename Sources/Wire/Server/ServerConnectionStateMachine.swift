import NIOCore
import Proto

/// The rules of one server connection, without I/O: which calls are in flight, which wait for a slot, when the
/// connection may read, when its timers fire and when it closes. Every input is a `mutating func`; those that can
/// lead to I/O return an `Action` that `RPCServerHandler.run(_:)` carries out (postgres-nio's
/// `ConnectionStateMachine`, grpc-swift-nio-transport's `ServerConnectionManagementHandler.StateMachine`).
/// Times are passed in, so tests are plain function calls.
struct ServerConnectionStateMachine {
    struct Configuration {
        /// Back-pressure: past this many calls started or waiting the connection stops reading.
        var maxCallsInFlight: Int
        var idleTimeout: TimeAmount?
        var frameTimeout: TimeAmount?
    }

    enum CloseReason: Equatable {
        /// Nothing read for `idleTimeout` and nothing in flight.
        case idle
        /// A partial frame held past `frameTimeout` while the connection was being read.
        case partialFrameTimeout
        /// Draining, and the last call has been answered (answers are flushed first).
        case drained
    }

    enum Action: Equatable {
        /// Nothing to do (for `readRequested`: the read waits until the connection may read again).
        case none
        /// Pass a read on to the channel.
        case read
        /// Schedule the connection's one idle timer (it calls `idleTimerFired`).
        case armIdleTimer(at: NIODeadline)
        /// Schedule the connection's one frame timer (it calls `frameTimerFired`).
        case armFrameTimer(at: NIODeadline)
        case close(CloseReason)
    }

    /// A request decoded while the connection was at its cap, and when it was read (its budget counts from then).
    struct Queued {
        var request: WireRequest
        var arrival: NIODeadline
    }

    private let configuration: Configuration
    /// Calls started and not yet answered, by server-side serial (call ids are the client's and may repeat).
    private var inFlight = PendingCalls<UInt64>(initialCapacity: 1)
    /// Requests decoded while at the cap: at most what one read produced, since reading stops at the cap. Made at
    /// the first: an empty `CircularBuffer` still allocates 16 slots, 1.6 KiB on every connection.
    private var queued: CircularBuffer<Queued>?
    private var readPending = false
    private var writable = true
    private var draining = false
    /// Since when the decoder holds a partial frame (nil: at a frame boundary).
    private var partialFrameSince: NIODeadline?
    private var frameTimerArmed = false
    /// The end of the last read, read by the idle timer.
    private var lastRead = NIODeadline.uptimeNanoseconds(0)
    private var idleTimerArmed = false

    init(configuration: Configuration) {
        self.configuration = configuration
    }

    var callsInFlight: Int { self.inFlight.count }
    var callsQueued: Int { self.queued?.count ?? 0 }

    /// Reading stops while the connection is at its cap of calls, draining, or its answers are not being taken
    /// (a client that sends and never reads would otherwise make the server buffer its answers without bound).
    private var mayRead: Bool {
        self.inFlight.count + self.callsQueued < self.configuration.maxCallsInFlight && !self.draining && self.writable
    }

    private var isIdle: Bool { self.inFlight.count == 0 && self.queued?.isEmpty ?? true }

    // MARK: the channel

    /// The channel is active (or the handler was added to an active one): the idle clock starts.
    mutating func activated(now: NIODeadline) -> Action {
        guard let timeout = self.configuration.idleTimeout, !self.idleTimerArmed else { return .none }
        self.idleTimerArmed = true
        self.lastRead = now
        return .armIdleTimer(at: now + timeout)
    }

    mutating func writabilityChanged(isWritable: Bool) -> Action {
        self.writable = isWritable
        return self.readIfPending()
    }

    /// The pipeline asks for a read.
    mutating func readRequested() -> Action {
        if self.mayRead { return .read }
        self.readPending = true
        return .none
    }

    /// The end of a read. `now` is read only when an idle timeout is configured.
    mutating func readCompleted(now: @autoclosure () -> NIODeadline) {
        if self.idleTimerArmed { self.lastRead = now() }
    }

    /// The channel closed: queued requests will never run.
    mutating func closed() {
        self.queued = nil
    }

    /// Graceful shutdown: stop reading, finish the calls in flight, then close.
    mutating func drain() -> Action {
        self.draining = true
        return self.isIdle ? .close(.drained) : .none
    }

    // MARK: frames and calls

    /// A whole frame arrived: the decoder is at a frame boundary (until it reports a partial frame again).
    mutating func frameReceived() {
        self.partialFrameSince = nil
    }

    /// A decoded request: true when it may start now; otherwise it waits (see `nextQueued`). `now` is read only
    /// when it waits.
    mutating func requestReceived(_ request: WireRequest, now: @autoclosure () -> NIODeadline) -> Bool {
        guard self.inFlight.count >= self.configuration.maxCallsInFlight else { return true }
        if self.queued == nil { self.queued = CircularBuffer() }
        self.queued!.append(Queued(request: request, arrival: now()))
        return false
    }

    /// An admitted call starts: its serial names it until it is answered.
    mutating func callStarted(callID: UInt64) -> UInt64 {
        self.inFlight.add(callID)
    }

    /// A call's answer: its call id, or nil when it was answered already (a call completes once).
    /// Then take `nextQueued` until nil, then `callsSettled`.
    mutating func callFinished(serial: UInt64) -> UInt64? {
        self.inFlight.remove(serial)
    }

    /// The next waiting request, while there is a free slot. Admission may refuse it without taking the slot, so
    /// the caller asks again after each (rather than being told how many to start).
    mutating func nextQueued() -> Queued? {
        guard self.inFlight.count < self.configuration.maxCallsInFlight else { return nil }
        return self.queued?.popFirst()
    }

    /// After answers and the queued calls they let start: read again, or close a drained connection.
    mutating func callsSettled() -> Action {
        if self.draining { return self.isIdle ? .close(.drained) : .none }
        return self.readIfPending()
    }

    private mutating func readIfPending() -> Action {
        guard self.readPending, self.mayRead else { return .none }
        self.readPending = false
        return .read
    }

    // MARK: timers

    /// A read ended with part of a frame held. Its clock starts at the first such read after a whole frame (or
    /// ever): a frame still incomplete from an earlier read keeps its start, however many bytes trickle in.
    /// `now` is read only when the clock starts.
    mutating func partialFrameHeld(now: @autoclosure () -> NIODeadline) -> Action {
        guard let timeout = self.configuration.frameTimeout, self.partialFrameSince == nil else { return .none }
        let now = now()
        self.partialFrameSince = now
        guard !self.frameTimerArmed else { return .none }
        self.frameTimerArmed = true
        return .armFrameTimer(at: now + timeout)
    }

    /// One timer per connection, only while a partial frame is held: it re-arms for the partial frame held now.
    mutating func frameTimerFired(now: NIODeadline) -> Action {
        self.frameTimerArmed = false
        guard let since = self.partialFrameSince, let timeout = self.configuration.frameTimeout else { return .none }
        if self.readPending {
            // We are not reading this connection (back-pressure): the client cannot finish its frame. Start over.
            self.partialFrameSince = now
            self.frameTimerArmed = true
            return .armFrameTimer(at: now + timeout)
        }
        if now - since >= timeout { return .close(.partialFrameTimeout) }
        self.frameTimerArmed = true
        return .armFrameTimer(at: since + timeout)
    }

    /// Closes a connection with nothing read for `idleTimeout` and nothing in flight; otherwise checks again when
    /// it could next be idle that long.
    mutating func idleTimerFired(now: NIODeadline) -> Action {
        guard let timeout = self.configuration.idleTimeout, self.idleTimerArmed else { return .none }
        if now - self.lastRead < timeout { return .armIdleTimer(at: self.lastRead + timeout) }
        guard self.isIdle else { return .armIdleTimer(at: now + timeout) }
        self.idleTimerArmed = false
        return .close(.idle)
    }
}
