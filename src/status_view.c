/* What the status renderings show (status_view.h), and the JSON form of
 * the status page. */
#include <inttypes.h>
#include <string.h>
#include <apr_hash.h>
#include <apr_strings.h>
#include <json.h>

#include "status_view.h"
#include "util.h"

const char *const aib_status_exhaustion_names[AIB_STAT_EXHAUSTIONS] = {
    "rate_limited", "auth_failed"
};

apr_array_header_t *aib_status_entries(apr_pool_t *p, const apr_array_header_t *servers)
{
    apr_array_header_t *out = apr_array_make(p, 8, sizeof(aib_status_entry_t));
    apr_hash_t *seen_pv = apr_hash_make(p), *seen_name = apr_hash_make(p);
    int s, i;

    for (s = 0; servers && s < servers->nelts; s++) {
        const aib_status_server_t *srv = &APR_ARRAY_IDX(servers, s, aib_status_server_t);
        for (i = 0; srv->providers && i < srv->providers->nelts; i++) {
            const aib_provider_t *pv = APR_ARRAY_IDX(srv->providers, i, const aib_provider_t *);
            const char *name = apr_pstrcat(p, srv->name ? srv->name : "", "\n", pv->name, NULL);
            aib_status_entry_t *e;

            if (apr_hash_get(seen_pv, &pv, sizeof(pv))
                || apr_hash_get(seen_name, name, APR_HASH_KEY_STRING))
                continue;
            apr_hash_set(seen_pv, apr_pmemdup(p, &pv, sizeof(pv)), sizeof(pv), "");
            apr_hash_set(seen_name, name, APR_HASH_KEY_STRING, "");
            e = apr_array_push(out);
            e->server_index = s;
            e->server = srv->name ? srv->name : "";
            e->pv = pv;
            if (pv->stats)
                aib_stats_snapshot(pv->stats, &e->stats);
            else
                memset(&e->stats, 0, sizeof(e->stats));
        }
    }
    return out;
}

int aib_status_key_count(const aib_provider_t *pv)
{
    return pv->pool ? pv->pool->keys->nelts : 0;
}

void aib_status_key_view(const aib_provider_t *pv, int i, int64_t now_ms, aib_status_key_t *v)
{
    int64_t until;

    v->index = i;
    v->hint = APR_ARRAY_IDX(pv->pool->keys, i, aib_key_t).hint;
    v->state = aib_key_state(pv->pool, i, now_ms, &v->reason, &until);
    v->remaining_ms = v->state == AIB_KEY_AVAILABLE ? 0
                      : until == AIB_FOREVER ? -1 : until - now_ms;
    aib_key_snapshot(pv->pool, i, &v->slot);
}

uint64_t aib_status_outcome_total(const aib_provider_stats_t *st, int outcome)
{
    uint64_t n = 0;
    int r, c;

    for (r = 0; r < AIB_STAT_ROUTES; r++)
        for (c = 0; c < AIB_STAT_CREDENTIALS; c++)
            n += st->interceptions[r][c][outcome];
    return n;
}

const char *aib_status_duration(apr_pool_t *p, int64_t ms)
{
    int64_t s = ms > 0 ? (ms + 999) / 1000 : 0;

    if (s < 60)
        return apr_psprintf(p, "%ds", (int)s);
    if (s < 3600)
        return apr_psprintf(p, "%dm %02ds", (int)(s / 60), (int)(s % 60));
    if (s < 86400)
        return apr_psprintf(p, "%dh %02dm", (int)(s / 3600), (int)(s % 3600 / 60));
    return apr_psprintf(p, "%" PRId64 "d %02dh", s / 86400, (int)(s % 86400 / 3600));
}

const char *aib_status_when(apr_pool_t *p, int64_t ms, int64_t now_ms)
{
    if (!ms)
        return "never";
    /* Rounded down: what just happened is "0s ago". */
    return apr_psprintf(p, "%s (%s ago)", aib_time_rfc3339(p, ms),
                        aib_status_duration(p, now_ms > ms + 999 ? (now_ms - ms) / 1000 * 1000
                                                                 : 0));
}

/* ---- the JSON form ---- */

static json_object *json_count(uint64_t n)
{
    return json_object_new_int64(n > INT64_MAX ? INT64_MAX : (int64_t)n);
}

static json_object *json_time(apr_pool_t *p, int64_t ms)
{
    return ms ? json_object_new_string(aib_time_rfc3339(p, ms)) : NULL;
}

/* A time in Unix ms, null when it never happened. */
static json_object *json_ms(int64_t ms)
{
    return ms ? json_object_new_int64(ms) : NULL;
}

static json_object *key_json(apr_pool_t *p, const aib_status_key_t *v)
{
    json_object *k = json_object_new_object();
    const aib_slot_t *s = &v->slot;

    json_object_object_add(k, "index", json_object_new_int(v->index));
    json_object_object_add(k, "hint", json_object_new_string(v->hint));
    json_object_object_add(k, "state", json_object_new_string(aib_key_state_name(v->state)));
    json_object_object_add(k, "reason", v->state == AIB_KEY_AVAILABLE ? NULL
                           : json_object_new_string(aib_reason_name(v->reason)));
    json_object_object_add(k, "remaining_ms", v->remaining_ms > 0
                           ? json_object_new_int64(v->remaining_ms) : NULL);
    json_object_object_add(k, "until_reenabled", json_object_new_boolean(v->remaining_ms < 0));
    json_object_object_add(k, "requests", json_count(s->requests));
    json_object_object_add(k, "http_429", json_count(s->rate_limited));
    json_object_object_add(k, "http_401", json_count(s->unauthorized));
    json_object_object_add(k, "http_403", json_count(s->forbidden));
    json_object_object_add(k, "tokens_input", json_count(s->tokens_input));
    json_object_object_add(k, "tokens_output", json_count(s->tokens_output));
    json_object_object_add(k, "tokens_cache_read", json_count(s->tokens_cache_read));
    json_object_object_add(k, "tokens_cache_write", json_count(s->tokens_cache_write));
    json_object_object_add(k, "last_used", json_time(p, s->last_used_ms));
    json_object_object_add(k, "last_used_ms", json_ms(s->last_used_ms));
    json_object_object_add(k, "last_failure", json_time(p, s->last_failure_ms));
    json_object_object_add(k, "last_failure_ms", json_ms(s->last_failure_ms));
    json_object_object_add(k, "last_failure_status", s->last_failure_status
                           ? json_object_new_int((int)s->last_failure_status) : NULL);
    return k;
}

static json_object *provider_json(apr_pool_t *p, const aib_status_entry_t *e, int64_t now_ms)
{
    const aib_provider_t *pv = e->pv;
    const aib_provider_stats_t *st = &e->stats;
    json_object *o = json_object_new_object(), *x, *keys;
    int i;

    json_object_object_add(o, "name", json_object_new_string(pv->name));
    json_object_object_add(o, "type", json_object_new_string(pv->ops ? pv->ops->type : "?"));
    json_object_object_add(o, "pool", pv->pool ? json_object_new_string(pv->pool->name) : NULL);
    json_object_object_add(o, "byok", json_object_new_boolean(pv->byok));
    json_object_object_add(o, "inflight", json_object_new_int64(st->inflight));
    x = json_object_new_object();
    for (i = 0; i < AIB_STAT_OUTCOMES; i++)
        json_object_object_add(x, aib_outcome_name((aib_outcome_e)i),
                               json_count(aib_status_outcome_total(st, i)));
    json_object_object_add(o, "interceptions", x);
    x = json_object_new_object();
    for (i = 0; i < AIB_STAT_EXHAUSTIONS; i++)
        json_object_object_add(x, aib_status_exhaustion_names[i], json_count(st->exhaustions[i]));
    json_object_object_add(o, "exhaustions", x);
    x = json_object_new_object();
    for (i = AIB_REASON_NONE + 1; i < AIB_STAT_REASONS; i++)
        json_object_object_add(x, aib_reason_name((aib_reason_e)i), json_count(st->transitions[i]));
    json_object_object_add(o, "transitions", x);
    keys = json_object_new_array();
    for (i = 0; i < aib_status_key_count(pv); i++) {
        aib_status_key_t v;
        aib_status_key_view(pv, i, now_ms, &v);
        json_object_array_add(keys, key_json(p, &v));
    }
    json_object_object_add(o, "keys", keys);
    return o;
}

static json_object *fleet_json(apr_pool_t *p, const aib_status_fleet_t *fleet)
{
    json_object *o = json_object_new_object();
    aib_fleet_shared_t f;

    aib_fleet_snapshot(fleet->shared, &f);
    json_object_object_add(o, "cache", json_object_new_string(fleet->cache));
    json_object_object_add(o, "interval_ms", json_object_new_int64(fleet->interval_ms));
    json_object_object_add(o, "connected", json_object_new_boolean(f.connected));
    json_object_object_add(o, "last_sync", json_time(p, f.last_sync_ms));
    json_object_object_add(o, "last_sync_ms", json_ms(f.last_sync_ms));
    json_object_object_add(o, "last_failure", json_time(p, f.last_failure_ms));
    json_object_object_add(o, "records_written", json_count(f.written));
    json_object_object_add(o, "records_taken", json_count(f.taken));
    return o;
}

const char *aib_status_json(apr_pool_t *p, const apr_array_header_t *servers,
                            const aib_status_fleet_t *fleet, int64_t now_ms)
{
    apr_array_header_t *es = aib_status_entries(p, servers);
    json_object *root = json_object_new_object(), *list = json_object_new_array();
    const char *out;
    int i, j;

    json_object_object_add(root, "generated",
                           json_object_new_string(aib_time_rfc3339(p, now_ms)));
    json_object_object_add(root, "generated_ms", json_object_new_int64(now_ms));
    /* Servers in the order given, also those without a provider. */
    for (i = 0; servers && i < servers->nelts; i++) {
        const aib_status_server_t *s = &APR_ARRAY_IDX(servers, i, aib_status_server_t);
        json_object *o = json_object_new_object(), *pvs = json_object_new_array();

        json_object_object_add(o, "server", json_object_new_string(s->name ? s->name : ""));
        for (j = 0; j < es->nelts; j++) {
            const aib_status_entry_t *e = &APR_ARRAY_IDX(es, j, aib_status_entry_t);
            if (e->server_index == i)
                json_object_array_add(pvs, provider_json(p, e, now_ms));
        }
        json_object_object_add(o, "providers", pvs);
        json_object_array_add(list, o);
    }
    json_object_object_add(root, "servers", list);
    json_object_object_add(root, "shared_state", fleet ? fleet_json(p, fleet) : NULL);
    out = apr_pstrdup(p, json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY
                                                              | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(root);
    return out;
}
