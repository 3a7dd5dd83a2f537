/* mod_aibridge's shared memory: the key slots, the provider and tool
 * counters and the fleet sync state, in segments the parent keeps across
 * graceful restarts (retained data), placed once per configuration. */
#include <string.h>

#include <http_main.h>
#include <apr_shm.h>
#include <apr_strings.h>

#include "keypool.h"
#include "provider.h"

#include "mod_aibridge.h"

#define AIB_TOOL_STATS_RECORDS 256

aib_fleet_shared_t *aib_glue_fleet_shared;
aib_toolstore_t *aib_glue_tool_stats;

/* A shared-memory segment of fixed-size records. */
typedef struct {
    apr_shm_t *shm;
    void *base;
    uint32_t capacity;
} segment_t;

/* Survives graceful restarts in the parent: the key store, the provider
 * counters, and their segments. */
typedef struct {
    segment_t keys;
    aib_keystore_t store;
    segment_t stats;
    aib_statstore_t statstore;
    segment_t fleet;                  /* one aib_fleet_shared_t */
    segment_t tools;                  /* aib_tool_stats_t */
    aib_toolstore_t toolstore;
} retained_t;

static retained_t *get_retained(void)
{
    static const char *const key = "mod_aibridge_retained";
    retained_t *rd = ap_retained_data_get(key);

    if (!rd) {
        rd = ap_retained_data_create(key, sizeof(*rd));
        memset(rd, 0, sizeof(*rd));
    }
    return rd;
}

/* Makes room for `needed` records of `size` bytes: the segment stays when
 * it has room (*grown = 0); else a new zeroed one, with headroom so a few
 * more keys later need none, replaces it and the old one is returned in
 * *old for copying, then destroyed by the caller. */
static apr_status_t segment_fit(segment_t *seg, apr_size_t size, uint32_t needed,
                                segment_t *old, int *grown)
{
    uint32_t capacity = needed + needed / 2 + 16;
    apr_shm_t *shm;
    apr_status_t rv;

    *old = *seg;
    *grown = !seg->shm || seg->capacity < needed;
    if (!*grown)
        return APR_SUCCESS;
    rv = apr_shm_create(&shm, (apr_size_t)capacity * size, NULL, ap_pglobal);
    if (rv != APR_SUCCESS)
        return rv;
    seg->shm = shm;
    seg->base = apr_shm_baseaddr_get(shm);
    seg->capacity = capacity;
    memset(seg->base, 0, (apr_size_t)capacity * size);
    return APR_SUCCESS;
}

/* Children of the previous generation keep their own mapping. */
static void segment_retire(segment_t *old, int grown)
{
    if (grown && old->shm)
        apr_shm_destroy(old->shm);
}

apr_array_header_t *aib_glue_all_pools(apr_pool_t *p, server_rec *s)
{
    apr_array_header_t *pools = apr_array_make(p, 8, sizeof(aib_keypool_t *));

    for (; s; s = s->next) {
        aib_glue_server_conf_t *sc = aib_glue_server_conf(s);
        apr_hash_index_t *hi;
        for (hi = apr_hash_first(p, sc->own_pools); hi; hi = apr_hash_next(hi))
            APR_ARRAY_PUSH(pools, aib_keypool_t *) = apr_hash_this_val(hi);
    }
    return pools;
}

/* Key slots for every pool. Keys that stay keep their state and their slot,
 * so marks that the previous generation's children still write land on
 * the right key. */
static apr_status_t place_keys(retained_t *rd, server_rec *s, apr_pool_t *ptemp)
{
    apr_array_header_t *pools = aib_glue_all_pools(ptemp, s);
    aib_keystore_t old_store = rd->store;
    segment_t old;
    uint32_t needed;
    apr_status_t rv;
    int grown;

    needed = aib_keystore_slots_needed(pools, ptemp);
    rv = segment_fit(&rd->keys, sizeof(aib_slot_t), needed, &old, &grown);
    if (rv != APR_SUCCESS)
        return rv;
    rd->store.slots = rd->keys.base;
    rd->store.capacity = rd->keys.capacity;
    aib_keystore_assign(&rd->store, !grown ? &rd->store : old.shm ? &old_store : NULL,
                        pools, ptemp);
    segment_retire(&old, grown);
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "key store: %u keys in %u slots%s", needed,
                 rd->store.capacity, grown ? " (new segment)" : "");
    return APR_SUCCESS;
}

/* A counter record for every provider, kept across restarts likewise. */
static apr_status_t place_stats(retained_t *rd, server_rec *s, apr_pool_t *ptemp)
{
    apr_array_header_t *fps = apr_array_make(ptemp, 8, sizeof(uint64_t));
    apr_array_header_t *providers = apr_array_make(ptemp, 8, sizeof(aib_provider_t *));
    aib_statstore_t old_store = rd->statstore;
    aib_provider_stats_t **records;
    segment_t old;
    apr_status_t rv;
    int grown, i;

    for (; s; s = s->next) {
        aib_glue_server_conf_t *sc = aib_glue_server_conf(s);
        const char *server = aib_glue_server_label(ptemp, s);
        for (i = 0; i < sc->own_providers->nelts; i++) {
            aib_provider_t *pv = APR_ARRAY_IDX(sc->own_providers, i, aib_provider_t *);
            APR_ARRAY_PUSH(providers, aib_provider_t *) = pv;
            APR_ARRAY_PUSH(fps, uint64_t) = aib_provider_fingerprint(server, pv->name);
        }
    }
    rv = segment_fit(&rd->stats, sizeof(aib_provider_stats_t), (uint32_t)fps->nelts, &old, &grown);
    if (rv != APR_SUCCESS)
        return rv;
    rd->statstore.records = rd->stats.base;
    rd->statstore.capacity = rd->stats.capacity;
    records = apr_pcalloc(ptemp, sizeof(*records) * (apr_size_t)(fps->nelts + 1));
    aib_statstore_assign(&rd->statstore, !grown ? &rd->statstore : old.shm ? &old_store : NULL,
                         fps, records, ptemp);
    for (i = 0; i < providers->nelts; i++)
        APR_ARRAY_IDX(providers, i, aib_provider_t *)->stats = records[i];
    segment_retire(&old, grown);
    return APR_SUCCESS;
}

/* MCP tool-call counters: a fixed table, kept across restarts. */
static apr_status_t place_tools(retained_t *rd)
{
    segment_t old;
    int grown;
    apr_status_t rv = segment_fit(&rd->tools, sizeof(aib_tool_stats_t), AIB_TOOL_STATS_RECORDS,
                                  &old, &grown);

    if (rv != APR_SUCCESS)
        return rv;
    rd->toolstore.records = rd->tools.base;
    rd->toolstore.capacity = rd->tools.capacity;
    aib_glue_tool_stats = &rd->toolstore;
    return APR_SUCCESS;
}

/* The fleet sync state, kept across restarts like the key slots. */
static apr_status_t place_fleet(retained_t *rd, server_rec *s)
{
    const aib_glue_server_conf_t *sc = aib_glue_server_conf(s);
    segment_t old;
    int grown;
    apr_status_t rv;

    aib_glue_fleet_shared = NULL;
    if (!sc->shared_state)
        return APR_SUCCESS;
    rv = segment_fit(&rd->fleet, sizeof(aib_fleet_shared_t), 1, &old, &grown);
    if (rv != APR_SUCCESS)
        return rv;
    aib_glue_fleet_shared = rd->fleet.base;
    /* A new generation's sync process takes the lease at once. */
    aib_glue_fleet_shared->lease_until_ms = 0;
    return APR_SUCCESS;
}

apr_status_t aib_glue_shm_place(server_rec *s, apr_pool_t *ptemp)
{
    retained_t *rd = get_retained();
    apr_status_t rv;

    if ((rv = place_keys(rd, s, ptemp)) != APR_SUCCESS
        || (rv = place_stats(rd, s, ptemp)) != APR_SUCCESS
        || (rv = place_fleet(rd, s)) != APR_SUCCESS)
        return rv;
    return place_tools(rd);
}
