import FoundationEssentials
import Logging
import NIOCore
import Wire

/// What every service executable shares: log set-up, the tokens from the environment, timeout flags.
public enum ServiceRuntime {
    /// Logs to standard error at `level`; each service passes its logger down from here.
    public static func makeLogger(label: String, level: Logger.Level) -> Logger {
        var logger = Logger(label: label) { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = level
        return logger
    }

    /// The operator token: `FLASHSALE_OPERATOR_TOKEN`, or the first line of the file named by
    /// `FLASHSALE_OPERATOR_TOKEN_FILE`. Never logged.
    public static func operatorToken(environment: [String: String]) throws -> String? {
        try Secret.read("FLASHSALE_OPERATOR_TOKEN", environment: environment)
    }

    /// The service token, which the services present to one another: `FLASHSALE_SERVICE_TOKEN`, or the first line
    /// of the file named by `FLASHSALE_SERVICE_TOKEN_FILE`. Never logged.
    public static func serviceToken(environment: [String: String]) throws -> String? {
        try Secret.read("FLASHSALE_SERVICE_TOKEN", environment: environment)
    }

    /// What a service's server accepts: the service token, which every service needs (without it a service can
    /// neither serve nor make the calls it exists for, so it refuses to start), and the operator token when it
    /// serves operator methods (`operator`). The two must differ, or each would do the other's work.
    public static func credentials(environment: [String: String], operator: Bool) throws -> RPCCredentials {
        guard let service = try serviceToken(environment: environment) else {
            throw ConfigurationError("no service token: set FLASHSALE_SERVICE_TOKEN or FLASHSALE_SERVICE_TOKEN_FILE")
        }
        let operatorToken = `operator` ? try operatorToken(environment: environment) : nil
        if operatorToken == service {
            throw ConfigurationError("the operator and service tokens are the same: give each its own")
        }
        return RPCCredentials(operatorToken: operatorToken, serviceToken: service)
    }

    /// A timeout flag in seconds (fractions allowed) as the server configuration takes it: 0 or less is none.
    public static func timeout(seconds: Double) -> TimeAmount? {
        seconds > 0 ? .nanoseconds(Int64(seconds * 1e9)) : nil
    }
}

extension Logger.Level {
    /// Parses `trace|debug|info|notice|warning|error|critical`.
    public init?(name: String) {
        self.init(rawValue: name.lowercased())
    }
}
