import Proto
import Testing

/// The one product-id rule (`ProductRules`): what the quota service can make a ZooKeeper node of, byte by byte.
@Suite struct ProductRulesTests {
    @Test func nodeNameSafeIdsOfOneTo128BytesAreValid() {
        for id in ["tv", "a", "A-z_0.9", "...", ".x", "x..", "-", "_", String(repeating: "x", count: 128)] {
            #expect(ProductRules.idProblem(id) == nil, "\(id)")
            #expect(ProductRules.isValidID(id), "\(id)")
        }
    }

    @Test func everyOtherIdSaysWhy() {
        let cases: [(String, ProductRules.IDProblem)] = [
            ("", .empty),
            (String(repeating: "x", count: 129), .tooLong),
            (String(repeating: "é", count: 65), .tooLong),   // 130 bytes: bytes count, not characters
            (".", .notANodeName), ("..", .notANodeName),
            ("../x", .notANodeName), ("a/b", .notANodeName), ("a b", .notANodeName), ("a\u{7}b", .notANodeName),
            ("a\u{0}b", .notANodeName), ("tv\n", .notANodeName), ("café", .notANodeName), ("a:b", .notANodeName),
            ("日本", .notANodeName), ("😀", .notANodeName),
        ]
        for (id, problem) in cases {
            #expect(ProductRules.idProblem(id) == problem, "\(id.debugDescription)")
            #expect(!ProductRules.isValidID(id))
        }
        #expect(Set(cases.map(\.1)) == Set(ProductRules.IDProblem.allCases))
    }

    @Test func everyByteOutsideTheSetIsRefusedAndEveryByteInsideAccepted() {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-".utf8)
        for byte in UInt8(0)...UInt8(127) {
            let id = "p" + String(decoding: [byte], as: UTF8.self) + "q"
            #expect(ProductRules.isValidID(id) == allowed.contains(byte), "byte \(byte)")
        }
    }

    @Test func theStockLimitIsTenToTheTwelfth() {
        #expect(ProductRules.maxStock == 1_000_000_000_000)
    }
}
