/// A process cannot start as it was set up: a secret missing or unreadable, two tokens that must differ and do not.
/// It is no call's outcome, so it carries no RPC status: the executable prints it and exits.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable, Equatable {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}
