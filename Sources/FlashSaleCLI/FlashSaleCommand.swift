import ArgumentParser

/// `flashsale`: run a flash sale end to end, and operate a running one.
@main
struct FlashSaleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flashsale",
        abstract: "Run and operate flash sales on the flash-sale platform.",
        subcommands: [
            SaleCommand.self, StatusCommand.self, ProductCommand.self, StockCommand.self, ShedCommand.self,
            EdgesCommand.self, QuotasCommand.self, AuditCommand.self, OrderCommand.self,
        ])
}
