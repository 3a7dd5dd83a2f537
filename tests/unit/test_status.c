/* Unit tests for src/status.c: the status page (JSON, HTML), mod_status's
 * section, the Prometheus metrics, the operator's actions and the checks
 * that guard them.
 *
 * Key stores and provider records are plain calloc'd memory (httpd uses
 * shared memory); the clock is explicit. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_hash.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <apr_tables.h>
#include <json.h>

#include "bridge.h"
#include "config.h"
#include "keypool.h"
#include "provider.h"
#include "stats.h"
#include "status.h"

/* 2026-11-25T12:00:00Z */
#define NOW INT64_C(1795608000000)


/* Distinctive keys: neither they nor their middles may ever be printed. */
#define SECRET0 "sk-test-SECRETzero-0123456789abcdef"
#define SECRET1 "sk-test-SECRETone-0123456789abcdxy"
#define SECRET2 "sk-test-SECRETtwo-0123456789abcdzz"
/* A key whose hint holds characters HTML and the exposition format escape. */
#define NASTY "<\"&\\-SECRETnasty-0123456789\n'>\\\""

static apr_status_t free_memory(void *mem)
{
    free(mem);
    return APR_SUCCESS;
}

static void *zeroed(size_t n, size_t size)
{
    void *mem = calloc(n, size);

    assert_non_null(mem);
    apr_pool_cleanup_register(pool, mem, free_memory, apr_pool_cleanup_null);
    return mem;
}

/* A pool of the given keys, with slots in a store of its own. */
static aib_keypool_t *keypool(const char *name, const char *const *keys, int n)
{
    aib_keypool_t *kp = aib_keypool_create(pool, name);
    apr_array_header_t *pools = apr_array_make(pool, 1, sizeof(aib_keypool_t *));
    aib_keystore_t *store = apr_pcalloc(pool, sizeof(*store));
    int i;

    for (i = 0; i < n; i++)
        assert_null(aib_keypool_add_key(kp, pool, keys[i]));
    store->capacity = (uint32_t)n + 4;
    store->slots = zeroed(store->capacity, sizeof(aib_slot_t));
    APR_ARRAY_PUSH(pools, aib_keypool_t *) = kp;
    aib_keystore_assign(store, NULL, pools, pool);
    return kp;
}

static aib_provider_t *provider(const char *name, const aib_provider_ops_t *ops,
                                aib_keypool_t *kp, int byok)
{
    aib_provider_t *pv = apr_pcalloc(pool, sizeof(*pv));

    pv->name = name;
    pv->ops = ops;
    pv->pool = kp;
    pv->byok = byok;
    pv->stats = zeroed(1, sizeof(aib_provider_stats_t));
    pv->stats->fingerprint = 1;
    return pv;
}

static apr_array_header_t *servers_new(void)
{
    return apr_array_make(pool, 2, sizeof(aib_status_server_t));
}

static void server_add(apr_array_header_t *servers, const char *name, int n, ...)
{
    aib_status_server_t *s = apr_array_push(servers);
    apr_array_header_t *pvs = apr_array_make(pool, 2, sizeof(aib_provider_t *));
    va_list ap;
    int i;

    va_start(ap, n);
    for (i = 0; i < n; i++)
        APR_ARRAY_PUSH(pvs, aib_provider_t *) = va_arg(ap, aib_provider_t *);
    va_end(ap);
    s->name = name;
    s->providers = pvs;
}

/* The usual scene: openai with three keys (#1 cooling for 42 s after a
 * 429, #2 disabled until re-enabled after a 401, #3 available with tokens
 * and traffic), counters in its record. */
typedef struct {
    apr_array_header_t *servers;
    aib_provider_t *openai;
} scene_t;

static scene_t scene(void)
{
    static const char *const keys[] = { SECRET0, SECRET1, SECRET2 };
    scene_t sc;
    aib_keypool_t *kp = keypool("main", keys, 3);
    aib_provider_t *pv = provider("openai", &aib_provider_openai, kp, 0);

    aib_key_count_attempt(kp, 0, NOW - 5000);
    aib_key_count_status(kp, 0, 429);
    aib_key_note_failure(kp, 0, NOW - 5000, 429);
    aib_key_cooldown(kp, 0, NOW + 42000, AIB_REASON_RATE_LIMITED);
    aib_key_count_attempt(kp, 1, NOW - 4000);
    aib_key_count_status(kp, 1, 401);
    aib_key_note_failure(kp, 1, NOW - 4000, 401);
    aib_key_disable(kp, 1, AIB_FOREVER, AIB_REASON_UNAUTHORIZED);
    aib_key_count_attempt(kp, 2, NOW - 4000);
    aib_key_count_attempt(kp, 2, NOW - 1000);
    aib_key_count_status(kp, 2, 200);
    aib_key_count_tokens(kp, 2, 21, 9, 5, 0);
    aib_key_count_tokens(kp, 2, 21, 9, 5, 0);

    aib_stats_begin(pv->stats);
    aib_stats_end(pv->stats, aib_stat_route("chat"), 0, AIB_OUTCOME_OK, 30000, 3);
    aib_stats_begin(pv->stats);
    aib_stats_end(pv->stats, aib_stat_route("chat"), 0, AIB_OUTCOME_OK, 700000, 1);
    aib_stats_begin(pv->stats);
    aib_stats_end(pv->stats, aib_stat_route("chat"), 0, AIB_OUTCOME_EXHAUSTED, 1000, 0);
    aib_stats_begin(pv->stats);                        /* one still running */
    aib_stats_transition(pv->stats, AIB_REASON_RATE_LIMITED);
    aib_stats_transition(pv->stats, AIB_REASON_UNAUTHORIZED);
    aib_stats_exhaustion(pv->stats, AIB_EXHAUSTED_RATE_LIMITED);

    sc.servers = servers_new();
    server_add(sc.servers, "gw.example:443", 1, pv);
    sc.openai = pv;
    return sc;
}

static void never_printed(const char *out)
{
    static const char *const secrets[] = { SECRET0, SECRET1, SECRET2, NASTY };
    size_t i;

    for (i = 0; i < sizeof(secrets) / sizeof(*secrets); i++) {
        const char *middle = apr_pstrndup(pool, secrets[i] + 4, strlen(secrets[i]) - 8);
        if (strstr(out, secrets[i]) || strstr(out, middle)) {
            print_error("a key was printed:\n%s\n", out);
            fail();
        }
    }
    if (strstr(out, "SECRET")) {
        print_error("part of a key was printed:\n%s\n", out);
        fail();
    }
}

/* ---- escaping ------------------------------------------------------------ */

static void test_html_escape(void **state)
{
    (void)state;
    assert_string_equal(aib_html_escape(pool, "plain"), "plain");
    assert_string_equal(aib_html_escape(pool, "<a href=\"x\">'&'</a>"),
                        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    assert_string_equal(aib_html_escape(pool, ""), "");
    assert_string_equal(aib_html_escape(pool, NULL), "");
}

static void test_label_escape(void **state)
{
    (void)state;
    assert_string_equal(aib_metrics_label_escape(pool, "sk-p...wxyz"), "sk-p...wxyz");
    assert_string_equal(aib_metrics_label_escape(pool, "a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

/* ---- JSON ---------------------------------------------------------------- */

static json_object *get(json_object *o, const char *name)
{
    json_object *v = NULL;

    if (!json_object_object_get_ex(o, name, &v)) {
        print_error("no field '%s' in %s\n", name, json_object_to_json_string(o));
        fail();
    }
    return v;
}

static int64_t num(json_object *o, const char *name)
{
    return json_object_get_int64(get(o, name));
}

static const char *str(json_object *o, const char *name)
{
    return json_object_get_string(get(o, name));
}

static void test_json(void **state)
{
    scene_t sc = scene();
    const char *out = aib_status_json(pool, sc.servers, NULL, NOW);
    json_object *root = json_tokener_parse(out), *server, *pv, *keys, *k;

    (void)state;
    assert_non_null(root);
    never_printed(out);
    assert_string_equal(str(root, "generated"), "2026-11-25T12:00:00.000Z");
    assert_int_equal(json_object_array_length(get(root, "servers")), 1);
    server = json_object_array_get_idx(get(root, "servers"), 0);
    assert_string_equal(str(server, "server"), "gw.example:443");
    pv = json_object_array_get_idx(get(server, "providers"), 0);
    assert_string_equal(str(pv, "name"), "openai");
    assert_string_equal(str(pv, "type"), "openai");
    assert_string_equal(str(pv, "pool"), "main");
    assert_int_equal(num(pv, "inflight"), 1);
    assert_int_equal(num(get(pv, "interceptions"), "ok"), 2);
    assert_int_equal(num(get(pv, "interceptions"), "exhausted"), 1);
    assert_int_equal(num(get(pv, "exhaustions"), "rate_limited"), 1);
    assert_int_equal(num(get(pv, "exhaustions"), "auth_failed"), 0);
    assert_int_equal(num(get(pv, "transitions"), "unauthorized"), 1);
    keys = get(pv, "keys");
    assert_int_equal(json_object_array_length(keys), 3);

    k = json_object_array_get_idx(keys, 0);
    assert_int_equal(num(k, "index"), 0);
    assert_string_equal(str(k, "hint"), "sk-t...cdef");
    assert_string_equal(str(k, "state"), "cooling");
    assert_string_equal(str(k, "reason"), "rate_limited");
    assert_int_equal(num(k, "remaining_ms"), 42000);
    assert_false(json_object_get_boolean(get(k, "until_reenabled")));
    assert_int_equal(num(k, "requests"), 1);
    assert_int_equal(num(k, "http_429"), 1);
    assert_int_equal(num(k, "last_failure_status"), 429);
    assert_int_equal(num(k, "last_failure_ms"), NOW - 5000);
    assert_string_equal(str(k, "last_failure"), "2026-11-25T11:59:55.000Z");

    k = json_object_array_get_idx(keys, 1);
    assert_string_equal(str(k, "state"), "disabled");
    assert_string_equal(str(k, "reason"), "unauthorized");
    assert_null(get(k, "remaining_ms"));
    assert_true(json_object_get_boolean(get(k, "until_reenabled")));
    assert_int_equal(num(k, "http_401"), 1);
    assert_int_equal(num(k, "http_403"), 0);

    k = json_object_array_get_idx(keys, 2);
    assert_string_equal(str(k, "state"), "available");
    assert_null(get(k, "reason"));
    assert_null(get(k, "remaining_ms"));
    assert_int_equal(num(k, "requests"), 2);
    assert_int_equal(num(k, "tokens_input"), 42);
    assert_int_equal(num(k, "tokens_output"), 18);
    assert_int_equal(num(k, "tokens_cache_read"), 10);
    assert_int_equal(num(k, "last_used_ms"), NOW - 1000);
    assert_null(get(k, "last_failure"));
    json_object_put(root);
}

static void test_json_byok_only_and_empty(void **state)
{
    apr_array_header_t *servers = servers_new();
    aib_provider_t *pv = provider("claude", &aib_provider_anthropic, NULL, 1);
    json_object *root, *p0;

    (void)state;
    server_add(servers, "a:80", 1, pv);
    server_add(servers, "b:80", 0);
    root = json_tokener_parse(aib_status_json(pool, servers, NULL, NOW));
    assert_non_null(root);
    p0 = json_object_array_get_idx(get(json_object_array_get_idx(get(root, "servers"), 0),
                                       "providers"), 0);
    assert_null(get(p0, "pool"));
    assert_true(json_object_get_boolean(get(p0, "byok")));
    assert_int_equal(json_object_array_length(get(p0, "keys")), 0);
    assert_int_equal(json_object_array_length(get(json_object_array_get_idx(get(root, "servers"), 1),
                                                  "providers")), 0);
    json_object_put(root);
    /* Nothing at all is still a valid page. */
    root = json_tokener_parse(aib_status_json(pool, servers_new(), NULL, NOW));
    assert_int_equal(json_object_array_length(get(root, "servers")), 0);
    json_object_put(root);
}

/* ---- HTML ---------------------------------------------------------------- */

static int count(const char *haystack, const char *needle)
{
    int n = 0;

    for (; (haystack = strstr(haystack, needle)) != NULL; haystack += strlen(needle))
        n++;
    return n;
}

static void test_html(void **state)
{
    scene_t sc = scene();
    const char *out = aib_status_html(pool, sc.servers, NULL, NOW, "/status?a=1&b=<2>", "n0nce");

    (void)state;
    never_printed(out);
    assert_non_null(strstr(out, "<!DOCTYPE html>"));
    assert_non_null(strstr(out, "<h2>Server gw.example:443</h2>"));
    assert_non_null(strstr(out, "<tr class=\"cooling\" data-provider=\"openai\" data-key=\"0\" "
                                "data-state=\"cooling\">"));
    assert_non_null(strstr(out, "<td class=\"reason\">rate_limited</td><td class=\"remaining\">42s</td>"));
    assert_non_null(strstr(out, "<td class=\"remaining\">until re-enabled</td>"));
    assert_non_null(strstr(out, "<td class=\"n tokens-in\">42</td><td class=\"n tokens-out\">18</td>"));
    assert_non_null(strstr(out, "<td class=\"last-failure\">429 at 2026-11-25T11:59:55.000Z (5s ago)</td>"));
    /* One form per key that is out: clear for the cooling one, enable for the disabled one. */
    assert_int_equal(count(out, "<form method=\"post\" action=\"/status?a=1&amp;b=&lt;2&gt;\">"), 2);
    assert_int_equal(count(out, "name=\"nonce\" value=\"n0nce\""), 2);
    assert_non_null(strstr(out, "name=\"key\" value=\"0\"><button type=\"submit\" name=\"action\" "
                                "value=\"clear\">"));
    assert_non_null(strstr(out, "name=\"key\" value=\"1\"><button type=\"submit\" name=\"action\" "
                                "value=\"enable\">"));
    assert_null(strstr(out, "<2>"));

    /* Without an action URL: no form at all. */
    out = aib_status_html(pool, sc.servers, NULL, NOW, NULL, NULL);
    assert_null(strstr(out, "<form"));
    assert_null(strstr(out, "nonce"));
}

static void test_html_escapes_everything(void **state)
{
    static const char *const keys[] = { NASTY };
    aib_keypool_t *kp = keypool("main", keys, 1);
    aib_provider_t *pv = provider("openai", &aib_provider_openai, kp, 0);
    apr_array_header_t *servers = servers_new();
    const char *out, *summary;

    (void)state;
    server_add(servers, "<script>alert(1)</script>", 1, pv);
    out = aib_status_html(pool, servers, NULL, NOW, "/s", "\"><x");
    never_printed(out);
    assert_null(strstr(out, "<script>"));
    assert_non_null(strstr(out, "&lt;script&gt;alert(1)&lt;/script&gt;"));
    /* The hint: first and last four characters, escaped. */
    assert_non_null(strstr(out, "<code>&lt;&quot;&amp;\\...&#39;&gt;\\&quot;</code>"));
    summary = aib_status_html_summary(pool, servers, NOW, 1);
    never_printed(summary);
    assert_null(strstr(summary, "<script>"));
    assert_non_null(strstr(summary, "<code>&lt;&quot;&amp;\\...&#39;&gt;\\&quot;</code>"));
    summary = aib_status_html_summary(pool, servers, NOW, 0);
    assert_null(strstr(summary, "<script>"));
}

/* ---- mod_status ---------------------------------------------------------- */

static void test_summaries(void **state)
{
    scene_t sc = scene();
    const char *html = aib_status_html_summary(pool, sc.servers, NOW, 1);
    const char *list = aib_status_html_summary(pool, sc.servers, NOW, 0);
    const char *text = aib_status_text_summary(pool, sc.servers, NOW);

    (void)state;
    never_printed(html);
    never_printed(list);
    never_printed(text);
    assert_non_null(strstr(html, "mod_aibridge"));
    assert_non_null(strstr(html, "<table"));
    assert_int_equal(count(html, "<code>"), 3);
    assert_non_null(strstr(html, "<td>cooling</td><td>rate_limited</td><td>42s</td>"));
    assert_null(strstr(list, "<table"));
    assert_non_null(strstr(list, "#2 <code>sk-t...cdxy</code>: disabled (unauthorized, until re-enabled)"));
    assert_string_equal(text, "AIBridgeProviders: 1\nAIBridgeKeys: 3\nAIBridgeKeysAvailable: 1\n"
                              "AIBridgeKeysCooling: 1\nAIBridgeKeysDisabled: 1\n"
                              "AIBridgeInterceptions: 3\nAIBridgeInflight: 1\n");
}

/* ---- Prometheus ---------------------------------------------------------- */

/* Every sample line "name{labels} value" -> value; checks the format on the way:
 * each sample's family has HELP and TYPE before it, no series twice. */
static apr_hash_t *samples(const char *text)
{
    apr_hash_t *out = apr_hash_make(pool), *typed = apr_hash_make(pool);
    char *copy = apr_pstrdup(pool, text), *line, *last;

    assert_true(strlen(text) > 0 && text[strlen(text) - 1] == '\n');
    for (line = apr_strtok(copy, "\n", &last); line; line = apr_strtok(NULL, "\n", &last)) {
        char *space, *brace, *name;
        if (!strncmp(line, "# HELP ", 7))
            continue;
        if (!strncmp(line, "# TYPE ", 7)) {
            char *fam = apr_pstrdup(pool, line + 7);
            *strchr(fam, ' ') = '\0';
            apr_hash_set(typed, fam, APR_HASH_KEY_STRING, "");
            continue;
        }
        space = strrchr(line, ' ');
        assert_non_null(space);
        *space = '\0';
        if (apr_hash_get(out, line, APR_HASH_KEY_STRING)) {
            print_error("series twice: %s\n", line);
            fail();
        }
        apr_hash_set(out, line, APR_HASH_KEY_STRING, space + 1);
        brace = strchr(line, '{');
        name = apr_pstrndup(pool, line, brace ? (apr_size_t)(brace - line) : strlen(line));
        if (!apr_hash_get(typed, name, APR_HASH_KEY_STRING)) {
            char *base = apr_pstrdup(pool, name), *suffix;
            if ((suffix = strstr(base, "_bucket")) || (suffix = strstr(base, "_sum"))
                || (suffix = strstr(base, "_count")))
                *suffix = '\0';
            if (!apr_hash_get(typed, base, APR_HASH_KEY_STRING)) {
                print_error("no TYPE for %s\n", name);
                fail();
            }
        }
    }
    return out;
}

static void expect(apr_hash_t *s, const char *series, const char *value)
{
    const char *got = apr_hash_get(s, series, APR_HASH_KEY_STRING);

    if (!got || strcmp(got, value)) {
        print_error("%s: got %s, want %s\n", series, got ? got : "(none)", value);
        fail();
    }
}

#define OAI "server=\"gw.example:443\",provider=\"openai\""

static void test_metrics(void **state)
{
    scene_t sc = scene();
    const char *out = aib_status_metrics(pool, sc.servers, NULL, NOW);
    apr_hash_t *s = samples(out);
    static const char *const families[] = {
        "aibridge_interceptions_total counter", "aibridge_interceptions_inflight gauge",
        "aibridge_interception_duration_seconds histogram", "aibridge_tokens_total counter",
        "aibridge_key_state gauge", "aibridge_key_pool_state_transitions_total counter",
        "aibridge_key_pool_exhaustions_total counter", "aibridge_failover_attempts histogram",
    };
    size_t i;

    (void)state;
    never_printed(out);
    for (i = 0; i < sizeof(families) / sizeof(*families); i++) {
        assert_non_null(strstr(out, apr_pstrcat(pool, "# TYPE ", families[i], "\n", NULL)));
        assert_non_null(strstr(out, apr_pstrcat(pool, "# HELP ", apr_pstrndup(pool, families[i],
                                        strcspn(families[i], " ")), " ", NULL)));
    }
    expect(s, "aibridge_interceptions_total{" OAI ",route=\"chat\",credential=\"pool\","
              "outcome=\"ok\"}", "2");
    expect(s, "aibridge_interceptions_total{" OAI ",route=\"chat\",credential=\"pool\","
              "outcome=\"exhausted\"}", "1");
    expect(s, "aibridge_interceptions_total{" OAI ",route=\"responses\",credential=\"pool\","
              "outcome=\"ok\"}", "0");
    /* Bounded by the configuration: no Anthropic route, no BYOK series here. */
    assert_null(strstr(out, "route=\"messages\""));
    assert_null(strstr(out, "credential=\"byok\""));
    expect(s, "aibridge_interceptions_inflight{" OAI "}", "1");
    /* 30 ms, 700 ms, 1 ms: cumulative buckets. */
    expect(s, "aibridge_interception_duration_seconds_bucket{" OAI ",route=\"chat\",le=\"0.05\"}", "2");
    expect(s, "aibridge_interception_duration_seconds_bucket{" OAI ",route=\"chat\",le=\"0.5\"}", "2");
    expect(s, "aibridge_interception_duration_seconds_bucket{" OAI ",route=\"chat\",le=\"1.0\"}", "3");
    expect(s, "aibridge_interception_duration_seconds_bucket{" OAI ",route=\"chat\",le=\"+Inf\"}", "3");
    expect(s, "aibridge_interception_duration_seconds_sum{" OAI ",route=\"chat\"}", "0.731000");
    expect(s, "aibridge_interception_duration_seconds_count{" OAI ",route=\"chat\"}", "3");
    expect(s, "aibridge_interception_duration_seconds_count{" OAI ",route=\"responses\"}", "0");
    expect(s, "aibridge_tokens_total{" OAI ",key=\"sk-t...cdzz\",index=\"2\",type=\"input\"}", "42");
    expect(s, "aibridge_tokens_total{" OAI ",key=\"sk-t...cdzz\",index=\"2\",type=\"output\"}", "18");
    expect(s, "aibridge_tokens_total{" OAI ",key=\"sk-t...cdzz\",index=\"2\",type=\"cache_read\"}", "10");
    expect(s, "aibridge_tokens_total{" OAI ",key=\"sk-t...cdzz\",index=\"2\",type=\"cache_write\"}", "0");
    expect(s, "aibridge_key_state{" OAI ",key=\"sk-t...cdef\",index=\"0\",state=\"cooling\"}", "1");
    expect(s, "aibridge_key_state{" OAI ",key=\"sk-t...cdef\",index=\"0\",state=\"available\"}", "0");
    expect(s, "aibridge_key_state{" OAI ",key=\"sk-t...cdxy\",index=\"1\",state=\"disabled\"}", "1");
    expect(s, "aibridge_key_state{" OAI ",key=\"sk-t...cdzz\",index=\"2\",state=\"available\"}", "1");
    expect(s, "aibridge_key_pool_state_transitions_total{" OAI ",reason=\"rate_limited\"}", "1");
    expect(s, "aibridge_key_pool_state_transitions_total{" OAI ",reason=\"unauthorized\"}", "1");
    expect(s, "aibridge_key_pool_state_transitions_total{" OAI ",reason=\"quota\"}", "0");
    expect(s, "aibridge_key_pool_exhaustions_total{" OAI ",outcome=\"rate_limited\"}", "1");
    expect(s, "aibridge_key_pool_exhaustions_total{" OAI ",outcome=\"auth_failed\"}", "0");
    /* Attempts 3, 1 and 0. */
    expect(s, "aibridge_failover_attempts_bucket{" OAI ",le=\"1.0\"}", "2");
    expect(s, "aibridge_failover_attempts_bucket{" OAI ",le=\"2.0\"}", "2");
    expect(s, "aibridge_failover_attempts_bucket{" OAI ",le=\"3.0\"}", "3");
    expect(s, "aibridge_failover_attempts_bucket{" OAI ",le=\"25.0\"}", "3");
    expect(s, "aibridge_failover_attempts_bucket{" OAI ",le=\"+Inf\"}", "3");
    expect(s, "aibridge_failover_attempts_sum{" OAI "}", "4");
    expect(s, "aibridge_failover_attempts_count{" OAI "}", "3");
}

static void test_metrics_once_each_and_escaped(void **state)
{
    static const char *const nasty[] = { NASTY, "k0", "k1" };
    aib_keypool_t *kp = keypool("main", nasty, 3);
    aib_provider_t *a = provider("openai", &aib_provider_openai, kp, 1);
    aib_provider_t *b = provider("openai", &aib_provider_openai, kp, 0);
    aib_provider_t *c = provider("claude", &aib_provider_anthropic, NULL, 1);
    apr_array_header_t *servers = servers_new();
    const char *out;
    apr_hash_t *s;

    (void)state;
    /* The main server's provider, listed again for a vhost that inherits it;
     * a vhost with its own provider of the same name; one whose server name
     * needs escaping. */
    server_add(servers, "main:80", 1, a);
    server_add(servers, "vhost:80", 2, a, c);
    server_add(servers, "other\"\\\n:80", 1, b);
    server_add(servers, "other\"\\\n:80", 1, b);
    out = aib_status_metrics(pool, servers, NULL, NOW);
    never_printed(out);
    s = samples(out);
    expect(s, "aibridge_interceptions_inflight{server=\"main:80\",provider=\"openai\"}", "0");
    expect(s, "aibridge_interceptions_inflight{server=\"vhost:80\",provider=\"claude\"}", "0");
    expect(s, "aibridge_interceptions_inflight{server=\"other\\\"\\\\\\n:80\",provider=\"openai\"}", "0");
    assert_null(apr_hash_get(s, "aibridge_interceptions_inflight{server=\"vhost:80\","
                                "provider=\"openai\"}", APR_HASH_KEY_STRING));
    assert_int_equal(count(out, "aibridge_interceptions_inflight{"), 3);
    /* BYOK-only: byok series, no pool series, no keys. */
    expect(s, "aibridge_interceptions_total{server=\"vhost:80\",provider=\"claude\","
              "route=\"messages\",credential=\"byok\",outcome=\"ok\"}", "0");
    assert_null(strstr(out, "provider=\"claude\",route=\"messages\",credential=\"pool\""));
    assert_null(strstr(out, "provider=\"claude\",key="));
    /* Hints that collide ("..." for short keys) stay apart by index; a hint is escaped. */
    expect(s, "aibridge_key_state{server=\"main:80\",provider=\"openai\",key=\"...\",index=\"1\","
              "state=\"available\"}", "1");
    expect(s, "aibridge_key_state{server=\"main:80\",provider=\"openai\",key=\"...\",index=\"2\","
              "state=\"available\"}", "1");
    expect(s, "aibridge_key_state{server=\"main:80\",provider=\"openai\","
              "key=\"<\\\"&\\\\...'>\\\\\\\"\",index=\"0\",state=\"available\"}", "1");
}

static void test_metrics_counts_off_type_routes(void **state)
{
    apr_array_header_t *servers = servers_new();
    aib_provider_t *pv = provider("claude", &aib_provider_anthropic, NULL, 1);
    const char *out;

    (void)state;
    server_add(servers, "s", 1, pv);
    aib_stats_end(pv->stats, aib_stat_route("chat"), 1, AIB_OUTCOME_REJECTED, 10, 0);
    out = aib_status_metrics(pool, servers, NULL, NOW);
    expect(samples(out), "aibridge_interceptions_total{server=\"s\",provider=\"claude\","
                         "route=\"chat\",credential=\"byok\",outcome=\"rejected\"}", "1");
}

/* ---- actions ------------------------------------------------------------- */

static void test_apply(void **state)
{
    scene_t sc = scene();
    aib_keypool_t *kp = sc.openai->pool;
    const apr_array_header_t *pvs = APR_ARRAY_IDX(sc.servers, 0, aib_status_server_t).providers;
    const char *hint = NULL;

    (void)state;
    /* Key #2 is disabled and cooling: enable leaves the cooldown, clear the rest. */
    aib_key_cooldown(kp, 1, NOW + 10000, AIB_REASON_RATE_LIMITED);
    assert_null(aib_status_apply(pool, pvs, "enable", "openai", "1", &hint));
    assert_string_equal(hint, "sk-t...cdxy");
    assert_int_equal(aib_key_state(kp, 1, NOW, NULL, NULL), AIB_KEY_COOLING);
    assert_null(aib_status_apply(pool, pvs, "clear", "openai", "1", NULL));
    assert_int_equal(aib_key_state(kp, 1, NOW, NULL, NULL), AIB_KEY_AVAILABLE);
    /* clear on a cooling key leaves nothing else changed. */
    assert_null(aib_status_apply(pool, pvs, "clear", "openai", "0", NULL));
    assert_int_equal(aib_key_state(kp, 0, NOW, NULL, NULL), AIB_KEY_AVAILABLE);
    /* clear does not enable a disabled key. */
    aib_key_disable(kp, 2, AIB_FOREVER, AIB_REASON_FORBIDDEN);
    assert_null(aib_status_apply(pool, pvs, "clear", "openai", "2", NULL));
    assert_int_equal(aib_key_state(kp, 2, NOW, NULL, NULL), AIB_KEY_DISABLED);

    assert_non_null(aib_status_apply(pool, pvs, NULL, "openai", "0", NULL));
    assert_non_null(aib_status_apply(pool, pvs, "reset", "openai", "0", NULL));
    assert_non_null(aib_status_apply(pool, pvs, "enable", NULL, "0", NULL));
    assert_non_null(aib_status_apply(pool, pvs, "enable", "anthropic", "0", NULL));
    assert_non_null(aib_status_apply(pool, pvs, "enable", "openai", NULL, NULL));
    assert_non_null(aib_status_apply(pool, pvs, "enable", "openai", "", NULL));
    assert_non_null(aib_status_apply(pool, pvs, "enable", "openai", "3", NULL));
    assert_non_null(aib_status_apply(pool, pvs, "enable", "openai", "-1", NULL));
    assert_non_null(aib_status_apply(pool, pvs, "enable", "openai", "1x", NULL));
    assert_non_null(aib_status_apply(pool, pvs, "enable", "openai", " 1", NULL));
    assert_non_null(aib_status_apply(pool, pvs, "enable", "openai", "99999999999999999999", NULL));
    assert_int_equal(aib_key_state(kp, 2, NOW, NULL, NULL), AIB_KEY_DISABLED);
}

static void test_apply_byok_only(void **state)
{
    apr_array_header_t *pvs = apr_array_make(pool, 1, sizeof(aib_provider_t *));

    (void)state;
    APR_ARRAY_PUSH(pvs, aib_provider_t *) = provider("claude", &aib_provider_anthropic, NULL, 1);
    assert_non_null(aib_status_apply(pool, pvs, "enable", "claude", "0", NULL));
}

/* ---- the guards ---------------------------------------------------------- */

static void test_same_origin(void **state)
{
    (void)state;
    assert_true(aib_status_same_origin("http://gw.example", "http", "gw.example"));
    assert_true(aib_status_same_origin("http://GW.example:80", "http", "gw.example"));
    assert_true(aib_status_same_origin("http://gw.example", "http", "gw.example:80"));
    assert_true(aib_status_same_origin("https://gw.example", "https", "gw.example:443"));
    assert_true(aib_status_same_origin("http://127.0.0.1:8080", "http", "127.0.0.1:8080"));
    assert_true(aib_status_same_origin("http://127.0.0.1:8080/aibridge-status?x=1", "http",
                                       "127.0.0.1:8080"));
    assert_true(aib_status_same_origin("http://[::1]:8080/x", "http", "[::1]:8080"));
    assert_true(aib_status_same_origin("HTTP://gw.example/", "http", "gw.example"));

    assert_false(aib_status_same_origin("http://evil.example", "http", "gw.example"));
    assert_false(aib_status_same_origin("http://gw.example.evil.example", "http", "gw.example"));
    assert_false(aib_status_same_origin("http://gw.example:8080", "http", "gw.example"));
    assert_false(aib_status_same_origin("http://127.0.0.1:8081", "http", "127.0.0.1:8080"));
    assert_false(aib_status_same_origin("https://gw.example", "http", "gw.example"));
    assert_false(aib_status_same_origin("http://gw.example", "https", "gw.example"));
    assert_false(aib_status_same_origin("null", "http", "gw.example"));
    assert_false(aib_status_same_origin("", "http", "gw.example"));
    assert_false(aib_status_same_origin("http://", "http", "gw.example"));
    assert_false(aib_status_same_origin("http://evil@gw.example", "http", "gw.example"));
    assert_false(aib_status_same_origin("http://gw.example:99999", "http", "gw.example:99999"));
    assert_false(aib_status_same_origin("http://gw.example:8x", "http", "gw.example"));
    assert_false(aib_status_same_origin("http://[::1", "http", "[::1]"));
    assert_false(aib_status_same_origin("//gw.example", "http", "gw.example"));
    assert_false(aib_status_same_origin("http://gw.example", "http", NULL));
    assert_false(aib_status_same_origin(NULL, "http", "gw.example"));
}

static void test_nonce_equal(void **state)
{
    (void)state;
    assert_true(aib_status_nonce_equal("0123abcd", "0123abcd"));
    assert_false(aib_status_nonce_equal("0123abcd", "0123abce"));
    assert_false(aib_status_nonce_equal("0123abcd", "0123abc"));
    assert_false(aib_status_nonce_equal("0123abcd", "0123abcdX"));
    assert_false(aib_status_nonce_equal("0123abcd", ""));
    assert_false(aib_status_nonce_equal("0123abcd", NULL));
    assert_false(aib_status_nonce_equal("", ""));
    assert_false(aib_status_nonce_equal(NULL, NULL));
}

/* The shared-state section appears with AIBridgeSharedState only, on every page. */
static void test_shared_state(void **state)
{
    aib_fleet_shared_t shared;
    aib_status_fleet_t fleet = { "redis:10.0.0.5:6379", 250, &shared };
    apr_array_header_t *servers = servers_new();
    json_object *root, *o;
    const char *html, *metrics;

    (void)state;
    memset(&shared, 0, sizeof(shared));
    shared.connected = 1;
    shared.last_sync_ms = NOW - 2000;
    shared.rounds_ok = 7;
    shared.rounds_failed = 2;
    shared.written = 3;
    shared.taken = 5;
    root = json_tokener_parse(aib_status_json(pool, servers, &fleet, NOW));
    o = get(root, "shared_state");
    assert_string_equal(json_object_get_string(get(o, "cache")), "redis:10.0.0.5:6379");
    assert_true(json_object_get_boolean(get(o, "connected")));
    assert_true(json_object_get_int64(get(o, "last_sync_ms")) == NOW - 2000);
    assert_null(get(o, "last_failure"));
    assert_int_equal(json_object_get_int(get(o, "records_taken")), 5);
    json_object_put(root);
    html = aib_status_html(pool, servers, &fleet, NOW, NULL, NULL);
    assert_non_null(strstr(html, "<code>redis:10.0.0.5:6379</code>"));
    assert_non_null(strstr(html, "<strong class=\"connected\">connected</strong>"));
    metrics = aib_status_metrics(pool, servers, &fleet, NOW);
    assert_non_null(strstr(metrics, "\naibridge_shared_state_connected 1\n"));
    assert_non_null(strstr(metrics, "\naibridge_shared_state_rounds_total{outcome=\"failed\"} 2\n"));
    assert_non_null(strstr(metrics, "\naibridge_shared_state_records_total{direction=\"written\"} 3\n"));
    shared.connected = 0;
    shared.last_failure_ms = NOW - 1000;
    html = aib_status_html(pool, servers, &fleet, NOW, NULL, NULL);
    assert_non_null(strstr(html, "class=\"disconnected\">not connected"));
    assert_non_null(strstr(aib_status_metrics(pool, servers, &fleet, NOW),
                           "\naibridge_shared_state_connected 0\n"));
    /* Without shared state: nothing of it. */
    root = json_tokener_parse(aib_status_json(pool, servers, NULL, NOW));
    assert_null(get(root, "shared_state"));
    json_object_put(root);
    assert_null(strstr(aib_status_html(pool, servers, NULL, NOW, NULL, NULL), "Shared state"));
    assert_null(strstr(aib_status_metrics(pool, servers, NULL, NOW), "shared_state"));
}

/* MCP tool calls: counted per server and tool in a fixed table, shown as
 * counters; a full table counts no more, and names are escaped. */
static void test_tool_metrics(void **state)
{
    aib_tool_stats_t records[3];
    aib_toolstore_t store = { records, 3 };
    const char *out;

    (void)state;
    memset(records, 0, sizeof(records));
    assert_true(aib_tool_stats_count(&store, "tools", "echo", 0, 5));
    assert_true(aib_tool_stats_count(&store, "tools", "echo", 0, 7));
    assert_true(aib_tool_stats_count(&store, "tools", "get-sum", 1, 3));
    assert_true(aib_tool_stats_count(&store, "gh", "say \"hi\"", 2, 1000));
    assert_false(aib_tool_stats_count(&store, "gh", "fourth", 0, 1));
    assert_false(aib_tool_stats_count(&store, "tools", "echo", 3, 1));
    out = aib_status_tool_metrics(pool, &store);
    assert_non_null(strstr(out, "# TYPE aibridge_tool_calls_total counter\n"));
    assert_non_null(strstr(out, "\naibridge_tool_calls_total{server=\"tools\",tool=\"echo\","
                                "outcome=\"ok\"} 2\n"));
    assert_non_null(strstr(out, "\naibridge_tool_calls_total{server=\"tools\",tool=\"echo\","
                                "outcome=\"failed\"} 0\n"));
    assert_non_null(strstr(out, "\naibridge_tool_calls_total{server=\"tools\","
                                "tool=\"get-sum\",outcome=\"tool_error\"} 1\n"));
    assert_non_null(strstr(out, "tool=\"say \\\"hi\\\"\",outcome=\"failed\"} 1\n"));
    assert_non_null(strstr(out, "\naibridge_tool_call_seconds_total{server=\"tools\","
                                "tool=\"echo\"} 0.012\n"));
    assert_null(strstr(out, "fourth"));
    /* An empty table: the families without series. */
    memset(records, 0, sizeof(records));
    out = aib_status_tool_metrics(pool, &store);
    assert_null(strstr(out, "aibridge_tool_calls_total{"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_html_escape, aib_clear_pool),
        cmocka_unit_test_teardown(test_label_escape, aib_clear_pool),
        cmocka_unit_test_teardown(test_json, aib_clear_pool),
        cmocka_unit_test_teardown(test_json_byok_only_and_empty, aib_clear_pool),
        cmocka_unit_test_teardown(test_html, aib_clear_pool),
        cmocka_unit_test_teardown(test_html_escapes_everything, aib_clear_pool),
        cmocka_unit_test_teardown(test_summaries, aib_clear_pool),
        cmocka_unit_test_teardown(test_metrics, aib_clear_pool),
        cmocka_unit_test_teardown(test_metrics_once_each_and_escaped, aib_clear_pool),
        cmocka_unit_test_teardown(test_metrics_counts_off_type_routes, aib_clear_pool),
        cmocka_unit_test_teardown(test_apply, aib_clear_pool),
        cmocka_unit_test_teardown(test_apply_byok_only, aib_clear_pool),
        cmocka_unit_test_teardown(test_same_origin, aib_clear_pool),
        cmocka_unit_test_teardown(test_nonce_equal, aib_clear_pool),
        cmocka_unit_test_teardown(test_shared_state, aib_clear_pool),
        cmocka_unit_test_teardown(test_tool_metrics, aib_clear_pool),
    };
    return AIB_RUN_TESTS(tests);
}
