import Logging
import NIOCore

import Foundation

/// What every service executable shares: log set-up, secrets from the environment, the ready line.
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
        if let token = environment["FLASHSALE_OPERATOR_TOKEN"], !token.isEmpty { return token }
        guard let path = environment["FLASHSALE_OPERATOR_TOKEN_FILE"], !path.isEmpty else { return nil }
        guard let contents = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw RPCError(.failedPrecondition, "cannot read the operator token file")
        }
        let token = contents.split(separator: "\n").first.map(String.init)?.trimmingCharacters(in: .whitespaces) ?? ""
        return token.isEmpty ? nil : token
    }

    /// A timeout flag in seconds (fractions allowed) as the server configuration takes it: 0 or less is none.
    public static func timeout(seconds: Double) -> TimeAmount? {
        seconds > 0 ? .nanoseconds(Int64(seconds * 1e9)) : nil
    }

    /// Printed once a service serves: `READY <service> <host>:<port>`. Scripts and tests wait for this line.
    public static func announceReady(service: String, address: SocketAddress) {
        print("READY \(service) \(address.ipAddress ?? "?"):\(address.port ?? 0)")
        fflush(nil)  // all streams: Swift 6 refuses a reference to the global `stdout`
    }
}

extension Logger.Level {
    /// Parses `trace|debug|info|notice|warning|error|critical`.
    public init?(name: String) {
        self.init(rawValue: name.lowercased())
    }
}
