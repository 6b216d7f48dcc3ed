import Metrics

/// `flashsale_zookeeper_connected` (1 while the session is connected) and the session's state as a state set
/// (`states`: the names `ZooKeeperSessionState.name` gives).
public struct ZooKeeperMetrics: Sendable {
    static let states = ["connecting", "associating", "connected", "read_only", "not_connected", "expired", "auth_failed", "unknown"]

    let connected: Gauge
    let state: StateSetGauge

    public init(service: String) {
        connected = Gauge(label: MetricName.zooKeeperConnected, dimensions: [("service", service)])
        state = StateSetGauge(label: MetricName.zooKeeperSessionState, states: Self.states, dimensions: [("service", service)])
    }

    /// `session`: the ZooKeeper session's state as `ZooKeeperSessionState.name` spells it; nil while there is none.
    public func record(_ session: String?) {
        let name = session ?? "not_connected"
        connected.record(name == "connected" ? 1 : 0)
        state.set(name)
    }
}
