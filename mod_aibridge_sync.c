/* mod_aibridge's fleet sync (AIBridgeSharedState): a thread per child
 * writes and takes key state through the socache provider; a lease in
 * shared memory picks the one process that works at a time. */
#include <unistd.h>

#include <apr_atomic.h>
#include <apr_thread_proc.h>

#include "util.h"

#include "mod_aibridge.h"

/* One per child: the thread and what it works with. */
typedef struct {
    server_rec *s;
    const aib_glue_server_conf_t *sc;
    aib_fleet_t *fleet;
    aib_fleet_cache_t cache;
    apr_thread_t *thread;
    volatile apr_uint32_t stop;
} sync_t;

static apr_status_t socache_get(void *ctx, const unsigned char *id, unsigned id_len, char *buf,
                                unsigned *len, apr_pool_t *tmp)
{
    const sync_t *sy = ctx;

    return sy->sc->socache->retrieve(sy->sc->socache_instance, sy->s, id, id_len,
                                     (unsigned char *)buf, len, tmp);
}

static apr_status_t socache_put(void *ctx, const unsigned char *id, unsigned id_len,
                                int64_t expiry_ms, const char *data, unsigned len,
                                apr_pool_t *tmp)
{
    const sync_t *sy = ctx;

    return sy->sc->socache->store(sy->sc->socache_instance, sy->s, id, id_len,
                                  apr_time_from_msec(expiry_ms), (unsigned char *)data, len,
                                  tmp);
}

/* Long enough to cover a slow round; a process that exits gives it up. */
#define AIB_SYNC_LEASE_MS 1000
#define AIB_SYNC_TICK_MS 50

static void sync_round(sync_t *sy, int64_t now, apr_pool_t *tmp)
{
    aib_fleet_round_t r;

    aib_fleet_round(sy->fleet, &sy->cache, now, tmp, &r);
    if (r.outage_begins)
        ap_log_error(APLOG_MARK, APLOG_WARNING, r.error, sy->s,
                     "AIBridgeSharedState: %s unreachable: this server goes on with its "
                     "own key state and resynchronises when the cache returns",
                     sy->sc->shared_state);
    else if (r.recovered)
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, sy->s, "AIBridgeSharedState: %s "
                     "reachable again, key state resynchronised", sy->sc->shared_state);
    if (r.written || r.taken)
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, sy->s, "shared state: wrote %u and took "
                     "over %u key records", r.written, r.taken);
    apr_pool_clear(tmp);
}

static void *APR_THREAD_FUNC sync_thread(apr_thread_t *thread, void *data)
{
    sync_t *sy = data;
    uint32_t me = (uint32_t)getpid();
    int64_t last_round = 0, now;
    apr_pool_t *tmp;

    apr_pool_create(&tmp, apr_thread_pool_get(thread));
    while (!apr_atomic_read32(&sy->stop)) {
        apr_sleep(apr_time_from_msec(AIB_SYNC_TICK_MS));
        now = aib_now_ms();
        if (now - last_round < sy->sc->sync_interval_ms
            || !aib_fleet_lease(aib_glue_fleet_shared, me, now, AIB_SYNC_LEASE_MS))
            continue;
        last_round = now;
        sync_round(sy, now, tmp);
    }
    /* Marks not written yet get a last round before the process goes, even
     * when no other process is left to write them (a child that ends after
     * MaxConnectionsPerChild); a cache known to be down is not waited for.
     * Then the lease is handed on at once rather than when it runs out. */
    now = aib_now_ms();
    if (aib_fleet_lease(aib_glue_fleet_shared, me, now, AIB_SYNC_LEASE_MS)) {
        if (aib_fleet_pending(sy->fleet) && AIB_LOAD(&aib_glue_fleet_shared->connected))
            sync_round(sy, now, tmp);
        AIB_STORE(&aib_glue_fleet_shared->lease_until_ms, 0);
    }
    apr_thread_exit(thread, APR_SUCCESS);
    return NULL;
}

/* Runs before the child's pools go: the thread uses them. */
static apr_status_t stop_sync(void *data)
{
    sync_t *sy = data;
    apr_status_t rv;

    apr_atomic_set32(&sy->stop, 1);
    apr_thread_join(&rv, sy->thread);
    return APR_SUCCESS;
}

void aib_glue_sync_start(apr_pool_t *pchild, server_rec *s)
{
    sync_t *sy = apr_pcalloc(pchild, sizeof(*sy));
    struct ap_socache_hints hints = { 32, 64, apr_time_from_sec(60) };
    apr_status_t rv;

    sy->s = s;
    sy->sc = aib_glue_server_conf(s);
    /* Each child opens its own connections: none is inherited from the parent. */
    rv = sy->sc->socache->init(sy->sc->socache_instance, "aibridge", &hints, s, pchild);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, "AIBridgeSharedState: cannot set up %s: "
                     "this server keeps its key state to itself", sy->sc->shared_state);
        return;
    }
    sy->fleet = aib_fleet_create(pchild, aib_glue_fleet_shared, aib_glue_all_pools(pchild, s));
    sy->cache.ctx = sy;
    sy->cache.get = socache_get;
    sy->cache.put = socache_put;
    rv = apr_thread_create(&sy->thread, NULL, sync_thread, sy, pchild);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, "AIBridgeSharedState: cannot start the "
                     "sync thread");
        return;
    }
    apr_pool_pre_cleanup_register(pchild, sy, stop_sync);
}
