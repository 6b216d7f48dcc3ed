import Foundation
import Proto
import Testing
import TestSupport

/// The committed seed corpus (Fuzz/corpus, written by `scripts/fuzz.sh --seeds`) starts the fuzzer at every method of
/// the contract: a method added to proto/services.proto without regenerating the seeds fails here, not silently.
struct FuzzCorpusTests {
    @Test func everyContractMethodHasARequestAndAResponseSeed() throws {
        let corpus = RepoPaths.root.appendingPathComponent("Fuzz/corpus").path
        let files = Set(try FileManager.default.contentsOfDirectory(atPath: corpus))
        for method in RPCContract.methods {
            #expect(files.contains("request-\(method.name)"), "no seed request-\(method.name): run scripts/fuzz.sh --seeds")
            #expect(files.contains("response-\(method.name)"), "no seed response-\(method.name): run scripts/fuzz.sh --seeds")
        }
    }
}
