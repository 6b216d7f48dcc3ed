// swift-tools-version:6.0
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    // Release builds skip the run-time exclusivity checks (debug builds, which the tests run, keep them; the
    // compile-time checks stay everywhere): swift_beginAccess and its thread-local access set were 9% of the
    // load generator's CPU and 8% of the wire server's (`perf` of `scripts/bench.sh wire`, 16 in flight).
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "flashsale",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "Edge", targets: ["Edge"]),
        .executable(name: "QuotaService", targets: ["QuotaService"]),
        .executable(name: "InventoryService", targets: ["InventoryService"]),
        .executable(name: "flashsale", targets: ["FlashSaleCLI"]),
        .executable(name: "flashsale-bench", targets: ["FlashSaleBench"]),
        .library(name: "FlashSaleClient", targets: ["FlashSaleClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // C libraries from Debian, each behind a one-line shim.
        .systemLibrary(name: "CProtobufC", pkgConfig: "libprotobuf-c", providers: [.apt(["libprotobuf-c-dev"])]),
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CZooKeeper", providers: [.apt(["libzookeeper-mt-dev"])]),
        .systemLibrary(name: "CLibCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),

        // Messages: protobuf-c's generated C, and the Swift types bridged to it (both from scripts/gen-proto.sh).
        .target(name: "ProtoC", dependencies: ["CProtobufC"]),
        .target(
            name: "Proto",
            dependencies: ["ProtoC", "CProtobufC", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict),

        // The wire runtime: framing, multiplexed calls, status, deadlines, server and client.
        .target(
            name: "Wire",
            dependencies: [
                "Proto",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),

        // `host:port`, the one address type: below every module that names a server.
        .target(name: "Addressing", swiftSettings: strict),

        // Blocking C clients wrapped for async Swift; C stays inside these modules.
        .target(
            name: "PostgresClient",
            dependencies: [
                "CLibPQ", "Addressing", .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .target(
            name: "ZooKeeperClient",
            dependencies: ["CZooKeeper", "CLibCrypto", .product(name: "NIOPosix", package: "swift-nio"), .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),

        // Typed clients of the three services, for other Swift services, the CLI and the tests.
        // The quota service's contract beyond RPC: where things live in ZooKeeper and who may write them (the app's
        // ACL roles and secrets), shared by the quota service, the edges, the inventory's registrar and the tools.
        .target(name: "QuotaContract", dependencies: ["ZooKeeperClient"], swiftSettings: strict),
        .target(
            name: "FlashSaleClient",
            dependencies: [
                "Wire", "Proto", .product(name: "NIOCore", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
                .product(name: "Histogram", package: "hdrhistogram-swift"), .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict),

        // Where the inventory replicas are: their registrations in ZooKeeper, and a client that spreads calls over
        // them (the edges' and the quota service's).
        .target(
            name: "InventoryDiscovery",
            dependencies: [
                "QuotaContract", "Addressing", "Wire", "Proto", "ZooKeeperClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),

        // The process plumbing every executable shares: loggers, secrets, host:port, the common flags, the READY line.
        .target(
            name: "ServiceKit",
            dependencies: [
                "Addressing", "Wire", .product(name: "NIOPosix", package: "swift-nio"),
                // The metrics port and the inventory replicas, behind the flags that ask for them.
                "ServiceMetrics", "InventoryDiscovery",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),

        // The services' logic, as libraries: the unit tests import them, the executables below assemble them.
        .target(
            name: "EdgeCore",
            dependencies: [
                "QuotaContract", "InventoryDiscovery",
                "Addressing",
                "ServiceKit", "ServiceMetrics", .product(name: "Metrics", package: "swift-metrics"), "Wire", "Proto", "FlashSaleClient",
                "ZooKeeperClient",
                // Only for QuotaLedger's product-table swap (AtomicReference); every other lock and atomic is Synchronization's.
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        .target(
            name: "QuotaCore",
            dependencies: [
                "QuotaContract", "InventoryDiscovery",
                "Addressing",
                "ServiceKit", "Wire", "Proto", "ZooKeeperClient",
                "ServiceMetrics", .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            // The protocol's Promela model lives beside the planner it describes; Tests/ModelTests checks it.
            exclude: ["Planning/QuotaProtocol.pml"],
            swiftSettings: strict),
        .target(
            name: "InventoryCore",
            dependencies: [
                "Addressing",
                .product(name: "Metrics", package: "swift-metrics"), "Wire", "Proto", "PostgresClient", "ZooKeeperClient",
                "ServiceKit", "ServiceMetrics", "InventoryDiscovery", "QuotaContract",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),

        // The service executables: flags, and the ServiceGroup that runs a core.
        .executableTarget(
            name: "Edge",
            dependencies: [
                "QuotaContract",
                "Addressing",
                "EdgeCore", "ServiceKit", "Wire", "ZooKeeperClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "QuotaService",
            dependencies: [
                "QuotaContract",
                "QuotaCore", "ServiceKit", "Wire",
                "ZooKeeperClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "InventoryService",
            dependencies: [
                "InventoryCore", "ServiceKit", "Wire", .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        // The sale report as a self-contained HTML page (`flashsale sale --html`): charts drawn as inline SVG, pure.
        .target(name: "SalePage", swiftSettings: strict),
        .executableTarget(
            name: "FlashSaleCLI",
            dependencies: [
                "QuotaContract", "Addressing", "EdgeCore",
                "ServiceKit", "Wire", "Proto", "FlashSaleClient", "PostgresClient", "ZooKeeperClient", "Cluster", "SalePage",
                .product(name: "ArgumentParser", package: "swift-argument-parser"), .product(name: "Logging", package: "swift-log"), .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict),

        // Load generators behind scripts/bench.sh: one subcommand per benchmark, each printing a report.
        .executableTarget(
            name: "FlashSaleBench",
            dependencies: [
                "QuotaContract", "Addressing", "EdgeCore",
                "ServiceKit", "Wire", "Proto", "FlashSaleClient", "PostgresClient", "ZooKeeperClient", "Cluster",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"), .product(name: "Logging", package: "swift-log"), .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"), .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),

        // The one harness: starting and stopping the platform's processes (the server scripts in run folders of
        // their own, the service executables from typed argument lists), per-run databases and ZooKeeper roots, the
        // sale's preparation and order sweep, the blackhole proxy. Used by `flashsale sale`, the benchmarks and the tests.
        .target(
            name: "Cluster",
            dependencies: [
                "Addressing",
                "ServiceKit", "Wire", "Proto", "FlashSaleClient", "PostgresClient", "ZooKeeperClient",
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),

        // Prometheus metrics of every service: the registry behind swift-metrics and the `GET /metrics` HTTP port.
        .target(
            name: "ServiceMetrics",
            dependencies: [
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"), .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strict),

        // Shared by the test targets: the real servers and executables, per-test databases.
        .target(
            name: "TestSupport",
            dependencies: ["Cluster", "PostgresClient"],
            path: "Tests/TestSupport",
            swiftSettings: strict),
        .testTarget(
            name: "WireTests",
            dependencies: [
                "Wire", "Proto", "TestSupport",
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"), .product(name: "Logging", package: "swift-log"), .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"), .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "EdgeTests",
            dependencies: [
                "QuotaContract", "EdgeCore", "Proto", "Wire", .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"), "FlashSaleClient", .product(name: "Logging", package: "swift-log"), .product(name: "NIOCore", package: "swift-nio"), "ZooKeeperClient",
            ],
            swiftSettings: strict),
        // The cores' pure decisions: no servers, no processes (they may run in parallel).
        .testTarget(
            name: "QuotaCoreTests",
            dependencies: [
                "QuotaContract", "QuotaCore", "FlashSaleClient", "Proto", "Wire", "ZooKeeperClient", "Cluster",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .testTarget(name: "SalePageTests", dependencies: ["SalePage"], swiftSettings: strict),
        .testTarget(
            name: "ServiceKitTests",
            dependencies: ["ServiceKit", "Addressing", "QuotaContract", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict),
        .testTarget(name: "PostgresClientTests", dependencies: ["Addressing", "PostgresClient"], swiftSettings: strict),
        .testTarget(name: "ZooKeeperClientTests", dependencies: ["ZooKeeperClient"], swiftSettings: strict),
        .testTarget(
            name: "InventoryDiscoveryTests",
            dependencies: [
                "Addressing",
                "InventoryDiscovery", "Wire", "Proto", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "InventoryCoreTests",
            dependencies: ["InventoryCore", "Proto", "Wire", "PostgresClient", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict),
        // The protocol model checked with spin (scripts/model-check.sh): no service code, only the model and spin.
        .testTarget(name: "ModelTests", dependencies: ["Cluster"], swiftSettings: strict),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "QuotaContract", "Addressing",
                "TestSupport", "FlashSaleClient", "Proto", "Wire", "PostgresClient", "ZooKeeperClient", "ServiceKit", "Cluster",
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
    ],
    swiftLanguageModes: [.v6]
)
