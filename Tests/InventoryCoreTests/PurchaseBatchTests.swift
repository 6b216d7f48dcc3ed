import Testing

@testable import InventoryCore

/// How a batch's answer from `purchase_batch` / `lookup_batch` becomes each purchase's outcome: pure.
@Suite struct PurchaseBatchTests {
    typealias Rows = PurchaseBatch.Rows

    @Test func everyPurchaseBoughtInBatchOrder() {
        let rows = Rows(requests: [11, 12, 13], codes: [1, 1, 1], orders: [101, 102, 103], edges: [3, 3, 4])
        #expect(PurchaseBatch.outcomes(of: [11, 12, 13], rows) == [
            .purchased(order: 101, edge: 3), .purchased(order: 102, edge: 3), .purchased(order: 103, edge: 4),
        ])
    }

    @Test func aRequestIdTwiceInOneBatchBuysOnceAndTheOtherCopyIsAReplay() {
        let rows = Rows(requests: [11, 12], codes: [1, 2], orders: [101, 0], edges: [3, 0])
        #expect(PurchaseBatch.outcomes(of: [11, 12, 11], rows) == [
            .purchased(order: 101, edge: 3), .soldOut, .replayed(order: 101, edge: 3),
        ])
    }

    @Test func acrossChunksTheEntryThatBoughtWins() {
        // Chunk 1 could not serve 11 (retry), chunk 2 bought it; 12 was sold out in one and already bought in another.
        let rows = Rows(requests: [11, 12, 11, 12], codes: [0, 2, 1, 4], orders: [0, 0, 101, 77], edges: [0, 0, 3, 2])
        #expect(PurchaseBatch.outcomes(of: [11, 12], rows) == [.purchased(order: 101, edge: 3), .alreadyPurchased(order: 77)])
    }

    @Test func everyCodeHasItsOutcomeAndAnythingElseIsAnError() {
        let rows = Rows(requests: [1, 2, 3, 4, 5, 6, 7], codes: [0, 2, 4, 5, 6, 7, 9], orders: [0, 0, 40, 50, 0, 0, 0], edges: [0, 0, 0, 5, 0, 0, 0])
        #expect(PurchaseBatch.outcomes(of: [1, 2, 3, 4, 5, 6, 7, 8], rows) == [
            .retry, .soldOut, .alreadyPurchased(order: 40), .replayed(order: 50, edge: 5), .closed, .reused,
            .missing,  // a code no procedure has
            .missing,  // no entry at all
        ])
    }

    @Test func truncatedArraysNameNoOutcome() {
        let rows = Rows(requests: [1, 2], codes: [1], orders: [10, 20], edges: [1, 1])
        #expect(PurchaseBatch.outcomes(of: [1, 2], rows) == [.purchased(order: 10, edge: 1), .missing])
    }

    @Test func lookupsAreAnOrderAClosedIdOrAReusedOne() {
        let rows = Rows(requests: [1, 2, 3, 4], codes: [5, 6, 2, 7], orders: [10, 0, 0, 0], edges: [2, 0, 0, 0])
        #expect(PurchaseBatch.lookups(of: [1, 2, 3, 4, 5], rows) == [.replayed(order: 10, edge: 2), .closed, .closed, .reused, .missing])
    }
}
