#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <apr_general.h>
#include <apr_strings.h>

#include "fleet.h"
#include "hint.h"

/* A record: format version, tag, then the key's state. */
#define RECORD_FORMAT "aib1 %016" APR_UINT64_T_HEX_FMT " %" APR_INT64_T_FMT " %u %" \
                      APR_INT64_T_FMT " %u"
#define RECORD_MAX 128
#define ID_LEN 9

struct aib_fleet {
    aib_fleet_shared_t *shared;
    const apr_array_header_t *pools;
    uint64_t *stamps;            /* per pool: the stamp seen last, 0: none */
    int *reread;                 /* per pool: read its records in the next round */
    int resync;                  /* read every record in the next round */
    uint64_t rng;
};

typedef struct {
    uint64_t tag;
    int64_t cooldown_until_ms;
    unsigned cooldown_reason;
    int64_t disabled_until_ms;
    unsigned disabled_reason;
} record_t;

/* xorshift64*: tags and stamps need to differ, not to be secret. */
static uint64_t next_random(aib_fleet_t *f)
{
    uint64_t x = f->rng;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    f->rng = x;
    x *= UINT64_C(2685821657736338717);
    return x ? x : 1;
}

aib_fleet_t *aib_fleet_create(apr_pool_t *p, aib_fleet_shared_t *shared,
                              const apr_array_header_t *pools)
{
    aib_fleet_t *f = apr_pcalloc(p, sizeof(*f));

    f->shared = shared;
    f->pools = pools;
    f->stamps = apr_pcalloc(p, sizeof(uint64_t) * (apr_size_t)(pools->nelts + 1));
    f->reread = apr_pcalloc(p, sizeof(int) * (apr_size_t)(pools->nelts + 1));
    f->resync = 1;
    if (apr_generate_random_bytes((unsigned char *)&f->rng, sizeof(f->rng)) != APR_SUCCESS)
        f->rng = (uint64_t)apr_time_now();
    f->rng ^= (uint64_t)getpid() << 32;
    if (!f->rng)
        f->rng = 1;
    return f;
}

int aib_fleet_lease(aib_fleet_shared_t *shared, uint32_t me, int64_t now_ms, int64_t lease_ms)
{
    uint32_t owner = AIB_LOAD(&shared->owner);

    if (owner != me) {
        if (AIB_LOAD(&shared->lease_until_ms) > now_ms)
            return 0;
        if (!__atomic_compare_exchange_n(&shared->owner, &owner, me, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE))
            return 0;
    }
    AIB_STORE(&shared->lease_until_ms, now_ms + lease_ms);
    return 1;
}

static void make_id(unsigned char id[ID_LEN], char kind, uint64_t fingerprint)
{
    int b;

    id[0] = (unsigned char)kind;
    for (b = 0; b < 8; b++)
        id[1 + b] = (unsigned char)(fingerprint >> (56 - 8 * b));
}

/* A record another server wrote: anything malformed is no record. */
static int parse_record(const char *data, record_t *rec)
{
    int used = -1;

    if (sscanf(data, "aib1 %16" APR_UINT64_T_HEX_FMT " %" APR_INT64_T_FMT " %u %"
               APR_INT64_T_FMT " %u%n", &rec->tag, &rec->cooldown_until_ms,
               &rec->cooldown_reason, &rec->disabled_until_ms, &rec->disabled_reason,
               &used) != 5
        || used < 0 || data[used] != '\0')
        return 0;
    return rec->tag && rec->cooldown_reason <= AIB_REASON_FORBIDDEN
           && rec->disabled_reason <= AIB_REASON_FORBIDDEN
           && rec->cooldown_until_ms >= 0 && rec->disabled_until_ms >= 0;
}

static apr_status_t get_record(const aib_fleet_cache_t *cache, uint64_t fingerprint,
                               record_t *rec, int *found, apr_pool_t *tmp)
{
    unsigned char id[ID_LEN];
    char buf[RECORD_MAX + 1];
    unsigned len = RECORD_MAX;
    apr_status_t rv;

    make_id(id, 'k', fingerprint);
    rv = cache->get(cache->ctx, id, ID_LEN, buf, &len, tmp);
    *found = 0;
    if (APR_STATUS_IS_NOTFOUND(rv))
        return APR_SUCCESS;
    if (rv != APR_SUCCESS)
        return rv;
    buf[len < RECORD_MAX ? len : RECORD_MAX] = '\0';
    *found = parse_record(buf, rec);
    return APR_SUCCESS;
}

static uint64_t pool_fingerprint(const aib_keypool_t *kp)
{
    return aib_key_fingerprint(kp->name, "");
}

/* The pool's stamp, 0 when there is none. */
static apr_status_t get_stamp(const aib_fleet_cache_t *cache, const aib_keypool_t *kp,
                              uint64_t *stamp, apr_pool_t *tmp)
{
    unsigned char id[ID_LEN];
    char buf[17];
    unsigned len = 16;
    apr_status_t rv;

    make_id(id, 's', pool_fingerprint(kp));
    rv = cache->get(cache->ctx, id, ID_LEN, buf, &len, tmp);
    *stamp = 0;
    if (APR_STATUS_IS_NOTFOUND(rv))
        return APR_SUCCESS;
    if (rv != APR_SUCCESS)
        return rv;
    buf[len < 16 ? len : 16] = '\0';
    *stamp = strtoull(buf, NULL, 16);
    /* A stamp that is not ours to read still changes when written. */
    if (!*stamp)
        *stamp = aib_key_fingerprint(kp->name, buf);
    return APR_SUCCESS;
}

static apr_status_t put_stamp(aib_fleet_t *f, const aib_fleet_cache_t *cache,
                              const aib_keypool_t *kp, int64_t now_ms, apr_pool_t *tmp)
{
    unsigned char id[ID_LEN];
    const char *data = apr_psprintf(tmp, "%016" APR_UINT64_T_HEX_FMT, next_random(f));

    make_id(id, 's', pool_fingerprint(kp));
    return cache->put(cache->ctx, id, ID_LEN, now_ms + AIB_FLEET_HOLD_MS, data,
                      (unsigned)strlen(data), tmp);
}

/* Whether the key is out for longer than a record is worth. */
static int worth_a_record(const aib_slot_t *slot, int64_t now_ms)
{
    return AIB_LOAD(&slot->disabled_until_ms) > now_ms
           || AIB_LOAD(&slot->cooldown_until_ms) - now_ms >= AIB_FLEET_MIN_COOLDOWN_MS;
}

/* Takes over what other servers wrote of the pool's keys. A key changed
 * here since the last round keeps its change (it is written next) but
 * takes the later cooldown: a fresh 429 elsewhere is news here too. A key
 * out here whose record is gone (the cache restarted or evicted it) is
 * written again. */
static apr_status_t take_pool(aib_fleet_t *f, const aib_fleet_cache_t *cache,
                              const aib_keypool_t *kp, int64_t now_ms, apr_pool_t *tmp,
                              aib_fleet_round_t *out)
{
    int i;

    for (i = 0; i < kp->keys->nelts; i++) {
        aib_slot_t *slot = aib_key_slot(kp, i);
        record_t rec;
        uint64_t version;
        int found;
        apr_status_t rv;

        if (!slot)
            continue;
        rv = get_record(cache, APR_ARRAY_IDX(kp->keys, i, aib_key_t).fingerprint, &rec,
                        &found, tmp);
        if (rv != APR_SUCCESS)
            return rv;
        version = AIB_LOAD(&slot->version);
        if (!found && AIB_LOAD(&slot->fleet_tag) && worth_a_record(slot, now_ms))
            AIB_STORE(&slot->fleet_version, version - 1);
        if (!found || rec.tag == AIB_LOAD(&slot->fleet_tag))
            continue;
        if (version == AIB_LOAD(&slot->fleet_version)) {
            aib_key_apply(kp, i, AIB_LOAD(&slot->cooldown_until_ms), rec.cooldown_until_ms,
                          rec.cooldown_reason, rec.disabled_until_ms, rec.disabled_reason);
            AIB_STORE(&slot->fleet_version, version);
        }
        else if (rec.cooldown_until_ms > AIB_LOAD(&slot->cooldown_until_ms)) {
            aib_key_cooldown(kp, i, rec.cooldown_until_ms, rec.cooldown_reason);
        }
        AIB_STORE(&slot->fleet_tag, rec.tag);
        AIB_STORE(&slot->fleet_written_ms, 0);
        AIB_ADD(&f->shared->taken, 1);
        out->taken++;
    }
    return APR_SUCCESS;
}

static apr_status_t put_record(const aib_fleet_cache_t *cache, uint64_t fingerprint,
                               const record_t *rec, int64_t expiry_ms, apr_pool_t *tmp)
{
    unsigned char id[ID_LEN];
    const char *data = apr_psprintf(tmp, RECORD_FORMAT, rec->tag, rec->cooldown_until_ms,
                                    rec->cooldown_reason, rec->disabled_until_ms,
                                    rec->disabled_reason);

    make_id(id, 'k', fingerprint);
    return cache->put(cache->ctx, id, ID_LEN, expiry_ms, data, (unsigned)strlen(data), tmp);
}

/* When a record of this state may go: with its last deadline; a state
 * without one (disabled until re-enabled, available again) is held. */
static int64_t record_expiry(const record_t *rec, int64_t now_ms)
{
    if (rec->disabled_until_ms > now_ms && rec->disabled_until_ms != AIB_FOREVER)
        return rec->disabled_until_ms > rec->cooldown_until_ms ? rec->disabled_until_ms
                                                               : rec->cooldown_until_ms;
    if (rec->disabled_until_ms > now_ms || rec->cooldown_until_ms - now_ms < AIB_FLEET_MIN_COOLDOWN_MS)
        return now_ms + AIB_FLEET_HOLD_MS;
    return rec->cooldown_until_ms;
}

/* A held disabled record is written again before it expires, unless
 * another server wrote the key's record since. */
static apr_status_t renew(const aib_fleet_cache_t *cache, const aib_key_t *key,
                          aib_slot_t *slot, const record_t *rec, int64_t now_ms, apr_pool_t *tmp)
{
    int64_t written = AIB_LOAD(&slot->fleet_written_ms);
    record_t current;
    int found;
    apr_status_t rv;

    if (written && now_ms - written < AIB_FLEET_HOLD_MS / 2)
        return APR_SUCCESS;
    if (!written) {
        /* Taken over: its holder renews it; count from now. */
        AIB_STORE(&slot->fleet_written_ms, now_ms);
        return APR_SUCCESS;
    }
    rv = get_record(cache, key->fingerprint, &current, &found, tmp);
    if (rv != APR_SUCCESS || (found && current.tag != rec->tag))
        return rv;
    rv = put_record(cache, key->fingerprint, rec, now_ms + AIB_FLEET_HOLD_MS, tmp);
    if (rv == APR_SUCCESS)
        AIB_STORE(&slot->fleet_written_ms, now_ms);
    return rv;
}

/* Writes the records of the pool's keys changed here; *wrote says whether
 * any was written. */
static apr_status_t write_pool(aib_fleet_t *f, const aib_fleet_cache_t *cache,
                               const aib_keypool_t *kp, int64_t now_ms, apr_pool_t *tmp,
                               int *wrote, aib_fleet_round_t *out)
{
    int i;

    *wrote = 0;
    for (i = 0; i < kp->keys->nelts; i++) {
        const aib_key_t *key = &APR_ARRAY_IDX(kp->keys, i, aib_key_t);
        aib_slot_t *slot = aib_key_slot(kp, i);
        uint64_t version;
        record_t rec;
        apr_status_t rv;

        if (!slot)
            continue;
        version = AIB_LOAD(&slot->version);
        rec.disabled_until_ms = AIB_LOAD(&slot->disabled_until_ms);
        rec.disabled_reason = AIB_LOAD(&slot->disabled_reason);
        rec.cooldown_until_ms = AIB_LOAD(&slot->cooldown_until_ms);
        rec.cooldown_reason = AIB_LOAD(&slot->cooldown_reason);
        if (version == AIB_LOAD(&slot->fleet_version)) {
            rec.tag = AIB_LOAD(&slot->fleet_tag);
            if (rec.tag && rec.disabled_until_ms == AIB_FOREVER
                && (rv = renew(cache, key, slot, &rec, now_ms, tmp)) != APR_SUCCESS)
                return rv;
            continue;
        }
        if (rec.disabled_until_ms <= now_ms && rec.cooldown_until_ms > now_ms
            && !worth_a_record(slot, now_ms)) {
            AIB_STORE(&slot->fleet_version, version);
            continue;
        }
        rec.tag = next_random(f);
        rv = put_record(cache, key->fingerprint, &rec, record_expiry(&rec, now_ms), tmp);
        if (rv != APR_SUCCESS)
            return rv;
        AIB_STORE(&slot->fleet_tag, rec.tag);
        AIB_STORE(&slot->fleet_version, version);
        AIB_STORE(&slot->fleet_written_ms, now_ms);
        AIB_ADD(&f->shared->written, 1);
        out->written++;
        *wrote = 1;
    }
    return APR_SUCCESS;
}

/* Whether the cache is there. APR's Redis and memcache clients answer "not
 * found" while they hold a server for dead, so a read alone cannot tell:
 * a marker record is read, and written when missing. A cache that lost it
 * (restarted, flushed) lost the key records too: everything is read, and
 * what is missing written, again. */
static apr_status_t probe(aib_fleet_t *f, const aib_fleet_cache_t *cache, int64_t now_ms,
                          apr_pool_t *tmp)
{
    static const unsigned char id[ID_LEN] = { 'm' };
    char buf[8];
    unsigned len = sizeof(buf);
    apr_status_t rv = cache->get(cache->ctx, id, ID_LEN, buf, &len, tmp);

    if (!APR_STATUS_IS_NOTFOUND(rv))
        return rv;
    rv = cache->put(cache->ctx, id, ID_LEN, now_ms + AIB_FLEET_HOLD_MS, "aib1", 4, tmp);
    if (rv == APR_SUCCESS)
        f->resync = 1;
    return APR_STATUS_IS_NOTFOUND(rv) ? APR_ECONNREFUSED : rv;
}

void aib_fleet_round(aib_fleet_t *f, const aib_fleet_cache_t *cache, int64_t now_ms,
                     apr_pool_t *tmp, aib_fleet_round_t *out)
{
    aib_fleet_shared_t *sh = f->shared;
    apr_status_t rv;
    int p;

    memset(out, 0, sizeof(*out));
    rv = probe(f, cache, now_ms, tmp);
    for (p = 0; p < f->pools->nelts && rv == APR_SUCCESS; p++) {
        const aib_keypool_t *kp = APR_ARRAY_IDX(f->pools, p, const aib_keypool_t *);
        uint64_t stamp;
        int wrote;

        rv = get_stamp(cache, kp, &stamp, tmp);
        if (rv == APR_SUCCESS && (f->resync || f->reread[p] || stamp != f->stamps[p])) {
            rv = take_pool(f, cache, kp, now_ms, tmp, out);
            if (rv == APR_SUCCESS) {
                f->stamps[p] = stamp;
                f->reread[p] = 0;
            }
        }
        if (rv == APR_SUCCESS)
            rv = write_pool(f, cache, kp, now_ms, tmp, &wrote, out);
        /* Our own stamp is not taken as seen: a write of another server
         * between our read and our write must still be read. */
        if (rv == APR_SUCCESS && wrote) {
            rv = put_stamp(f, cache, kp, now_ms, tmp);
            f->reread[p] = 1;
        }
    }
    out->error = rv;
    if (rv != APR_SUCCESS) {
        uint32_t reported = 0;
        f->resync = 1;
        AIB_STORE(&sh->connected, 0);
        AIB_STORE(&sh->last_failure_ms, now_ms);
        AIB_ADD(&sh->rounds_failed, 1);
        out->outage_begins = __atomic_compare_exchange_n(&sh->outage_reported, &reported, 1, 0,
                                                         __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
        return;
    }
    f->resync = 0;
    out->recovered = !AIB_LOAD(&sh->connected) && AIB_LOAD(&sh->outage_reported);
    AIB_STORE(&sh->outage_reported, 0);
    AIB_STORE(&sh->connected, 1);
    AIB_STORE(&sh->last_sync_ms, now_ms);
    AIB_ADD(&sh->rounds_ok, 1);
}

int aib_fleet_pending(const aib_fleet_t *f)
{
    int p, i;

    for (p = 0; p < f->pools->nelts; p++) {
        const aib_keypool_t *kp = APR_ARRAY_IDX(f->pools, p, const aib_keypool_t *);
        for (i = 0; i < kp->keys->nelts; i++) {
            const aib_slot_t *slot = aib_key_slot(kp, i);
            if (slot && AIB_LOAD(&slot->version) != AIB_LOAD(&slot->fleet_version))
                return 1;
        }
    }
    return 0;
}

void aib_fleet_snapshot(const aib_fleet_shared_t *shared, aib_fleet_shared_t *out)
{
    out->owner = AIB_LOAD(&shared->owner);
    out->lease_until_ms = AIB_LOAD(&shared->lease_until_ms);
    out->last_sync_ms = AIB_LOAD(&shared->last_sync_ms);
    out->last_failure_ms = AIB_LOAD(&shared->last_failure_ms);
    out->connected = AIB_LOAD(&shared->connected);
    out->outage_reported = AIB_LOAD(&shared->outage_reported);
    out->rounds_ok = AIB_LOAD(&shared->rounds_ok);
    out->rounds_failed = AIB_LOAD(&shared->rounds_failed);
    out->written = AIB_LOAD(&shared->written);
    out->taken = AIB_LOAD(&shared->taken);
}
