import Logging
import PostgresClient

/// What the inventory requires of each database's serving connection before it serves (review findings 15, 20):
/// - a restricted role: not a superuser, not the tables' owner, no right to write a table directly, not allowed to
///   create roles (in PostgreSQL 15 that lets it grant itself the owner's), and a member of `flashsale_service` (so
///   it may call the procedures). Otherwise a bug or a stolen connection could rewrite the stock without the
///   procedures' checks.
/// - `synchronous_commit` that flushes the commit before it returns (`on`, `remote_write` or `remote_apply`): the
///   inventory answers PURCHASED once the batch's commit returned, which must mean the order is on disk.
/// Pure: the facts come from one query (`ServingCheck.query`), the verdict from `problems`.
struct ServingCheck: Sendable, Equatable {
    var user: String
    var superuser: Bool
    var ownsTables: Bool
    var writesTables: Bool
    var createsRoles: Bool
    var inServiceRole: Bool
    var synchronousCommit: String

    /// The facts of the connection's role and session, in the order of the fields above. Run after the migrations:
    /// it names the tables and the role they create.
    static let query = """
        SELECT current_user::text, r.rolsuper, pg_has_role(current_user, c.relowner, 'USAGE'),
            has_table_privilege('stock_slot', 'INSERT, UPDATE, DELETE, TRUNCATE')
                OR has_table_privilege('orders', 'INSERT, UPDATE, DELETE, TRUNCATE')
                OR has_table_privilege('products', 'INSERT, UPDATE, DELETE, TRUNCATE'),
            r.rolcreaterole,
            pg_has_role(current_user, '\(Schema.serviceRoleName)', 'USAGE'),
            current_setting('synchronous_commit')
        FROM pg_roles r, pg_class c
        WHERE r.rolname = current_user AND c.oid = 'stock_slot'::regclass
        """

    /// Values that make a commit wait for the local flush (and for synchronous standbys, if any).
    static let durableSynchronousCommit: Set<String> = ["on", "remote_write", "remote_apply"]

    /// What is wrong with the role (refused unless `--allow-privileged-role`).
    var roleProblems: [String] {
        var problems: [String] = []
        if superuser { problems.append("is a superuser") }
        if ownsTables { problems.append("owns the tables") }
        if writesTables && !superuser && !ownsTables { problems.append("may write the tables directly") }
        if createsRoles && !superuser { problems.append("may create roles") }
        if !inServiceRole { problems.append("is not a member of \(Schema.serviceRoleName)") }
        return problems
    }

    /// What is wrong with durability (refused unless `--allow-asynchronous-commit`).
    var durabilityProblem: String? {
        Self.durableSynchronousCommit.contains(synchronousCommit)
            ? nil : "synchronous_commit is \(synchronousCommit): an acknowledged order could be lost in a crash"
    }

    /// The facts of `connection`'s role and session.
    static func read(_ connection: PostgresConnection) async throws -> ServingCheck {
        let row = try await connection.query(query)
        return ServingCheck(
            user: row.string(0, 0) ?? "?", superuser: row.bool(0, 1) ?? true, ownsTables: row.bool(0, 2) ?? true,
            writesTables: row.bool(0, 3) ?? true, createsRoles: row.bool(0, 4) ?? true, inServiceRole: row.bool(0, 5) ?? false,
            synchronousCommit: row.string(0, 6) ?? "?")
    }

    /// What a developer may allow on a server of their own (`--allow-privileged-role`, `--allow-asynchronous-commit`).
    struct Allowances: Sendable {
        var privilegedRole = false
        var asynchronousCommit = false
    }

    /// The refusals for this connection, given what is allowed (empty: it may serve).
    func refusals(_ allow: Allowances) -> [String] {
        var refusals: [String] = []
        if !roleProblems.isEmpty && !allow.privilegedRole {
            refusals.append(
                "the serving role \(user) \(roleProblems.joined(separator: ", ")): serve as a login role in "
                    + "\(Schema.serviceRoleName) (--dsn) and migrate as the owner (--migrate-dsn), or pass --allow-privileged-role")
        }
        if let durabilityProblem, !allow.asynchronousCommit {
            refusals.append("\(durabilityProblem): set synchronous_commit = on, or pass --allow-asynchronous-commit")
        }
        return refusals
    }

    /// Checks one database's serving connection at start: throws (the service does not start) when it is not fit to
    /// serve, unless the developer's flags allow what is wrong; then the log says so.
    static func require(
        _ connection: PostgresConnection, database: DatabaseRole, allow: Allowances, logger: Logger
    ) async throws {
        let check = try await read(connection)
        let refusals = check.refusals(allow)
        guard refusals.isEmpty else { throw ServingRefused(database: database, reasons: refusals) }
        let metadata: Logger.Metadata = ["database": "\(database.rawValue)", "user": "\(check.user)"]
        if !check.roleProblems.isEmpty {
            var metadata = metadata
            metadata["problems"] = "\(check.roleProblems.joined(separator: ", "))"
            logger.warning("serving with a privileged role (--allow-privileged-role)", metadata: metadata)
        }
        if let problem = check.durabilityProblem {
            var metadata = metadata
            metadata["problem"] = "\(problem)"
            logger.warning("serving without durable commits (--allow-asynchronous-commit)", metadata: metadata)
        }
    }
}

/// Why the inventory will not serve a database: it exits with this (no READY line).
struct ServingRefused: Error, CustomStringConvertible {
    let database: DatabaseRole
    let reasons: [String]

    var description: String {
        "refusing to serve the \(database.rawValue) database: " + reasons.joined(separator: "; ")
    }
}
