/// The rows of one statement, every value in PostgreSQL's text format (`nil` is SQL NULL).
public struct PostgresResult: Sendable {
    public let columns: [String]
    public let rows: [[String?]]
    /// The command tag, e.g. `INSERT 0 1`, `SELECT 3`.
    public let commandTag: String
    /// Rows affected by INSERT/UPDATE/DELETE (or returned by SELECT); 0 when the command has no count.
    public let affectedRows: Int

    public init(columns: [String], rows: [[String?]], commandTag: String, affectedRows: Int) {
        self.columns = columns
        self.rows = rows
        self.commandTag = commandTag
        self.affectedRows = affectedRows
    }

    public var count: Int { rows.count }
    public var isEmpty: Bool { rows.isEmpty }

    public func columnIndex(_ name: String) -> Int? { columns.firstIndex(of: name) }

    /// The value at (row, column index); nil for NULL or when out of range.
    public func string(_ row: Int, _ column: Int) -> String? {
        guard rows.indices.contains(row), rows[row].indices.contains(column) else { return nil }
        return rows[row][column]
    }

    public func string(_ row: Int, _ column: String) -> String? {
        columnIndex(column).flatMap { string(row, $0) }
    }

    /// The value parsed as an integer; nil for NULL or a value that is not one.
    public func int64(_ row: Int, _ column: Int) -> Int64? {
        string(row, column).flatMap { Int64($0) }
    }

    public func int64(_ row: Int, _ column: String) -> Int64? {
        columnIndex(column).flatMap { int64(row, $0) }
    }

    public func double(_ row: Int, _ column: Int) -> Double? {
        string(row, column).flatMap { Double($0) }
    }

    /// PostgreSQL's text form of booleans is `t` / `f`.
    public func bool(_ row: Int, _ column: Int) -> Bool? {
        switch string(row, column) {
        case "t", "true": return true
        case "f", "false": return false
        default: return nil
        }
    }

    public func bool(_ row: Int, _ column: String) -> Bool? {
        columnIndex(column).flatMap { bool(row, $0) }
    }
}
