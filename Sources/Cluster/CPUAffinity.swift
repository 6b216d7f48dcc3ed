/// Pins a process, every thread of it, to one CPU with util-linux's `taskset -a -p -c` (Swift's Glibc does not
/// import `sched_setaffinity`), so a benchmark can put the load generator on one core and the servers on the other
/// and tell their costs apart. Threads made later inherit their creator's set.
public enum CPUAffinity {
    public static func pin(pid: Int32, cpu: Int) async throws {
        let result = try await runCommand("/usr/bin/taskset", ["-a", "-p", "-c", "\(cpu)", "\(pid)"], timeout: .seconds(10))
        guard result.status == 0 else { throw CPUAffinityError(pid: pid, cpu: cpu, output: result.output) }
    }
}

public struct CPUAffinityError: Error, CustomStringConvertible {
    let pid: Int32
    let cpu: Int
    let output: String
    public var description: String { "cannot pin process \(pid) to CPU \(cpu): \(output)" }
}
