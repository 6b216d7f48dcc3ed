import ArgumentParser
import FlashSaleClient
import Proto

/// `flashsale stock raise|limit` (operator token): the database first, then the quotas.
struct StockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stock", abstract: "Change a product's stock during the sale.", subcommands: [Raise.self, Limit.self])

    struct Raise: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add units to a product's stock and grant them to the edges.")

        @Argument(help: "Product id.") var product: String
        @Option(help: "Units to add (> 0).") var by: Int64
        @Option(help: "The raise's id (non-zero; default: a new one, printed). Retry a raise that failed with the id it printed: it applies once.")
        var changeId: UInt64?
        @OptionGroup var platform: PlatformOptions

        func validate() throws {
            try validateProductID(product)
            guard by > 0 else { throw ValidationError("--by must be positive") }
            guard changeId != 0 else { throw ValidationError("--change-id must not be 0") }
        }

        func run() async throws {
            let changeId = self.changeId ?? StockChangeId.make()
            // Before the call: if it fails or times out, the operator can retry this very raise.
            standardError("raise \(product) by \(by): change id \(changeId) (retry with --change-id \(changeId))")
            try await operate(platform, requireToken: true) { op in
                let quotas = try await op.quota(product: product) {
                    try await $0.raiseStock(productId: product, by: by, changeId: changeId)
                }
                let stock = try await op.inventory(product: product) { try await $0.getStock(productId: product) }
                print("raised \(product) by \(by.grouped): stock \(stock.totalStock.grouped), sold \(stock.sold.grouped), remaining \(stock.remaining.grouped)")
                print(quotaLines(quotas))
            }
        }
    }

    struct Limit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop a product's sale after this many units sold in total; the edges' surplus is taken back.")

        @Argument(help: "Product id.") var product: String
        @Option(help: "Units sold in total after which the sale stops (>= units sold already).") var to: Int64
        @OptionGroup var platform: PlatformOptions

        func validate() throws {
            try validateProductID(product)
            guard to >= 0 else { throw ValidationError("--to must not be negative") }
        }

        func run() async throws {
            try await operate(platform, requireToken: true) { op in
                let quotas = try await op.quota(product: product) { try await $0.limitStock(productId: product, to: to) }
                let stock = try await op.inventory(product: product) { try await $0.getStock(productId: product) }
                print("limited \(product) to \(to.grouped) sold: sold \(stock.sold.grouped), remaining \(stock.remaining.grouped)")
                print(quotaLines(quotas))
            }
        }
    }
}

/// `flashsale shed set --keep R | --keep-per-million N` (operator token).
struct ShedCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shed", abstract: "Set the edges' load-shedding lottery.", subcommands: [SetRatio.self])

    struct SetRatio: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set", abstract: "Set the share of attempts every edge keeps (the rest are answered SHED at once).")

        @Option(help: "Share kept, 0...1 (0.1 keeps 1 attempt in 10).") var keep: Double?
        @Option(help: "Attempts kept per million, 0...1000000.") var keepPerMillion: UInt32?
        @OptionGroup var platform: PlatformOptions

        func validate() throws {
            switch (keep, keepPerMillion) {
            case (nil, nil), (.some, .some): throw ValidationError("give exactly one of --keep and --keep-per-million")
            case (let keep?, nil): guard (0...1).contains(keep) else { throw ValidationError("--keep must be in 0...1") }
            case (nil, let perMillion?):
                guard perMillion <= 1_000_000 else { throw ValidationError("--keep-per-million must be at most 1,000,000") }
            }
        }

        func run() async throws {
            let perMillion = keepPerMillion ?? UInt32((keep! * 1_000_000).rounded())
            try await operate(platform, requireToken: true) { op in
                try await op.quota { try await $0.setShed(keepPerMillion: perMillion) }
                print("shed set: every edge will \(keepDescription(perMillion))")
            }
        }
    }
}
