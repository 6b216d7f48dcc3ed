import Proto
import Testing
import Wire

@testable import InventoryCore

/// The inventory applies the one product-id rule (`ProductRules`, the quota service's) and the one stock limit.
@Suite struct ValidationTests {
    @Test func productIdsFollowTheContractsRule() throws {
        try Validation.productId("tv")
        try Validation.productId(String(repeating: "x", count: 128))
        for id in ["", String(repeating: "x", count: 129), "a\u{7}b", "../x", "a b", ".", ".."] {
            #expect(throws: RPCError.self, "\(id.debugDescription)") { try Validation.productId(id) }
            do { try Validation.productId(id) } catch let error as RPCError {
                #expect(error.code == .invalidArgument)
                #expect(error.message == ProductRules.idProblem(id)?.description)
            }
        }
        try Validation.optionalProductId("")
        #expect(throws: RPCError.self) { try Validation.optionalProductId("a/b") }
    }

    @Test func stockIsAtMostTenToTheTwelfth() throws {
        #expect(try Validation.createProduct(CreateProductRequest(productId: "tv", totalStock: ProductRules.maxStock)) == 8)
        #expect(throws: RPCError.self) {
            try Validation.createProduct(CreateProductRequest(productId: "tv", totalStock: ProductRules.maxStock + 1))
        }
        #expect(throws: RPCError.self) {
            try Validation.createProduct(CreateProductRequest(productId: "tv", totalStock: 5, saleLimit: ProductRules.maxStock + 1))
        }
        #expect(throws: RPCError.self) {
            try Validation.stockChange(AdjustStockRequest(productId: "tv", changeId: 1, change: .raiseBy(ProductRules.maxStock + 1)))
        }
    }
}
