#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// Shuts the service down gracefully when the process that started it is gone. The starter (`ManagedProcess`)
/// hands the child the read end of a pipe and keeps the write end; when the starter ends, however it ends (a test
/// runner or a sale that crashes, or is killed -9), the kernel closes that end and the child reads end-of-file.
/// Without it, a crashed harness left its edges, quota service and inventory running, retrying a ZooKeeper that was
/// gone, and taking CPU from every later run on the machine.
///
/// A pipe rather than `PR_SET_PDEATHSIG`: that signal follows the thread that spawned the child, and the harness
/// spawns from pooled threads, which end when idle.
public struct ParentLifeline: Service {
    /// The environment variable that names the descriptor (set by `ManagedProcess`).
    public static let environmentKey = "FLASHSALE_LIFELINE_FD"

    private let descriptor: CInt
    private let group: any EventLoopGroup
    private let logger: Logger

    /// The lifeline `environment` names, or nil when this process was not started with one (by hand, by systemd).
    public init?(environment: [String: String], group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        guard let text = environment[Self.environmentKey], let descriptor = CInt(text), descriptor > 2 else { return nil }
        self.descriptor = descriptor
        self.group = group
        self.logger = logger
    }

    /// The lifeline as a service of the group, if this process has one: when the starter is gone it returns, and the
    /// group shuts down gracefully.
    public static func services(
        environment: [String: String], group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger
    ) -> [ServiceGroupConfiguration.ServiceConfiguration] {
        guard let lifeline = ParentLifeline(environment: environment, group: group, logger: logger) else { return [] }
        return [.init(service: lifeline, successTerminationBehavior: .gracefullyShutdownGroup)]
    }

    public func run() async throws {
        // Only a pipe is a lifeline: a stray variable naming some other descriptor must not take it over or end the
        // service, so that one watches nothing and waits for the group's shutdown.
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_mode & S_IFMT == S_IFIFO,
              let channel = try? await NIOPipeBootstrap(group: group)
                .channelOption(.allowRemoteHalfClosure, value: false)
                .takingOwnershipOfDescriptor(input: descriptor).get()
        else {
            logger.warning("the lifeline descriptor is not a pipe: not watching it", metadata: ["descriptor": "\(descriptor)"])
            try? await gracefulShutdown()
            return
        }
        // The starter never writes: the channel closes at end-of-file, or here when the group shuts down first.
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
        if !Task.isShuttingDownGracefully {
            logger.warning("the process that started this service is gone: shutting down")
        }
    }
}
