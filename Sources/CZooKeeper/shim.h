// THREADED exposes the synchronous API (zoo_create, zoo_get, ...) of the multi-threaded client.
#define THREADED
#include <zookeeper/zookeeper.h>

// Swift 6 refuses references to mutable C globals; these accessors expose the constant ACL vectors.
static inline struct ACL_vector *cz_open_acl_unsafe(void) { return &ZOO_OPEN_ACL_UNSAFE; }
static inline struct ACL_vector *cz_read_acl_unsafe(void) { return &ZOO_READ_ACL_UNSAFE; }
static inline struct ACL_vector *cz_creator_all_acl(void) { return &ZOO_CREATOR_ALL_ACL; }

// The same for the constant ints (create modes, session states, event types, permissions).
static inline int cz_persistent(void) { return ZOO_PERSISTENT; }
static inline int cz_ephemeral(void) { return ZOO_EPHEMERAL; }
static inline int cz_persistent_sequential(void) { return ZOO_PERSISTENT_SEQUENTIAL; }
static inline int cz_ephemeral_sequential(void) { return ZOO_EPHEMERAL_SEQUENTIAL; }

static inline int cz_expired_session_state(void) { return ZOO_EXPIRED_SESSION_STATE; }
static inline int cz_auth_failed_state(void) { return ZOO_AUTH_FAILED_STATE; }
static inline int cz_connecting_state(void) { return ZOO_CONNECTING_STATE; }
static inline int cz_associating_state(void) { return ZOO_ASSOCIATING_STATE; }
static inline int cz_connected_state(void) { return ZOO_CONNECTED_STATE; }
static inline int cz_readonly_state(void) { return ZOO_READONLY_STATE; }
static inline int cz_notconnected_state(void) { return ZOO_NOTCONNECTED_STATE; }

static inline int cz_created_event(void) { return ZOO_CREATED_EVENT; }
static inline int cz_deleted_event(void) { return ZOO_DELETED_EVENT; }
static inline int cz_changed_event(void) { return ZOO_CHANGED_EVENT; }
static inline int cz_child_event(void) { return ZOO_CHILD_EVENT; }
static inline int cz_session_event(void) { return ZOO_SESSION_EVENT; }
static inline int cz_notwatching_event(void) { return ZOO_NOTWATCHING_EVENT; }
