import Metrics
import ZooKeeperClient

/// `flashsale_zookeeper_connected` (1 while the session is connected) and the session's state as a state set.
public struct ZooKeeperMetrics: Sendable {
    static let states = ["connecting", "associating", "connected", "read_only", "not_connected", "expired", "auth_failed", "unknown"]

    let connected: Gauge
    let state: StateSetGauge

    public init(service: String) {
        connected = Gauge(label: MetricName.zooKeeperConnected, dimensions: [("service", service)])
        state = StateSetGauge(label: MetricName.zooKeeperSessionState, states: Self.states, dimensions: [("service", service)])
    }

    public func record(_ session: ZooKeeperSessionState?) {
        let name: String
        switch session {
        case .connecting?: name = "connecting"
        case .associating?: name = "associating"
        case .connected?: name = "connected"
        case .connectedReadOnly?: name = "read_only"
        case .notConnected?, nil: name = "not_connected"
        case .expired?: name = "expired"
        case .authFailed?: name = "auth_failed"
        case .unknown?: name = "unknown"
        }
        connected.record(name == "connected" ? 1 : 0)
        state.set(name)
    }
}
