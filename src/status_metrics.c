/* The Prometheus metrics (text exposition format 0.0.4). Label values
 * are escaped as the format wants. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <apr_strings.h>

#include "buffer.h"
#include "format.h"
#include "status_view.h"

#define L(s) aib_metrics_label_escape(p, (s))

static const char *const credential_names[AIB_STAT_CREDENTIALS] = { "pool", "byok" };
static const aib_key_state_e all_states[] = { AIB_KEY_AVAILABLE, AIB_KEY_COOLING,
                                              AIB_KEY_DISABLED };

static void family(aib_buffer_t *b, apr_pool_t *p, const char *name, const char *type,
                   const char *help)
{
    aib_buffer_printf(b, p, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Whether a route can see traffic on this provider: passthrough always, a
 * format's route when the provider speaks that format; a route with counts
 * is shown whatever this says. */
static int route_applies(const aib_provider_t *pv, int route)
{
    if (route == AIB_STAT_PASSTHROUGH || !pv->ops)
        return 1;
    return aib_format_spoken_by(aib_formats[route], pv->ops);
}

static int credential_applies(const aib_provider_t *pv, int credential)
{
    return credential ? pv->byok : pv->pool != NULL;
}

static uint64_t bucket_total(const uint64_t *buckets, int n)
{
    uint64_t t = 0;
    int i;

    for (i = 0; i < n; i++)
        t += buckets[i];
    return t;
}

/* A bound as Prometheus writes it: shortest form, integral ones with ".0". */
static const char *bound(apr_pool_t *p, double v)
{
    char s[32];

    snprintf(s, sizeof(s), "%g", v);     /* APR's own %g drops the leading 0 */
    return strpbrk(s, ".e") ? apr_pstrdup(p, s) : apr_pstrcat(p, s, ".0", NULL);
}

/* A counter with two series, told apart by the value of `label`. */
static void counter_pair(aib_buffer_t *b, apr_pool_t *p, const char *name, const char *help,
                         const char *label, const char *first, uint64_t first_n,
                         const char *second, uint64_t second_n)
{
    family(b, p, name, "counter", help);
    aib_buffer_printf(b, p, "%s{%s=\"%s\"} %" PRIu64 "\n%s{%s=\"%s\"} %" PRIu64 "\n", name, label,
                      first, first_n, name, label, second, second_n);
}

static void metrics_fleet(aib_buffer_t *b, apr_pool_t *p, const aib_status_fleet_t *fleet)
{
    aib_fleet_shared_t f;

    aib_fleet_snapshot(fleet->shared, &f);
    family(b, p, "aibridge_shared_state_connected", "gauge",
           "1 when the last sync round reached the shared cache (AIBridgeSharedState).");
    aib_buffer_printf(b, p, "aibridge_shared_state_connected %u\n", f.connected ? 1u : 0u);
    family(b, p, "aibridge_shared_state_last_sync_timestamp_seconds", "gauge",
           "When a sync round last reached the shared cache, 0: never.");
    aib_buffer_printf(b, p, "aibridge_shared_state_last_sync_timestamp_seconds %.3f\n",
                      (double)f.last_sync_ms / 1e3);
    counter_pair(b, p, "aibridge_shared_state_rounds_total",
                 "Sync rounds with the shared cache, by outcome.",
                 "outcome", "ok", f.rounds_ok, "failed", f.rounds_failed);
    counter_pair(b, p, "aibridge_shared_state_records_total",
                 "Key records written to the shared cache, and taken over from other servers.",
                 "direction", "written", f.written, "taken", f.taken);
}

const char *aib_status_tool_metrics(apr_pool_t *p, const aib_toolstore_t *tools)
{
    static const char *const outcomes[AIB_TOOL_OUTCOMES] = { "ok", "tool_error", "failed" };
    aib_buffer_t b = { NULL, 0, 0 };
    uint32_t i;
    int o;

    family(&b, p, "aibridge_tool_calls_total", "counter",
           "MCP tool calls the module ran for the model, by MCP server, tool and outcome.");
    for (i = 0; tools && i < tools->capacity; i++) {
        const aib_tool_stats_t *t = &tools->records[i];
        if (!__atomic_load_n(&t->ready, __ATOMIC_ACQUIRE))
            continue;
        for (o = 0; o < AIB_TOOL_OUTCOMES; o++)
            aib_buffer_printf(&b, p,
                              "aibridge_tool_calls_total{server=\"%s\",tool=\"%s\",outcome=\"%s\"} "
                              "%" PRIu64 "\n",
                              L(t->server), L(t->tool), outcomes[o],
                              __atomic_load_n(&t->calls[o], __ATOMIC_RELAXED));
    }
    family(&b, p, "aibridge_tool_call_seconds_total", "counter",
           "Time spent in MCP tool calls, by MCP server and tool.");
    for (i = 0; tools && i < tools->capacity; i++) {
        const aib_tool_stats_t *t = &tools->records[i];
        if (__atomic_load_n(&t->ready, __ATOMIC_ACQUIRE))
            aib_buffer_printf(&b, p,
                              "aibridge_tool_call_seconds_total{server=\"%s\",tool=\"%s\"} %.3f\n",
                              L(t->server), L(t->tool),
                              (double)__atomic_load_n(&t->duration_ms_sum, __ATOMIC_RELAXED) / 1e3);
    }
    return b.data;
}

const char *aib_status_metrics(apr_pool_t *p, const apr_array_header_t *servers,
                               const aib_status_fleet_t *fleet, int64_t now_ms)
{
    apr_array_header_t *es = aib_status_entries(p, servers);
    const aib_status_entry_t *e;
    aib_buffer_t b = { NULL, 0, 0 };
    int j, r, c, o, i, k;

#define EACH_ENTRY \
    for (j = 0; j < es->nelts && (e = &APR_ARRAY_IDX(es, j, aib_status_entry_t)); j++)
#define PV_LABELS "server=\"%s\",provider=\"%s\""
#define PV_ARGS L(e->server), L(e->pv->name)

    family(&b, p, "aibridge_interceptions_total", "counter",
           "Interceptions finished, by provider, route, credential (pool or byok) and outcome.");
    EACH_ENTRY {
        for (r = 0; r < AIB_STAT_ROUTES; r++)
            for (c = 0; c < AIB_STAT_CREDENTIALS; c++)
                for (o = 0; o < AIB_STAT_OUTCOMES; o++) {
                    uint64_t n = e->stats.interceptions[r][c][o];
                    if (!n && !(route_applies(e->pv, r) && credential_applies(e->pv, c)))
                        continue;
                    aib_buffer_printf(&b, p,
                                      "aibridge_interceptions_total{" PV_LABELS ",route=\"%s\","
                                      "credential=\"%s\",outcome=\"%s\"} %" PRIu64 "\n",
                                      PV_ARGS, aib_stat_route_names[r], credential_names[c],
                                      aib_outcome_name((aib_outcome_e)o), n);
                }
    }

    family(&b, p, "aibridge_interceptions_inflight", "gauge",
           "Interceptions in progress, by provider.");
    EACH_ENTRY {
        aib_buffer_printf(&b, p, "aibridge_interceptions_inflight{" PV_LABELS "} %" PRId64 "\n",
                          PV_ARGS, e->stats.inflight > 0 ? e->stats.inflight : 0);
    }

    family(&b, p, "aibridge_interception_duration_seconds", "histogram",
           "Time from the request's arrival to the end of its answer, by provider and route.");
    EACH_ENTRY {
        for (r = 0; r < AIB_STAT_ROUTES; r++) {
            const uint64_t *buckets = e->stats.duration_buckets[r];
            uint64_t count = bucket_total(buckets, AIB_DURATION_BUCKETS + 1), cumulative = 0;
            if (!count && !route_applies(e->pv, r))
                continue;
            for (i = 0; i <= AIB_DURATION_BUCKETS; i++) {
                cumulative += buckets[i];
                aib_buffer_printf(&b, p,
                                  "aibridge_interception_duration_seconds_bucket{" PV_LABELS
                                  ",route=\"%s\",le=\"%s\"} %" PRIu64 "\n",
                                  PV_ARGS, aib_stat_route_names[r],
                                  i < AIB_DURATION_BUCKETS ? bound(p, aib_duration_bounds[i])
                                                           : "+Inf",
                                  cumulative);
            }
            aib_buffer_printf(&b, p, "aibridge_interception_duration_seconds_sum{" PV_LABELS
                              ",route=\"%s\"} %.6f\n", PV_ARGS, aib_stat_route_names[r],
                              (double)e->stats.duration_sum_us[r] / 1e6);
            aib_buffer_printf(&b, p,
                              "aibridge_interception_duration_seconds_count{" PV_LABELS
                              ",route=\"%s\"} %" PRIu64 "\n",
                              PV_ARGS, aib_stat_route_names[r], count);
        }
    }

    family(&b, p, "aibridge_tokens_total", "counter",
           "Tokens served by each key (masked hint, and its 0-based index in the pool), by type.");
    EACH_ENTRY {
        for (k = 0; k < aib_status_key_count(e->pv); k++) {
            aib_status_key_t v;
            static const char *const types[] = { "input", "output", "cache_read", "cache_write" };
            uint64_t counts[4];
            aib_status_key_view(e->pv, k, now_ms, &v);
            counts[0] = v.slot.tokens_input;
            counts[1] = v.slot.tokens_output;
            counts[2] = v.slot.tokens_cache_read;
            counts[3] = v.slot.tokens_cache_write;
            for (i = 0; i < 4; i++)
                aib_buffer_printf(&b, p,
                                  "aibridge_tokens_total{" PV_LABELS ",key=\"%s\",index=\"%d\","
                                  "type=\"%s\"} %" PRIu64 "\n",
                                  PV_ARGS, L(v.hint), k, types[i], counts[i]);
        }
    }

    family(&b, p, "aibridge_key_state", "gauge",
           "1 for the state each key is in (available, cooling, disabled), else 0.");
    EACH_ENTRY {
        for (k = 0; k < aib_status_key_count(e->pv); k++) {
            aib_key_state_e st = aib_key_state(e->pv->pool, k, now_ms, NULL, NULL);
            const char *hint = L(APR_ARRAY_IDX(e->pv->pool->keys, k, aib_key_t).hint);
            for (i = 0; i < 3; i++)
                aib_buffer_printf(&b, p,
                                  "aibridge_key_state{" PV_LABELS ",key=\"%s\",index=\"%d\","
                                  "state=\"%s\"} %d\n",
                                  PV_ARGS, hint, k, aib_key_state_name(all_states[i]),
                                  st == all_states[i]);
        }
    }

    family(&b, p, "aibridge_key_pool_state_transitions_total", "counter",
           "Keys marked cooling or disabled, by provider and reason.");
    EACH_ENTRY {
        for (i = AIB_REASON_NONE + 1; i < AIB_STAT_REASONS; i++)
            aib_buffer_printf(&b, p,
                              "aibridge_key_pool_state_transitions_total{" PV_LABELS
                              ",reason=\"%s\"} %" PRIu64 "\n",
                              PV_ARGS, aib_reason_name((aib_reason_e)i), e->stats.transitions[i]);
    }

    family(&b, p, "aibridge_key_pool_exhaustions_total", "counter",
           "Interceptions that found no key left, by provider and what the client was told "
           "(rate_limited: 429, auth_failed: 502).");
    EACH_ENTRY {
        for (i = 0; i < AIB_STAT_EXHAUSTIONS; i++)
            aib_buffer_printf(&b, p,
                              "aibridge_key_pool_exhaustions_total{" PV_LABELS ",outcome=\"%s\"} "
                              "%" PRIu64 "\n",
                              PV_ARGS, aib_status_exhaustion_names[i], e->stats.exhaustions[i]);
    }

    family(&b, p, "aibridge_failover_attempts", "histogram",
           "Upstream attempts per interception, by provider.");
    EACH_ENTRY {
        uint64_t count = bucket_total(e->stats.attempt_buckets, AIB_ATTEMPT_BUCKETS + 1);
        uint64_t cumulative = 0;
        for (i = 0; i <= AIB_ATTEMPT_BUCKETS; i++) {
            cumulative += e->stats.attempt_buckets[i];
            aib_buffer_printf(&b, p, "aibridge_failover_attempts_bucket{" PV_LABELS ",le=\"%s\"} %"
                              PRIu64 "\n", PV_ARGS, i < AIB_ATTEMPT_BUCKETS
                              ? bound(p, aib_attempt_bounds[i]) : "+Inf", cumulative);
        }
        aib_buffer_printf(&b, p, "aibridge_failover_attempts_sum{" PV_LABELS "} %" PRIu64 "\n",
                          PV_ARGS, e->stats.attempt_sum);
        aib_buffer_printf(&b, p, "aibridge_failover_attempts_count{" PV_LABELS "} %" PRIu64 "\n",
                          PV_ARGS, count);
    }
#undef EACH_ENTRY
#undef PV_LABELS
#undef PV_ARGS
    if (fleet)
        metrics_fleet(&b, p, fleet);
    return b.data;
}
