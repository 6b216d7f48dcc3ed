import ArgumentParser
import Foundation
import ServiceKit
import Wire

/// `flashsale-bench faults`: the fault suite. Each case runs a sale and injects one fault, or one hostile client's
/// load, mid-sale; the table shows what the platform's promises came to: nothing lost, duplicated, oversold or
/// stranded, the ground-truth invariant at every sample (`truth`), and the answers each hostile case expected
/// (`expect`; what it saw and missed is listed under the table).
struct FaultsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "faults", abstract: "Run sales through faults and audit them.")

    @Option(help: """
        Cases, comma-separated, or `all`: \(Fault.allCases.map(\.rawValue).joined(separator: ",")). Default: all but \
        the pg* cases (PostgreSQL under Patroni: they start a cluster of their own).
        """)
    var cases = Fault.allCases.filter { !$0.needsPatroni }.map(\.rawValue).joined(separator: ",")
    @Option(help: "Units of stock per case.") var stock: Int64 = 2_000
    @Option var connections = 40
    @Option var depth = 4

    func run() async throws {
        let faults = cases == "all" ? Fault.allCases : try cases.split(separator: ",").map { name in
            guard let fault = Fault(rawValue: String(name)) else { throw ValidationError("unknown case \(name)") }
            return fault
        }
        let logger = ServiceRuntime.makeLogger(label: "faults", level: .critical)
        let say: @Sendable (String) -> Void = { FileHandle.standardError.write(($0 + "\n").data(using: .utf8)!) }
        say("starting the fault suite's own PostgreSQL and ZooKeeper...")
        let servers = try await FaultServers.start(patroni: faults.contains { $0.needsPatroni })
        var rows: [FaultRow] = []
        var failures: [(fault: Fault, error: String)] = []
        for fault in faults {
            say("case \(fault.rawValue): sale of \(stock) units on 3 edges\(fault.isHostile ? ", hostile load mid-sale" : "")")
            do {
                rows.append(try await FaultCase(
                    fault: fault, servers: servers, stock: stock, connections: connections, depth: depth,
                    logger: logger, say: say
                ).run())
            } catch {
                failures.append((fault, "\(error)"))
            }
        }
        await servers.stop()

        print("case        attempts  at fault  orders  stock  lost  duplicated  oversold  stranded  audit  quota  truth  expect  retries  errors  seconds")
        for row in rows {
            print([
                row.fault.rawValue.padding(toLength: 11, withPad: " ", startingAt: 0),
                pad(row.attempts, 8), pad(row.completedAtFault, 9), pad(row.orders, 6), pad(row.stock, 5), pad(row.lost, 4), pad(row.duplicated, 10),
                pad(row.oversold, 8), pad(row.stranded, 8), (row.auditClean ? "clean" : "FAIL ").padding(toLength: 5, withPad: " ", startingAt: 0),
                (row.quotaInvariant ? "ok" : "FAIL").padding(toLength: 5, withPad: " ", startingAt: 0),
                (row.groundTruthHeld ? "ok" : "FAIL").padding(toLength: 5, withPad: " ", startingAt: 0),
                (row.failures.isEmpty ? "ok" : "FAIL").padding(toLength: 6, withPad: " ", startingAt: 0),
                pad(row.retries, 7), pad(row.errors, 6), pad(Int(row.seconds), 7),
            ].joined(separator: " "))
        }
        // What each case saw: the ground truth's samples, the hostile load's answers, and every expectation missed.
        for row in rows {
            let truth = row.groundTruth
            print("  \(row.fault.rawValue): ground truth \(truth.samples) samples (\(truth.unreadable) unreadable), "
                + "\(truth.violations.count) over the bound (worst +\(truth.worstExcess))")
            for violation in truth.violations.prefix(3) { print("    over: \(violation)") }
            for note in row.notes { print("    \(note)") }
            for failure in row.failures { print("    FAILED: \(failure)") }
        }
        for failure in failures { print("case failed to run: \(failure.fault.rawValue): \(failure.error)") }
        let sum = { (value: (FaultRow) -> Int64) in rows.reduce(Int64(0)) { $0 + value($1) } }
        let hostileCases = rows.filter(\.fault.isHostile).count
        print("RESULT cases=\(rows.count) hostile_cases=\(hostileCases) lost=\(sum { Int64($0.lost) }) duplicated=\(sum { Int64($0.duplicated) }) oversold=\(sum { $0.oversold }) stranded=\(sum { $0.stranded }) failed_cases=\(failures.count + rows.filter { !$0.passed }.count)")
        if !failures.isEmpty || rows.contains(where: { !$0.passed }) { throw ExitCode(1) }
    }

    private func pad(_ value: some BinaryInteger, _ width: Int) -> String {
        let text = String(value)
        return String(repeating: " ", count: max(0, width - text.count)) + text
    }
}
