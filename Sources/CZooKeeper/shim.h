// THREADED exposes the synchronous API (zoo_create, zoo_get, ...) of the multi-threaded client.
#define THREADED
#include <zookeeper/zookeeper.h>

// Swift 6 refuses references to mutable C globals; these accessors expose the constant ACL vectors.
static inline struct ACL_vector *cz_open_acl_unsafe(void) { return &ZOO_OPEN_ACL_UNSAFE; }
static inline struct ACL_vector *cz_read_acl_unsafe(void) { return &ZOO_READ_ACL_UNSAFE; }
static inline struct ACL_vector *cz_creator_all_acl(void) { return &ZOO_CREATOR_ALL_ACL; }
