/* The status page as HTML, and the section and ?auto lines mod_status's
 * server-status shows. Every string from the configuration or the key
 * pool is HTML-escaped. */
#include <inttypes.h>
#include <apr_strings.h>

#include "buffer.h"
#include "status_view.h"
#include "util.h"

#define H(s) aib_html_escape(p, (s))

static const char *const page_style =
    "body{font-family:sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin-bottom:1.5em}"
    "th,td{border:1px solid #bbb;padding:.25em .5em;text-align:left}"
    "td.n{text-align:right}th{background:#eee}"
    "tr.cooling td.state{background:#fe9}tr.disabled td.state{background:#f99}"
    "tr.available td.state{background:#bfb}form{margin:0}";

static uint64_t interceptions_total(const aib_provider_stats_t *st)
{
    uint64_t n = 0;
    int o;

    for (o = 0; o < AIB_STAT_OUTCOMES; o++)
        n += aib_status_outcome_total(st, o);
    return n;
}

/* How long a key that is out stays out; "" for an available one. */
static const char *remaining(apr_pool_t *p, const aib_status_key_t *v)
{
    if (v->state == AIB_KEY_AVAILABLE)
        return "";
    return v->remaining_ms < 0 ? "until re-enabled" : aib_status_duration(p, v->remaining_ms);
}

static void html_outcomes(aib_buffer_t *b, apr_pool_t *p, const aib_provider_stats_t *st)
{
    int i;

    for (i = 0; i < AIB_STAT_OUTCOMES; i++)
        aib_buffer_printf(b, p, "%s%s <span class=\"outcome-%s\">%" PRIu64 "</span>",
                          i ? ", " : "", H(aib_outcome_name((aib_outcome_e)i)),
                          H(aib_outcome_name((aib_outcome_e)i)), aib_status_outcome_total(st, i));
}

static void html_key_row(aib_buffer_t *b, apr_pool_t *p, const aib_provider_t *pv,
                         const aib_status_key_t *v, int64_t now_ms, const char *action,
                         const char *nonce)
{
    const aib_slot_t *s = &v->slot;
    const char *state = aib_key_state_name(v->state);

    aib_buffer_printf(b, p,
                      "<tr class=\"%s\" data-provider=\"%s\" data-key=\"%d\" data-state=\"%s\">",
                      state, H(pv->name), v->index, state);
    aib_buffer_printf(b, p, "<td class=\"n index\">%d</td><td class=\"hint\"><code>%s</code></td>",
                      v->index + 1, H(v->hint));
    aib_buffer_printf(b, p, "<td class=\"state\">%s</td><td class=\"reason\">%s</td>", state,
                      v->state == AIB_KEY_AVAILABLE ? "" : H(aib_reason_name(v->reason)));
    aib_buffer_printf(b, p, "<td class=\"remaining\">%s</td>", remaining(p, v));
    aib_buffer_printf(b, p,
                      "<td class=\"n requests\">%" PRIu64 "</td><td class=\"n http429\">%" PRIu64
                      "</td><td class=\"n http401\">%" PRIu64 "</td><td class=\"n http403\">%"
                      PRIu64 "</td>",
                      s->requests, s->rate_limited, s->unauthorized, s->forbidden);
    aib_buffer_printf(b, p, "<td class=\"n tokens-in\">%" PRIu64 "</td><td class=\"n tokens-out\">%"
                      PRIu64 "</td>", s->tokens_input, s->tokens_output);
    aib_buffer_printf(b, p, "<td class=\"last-used\">%s</td>",
                      H(aib_status_when(p, s->last_used_ms, now_ms)));
    if (s->last_failure_ms)
        aib_buffer_printf(b, p, "<td class=\"last-failure\">%" PRIu64 " at %s</td>",
                          s->last_failure_status,
                          H(aib_status_when(p, s->last_failure_ms, now_ms)));
    else
        aib_buffer_puts(b, p, "<td class=\"last-failure\">never</td>");
    aib_buffer_puts(b, p, "<td class=\"action\">");
    if (action && nonce && v->state != AIB_KEY_AVAILABLE) {
        int disabled = v->state == AIB_KEY_DISABLED;
        aib_buffer_printf(b, p,
                          "<form method=\"post\" action=\"%s\">"
                          "<input type=\"hidden\" name=\"nonce\" value=\"%s\">"
                          "<input type=\"hidden\" name=\"provider\" value=\"%s\">"
                          "<input type=\"hidden\" name=\"key\" value=\"%d\">"
                          "<button type=\"submit\" name=\"action\" value=\"%s\">%s</button></form>",
                          H(action), H(nonce), H(pv->name), v->index, disabled ? "enable" : "clear",
                          disabled ? "Enable" : "Clear cooldown");
    }
    aib_buffer_puts(b, p, "</td></tr>\n");
}

static void html_provider(aib_buffer_t *b, apr_pool_t *p, const aib_status_entry_t *e,
                          int64_t now_ms, const char *action, const char *nonce)
{
    const aib_provider_t *pv = e->pv;
    const aib_provider_stats_t *st = &e->stats;
    int i;

    aib_buffer_printf(b, p,
                      "<section class=\"provider\" data-provider=\"%s\">\n<h3>Provider %s "
                      "<small>(%s%s%s%s)</small></h3>\n",
                      H(pv->name), H(pv->name), H(pv->ops ? pv->ops->type : "?"),
                      pv->pool ? ", pool " : "", pv->pool ? H(pv->pool->name) : "",
                      pv->byok ? ", byok" : "");
    aib_buffer_printf(b, p, "<p>In flight: <span class=\"inflight\">%" PRId64 "</span>. "
                      "Interceptions: ", st->inflight);
    html_outcomes(b, p, st);
    aib_buffer_printf(b, p, ". Pool exhausted: rate-limited %" PRIu64 ", auth failed %" PRIu64
                      ".</p>\n", st->exhaustions[AIB_EXHAUSTED_RATE_LIMITED],
                      st->exhaustions[AIB_EXHAUSTED_AUTH_FAILED]);
    if (!aib_status_key_count(pv)) {
        aib_buffer_puts(b, p, "<p>No key pool: clients' own keys only.</p>\n</section>\n");
        return;
    }
    aib_buffer_puts(b, p,
                    "<table>\n<thead><tr><th>#</th><th>Key</th><th>State</th><th>Reason</th>"
                    "<th>Cooldown remaining</th><th>Requests</th><th>429s</th><th>401s</th>"
                    "<th>403s</th><th>Tokens in</th><th>Tokens out</th><th>Last used</th>"
                    "<th>Last failure</th><th>Action</th></tr></thead>\n<tbody>\n");
    for (i = 0; i < aib_status_key_count(pv); i++) {
        aib_status_key_t v;
        aib_status_key_view(pv, i, now_ms, &v);
        html_key_row(b, p, pv, &v, now_ms, action, nonce);
    }
    aib_buffer_puts(b, p, "</tbody>\n</table>\n</section>\n");
}

static void html_fleet(aib_buffer_t *b, apr_pool_t *p, const aib_status_fleet_t *fleet,
                       int64_t now_ms)
{
    aib_fleet_shared_t f;

    aib_fleet_snapshot(fleet->shared, &f);
    aib_buffer_printf(b, p, "<section class=\"shared-state\">\n<h2>Shared state</h2>\n"
                      "<p>Key state is shared with the fleet through <code>%s</code>, every %s: "
                      "<strong class=\"%s\">%s</strong>. Last synchronised: %s. "
                      "Last failure: %s.</p>\n</section>\n",
                      H(fleet->cache), H(aib_status_duration(p, fleet->interval_ms)),
                      f.connected ? "connected" : "disconnected",
                      f.connected ? "connected" : "not connected, using this server's own state",
                      H(aib_status_when(p, f.last_sync_ms, now_ms)),
                      H(aib_status_when(p, f.last_failure_ms, now_ms)));
}

const char *aib_status_html(apr_pool_t *p, const apr_array_header_t *servers,
                            const aib_status_fleet_t *fleet, int64_t now_ms,
                            const char *action, const char *nonce)
{
    apr_array_header_t *es = aib_status_entries(p, servers);
    aib_buffer_t b = { NULL, 0, 0 };
    int i, j;

    aib_buffer_printf(&b, p, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n"
                      "<meta charset=\"utf-8\">\n<meta name=\"robots\" content=\"noindex\">\n"
                      "<title>mod_aibridge status</title>\n<style>%s</style>\n</head>\n<body>\n"
                      "<h1>mod_aibridge status</h1>\n<p>As of <span class=\"generated\">%s</span>. "
                      "The numbers are in shared memory: every httpd child process shows the "
                      "same.</p>\n", page_style, H(aib_time_rfc3339(p, now_ms)));
    if (fleet)
        html_fleet(&b, p, fleet, now_ms);
    for (i = 0; servers && i < servers->nelts; i++) {
        const aib_status_server_t *s = &APR_ARRAY_IDX(servers, i, aib_status_server_t);
        int any = 0;

        aib_buffer_printf(&b, p, "<section class=\"server\">\n<h2>Server %s</h2>\n", H(s->name));
        for (j = 0; j < es->nelts; j++) {
            const aib_status_entry_t *e = &APR_ARRAY_IDX(es, j, aib_status_entry_t);
            if (e->server_index != i)
                continue;
            html_provider(&b, p, e, now_ms, action, nonce);
            any = 1;
        }
        if (!any)
            aib_buffer_puts(&b, p, "<p>No provider is configured.</p>\n");
        aib_buffer_puts(&b, p, "</section>\n");
    }
    aib_buffer_puts(&b, p, "</body>\n</html>\n");
    return b.data;
}

const char *aib_status_html_summary(apr_pool_t *p, const apr_array_header_t *servers,
                                    int64_t now_ms, int tables)
{
    apr_array_header_t *es = aib_status_entries(p, servers);
    aib_buffer_t b = { NULL, 0, 0 };
    int j, i;

    aib_buffer_puts(&b, p, "<hr>\n<h2 id=\"aibridge\">mod_aibridge key pools</h2>\n");
    if (!es->nelts) {
        aib_buffer_puts(&b, p, "<p>No provider is configured.</p>\n");
        return b.data;
    }
    aib_buffer_puts(&b, p,
                    tables ? "<table border=\"0\" class=\"aibridge\"><tr><th>Server</th>"
                             "<th>Provider</th><th>In flight</th><th>Interceptions</th><th>#</th>"
                             "<th>Key</th><th>State</th><th>Reason</th><th>Remaining</th>"
                             "<th>Requests</th><th>429s</th><th>401s</th><th>403s</th>"
                             "<th>Tokens in</th><th>Tokens out</th></tr>\n"
                           : "<dl class=\"aibridge\">\n");
    for (j = 0; j < es->nelts; j++) {
        const aib_status_entry_t *e = &APR_ARRAY_IDX(es, j, aib_status_entry_t);
        const aib_provider_t *pv = e->pv;
        int n = aib_status_key_count(pv);

        if (!tables)
            aib_buffer_printf(&b, p, "<dt>%s %s: %" PRId64 " in flight, %" PRIu64
                              " interceptions</dt>\n", H(e->server), H(pv->name),
                              e->stats.inflight, interceptions_total(&e->stats));
        for (i = 0; i < (n ? n : 1); i++) {
            aib_status_key_t v;
            if (!n) {
                if (tables)
                    aib_buffer_printf(&b, p,
                                      "<tr><td>%s</td><td>%s</td><td>%" PRId64 "</td><td>%" PRIu64
                                      "</td><td colspan=\"11\">no key pool</td></tr>\n",
                                      H(e->server), H(pv->name), e->stats.inflight,
                                      interceptions_total(&e->stats));
                break;
            }
            aib_status_key_view(pv, i, now_ms, &v);
            if (!tables) {
                const char *why = v.state == AIB_KEY_AVAILABLE ? ""
                                  : apr_psprintf(p, " (%s, %s%s)", H(aib_reason_name(v.reason)),
                                                 remaining(p, &v),
                                                 v.remaining_ms < 0 ? "" : " left");
                aib_buffer_printf(&b, p, "<dd>#%d <code>%s</code>: %s%s, %" PRIu64
                                  " requests</dd>\n", i + 1, H(v.hint),
                                  aib_key_state_name(v.state), why, v.slot.requests);
                continue;
            }
            aib_buffer_puts(&b, p, "<tr>");
            if (i == 0)
                aib_buffer_printf(&b, p,
                                  "<td rowspan=\"%d\">%s</td><td rowspan=\"%d\">%s</td>"
                                  "<td rowspan=\"%d\">%" PRId64 "</td><td rowspan=\"%d\">%" PRIu64
                                  "</td>",
                                  n, H(e->server), n, H(pv->name), n, e->stats.inflight, n,
                                  interceptions_total(&e->stats));
            aib_buffer_printf(&b, p, "<td>%d</td><td><code>%s</code></td><td>%s</td><td>%s</td>"
                              "<td>%s</td>", i + 1, H(v.hint), aib_key_state_name(v.state),
                              v.state == AIB_KEY_AVAILABLE ? "" : H(aib_reason_name(v.reason)),
                              remaining(p, &v));
            aib_buffer_printf(&b, p,
                              "<td>%" PRIu64 "</td><td>%" PRIu64 "</td><td>%" PRIu64
                              "</td><td>%" PRIu64 "</td><td>%" PRIu64 "</td><td>%" PRIu64
                              "</td></tr>\n",
                              v.slot.requests, v.slot.rate_limited, v.slot.unauthorized,
                              v.slot.forbidden, v.slot.tokens_input, v.slot.tokens_output);
        }
    }
    aib_buffer_puts(&b, p, tables ? "</table>\n" : "</dl>\n");
    return b.data;
}

const char *aib_status_text_summary(apr_pool_t *p, const apr_array_header_t *servers,
                                    int64_t now_ms)
{
    apr_array_header_t *es = aib_status_entries(p, servers);
    uint64_t keys = 0, states[3] = { 0, 0, 0 }, total = 0;
    int64_t inflight = 0;
    int j, i;

    for (j = 0; j < es->nelts; j++) {
        const aib_status_entry_t *e = &APR_ARRAY_IDX(es, j, aib_status_entry_t);
        for (i = 0; i < aib_status_key_count(e->pv); i++) {
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
