import Testing

@testable import ZooKeeperClient

/// ZooKeeper's digest ACL ids are `user:base64(sha1("user:password"))`: the hash comes from libcrypto.
@Suite struct DigestTests {
    @Test func sha1MatchesTheStandardsVectors() {
        let hex = { (bytes: [UInt8]) in bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }
        #expect(hex(SHA1.hash(Array("abc".utf8))) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(hex(SHA1.hash([])) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(hex(SHA1.hash(Array(repeating: UInt8(ascii: "a"), count: 1_000_000))) == "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
    }

    @Test func digestIDsAreTheServersForm() {
        #expect(ZooKeeperACL.digestID(user: "alice", password: "s3cret") == "alice:uLxpHc/uhT86OXPoSjJTp1M8CJY=")
    }
}
