#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOPosix

/// Stops the service when the process that started it is gone. The starter (`ManagedProcess`) hands the child the
/// read end of a pipe and keeps the write end; when the starter ends, however it ends (a test runner or a sale that
/// crashes, or is killed -9), the kernel closes that end and the child reads end-of-file. Without it, a crashed
/// harness left its edges, quota service and inventory running, retrying a ZooKeeper that was gone, and taking CPU
/// from every later run on the machine.
///
/// The child then sends itself SIGTERM, as an operator would: while it runs, its service group shuts down
/// gracefully; still starting (a dependency unreachable, before the group runs), it ends at once. A pipe rather than
/// `PR_SET_PDEATHSIG`: that signal follows the thread that spawned the child, and the harness spawns from pooled
/// threads, which end when idle.
public enum ParentLifeline {
    /// The environment variable that names the descriptor (set by `ManagedProcess`).
    public static let environmentKey = "FLASHSALE_LIFELINE_FD"

    /// The descriptor `environment` names, or nil when this process was not started with one (by hand, by systemd).
    public static func descriptor(in environment: [String: String]) -> CInt? {
        guard let text = environment[environmentKey], let descriptor = CInt(text), descriptor > 2 else { return nil }
        return descriptor
    }

    /// Watches the lifeline `environment` names, if any, for the rest of the process's life: at its end-of-file
    /// `starterGone` runs (by default SIGTERM to this process). Only a pipe is a lifeline: a stray variable naming
    /// some other descriptor is left alone.
    public static func watch(
        environment: [String: String], group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger,
        starterGone: @escaping @Sendable () -> Void = { kill(getpid(), SIGTERM) }
    ) async {
        guard let descriptor = descriptor(in: environment) else { return }
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_mode & S_IFMT == S_IFIFO,
              let channel = try? await NIOPipeBootstrap(group: group)
                .channelOption(.allowRemoteHalfClosure, value: false)
                .takingOwnershipOfDescriptor(input: descriptor).get()
        else {
            logger.warning("the lifeline descriptor is not a pipe: not watching it", metadata: ["descriptor": "\(descriptor)"])
            return
        }
        // The starter never writes: the channel closes at end-of-file.
        channel.closeFuture.whenComplete { _ in
            logger.warning("the process that started this service is gone: shutting down")
            starterGone()
        }
    }
}
