// OpenSSL's libcrypto (Debian's libssl-dev): only EVP_Digest, for the SHA-1 of ZooKeeper's digest ACL ids.
#include <openssl/evp.h>
