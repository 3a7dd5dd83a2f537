/* Key state shared by a fleet of servers through a distributed cache.
 *
 * Requests never touch the cache: they mark keys in this server's shared
 * memory as always. One process of the server at a time (it holds a lease
 * in shared memory) runs a sync round every interval: it takes over what
 * other servers wrote and writes what changed here. The cache is reached
 * through two callbacks, so httpd's socache providers (Redis, memcache)
 * serve in production and a table serves in unit tests.
 *
 * In the cache, per key, one record (id: 'k' and the key's fingerprint,
 * which covers the pool's name; never the key) holds the key's whole state
 * and a random tag naming that write; per pool, a stamp record changes
 * with every write to the pool's records. A round reads each pool's stamp
 * and reads the pool's key records only when the stamp changed, so an idle
 * fleet costs one read per pool and round. There is no atomic update in a
 * socache; two servers writing one key's record at once: the later write
 * wins, and cooldowns merge to the later deadline. */
#ifndef AIB_FLEET_H
#define AIB_FLEET_H

#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>

#include "keypool.h"

/* How long a record without a deadline of its own lives in the cache: a
 * key disabled until re-enabled (renewed while it lasts), a cleared state
 * (so that servers which missed the clear still see it), a stamp. */
#define AIB_FLEET_HOLD_MS (60 * 60 * 1000)
/* Cooldowns ending sooner stay local: socaches store whole seconds. */
#define AIB_FLEET_MIN_COOLDOWN_MS 1500

/* Sync state in shared memory: fixed-size numbers only. */
typedef struct {
    uint32_t owner;              /* process id holding the sync lease */
    int64_t lease_until_ms;
    int64_t last_sync_ms;        /* end of the last round that reached the cache */
    int64_t last_failure_ms;     /* end of the last round that did not */
    uint32_t connected;          /* the last round reached the cache */
    uint32_t outage_reported;    /* the current outage was logged */
    uint64_t rounds_ok;
    uint64_t rounds_failed;
    uint64_t written;            /* key records written */
    uint64_t taken;              /* key records taken over from other servers */
} aib_fleet_shared_t;

typedef struct {
    void *ctx;
    /* Reads record `id` into buf (*len: its size in, the data's out).
     * APR_NOTFOUND when there is none; any other error: the cache failed. */
    apr_status_t (*get)(void *ctx, const unsigned char *id, unsigned id_len, char *buf,
                        unsigned *len, apr_pool_t *tmp);
    /* Writes record `id`, to expire at expiry_ms (Unix ms). */
    apr_status_t (*put)(void *ctx, const unsigned char *id, unsigned id_len, int64_t expiry_ms,
                        const char *data, unsigned len, apr_pool_t *tmp);
} aib_fleet_cache_t;

/* One process's side of the sync: the stamps it saw last. */
typedef struct aib_fleet aib_fleet_t;

/* `pools` (of aib_keypool_t *) must have their key store assigned. */
aib_fleet_t *aib_fleet_create(apr_pool_t *p, aib_fleet_shared_t *shared,
                              const apr_array_header_t *pools);

/* Whether process `me` holds the lease now (taking it when its holder let
 * it run out, renewing it when it is ours). */
int aib_fleet_lease(aib_fleet_shared_t *shared, uint32_t me, int64_t now_ms, int64_t lease_ms);

typedef struct {
    apr_status_t error;          /* APR_SUCCESS: the round reached the cache */
    int outage_begins;           /* failed, and the first to fail since it worked: log it */
    int recovered;               /* worked after failing: resynchronised */
    unsigned written;
    unsigned taken;
} aib_fleet_round_t;

/* One sync round at now_ms. Stops at the first cache failure; the next
 * round that works reads every record again. */
void aib_fleet_round(aib_fleet_t *fleet, const aib_fleet_cache_t *cache, int64_t now_ms,
                     apr_pool_t *tmp, aib_fleet_round_t *out);

/* Whether some key changed here since the fleet last saw it (a round would
 * write it). */
int aib_fleet_pending(const aib_fleet_t *fleet);

/* A consistent-enough copy of the shared sync state, for display. */
void aib_fleet_snapshot(const aib_fleet_shared_t *shared, aib_fleet_shared_t *out);

#endif
