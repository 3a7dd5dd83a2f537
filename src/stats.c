#include <string.h>
#include <apr_hash.h>
#include <apr_strings.h>

#include "hint.h"
#include "stats.h"

#define LOAD(p)      __atomic_load_n((p), __ATOMIC_RELAXED)
#define ADD(p, v)    __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)

const double aib_duration_bounds[AIB_DURATION_BUCKETS] = {
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120
};
const int aib_attempt_bounds[AIB_ATTEMPT_BUCKETS] = { 1, 2, 3, 4, 5, 10, 25 };
const char *aib_stat_route_names[AIB_STAT_ROUTES];

/* The names come from the format table, which no constant initializer can
 * read: set before anything runs, so never written while read. */
__attribute__((constructor)) static void name_routes(void)
{
    int i;

    for (i = 0; i < AIB_FORMAT_COUNT; i++)
        aib_stat_route_names[i] = aib_formats[i]->name;
    aib_stat_route_names[AIB_STAT_PASSTHROUGH] = "passthrough";
}

int aib_stat_route(const char *route_name)
{
    const aib_format_t *format = aib_format_find(route_name);
    int i;

    for (i = 0; format && i < AIB_FORMAT_COUNT; i++)
        if (aib_formats[i] == format)
            return i;
    return AIB_STAT_PASSTHROUGH;
}

uint64_t aib_provider_fingerprint(const char *server, const char *provider)
{
    return aib_fingerprint(server, provider);
}

void aib_statstore_assign(aib_statstore_t *to, const aib_statstore_t *from,
                          const apr_array_header_t *fps, aib_provider_stats_t **out,
                          apr_pool_t *tmp)
{
    apr_hash_t *old = apr_hash_make(tmp), *wanted = apr_hash_make(tmp);
    uint32_t s, next_free = 0;
    int i;

    for (i = 0; i < fps->nelts; i++)
        apr_hash_set(wanted, &APR_ARRAY_IDX(fps, i, uint64_t), sizeof(uint64_t), "");
    if (from)
        for (s = 0; s < from->capacity; s++)
            if (from->records[s].fingerprint)
                apr_hash_set(old, &from->records[s].fingerprint, sizeof(uint64_t),
                             &from->records[s]);
    if (to == from)
        for (s = 0; s < to->capacity; s++) {
            uint64_t fp = to->records[s].fingerprint;
            if (fp && !apr_hash_get(wanted, &fp, sizeof(fp)))
                memset(&to->records[s], 0, sizeof(to->records[s]));
        }
    for (i = 0; i < fps->nelts; i++) {
        const uint64_t *fp = &APR_ARRAY_IDX(fps, i, uint64_t);
        aib_provider_stats_t *previous = apr_hash_get(old, fp, sizeof(uint64_t));

        /* Kept in place, or already placed (a vhost inheriting a provider). */
        if (previous && (to == from || (previous >= to->records
                                        && previous < to->records + to->capacity))) {
            out[i] = previous;
            continue;
        }
        while (next_free < to->capacity && to->records[next_free].fingerprint)
            next_free++;
        out[i] = &to->records[next_free];
        if (previous)
            memcpy(out[i], previous, sizeof(*previous));
        else
            memset(out[i], 0, sizeof(*out[i]));
        out[i]->fingerprint = *fp;
        apr_hash_set(old, fp, sizeof(uint64_t), out[i]);
    }
}

void aib_stats_begin(aib_provider_stats_t *s)
{
    if (s)
        ADD(&s->inflight, 1);
}

void aib_stats_end(aib_provider_stats_t *s, int route, int byok, int outcome,
                   int64_t duration_us, int attempts)
{
    int b;

    if (!s)
        return;
    ADD(&s->inflight, -1);
    ADD(&s->interceptions[route][byok ? 1 : 0][outcome], 1);
    for (b = 0; b < AIB_DURATION_BUCKETS && duration_us > aib_duration_bounds[b] * 1e6; b++)
        ;
    ADD(&s->duration_buckets[route][b], 1);
    ADD(&s->duration_sum_us[route], (uint64_t)(duration_us > 0 ? duration_us : 0));
    for (b = 0; b < AIB_ATTEMPT_BUCKETS && attempts > aib_attempt_bounds[b]; b++)
        ;
    ADD(&s->attempt_buckets[b], 1);
    ADD(&s->attempt_sum, (uint64_t)attempts);
}

void aib_stats_transition(aib_provider_stats_t *s, aib_reason_e reason)
{
    if (s && reason > AIB_REASON_NONE && reason < AIB_STAT_REASONS)
        ADD(&s->transitions[reason], 1);
}

void aib_stats_exhaustion(aib_provider_stats_t *s, int kind)
{
    if (s && kind >= 0 && kind < AIB_STAT_EXHAUSTIONS)
        ADD(&s->exhaustions[kind], 1);
}

void aib_stats_snapshot(const aib_provider_stats_t *s, aib_provider_stats_t *out)
{
    const uint64_t *from = (const uint64_t *)s;
    uint64_t *to = (uint64_t *)out;
    size_t i;

    /* Every field is a 64-bit counter: copy them one atomic load at a time. */
    for (i = 0; i < sizeof(*s) / sizeof(uint64_t); i++)
        to[i] = LOAD(&from[i]);
}

int aib_tool_stats_count(aib_toolstore_t *store, const char *server, const char *tool,
                         int outcome, int64_t duration_ms)
{
    uint64_t fp = aib_provider_fingerprint(server, tool);
    uint32_t i, n;

    if (!store || !store->capacity || outcome < 0 || outcome >= AIB_TOOL_OUTCOMES)
        return 0;
    for (n = 0, i = (uint32_t)(fp % store->capacity); n < store->capacity;
         n++, i = (i + 1) % store->capacity) {
        aib_tool_stats_t *t = &store->records[i];
        uint64_t owner = __atomic_load_n(&t->fingerprint, __ATOMIC_ACQUIRE);

        if (!owner && __atomic_compare_exchange_n(&t->fingerprint, &owner, fp, 0,
                                                  __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            apr_cpystrn(t->server, server, sizeof(t->server));
            apr_cpystrn(t->tool, tool, sizeof(t->tool));
            __atomic_store_n(&t->ready, 1, __ATOMIC_RELEASE);
            owner = fp;
        }
        if (owner != fp)
            continue;
        ADD(&t->calls[outcome], 1);
        ADD(&t->duration_ms_sum, duration_ms > 0 ? (uint64_t)duration_ms : 0);
        return 1;
    }
    return 0;
}
