import CLibCrypto

/// SHA-1, only for ZooKeeper digest ACL ids, which are defined with it: libcrypto's, not a hand-written one.
enum SHA1 {
    static func hash(_ message: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = message.withUnsafeBufferPointer { bytes in
            EVP_Digest(bytes.baseAddress, bytes.count, &digest, &length, EVP_sha1(), nil)
        }
        // EVP_Digest of a built-in digest fails only when out of memory.
        precondition(ok == 1 && length == 20, "libcrypto's SHA-1 failed")
        return Array(digest.prefix(Int(length)))
    }
}
