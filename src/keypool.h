/* Key pools and their shared state.
 *
 * A pool is an ordered list of keys (configuration, lives in the config
 * pool). Each key's state lives in a slot of a key store: in httpd an APR
 * shared-memory segment every child process maps, in unit tests a plain
 * array. Slots hold fixed-size scalars only, never pointers, and are updated
 * with atomics, so no lock is taken on the request path. State is derived
 * when read: a key is available when it is not disabled and its cooldown
 * deadline has passed. */
#ifndef AIB_KEYPOOL_H
#define AIB_KEYPOOL_H

#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>

typedef enum {
    AIB_REASON_NONE = 0,
    AIB_REASON_RATE_LIMITED,
    AIB_REASON_QUOTA,
    AIB_REASON_UNAUTHORIZED,
    AIB_REASON_FORBIDDEN
} aib_reason_e;

typedef enum {
    AIB_KEY_AVAILABLE = 0,
    AIB_KEY_COOLING,
    AIB_KEY_DISABLED
} aib_key_state_e;

/* Slots are shared between processes and threads: every access to their
 * fields goes through these, so a torn or stale read is never possible. */
#define AIB_LOAD(p)      __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define AIB_STORE(p, v)  __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define AIB_ADD(p, v)    __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)

/* Deadline of a key disabled until an operator re-enables it. */
#define AIB_FOREVER INT64_MAX

typedef struct {
    uint64_t fingerprint;       /* which key owns the slot; 0 = free */
    int64_t cooldown_until_ms;  /* Unix ms; the later deadline wins */
    int64_t disabled_until_ms;  /* 0 = enabled, AIB_FOREVER = until re-enabled */
    uint32_t cooldown_reason;   /* aib_reason_e */
    uint32_t disabled_reason;   /* aib_reason_e */
    uint64_t requests;
    uint64_t rate_limited;      /* 429s */
    uint64_t unauthorized;      /* 401s */
    uint64_t forbidden;         /* 403s */
    int64_t last_used_ms;
    int64_t last_failure_ms;    /* last time the key was marked */
    uint64_t last_failure_status;
    uint64_t tokens_input;
    uint64_t tokens_output;
    uint64_t tokens_cache_read;
    uint64_t tokens_cache_write;
    /* Fleet sharing (src/fleet.c): every local change of the key's state
     * bumps `version`; the fleet has seen the state when fleet_version
     * equals it. fleet_tag names the shared record last written or taken
     * over, fleet_written_ms when this server last wrote it. */
    uint64_t version;
    uint64_t fleet_version;
    uint64_t fleet_tag;
    int64_t fleet_written_ms;
} aib_slot_t;

typedef struct {
    aib_slot_t *slots;
    uint32_t capacity;
} aib_keystore_t;

typedef struct {
    const char *value;          /* the secret: never logged, never shown */
    const char *hint;           /* masked, safe to show */
    uint64_t fingerprint;
    uint32_t slot;
} aib_key_t;

typedef struct {
    const char *name;
    apr_array_header_t *keys;   /* of aib_key_t, in configured order */
    aib_keystore_t *store;      /* set once slots are assigned */
    uint64_t *walk_hint;        /* this process's; see aib_walker_next */
} aib_keypool_t;

aib_keypool_t *aib_keypool_create(apr_pool_t *pool, const char *name);

/* Appends a key. Returns NULL, or an error message (naming the key by
 * position and hint only) for an empty or duplicate key. */
const char *aib_keypool_add_key(aib_keypool_t *kp, apr_pool_t *pool, const char *key);

/* Slots needed for `pools` (an array of aib_keypool_t *): one per distinct
 * key fingerprint. */
uint32_t aib_keystore_slots_needed(const apr_array_header_t *pools, apr_pool_t *tmp);

/* Gives every key of `pools` a slot in `to` and points the pools at it.
 * A key already present in `from` (which may be `to` itself, for an
 * in-place reassignment across a graceful restart) keeps its state; a
 * new key starts available; slots of keys that are gone are freed. When
 * to == from, keys that stay keep their slot numbers, so marks written by
 * processes of the previous generation still land on the right key.
 * `to` must have room (aib_keystore_slots_needed). */
void aib_keystore_assign(aib_keystore_t *to, const aib_keystore_t *from,
                         const apr_array_header_t *pools, apr_pool_t *tmp);

/* State of key i at now_ms; until_ms (may be NULL) gets the deadline, reason
 * (may be NULL) why it is out. */
aib_key_state_e aib_key_state(const aib_keypool_t *kp, int i, int64_t now_ms,
                              aib_reason_e *reason, int64_t *until_ms);

/* Marks. Each is a no-op when the slot no longer belongs to the key (a
 * process of an older configuration writing after a restart). */
void aib_key_cooldown(const aib_keypool_t *kp, int i, int64_t until_ms, aib_reason_e reason);
void aib_key_disable(const aib_keypool_t *kp, int i, int64_t until_ms, aib_reason_e reason);
void aib_key_enable(const aib_keypool_t *kp, int i);
/* The operator's actions on the status page: one deadline each (enable
 * above clears both). */
void aib_key_clear_disabled(const aib_keypool_t *kp, int i);
void aib_key_clear_cooldown(const aib_keypool_t *kp, int i);
/* The state another server of the fleet set: taken over exactly, without
 * counting as a local change. `cooldown_seen` is the deadline the caller
 * read: a cooldown a request set meanwhile is kept, never shortened. */
void aib_key_apply(const aib_keypool_t *kp, int i, int64_t cooldown_seen,
                   int64_t cooldown_until_ms, aib_reason_e cooldown_reason,
                   int64_t disabled_until_ms, aib_reason_e disabled_reason);
/* The shared slot of key i, or NULL when it now belongs to another key:
 * for the fleet sync, which reads and writes its fields atomically. */
aib_slot_t *aib_key_slot(const aib_keypool_t *kp, int i);
/* Counts an upstream attempt with key i and, once known, its status. */
void aib_key_count_attempt(const aib_keypool_t *kp, int i, int64_t now_ms);
void aib_key_count_status(const aib_keypool_t *kp, int i, int status);
/* Key i was marked after answering `status`, for the status page. */
void aib_key_note_failure(const aib_keypool_t *kp, int i, int64_t now_ms, int status);
/* Tokens that key i served. */
void aib_key_count_tokens(const aib_keypool_t *kp, int i, int64_t input, int64_t output,
                          int64_t cache_read, int64_t cache_write);
/* A consistent-enough copy of key i's slot for display. */
void aib_key_snapshot(const aib_keypool_t *kp, int i, aib_slot_t *out);

/* One walker per upstream call: available keys in configured order. */
typedef struct {
    const aib_keypool_t *pool;
    int next;
    int hinted;                 /* the pool's hint was looked at */
    int64_t out_until_ms;       /* keys before `next` are out until then */
} aib_walker_t;

void aib_walker_init(aib_walker_t *w, const aib_keypool_t *kp);
/* Index of the next available key, or -1 when none is left.
 *
 * A walk that finds its first available key (or none) only after
 * AIB_WALK_HINT_KEYS or more unavailable ones leaves a hint in the pool
 * object, which is per process: those keys are out until the earliest of
 * their deadlines, but at most AIB_WALK_HINT_MS from now. The walks of the
 * process start after them until then, so a pool of thousands of cooling
 * keys costs one check per request, not thousands. A key re-enabled (or
 * its cooldown cleared) in this process is walked at once; in another
 * process (the status page's action), within AIB_WALK_HINT_MS. */
int aib_walker_next(aib_walker_t *w, int64_t now_ms);
#define AIB_WALK_HINT_KEYS 64
#define AIB_WALK_HINT_MS 100

typedef enum {
    AIB_EXHAUSTED_RATE_LIMITED,  /* some key is cooling down */
    AIB_EXHAUSTED_AUTH_FAILED    /* every key is disabled */
} aib_exhaustion_e;

typedef struct {
    aib_exhaustion_e kind;
    int64_t retry_after_s;       /* smallest remaining cooldown, rounded up */
} aib_exhaustion_t;

/* Why no key is available: what the client is told. */
aib_exhaustion_t aib_keypool_exhaustion(const aib_keypool_t *kp, int64_t now_ms);

const char *aib_reason_name(aib_reason_e reason);
const char *aib_key_state_name(aib_key_state_e state);

#endif
