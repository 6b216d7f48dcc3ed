/// When an edge cut off from ZooKeeper must stop selling, pure: the server expires a session one session timeout
/// after it last heard from it (never earlier: it rounds expiry up to its next tick), and `lastHeard` is when a call
/// it answered was sent, so the session lives at least until `lastHeard + sessionTimeout`. The edge stops a margin
/// before that: an eighth of the timeout, at least 200 ms (the watch's granularity, scheduling, a slow answer).
enum SessionGuard {
    static func margin(sessionTimeout: Duration) -> Duration { max(sessionTimeout / 8, .milliseconds(200)) }

    /// The instant the edge fences itself. Every forward must end by then (`QuotaLedger.fence`): the inventory buys
    /// nothing past a forward's deadline, so no purchase of this edge commits once its session could expire
    /// (timing rule T1 of the model; the margin also covers the forward's time on the wire).
    static func fence(lastHeard: ContinuousClock.Instant, sessionTimeout: Duration) -> ContinuousClock.Instant {
        lastHeard + sessionTimeout - margin(sessionTimeout: sessionTimeout)
    }

    static func mustSuspend(lastHeard: ContinuousClock.Instant, now: ContinuousClock.Instant, sessionTimeout: Duration) -> Bool {
        now >= fence(lastHeard: lastHeard, sessionTimeout: sessionTimeout)
    }

    /// How often to make sure ZooKeeper still answers: often enough that a healthy connection is never near the limit.
    static func heartbeat(sessionTimeout: Duration) -> Duration { max(sessionTimeout / 10, .milliseconds(50)) }
}
