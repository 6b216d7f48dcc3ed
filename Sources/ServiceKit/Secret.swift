import Addressing
import FoundationEssentials

/// The one way a process reads a secret: the variable `NAME`, or the first line of the file named by `NAME_FILE`
/// (so the secret need not sit in the environment). Never logged.
public enum Secret {
    /// `NAME`, or the first line of the file named by `NAME_FILE` (trimmed); nil when neither is set or both empty.
    /// Throws when a named file cannot be read.
    public static func read(_ name: String, environment: [String: String]) throws -> String? {
        if let value = environment[name], !value.isEmpty { return value }
        guard let path = environment[name + "_FILE"], !path.isEmpty else { return nil }
        guard let contents = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigurationError("cannot read the file named by \(name)_FILE")
        }
        let value = contents.split(separator: "\n").first?.trimmingWhitespace ?? ""
        return value.isEmpty ? nil : value
    }
}
