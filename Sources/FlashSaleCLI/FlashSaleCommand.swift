import ArgumentParser

/// `flashsale`: run a flash sale end to end, and operate a running one.
@main
struct FlashSaleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flashsale",
        abstract: "Run and operate flash sales on the flash-sale platform.",
        subcommands: [SaleCommand.self])
}
