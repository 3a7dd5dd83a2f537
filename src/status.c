#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <apr_hash.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_time.h>
#include <json.h>

#include "bridge.h"
#include "status.h"

/* ---- a growing string ---- */

typedef struct {
    apr_pool_t *p;
    char *buf;
    apr_size_t len, cap;
} sb_t;

static void sb_init(sb_t *b, apr_pool_t *p)
{
    b->p = p;
    b->cap = 8192;
    b->len = 0;
    b->buf = apr_palloc(p, b->cap);
    b->buf[0] = '\0';
}

static void sb_add(sb_t *b, const char *s, apr_size_t n)
{
    if (b->len + n + 1 > b->cap) {
        char *bigger;
        while (b->len + n + 1 > b->cap)
            b->cap *= 2;
        bigger = apr_palloc(b->p, b->cap);
        memcpy(bigger, b->buf, b->len);
        b->buf = bigger;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

static void sb_puts(sb_t *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3)))
static void sb_printf(sb_t *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(small)) {
        sb_add(b, small, (apr_size_t)n);
        return;
    }
    {
        char *big = apr_palloc(b->p, (apr_size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(big, (size_t)n + 1, fmt, ap);
        va_end(ap);
        sb_add(b, big, (apr_size_t)n);
    }
}

/* ---- escaping ---- */

const char *aib_html_escape(apr_pool_t *p, const char *s)
{
    sb_t b;
    const char *run = s;

    if (!s)
        return "";
    if (!strpbrk(s, "&<>\"'"))
        return s;
    sb_init(&b, p);
    for (; *s; s++) {
        const char *entity;
        switch (*s) {
        case '&': entity = "&amp;"; break;
        case '<': entity = "&lt;"; break;
        case '>': entity = "&gt;"; break;
        case '"': entity = "&quot;"; break;
        case '\'': entity = "&#39;"; break;
        default: continue;
        }
        sb_add(&b, run, (apr_size_t)(s - run));
        sb_puts(&b, entity);
        run = s + 1;
    }
    sb_puts(&b, run);
    return b.buf;
}

const char *aib_metrics_label_escape(apr_pool_t *p, const char *s)
{
    sb_t b;
    const char *run = s;

    if (!s)
        return "";
    if (!strpbrk(s, "\\\"\n"))
        return s;
    sb_init(&b, p);
    for (; *s; s++) {
        const char *esc;
        switch (*s) {
        case '\\': esc = "\\\\"; break;
        case '"': esc = "\\\""; break;
        case '\n': esc = "\\n"; break;
        default: continue;
        }
        sb_add(&b, run, (apr_size_t)(s - run));
        sb_puts(&b, esc);
        run = s + 1;
    }
    sb_puts(&b, run);
    return b.buf;
}

#define H(s) aib_html_escape(p, (s))
#define L(s) aib_metrics_label_escape(p, (s))

/* ---- what is shown ---- */

static const char *const credential_names[AIB_STAT_CREDENTIALS] = { "pool", "byok" };
static const char *const exhaustion_names[AIB_STAT_EXHAUSTIONS] = { "rate_limited", "auth_failed" };
static const aib_key_state_e all_states[] = { AIB_KEY_AVAILABLE, AIB_KEY_COOLING, AIB_KEY_DISABLED };

/* A provider as shown, with the server it belongs to. */
typedef struct {
    int server_index;
    const char *server;
    const aib_provider_t *pv;
    aib_provider_stats_t stats;       /* zeros without a record */
} entry_t;

/* The servers' providers, each once: the same object, or the same server
 * and provider name (vhosts sharing a name and port share their counters). */
static apr_array_header_t *entries(apr_pool_t *p, const apr_array_header_t *servers)
{
    apr_array_header_t *out = apr_array_make(p, 8, sizeof(entry_t));
    apr_hash_t *seen_pv = apr_hash_make(p), *seen_name = apr_hash_make(p);
    int s, i;

    for (s = 0; servers && s < servers->nelts; s++) {
        const aib_status_server_t *srv = &APR_ARRAY_IDX(servers, s, aib_status_server_t);
        for (i = 0; srv->providers && i < srv->providers->nelts; i++) {
            const aib_provider_t *pv = APR_ARRAY_IDX(srv->providers, i, const aib_provider_t *);
            const char *name = apr_pstrcat(p, srv->name ? srv->name : "", "\n", pv->name, NULL);
            entry_t *e;

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

typedef struct {
    int index;
    const char *hint;
    aib_key_state_e state;
    aib_reason_e reason;
    int64_t remaining_ms;             /* cooling or disabled for a while; -1: until re-enabled */
    aib_slot_t slot;
} key_view_t;

static int key_count(const aib_provider_t *pv)
{
    return pv->pool ? pv->pool->keys->nelts : 0;
}

static void key_view(const aib_provider_t *pv, int i, int64_t now_ms, key_view_t *v)
{
    int64_t until;

    v->index = i;
    v->hint = APR_ARRAY_IDX(pv->pool->keys, i, aib_key_t).hint;
    v->state = aib_key_state(pv->pool, i, now_ms, &v->reason, &until);
    v->remaining_ms = v->state == AIB_KEY_AVAILABLE ? 0
                      : until == AIB_FOREVER ? -1 : until - now_ms;
    aib_key_snapshot(pv->pool, i, &v->slot);
}

static uint64_t outcome_total(const aib_provider_stats_t *st, int outcome)
{
    uint64_t n = 0;
    int r, c;

    for (r = 0; r < AIB_STAT_ROUTES; r++)
        for (c = 0; c < AIB_STAT_CREDENTIALS; c++)
            n += st->interceptions[r][c][outcome];
    return n;
}

static uint64_t interceptions_total(const aib_provider_stats_t *st)
{
    uint64_t n = 0;
    int o;

    for (o = 0; o < AIB_STAT_OUTCOMES; o++)
        n += outcome_total(st, o);
    return n;
}

static const char *iso_time(apr_pool_t *p, int64_t ms)
{
    apr_time_exp_t t;

    if (apr_time_exp_gmt(&t, apr_time_from_msec(ms)) != APR_SUCCESS)
        return "?";
    return apr_psprintf(p, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900,
                        t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                        t.tm_usec / 1000);
}

/* "45s", "2m 05s", "3h 07m", "2d 04h": rounded up to the second. */
static const char *duration(apr_pool_t *p, int64_t ms)
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

static const char *when(apr_pool_t *p, int64_t ms, int64_t now_ms)
{
    if (!ms)
        return "never";
    /* Rounded down: what just happened is "0s ago". */
    return apr_psprintf(p, "%s (%s ago)", iso_time(p, ms),
                        duration(p, now_ms > ms + 999 ? (now_ms - ms) / 1000 * 1000 : 0));
}

/* ---- JSON ---- */

static json_object *json_count(uint64_t n)
{
    return json_object_new_int64(n > INT64_MAX ? INT64_MAX : (int64_t)n);
}

static json_object *json_time(apr_pool_t *p, int64_t ms)
{
    return ms ? json_object_new_string(iso_time(p, ms)) : NULL;
}

static json_object *key_json(apr_pool_t *p, const key_view_t *v)
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
    json_object_object_add(k, "last_used_ms", s->last_used_ms
                           ? json_object_new_int64(s->last_used_ms) : NULL);
    json_object_object_add(k, "last_failure", json_time(p, s->last_failure_ms));
    json_object_object_add(k, "last_failure_ms", s->last_failure_ms
                           ? json_object_new_int64(s->last_failure_ms) : NULL);
    json_object_object_add(k, "last_failure_status", s->last_failure_status
                           ? json_object_new_int((int)s->last_failure_status) : NULL);
    return k;
}

static json_object *provider_json(apr_pool_t *p, const entry_t *e, int64_t now_ms)
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
                               json_count(outcome_total(st, i)));
    json_object_object_add(o, "interceptions", x);
    x = json_object_new_object();
    for (i = 0; i < AIB_STAT_EXHAUSTIONS; i++)
        json_object_object_add(x, exhaustion_names[i], json_count(st->exhaustions[i]));
    json_object_object_add(o, "exhaustions", x);
    x = json_object_new_object();
    for (i = AIB_REASON_NONE + 1; i < AIB_STAT_REASONS; i++)
        json_object_object_add(x, aib_reason_name((aib_reason_e)i), json_count(st->transitions[i]));
    json_object_object_add(o, "transitions", x);
    keys = json_object_new_array();
    for (i = 0; i < key_count(pv); i++) {
        key_view_t v;
        key_view(pv, i, now_ms, &v);
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
    json_object_object_add(o, "last_sync_ms", f.last_sync_ms
                           ? json_object_new_int64(f.last_sync_ms) : NULL);
    json_object_object_add(o, "last_failure", json_time(p, f.last_failure_ms));
    json_object_object_add(o, "records_written", json_count(f.written));
    json_object_object_add(o, "records_taken", json_count(f.taken));
    return o;
}

const char *aib_status_json(apr_pool_t *p, const apr_array_header_t *servers,
                            const aib_status_fleet_t *fleet, int64_t now_ms)
{
    apr_array_header_t *es = entries(p, servers);
    json_object *root = json_object_new_object(), *list = json_object_new_array();
    const char *out;
    int i, j;

    json_object_object_add(root, "generated", json_object_new_string(iso_time(p, now_ms)));
    json_object_object_add(root, "generated_ms", json_object_new_int64(now_ms));
    /* Servers in the order given, also those without a provider. */
    for (i = 0; servers && i < servers->nelts; i++) {
        const aib_status_server_t *s = &APR_ARRAY_IDX(servers, i, aib_status_server_t);
        json_object *o = json_object_new_object(), *pvs = json_object_new_array();

        json_object_object_add(o, "server", json_object_new_string(s->name ? s->name : ""));
        for (j = 0; j < es->nelts; j++) {
            const entry_t *e = &APR_ARRAY_IDX(es, j, entry_t);
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

/* ---- HTML ---- */

static const char *const page_style =
    "body{font-family:sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin-bottom:1.5em}"
    "th,td{border:1px solid #bbb;padding:.25em .5em;text-align:left}"
    "td.n{text-align:right}th{background:#eee}"
    "tr.cooling td.state{background:#fe9}tr.disabled td.state{background:#f99}"
    "tr.available td.state{background:#bfb}form{margin:0}";

static void html_outcomes(sb_t *b, apr_pool_t *p, const aib_provider_stats_t *st)
{
    int i;

    for (i = 0; i < AIB_STAT_OUTCOMES; i++)
        sb_printf(b, "%s%s <span class=\"outcome-%s\">%" PRIu64 "</span>", i ? ", " : "",
                  H(aib_outcome_name((aib_outcome_e)i)), H(aib_outcome_name((aib_outcome_e)i)),
                  outcome_total(st, i));
}

static void html_key_row(sb_t *b, apr_pool_t *p, const aib_provider_t *pv, const key_view_t *v,
                         int64_t now_ms, const char *action, const char *nonce)
{
    const aib_slot_t *s = &v->slot;
    const char *state = aib_key_state_name(v->state);

    sb_printf(b, "<tr class=\"%s\" data-provider=\"%s\" data-key=\"%d\" data-state=\"%s\">",
              state, H(pv->name), v->index, state);
    sb_printf(b, "<td class=\"n index\">%d</td><td class=\"hint\"><code>%s</code></td>",
              v->index + 1, H(v->hint));
    sb_printf(b, "<td class=\"state\">%s</td><td class=\"reason\">%s</td>", state,
              v->state == AIB_KEY_AVAILABLE ? "" : H(aib_reason_name(v->reason)));
    sb_printf(b, "<td class=\"remaining\">%s</td>",
              v->state == AIB_KEY_AVAILABLE ? ""
              : v->remaining_ms < 0 ? "until re-enabled" : duration(p, v->remaining_ms));
    sb_printf(b, "<td class=\"n requests\">%" PRIu64 "</td><td class=\"n http429\">%" PRIu64
              "</td><td class=\"n http401\">%" PRIu64 "</td><td class=\"n http403\">%" PRIu64
              "</td>", s->requests, s->rate_limited, s->unauthorized, s->forbidden);
    sb_printf(b, "<td class=\"n tokens-in\">%" PRIu64 "</td><td class=\"n tokens-out\">%"
              PRIu64 "</td>", s->tokens_input, s->tokens_output);
    sb_printf(b, "<td class=\"last-used\">%s</td>", H(when(p, s->last_used_ms, now_ms)));
    if (s->last_failure_ms)
        sb_printf(b, "<td class=\"last-failure\">%" PRIu64 " at %s</td>", s->last_failure_status,
                  H(when(p, s->last_failure_ms, now_ms)));
    else
        sb_puts(b, "<td class=\"last-failure\">never</td>");
    sb_puts(b, "<td class=\"action\">");
    if (action && nonce && v->state != AIB_KEY_AVAILABLE) {
        int disabled = v->state == AIB_KEY_DISABLED;
        sb_printf(b, "<form method=\"post\" action=\"%s\">"
                  "<input type=\"hidden\" name=\"nonce\" value=\"%s\">"
                  "<input type=\"hidden\" name=\"provider\" value=\"%s\">"
                  "<input type=\"hidden\" name=\"key\" value=\"%d\">"
                  "<button type=\"submit\" name=\"action\" value=\"%s\">%s</button></form>",
                  H(action), H(nonce), H(pv->name), v->index, disabled ? "enable" : "clear",
                  disabled ? "Enable" : "Clear cooldown");
    }
    sb_puts(b, "</td></tr>\n");
}

static void html_provider(sb_t *b, apr_pool_t *p, const entry_t *e, int64_t now_ms,
                          const char *action, const char *nonce)
{
    const aib_provider_t *pv = e->pv;
    const aib_provider_stats_t *st = &e->stats;
    int i;

    sb_printf(b, "<section class=\"provider\" data-provider=\"%s\">\n<h3>Provider %s "
              "<small>(%s%s%s%s)</small></h3>\n", H(pv->name), H(pv->name),
              H(pv->ops ? pv->ops->type : "?"), pv->pool ? ", pool " : "",
              pv->pool ? H(pv->pool->name) : "", pv->byok ? ", byok" : "");
    sb_printf(b, "<p>In flight: <span class=\"inflight\">%" PRId64 "</span>. "
              "Interceptions: ", st->inflight);
    html_outcomes(b, p, st);
    sb_printf(b, ". Pool exhausted: rate-limited %" PRIu64 ", auth failed %" PRIu64 ".</p>\n",
              st->exhaustions[AIB_EXHAUSTED_RATE_LIMITED], st->exhaustions[AIB_EXHAUSTED_AUTH_FAILED]);
    if (!key_count(pv)) {
        sb_puts(b, "<p>No key pool: clients' own keys only.</p>\n</section>\n");
        return;
    }
    sb_puts(b, "<table>\n<thead><tr><th>#</th><th>Key</th><th>State</th><th>Reason</th>"
               "<th>Cooldown remaining</th><th>Requests</th><th>429s</th><th>401s</th>"
               "<th>403s</th><th>Tokens in</th><th>Tokens out</th><th>Last used</th>"
               "<th>Last failure</th><th>Action</th></tr></thead>\n<tbody>\n");
    for (i = 0; i < key_count(pv); i++) {
        key_view_t v;
        key_view(pv, i, now_ms, &v);
        html_key_row(b, p, pv, &v, now_ms, action, nonce);
    }
    sb_puts(b, "</tbody>\n</table>\n</section>\n");
}

static void html_fleet(sb_t *b, apr_pool_t *p, const aib_status_fleet_t *fleet, int64_t now_ms)
{
    aib_fleet_shared_t f;

    aib_fleet_snapshot(fleet->shared, &f);
    sb_printf(b, "<section class=\"shared-state\">\n<h2>Shared state</h2>\n<p>Key state is "
              "shared with the fleet through <code>%s</code>, every %s: "
              "<strong class=\"%s\">%s</strong>. Last synchronised: %s. Last failure: %s.</p>"
              "\n</section>\n", H(fleet->cache), H(duration(p, fleet->interval_ms)),
              f.connected ? "connected" : "disconnected",
              f.connected ? "connected" : "not connected, using this server's own state",
              H(when(p, f.last_sync_ms, now_ms)), H(when(p, f.last_failure_ms, now_ms)));
}

const char *aib_status_html(apr_pool_t *p, const apr_array_header_t *servers,
                            const aib_status_fleet_t *fleet, int64_t now_ms,
                            const char *action, const char *nonce)
{
    apr_array_header_t *es = entries(p, servers);
    sb_t b;
    int i, j;

    sb_init(&b, p);
    sb_printf(&b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
              "<meta name=\"robots\" content=\"noindex\">\n"
              "<title>mod_aibridge status</title>\n<style>%s</style>\n</head>\n<body>\n"
              "<h1>mod_aibridge status</h1>\n<p>As of <span class=\"generated\">%s</span>. "
              "The numbers are in shared memory: every httpd child process shows the same.</p>\n",
              page_style, H(iso_time(p, now_ms)));
    if (fleet)
        html_fleet(&b, p, fleet, now_ms);
    for (i = 0; servers && i < servers->nelts; i++) {
        const aib_status_server_t *s = &APR_ARRAY_IDX(servers, i, aib_status_server_t);
        int any = 0;

        sb_printf(&b, "<section class=\"server\">\n<h2>Server %s</h2>\n", H(s->name));
        for (j = 0; j < es->nelts; j++) {
            const entry_t *e = &APR_ARRAY_IDX(es, j, entry_t);
            if (e->server_index != i)
                continue;
            html_provider(&b, p, e, now_ms, action, nonce);
            any = 1;
        }
        if (!any)
            sb_puts(&b, "<p>No provider is configured.</p>\n");
        sb_puts(&b, "</section>\n");
    }
    sb_puts(&b, "</body>\n</html>\n");
    return b.buf;
}

const char *aib_status_html_summary(apr_pool_t *p, const apr_array_header_t *servers,
                                    int64_t now_ms, int tables)
{
    apr_array_header_t *es = entries(p, servers);
    sb_t b;
    int j, i;

    sb_init(&b, p);
    sb_puts(&b, "<hr>\n<h2 id=\"aibridge\">mod_aibridge key pools</h2>\n");
    if (!es->nelts) {
        sb_puts(&b, "<p>No provider is configured.</p>\n");
        return b.buf;
    }
    sb_puts(&b, tables ? "<table border=\"0\" class=\"aibridge\"><tr><th>Server</th>"
                         "<th>Provider</th><th>In flight</th><th>Interceptions</th><th>#</th>"
                         "<th>Key</th><th>State</th><th>Reason</th><th>Remaining</th>"
                         "<th>Requests</th><th>429s</th><th>401s</th><th>403s</th>"
                         "<th>Tokens in</th><th>Tokens out</th></tr>\n"
                       : "<dl class=\"aibridge\">\n");
    for (j = 0; j < es->nelts; j++) {
        const entry_t *e = &APR_ARRAY_IDX(es, j, entry_t);
        const aib_provider_t *pv = e->pv;
        int n = key_count(pv);

        if (!tables)
            sb_printf(&b, "<dt>%s %s: %" PRId64 " in flight, %" PRIu64 " interceptions</dt>\n",
                      H(e->server), H(pv->name), e->stats.inflight,
                      interceptions_total(&e->stats));
        for (i = 0; i < (n ? n : 1); i++) {
            key_view_t v;
            if (!n) {
                if (tables)
                    sb_printf(&b, "<tr><td>%s</td><td>%s</td><td>%" PRId64 "</td><td>%" PRIu64
                              "</td><td colspan=\"11\">no key pool</td></tr>\n", H(e->server),
                              H(pv->name), e->stats.inflight, interceptions_total(&e->stats));
                break;
            }
            key_view(pv, i, now_ms, &v);
            if (!tables) {
                sb_printf(&b, "<dd>#%d <code>%s</code>: %s%s%s%s%s, %" PRIu64 " requests</dd>\n",
                          i + 1, H(v.hint), aib_key_state_name(v.state),
                          v.state != AIB_KEY_AVAILABLE ? " (" : "",
                          v.state != AIB_KEY_AVAILABLE ? H(aib_reason_name(v.reason)) : "",
                          v.state == AIB_KEY_AVAILABLE ? ""
                          : v.remaining_ms < 0 ? ", until re-enabled"
                          : apr_pstrcat(p, ", ", duration(p, v.remaining_ms), " left", NULL),
                          v.state != AIB_KEY_AVAILABLE ? ")" : "", v.slot.requests);
                continue;
            }
            sb_puts(&b, "<tr>");
            if (i == 0)
                sb_printf(&b, "<td rowspan=\"%d\">%s</td><td rowspan=\"%d\">%s</td>"
                          "<td rowspan=\"%d\">%" PRId64 "</td><td rowspan=\"%d\">%" PRIu64 "</td>",
                          n, H(e->server), n, H(pv->name), n, e->stats.inflight, n,
                          interceptions_total(&e->stats));
            sb_printf(&b, "<td>%d</td><td><code>%s</code></td><td>%s</td><td>%s</td><td>%s</td>",
                      i + 1, H(v.hint), aib_key_state_name(v.state),
                      v.state == AIB_KEY_AVAILABLE ? "" : H(aib_reason_name(v.reason)),
                      v.state == AIB_KEY_AVAILABLE ? ""
                      : v.remaining_ms < 0 ? "until re-enabled" : duration(p, v.remaining_ms));
            sb_printf(&b, "<td>%" PRIu64 "</td><td>%" PRIu64 "</td><td>%" PRIu64 "</td><td>%"
                      PRIu64 "</td><td>%" PRIu64 "</td><td>%" PRIu64 "</td></tr>\n",
                      v.slot.requests, v.slot.rate_limited, v.slot.unauthorized,
                      v.slot.forbidden, v.slot.tokens_input, v.slot.tokens_output);
        }
    }
    sb_puts(&b, tables ? "</table>\n" : "</dl>\n");
    return b.buf;
}

const char *aib_status_text_summary(apr_pool_t *p, const apr_array_header_t *servers,
                                    int64_t now_ms)
{
    apr_array_header_t *es = entries(p, servers);
    uint64_t keys = 0, states[3] = { 0, 0, 0 }, total = 0;
    int64_t inflight = 0;
    int j, i;

    for (j = 0; j < es->nelts; j++) {
        const entry_t *e = &APR_ARRAY_IDX(es, j, entry_t);
        for (i = 0; i < key_count(e->pv); i++) {
            aib_key_state_e st = aib_key_state(e->pv->pool, i, now_ms, NULL, NULL);
            keys++;
            states[st]++;
        }
        inflight += e->stats.inflight;
        total += interceptions_total(&e->stats);
    }
    return apr_psprintf(p, "AIBridgeProviders: %d\nAIBridgeKeys: %" PRIu64 "\n"
                        "AIBridgeKeysAvailable: %" PRIu64 "\nAIBridgeKeysCooling: %" PRIu64 "\n"
                        "AIBridgeKeysDisabled: %" PRIu64 "\nAIBridgeInterceptions: %" PRIu64 "\n"
                        "AIBridgeInflight: %" PRId64 "\n", es->nelts, keys,
                        states[AIB_KEY_AVAILABLE], states[AIB_KEY_COOLING],
                        states[AIB_KEY_DISABLED], total, inflight);
}

/* ---- Prometheus ---- */

static void family(sb_t *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Whether a route can see traffic on this provider's type; a route with
 * counts is shown whatever its type says. */
static int route_applies(const aib_provider_t *pv, int route)
{
    const char *type = pv->ops ? pv->ops->type : NULL;
    const char *name = aib_stat_route_names[route];

    if (!strcmp(name, "passthrough") || !type)
        return 1;
    if (!strcmp(type, "openai"))
        return !strcmp(name, "chat") || !strcmp(name, "responses");
    if (!strcmp(type, "anthropic"))
        return !strcmp(name, "messages");
    return 1;
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

static void metrics_fleet(sb_t *b, const aib_status_fleet_t *fleet)
{
    aib_fleet_shared_t f;

    aib_fleet_snapshot(fleet->shared, &f);
    family(b, "aibridge_shared_state_connected", "gauge",
           "1 when the last sync round reached the shared cache (AIBridgeSharedState).");
    sb_printf(b, "aibridge_shared_state_connected %u\n", f.connected ? 1u : 0u);
    family(b, "aibridge_shared_state_last_sync_timestamp_seconds", "gauge",
           "When a sync round last reached the shared cache, 0: never.");
    sb_printf(b, "aibridge_shared_state_last_sync_timestamp_seconds %.3f\n",
              (double)f.last_sync_ms / 1e3);
    family(b, "aibridge_shared_state_rounds_total", "counter",
           "Sync rounds with the shared cache, by outcome.");
    sb_printf(b, "aibridge_shared_state_rounds_total{outcome=\"ok\"} %" PRIu64 "\n"
              "aibridge_shared_state_rounds_total{outcome=\"failed\"} %" PRIu64 "\n",
              f.rounds_ok, f.rounds_failed);
    family(b, "aibridge_shared_state_records_total", "counter",
           "Key records written to the shared cache, and taken over from other servers.");
    sb_printf(b, "aibridge_shared_state_records_total{direction=\"written\"} %" PRIu64 "\n"
              "aibridge_shared_state_records_total{direction=\"taken\"} %" PRIu64 "\n",
              f.written, f.taken);
}

const char *aib_status_tool_metrics(apr_pool_t *p, const aib_toolstore_t *tools)
{
    static const char *const outcomes[AIB_TOOL_OUTCOMES] = { "ok", "tool_error", "failed" };
    sb_t b;
    uint32_t i;
    int o;

    sb_init(&b, p);
    family(&b, "aibridge_tool_calls_total", "counter",
           "MCP tool calls the module ran for the model, by MCP server, tool and outcome.");
    for (i = 0; tools && i < tools->capacity; i++) {
        const aib_tool_stats_t *t = &tools->records[i];
        if (!__atomic_load_n(&t->ready, __ATOMIC_ACQUIRE))
            continue;
        for (o = 0; o < AIB_TOOL_OUTCOMES; o++)
            sb_printf(&b, "aibridge_tool_calls_total{server=\"%s\",tool=\"%s\",outcome=\"%s\"} "
                      "%" PRIu64 "\n", L(t->server), L(t->tool), outcomes[o],
                      __atomic_load_n(&t->calls[o], __ATOMIC_RELAXED));
    }
    family(&b, "aibridge_tool_call_seconds_total", "counter",
           "Time spent in MCP tool calls, by MCP server and tool.");
    for (i = 0; tools && i < tools->capacity; i++) {
        const aib_tool_stats_t *t = &tools->records[i];
        if (__atomic_load_n(&t->ready, __ATOMIC_ACQUIRE))
            sb_printf(&b, "aibridge_tool_call_seconds_total{server=\"%s\",tool=\"%s\"} %.3f\n",
                      L(t->server), L(t->tool),
                      (double)__atomic_load_n(&t->duration_ms_sum, __ATOMIC_RELAXED) / 1e3);
    }
    return b.buf;
}

const char *aib_status_metrics(apr_pool_t *p, const apr_array_header_t *servers,
                               const aib_status_fleet_t *fleet, int64_t now_ms)
{
    apr_array_header_t *es = entries(p, servers);
    const entry_t *e;
    sb_t b;
    int j, r, c, o, i, k;

    sb_init(&b, p);
#define EACH_ENTRY for (j = 0; j < es->nelts && (e = &APR_ARRAY_IDX(es, j, entry_t)); j++)
#define PV_LABELS "server=\"%s\",provider=\"%s\""
#define PV_ARGS L(e->server), L(e->pv->name)

    family(&b, "aibridge_interceptions_total", "counter",
           "Interceptions finished, by provider, route, credential (pool or byok) and outcome.");
    EACH_ENTRY {
        for (r = 0; r < AIB_STAT_ROUTES; r++)
            for (c = 0; c < AIB_STAT_CREDENTIALS; c++)
                for (o = 0; o < AIB_STAT_OUTCOMES; o++) {
                    uint64_t n = e->stats.interceptions[r][c][o];
                    if (!n && !(route_applies(e->pv, r) && credential_applies(e->pv, c)))
                        continue;
                    sb_printf(&b, "aibridge_interceptions_total{" PV_LABELS ",route=\"%s\","
                              "credential=\"%s\",outcome=\"%s\"} %" PRIu64 "\n", PV_ARGS,
                              aib_stat_route_names[r], credential_names[c],
                              aib_outcome_name((aib_outcome_e)o), n);
                }
    }

    family(&b, "aibridge_interceptions_inflight", "gauge",
           "Interceptions in progress, by provider.");
    EACH_ENTRY {
        sb_printf(&b, "aibridge_interceptions_inflight{" PV_LABELS "} %" PRId64 "\n", PV_ARGS,
                  e->stats.inflight > 0 ? e->stats.inflight : 0);
    }

    family(&b, "aibridge_interception_duration_seconds", "histogram",
           "Time from the request's arrival to the end of its answer, by provider and route.");
    EACH_ENTRY {
        for (r = 0; r < AIB_STAT_ROUTES; r++) {
            const uint64_t *buckets = e->stats.duration_buckets[r];
            uint64_t count = bucket_total(buckets, AIB_DURATION_BUCKETS + 1), cumulative = 0;
            if (!count && !route_applies(e->pv, r))
                continue;
            for (i = 0; i <= AIB_DURATION_BUCKETS; i++) {
                cumulative += buckets[i];
                sb_printf(&b, "aibridge_interception_duration_seconds_bucket{" PV_LABELS
                          ",route=\"%s\",le=\"%s\"} %" PRIu64 "\n", PV_ARGS,
                          aib_stat_route_names[r],
                          i < AIB_DURATION_BUCKETS ? bound(p, aib_duration_bounds[i]) : "+Inf",
                          cumulative);
            }
            sb_printf(&b, "aibridge_interception_duration_seconds_sum{" PV_LABELS ",route=\"%s\"} "
                      "%.6f\n", PV_ARGS, aib_stat_route_names[r],
                      (double)e->stats.duration_sum_us[r] / 1e6);
            sb_printf(&b, "aibridge_interception_duration_seconds_count{" PV_LABELS
                      ",route=\"%s\"} %" PRIu64 "\n", PV_ARGS, aib_stat_route_names[r], count);
        }
    }

    family(&b, "aibridge_tokens_total", "counter",
           "Tokens served by each key (masked hint, and its 0-based index in the pool), by type.");
    EACH_ENTRY {
        for (k = 0; k < key_count(e->pv); k++) {
            key_view_t v;
            static const char *const types[] = { "input", "output", "cache_read", "cache_write" };
            uint64_t counts[4];
            key_view(e->pv, k, now_ms, &v);
            counts[0] = v.slot.tokens_input;
            counts[1] = v.slot.tokens_output;
            counts[2] = v.slot.tokens_cache_read;
            counts[3] = v.slot.tokens_cache_write;
            for (i = 0; i < 4; i++)
                sb_printf(&b, "aibridge_tokens_total{" PV_LABELS ",key=\"%s\",index=\"%d\","
                          "type=\"%s\"} %" PRIu64 "\n", PV_ARGS, L(v.hint), k, types[i],
                          counts[i]);
        }
    }

    family(&b, "aibridge_key_state", "gauge",
           "1 for the state each key is in (available, cooling, disabled), else 0.");
    EACH_ENTRY {
        for (k = 0; k < key_count(e->pv); k++) {
            aib_key_state_e st = aib_key_state(e->pv->pool, k, now_ms, NULL, NULL);
            const char *hint = L(APR_ARRAY_IDX(e->pv->pool->keys, k, aib_key_t).hint);
            for (i = 0; i < 3; i++)
                sb_printf(&b, "aibridge_key_state{" PV_LABELS ",key=\"%s\",index=\"%d\","
                          "state=\"%s\"} %d\n", PV_ARGS, hint, k,
                          aib_key_state_name(all_states[i]), st == all_states[i]);
        }
    }

    family(&b, "aibridge_key_pool_state_transitions_total", "counter",
           "Keys marked cooling or disabled, by provider and reason.");
    EACH_ENTRY {
        for (i = AIB_REASON_NONE + 1; i < AIB_STAT_REASONS; i++)
            sb_printf(&b, "aibridge_key_pool_state_transitions_total{" PV_LABELS ",reason=\"%s\"} "
                      "%" PRIu64 "\n", PV_ARGS, aib_reason_name((aib_reason_e)i),
                      e->stats.transitions[i]);
    }

    family(&b, "aibridge_key_pool_exhaustions_total", "counter",
           "Interceptions that found no key left, by provider and what the client was told "
           "(rate_limited: 429, auth_failed: 502).");
    EACH_ENTRY {
        for (i = 0; i < AIB_STAT_EXHAUSTIONS; i++)
            sb_printf(&b, "aibridge_key_pool_exhaustions_total{" PV_LABELS ",outcome=\"%s\"} "
                      "%" PRIu64 "\n", PV_ARGS, exhaustion_names[i], e->stats.exhaustions[i]);
    }

    family(&b, "aibridge_failover_attempts", "histogram",
           "Upstream attempts per interception, by provider.");
    EACH_ENTRY {
        uint64_t count = bucket_total(e->stats.attempt_buckets, AIB_ATTEMPT_BUCKETS + 1);
        uint64_t cumulative = 0;
        for (i = 0; i <= AIB_ATTEMPT_BUCKETS; i++) {
            cumulative += e->stats.attempt_buckets[i];
            sb_printf(&b, "aibridge_failover_attempts_bucket{" PV_LABELS ",le=\"%s\"} %" PRIu64
                      "\n", PV_ARGS, i < AIB_ATTEMPT_BUCKETS
                      ? bound(p, aib_attempt_bounds[i]) : "+Inf", cumulative);
        }
        sb_printf(&b, "aibridge_failover_attempts_sum{" PV_LABELS "} %" PRIu64 "\n", PV_ARGS,
                  e->stats.attempt_sum);
        sb_printf(&b, "aibridge_failover_attempts_count{" PV_LABELS "} %" PRIu64 "\n", PV_ARGS,
                  count);
    }
#undef EACH_ENTRY
#undef PV_LABELS
#undef PV_ARGS
    if (fleet)
        metrics_fleet(&b, fleet);
    return b.buf;
}

/* ---- actions ---- */

const char *aib_status_apply(apr_pool_t *p, const apr_array_header_t *providers,
                             const char *action, const char *provider, const char *key,
                             const char **hint)
{
    const aib_provider_t *pv = NULL;
    aib_action_e act;
    apr_int64_t index;
    char *end;
    int i;

    if (hint)
        *hint = NULL;
    if (!action || !*action)
        return "no action";
    if (!strcmp(action, "enable"))
        act = AIB_ACTION_ENABLE;
    else if (!strcmp(action, "clear"))
        act = AIB_ACTION_CLEAR;
    else
        return "unknown action (enable, clear)";
    if (!provider || !*provider)
        return "no provider";
    for (i = 0; providers && i < providers->nelts && !pv; i++)
        if (!strcmp(APR_ARRAY_IDX(providers, i, const aib_provider_t *)->name, provider))
            pv = APR_ARRAY_IDX(providers, i, const aib_provider_t *);
    if (!pv)
        return "unknown provider";
    if (!pv->pool)
        return "the provider has no key pool";
    if (!key || !apr_isdigit(*key))
        return "no key index";
    errno = 0;
    index = apr_strtoi64(key, &end, 10);
    if (*end || errno || index < 0 || index >= pv->pool->keys->nelts)
        return "no such key";
    if (act == AIB_ACTION_ENABLE)
        aib_key_clear_disabled(pv->pool, (int)index);
    else
        aib_key_clear_cooldown(pv->pool, (int)index);
    if (hint)
        *hint = APR_ARRAY_IDX(pv->pool->keys, (int)index, aib_key_t).hint;
    (void)p;
    return NULL;
}

/* Splits host[:port] (an IPv6 host in brackets) and gives the port, the
 * scheme's default when absent. Returns 0 when it does not parse. */
static int split_authority(apr_pool_t *p, const char *auth, apr_size_t len, const char *scheme,
                           const char **host, int *port)
{
    const char *colon = NULL, *end = auth + len;

    if (!len || memchr(auth, '@', len))
        return 0;
    if (*auth == '[') {
        const char *close = memchr(auth, ']', len);
        if (!close)
            return 0;
        colon = close + 1 < end ? close + 1 : NULL;
        if (colon && *colon != ':')
            return 0;
        *host = apr_pstrmemdup(p, auth, (apr_size_t)(close + 1 - auth));
    }
    else {
        const char *c;
        for (c = auth; c < end; c++)
            if (*c == ':')
                colon = c;
        *host = apr_pstrmemdup(p, auth, (apr_size_t)((colon ? colon : end) - auth));
        if (!**host)
            return 0;
    }
    if (colon) {
        const char *d;
        int n = 0;
        if (colon + 1 == end)
            colon = NULL;    /* "host:" is the default port */
        for (d = colon ? colon + 1 : end; d < end; d++) {
            if (!apr_isdigit(*d) || n > 65535)
                return 0;
            n = n * 10 + (*d - '0');
        }
        if (colon) {
            *port = n;
            return n > 0 && n <= 65535;
        }
    }
    if (!strcasecmp(scheme, "http"))
        *port = 80;
    else if (!strcasecmp(scheme, "https"))
        *port = 443;
    else
        return 0;
    return 1;
}

int aib_status_same_origin(const char *url, const char *scheme, const char *host)
{
    apr_pool_t *p;
    const char *sep, *auth, *auth_end, *url_host, *want_host;
    int url_port = 0, want_port = 0, same;

    if (!url || !scheme || !host)
        return 0;
    sep = strstr(url, "://");
    if (!sep || (apr_size_t)(sep - url) != strlen(scheme) || strncasecmp(url, scheme, strlen(scheme)))
        return 0;
    auth = sep + 3;
    auth_end = auth + strcspn(auth, "/?#");
    if (apr_pool_create(&p, NULL) != APR_SUCCESS)
        return 0;
    same = split_authority(p, auth, (apr_size_t)(auth_end - auth), scheme, &url_host, &url_port)
           && split_authority(p, host, strlen(host), scheme, &want_host, &want_port)
           && url_port == want_port && !strcasecmp(url_host, want_host);
    apr_pool_destroy(p);
    return same;
}

int aib_status_nonce_equal(const char *expected, const char *given)
{
    size_t n, i;
    unsigned char diff = 0;

    if (!expected || !given || !*expected)
        return 0;
    n = strlen(expected);
    if (strlen(given) != n)
        return 0;
    for (i = 0; i < n; i++)
        diff |= (unsigned char)(expected[i] ^ given[i]);
    return diff == 0;
}
