import ArgumentParser

/// The load generators behind `scripts/bench.sh NAME`. Each subcommand drives one benchmark and prints its figures;
/// the script around it measures the anchor in the same run and prints the ratio.
@main
struct FlashSaleBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flashsale-bench",
        abstract: "Load generators for the flash-sale platform's benchmarks.",
        subcommands: [
            // One line per benchmark; each lives in a file of its own.
            WireServerCommand.self, WireLoadCommand.self, EdgeMemoryCommand.self, FaultsCommand.self,
            InventoryBench.self,
            QuotaBench.self,
            HostileCommand.self,
            LatencyCommand.self,
            CallCostCommand.self,
            // The scripts' process starter, not a benchmark.
            ServeCommand.self,
        ])
}
