/* Unit tests for src/bridge.c: one interception, driven end to end; and
 * for src/agent_loop.c, which runs several around MCP tool calls (the MCP
 * server's answers are steps of the same script).
 *
 * The upstream is a scripted fake transport (each call replays a status,
 * headers, body chunks and a final result, and records what it was asked),
 * the client a recording sink, the clock a settable static, and the key
 * store a plain calloc'd array. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "unit.h"

#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <apr_tables.h>

#include "agent_loop.h"
#include "bridge.h"
#include "buffer.h"
#include "config.h"
#include "hint.h"
#include "keypool.h"
#include "provider.h"

/* 2026-11-25T12:00:00Z */
#define NOW INT64_C(1795608000000)


/* ---- clock ------------------------------------------------------------- */

static int64_t clock_ms;

static int64_t fake_now(void)
{
    return clock_ms;
}

/* ---- fake transport ---------------------------------------------------- */

#define MAX_ITEMS 16
#define MAX_CALLS 12

typedef struct {
    int status;                        /* 0: no response at all */
    const char *headers[2 * MAX_ITEMS];/* name, value, ..., NULL */
    const char *chunks[MAX_ITEMS];     /* NULL-terminated */
    aib_xfer_result_e result;
    const char *error;                 /* for a result other than OK */
} step_t;

typedef struct {
    const char *method;
    const char *url;
    apr_table_t *headers;              /* deep copy */
    const char *body;
    apr_size_t body_len;
    int64_t timeout_ms;
    int64_t idle_timeout_ms;
    int64_t connect_timeout_ms;
    int chunks_delivered;
    int stopped;                       /* a callback asked to stop */
} call_t;

typedef struct {
    aib_transport_t base;
    const step_t *steps;
    int nsteps;
    int ncalls;
    call_t calls[MAX_CALLS];
} fake_transport_t;

static aib_xfer_result_e fake_perform(aib_transport_t *self, apr_pool_t *p,
                                      const aib_upstream_request_t *req,
                                      const aib_upstream_handler_t *handler,
                                      const char **error)
{
    fake_transport_t *ft = (fake_transport_t *)self;
    const step_t *step;
    call_t *call;
    int i;

    if (ft->ncalls >= ft->nsteps || ft->ncalls >= MAX_CALLS) {
        print_error("unexpected upstream call #%d to %s\n", ft->ncalls + 1, req->url);
        fail();
    }
    step = &ft->steps[ft->ncalls];
    call = &ft->calls[ft->ncalls++];
    memset(call, 0, sizeof(*call));
    call->method = apr_pstrdup(pool, req->method);
    call->url = apr_pstrdup(pool, req->url);
    call->headers = aib_table_copy_deep(req->headers);
    call->body = req->body ? apr_pstrmemdup(pool, req->body, req->body_len) : NULL;
    call->body_len = req->body_len;
    call->timeout_ms = req->timeout_ms;
    call->idle_timeout_ms = req->idle_timeout_ms;
    call->connect_timeout_ms = req->connect_timeout_ms;

    /* Waiting for the upstream. */
    if (handler->on_tick && handler->on_tick(handler->ctx)) {
        call->stopped = 1;
        return AIB_XFER_STOPPED;
    }
    if (step->status) {
        apr_table_t *h = apr_table_make(p, 8);
        for (i = 0; step->headers[i]; i += 2)
            apr_table_addn(h, apr_pstrdup(p, step->headers[i]),
                           apr_pstrdup(p, step->headers[i + 1]));
        if (handler->on_response(handler->ctx, step->status, h)) {
            call->stopped = 1;
            return AIB_XFER_STOPPED;
        }
        for (i = 0; step->chunks[i]; i++) {
            /* A private copy: the bridge may keep nothing past the call. */
            char *data = apr_pstrdup(p, step->chunks[i]);
            if (handler->on_data(handler->ctx, data, strlen(data))) {
                call->stopped = 1;
                return AIB_XFER_STOPPED;
            }
            call->chunks_delivered++;
            memset(data, '#', strlen(data));
            if (handler->on_tick && handler->on_tick(handler->ctx)) {
                call->stopped = 1;
                return AIB_XFER_STOPPED;
            }
        }
    }
    if (step->result != AIB_XFER_OK)
        *error = step->error ? step->error : "fake failure";
    return step->result;
}

static fake_transport_t transport;

static void script(const step_t *steps, int n)
{
    memset(&transport, 0, sizeof(transport));
    transport.base.perform = fake_perform;
    transport.steps = steps;
    transport.nsteps = n;
}

#define SCRIPT(arr) script((arr), (int)(sizeof(arr) / sizeof((arr)[0])))

/* ---- recording sink ---------------------------------------------------- */

#define MAX_LOGS 32

typedef struct {
    int starts;
    int status;
    apr_table_t *headers;
    aib_buffer_t body;
    int writes;
    int flushed_writes;
    apr_size_t unflushed;      /* bytes written since the last flush */
    int writes_before_start;
    int writes_after_fail;
    int fails;
    int gone;                  /* client_gone() answer */
    int gone_after_writes;     /* client_gone() is 1 once this many writes happened; 0: off */
    int refuse_write;          /* write #n (1-based) and later return 1; 0: never */
    int nlogs;
    aib_log_level_e log_level[MAX_LOGS];
    char *log[MAX_LOGS];
} sink_rec_t;

static sink_rec_t rec;

static void sink_start(void *ctx, int status, const apr_table_t *headers)
{
    sink_rec_t *s = ctx;

    s->starts++;
    s->status = status;
    s->headers = aib_table_copy_deep(headers);
}

static int sink_write(void *ctx, const char *data, apr_size_t len, int flush)
{
    sink_rec_t *s = ctx;

    s->writes++;
    if (!s->starts)
        s->writes_before_start++;
    if (s->fails)
        s->writes_after_fail++;
    if (flush)
        s->flushed_writes++;
    s->unflushed = flush ? 0 : s->unflushed + len;
    if (s->refuse_write && s->writes >= s->refuse_write)
        return 1;
    aib_buffer_append(&s->body, pool, data, len);
    return 0;
}

static int sink_client_gone(void *ctx)
{
    sink_rec_t *s = ctx;

    return s->gone || (s->gone_after_writes && s->writes >= s->gone_after_writes);
}

static void sink_fail(void *ctx)
{
    ((sink_rec_t *)ctx)->fails++;
}

static void sink_log(void *ctx, aib_log_level_e level, const char *message)
{
    sink_rec_t *s = ctx;

    assert_true(s->nlogs < MAX_LOGS);
    s->log_level[s->nlogs] = level;
    s->log[s->nlogs++] = apr_pstrdup(pool, message);
}

static const aib_sink_t sink = {
    &rec, sink_start, sink_write, sink_client_gone, sink_fail, sink_log
};

static const char *body_of(void)
{
    return rec.body.data ? rec.body.data : "";
}

/* Whether some log line of `level` contains `fragment`. */
static int logged(aib_log_level_e level, const char *fragment)
{
    int i;

    for (i = 0; i < rec.nlogs; i++)
        if (rec.log_level[i] == level && strstr(rec.log[i], fragment))
            return 1;
    return 0;
}

/* ---- fixtures ---------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    clock_ms = NOW;
    memset(&rec, 0, sizeof(rec));
    memset(&transport, 0, sizeof(transport));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    apr_pool_clear(pool);
    return 0;
}

static apr_status_t free_slots(void *slots)
{
    free(slots);
    return APR_SUCCESS;
}

/* Distinct keys with distinct hints ("sk-t...keya"). */
static const char *key_value(const char *tag)
{
    return apr_psprintf(pool, "sk-test-0123456789abcdef-key%s", tag);
}

/* A pool named "main" of the NULL-terminated tags, in a fresh store. */
static aib_keypool_t *keypool(const char *tag, ...)
{
    aib_keypool_t *kp = aib_keypool_create(pool, "main");
    apr_array_header_t *pools = apr_array_make(pool, 1, sizeof(aib_keypool_t *));
    aib_keystore_t *ks = apr_pcalloc(pool, sizeof(*ks));
    va_list ap;

    va_start(ap, tag);
    for (; tag; tag = va_arg(ap, const char *))
        assert_null(aib_keypool_add_key(kp, pool, key_value(tag)));
    va_end(ap);
    APR_ARRAY_PUSH(pools, aib_keypool_t *) = kp;
    ks->capacity = aib_keystore_slots_needed(pools, pool);
    ks->slots = calloc(ks->capacity ? ks->capacity : 1, sizeof(aib_slot_t));
    assert_non_null(ks->slots);
    apr_pool_cleanup_register(pool, ks->slots, free_slots, apr_pool_cleanup_null);
    aib_keystore_assign(ks, NULL, pools, pool);
    return kp;
}

/* A provider from directive arguments (name "up"), with `kp` as its pool. */
static aib_provider_t *provider(const char *type, aib_keypool_t *kp, ...)
{
    char *argv[16];
    int argc = 0;
    const char *opt;
    aib_provider_t *pv = NULL;
    const char *err;
    va_list ap;

    argv[argc++] = apr_pstrdup(pool, "up");
    argv[argc++] = apr_pstrdup(pool, type);
    argv[argc++] = apr_pstrdup(pool, "pool=main");
    va_start(ap, kp);
    while ((opt = va_arg(ap, const char *)) != NULL && argc < 16)
        argv[argc++] = apr_pstrdup(pool, opt);
    va_end(ap);
    err = aib_provider_parse(pool, argc, argv, &pv);
    if (err) {
        print_error("aib_provider_parse: %s\n", err);
        fail();
    }
    pv->pool = kp;
    return pv;
}

#define OPENAI(kp, ...) provider("openai", (kp), ##__VA_ARGS__, NULL)
#define ANTHROPIC(kp, ...) provider("anthropic", (kp), ##__VA_ARGS__, NULL)

static const char request_body[] = "{\"model\":\"gpt-4o-mini\",\"messages\":[]}";

/* An interception of POST `path`, as mod_aibridge would build it. */
static aib_interception_t *interception(const aib_provider_t *pv, const char *path, int stream)
{
    aib_interception_t *ic = apr_pcalloc(pool, sizeof(*ic));
    apr_table_t *h = apr_table_make(pool, 4);

    apr_table_setn(h, "Content-Type", "application/json");
    apr_table_setn(h, "User-Agent", "OpenAI/Python 1.50.0");
    ic->pool = pool;
    ic->provider = pv;
    pv->ops->route("POST", path, &ic->route);
    assert_int_not_equal(ic->route.kind, AIB_ROUTE_NONE);
    ic->method = "POST";
    ic->url = apr_pstrcat(pool, pv->base_url, path, NULL);
    ic->headers = h;
    ic->body = request_body;
    ic->body_len = sizeof(request_body) - 1;
    ic->stream = stream;
    ic->transport = &transport.base;
    ic->sink = &sink;
    ic->now_ms = fake_now;
    ic->status = -1;
    ic->outcome = AIB_OUTCOME_REJECTED;   /* run must set its own */
    return ic;
}

#define CHAT "/v1/chat/completions"
#define RESPONSES "/v1/responses"
#define MESSAGES "/v1/messages"

/* ---- assertions -------------------------------------------------------- */

#define ASSERT_I64(a, b) check_i64((a), (b), __FILE__, __LINE__)

static void check_i64(int64_t got, int64_t want, const char *file, int line)
{
    if (got != want) {
        print_error("got %lld, want %lld\n", (long long)got, (long long)want);
        _fail(file, line);
    }
}

static void assert_key(const aib_keypool_t *kp, int i, aib_key_state_e want,
                       aib_reason_e want_reason, int64_t want_until)
{
    aib_reason_e reason;
    int64_t until;

    assert_int_equal(aib_key_state(kp, i, clock_ms, &reason, &until), want);
    assert_int_equal(reason, want_reason);
    ASSERT_I64(until, want_until);
}

#define ASSERT_AVAILABLE(kp, i) assert_key((kp), (i), AIB_KEY_AVAILABLE, AIB_REASON_NONE, 0)

static void assert_all_available(const aib_keypool_t *kp)
{
    int i;

    for (i = 0; i < kp->keys->nelts; i++)
        ASSERT_AVAILABLE(kp, i);
}

static aib_slot_t slot(const aib_keypool_t *kp, int i)
{
    aib_slot_t s;

    aib_key_snapshot(kp, i, &s);
    return s;
}

static void assert_counters(const aib_keypool_t *kp, int i, uint64_t requests,
                            uint64_t rate_limited, uint64_t unauthorized, uint64_t forbidden)
{
    aib_slot_t s = slot(kp, i);

    assert_int_equal(s.requests, requests);
    assert_int_equal(s.rate_limited, rate_limited);
    assert_int_equal(s.unauthorized, unauthorized);
    assert_int_equal(s.forbidden, forbidden);
}

static const char *hint(const aib_keypool_t *kp, int i)
{
    return APR_ARRAY_IDX(kp->keys, i, aib_key_t).hint;
}

static const char *bearer(const char *tag)
{
    return apr_pstrcat(pool, "Bearer ", key_value(tag), NULL);
}

/* The call was made with key `tag` of the pool, the OpenAI way. */
static void assert_openai_call(int n, const char *tag)
{
    const apr_table_t *h = transport.calls[n].headers;

    assert_string_equal(apr_table_get(h, "Authorization"), bearer(tag));
    assert_null(apr_table_get(h, "x-api-key"));
    assert_int_equal(apr_table_elts(h)->nelts, 3);   /* Content-Type, User-Agent, Authorization */
}

/* No secret ever reaches a log line or the client. */
static void assert_no_secret(const aib_keypool_t *kp)
{
    int i, l;

    for (i = 0; kp && i < kp->keys->nelts; i++) {
        const char *v = APR_ARRAY_IDX(kp->keys, i, aib_key_t).value;
        for (l = 0; l < rec.nlogs; l++)
            if (strstr(rec.log[l], v)) {
                print_error("log line reveals key #%d: %s\n", i + 1, rec.log[l]);
                fail();
            }
        assert_null(strstr(body_of(), v));
    }
}

static const char *header(const char *name)
{
    assert_non_null(rec.headers);
    return apr_table_get(rec.headers, name);
}

/* OpenAI's error body for the module's own errors. */
static const char *openai_error(const char *message, const char *type, const char *code)
{
    return apr_psprintf(pool, "{\"error\":{\"message\":\"%s\",\"type\":\"%s\",\"param\":null,"
                        "\"code\":\"%s\"}}", message, type, code);
}

static const char *anthropic_error(const char *type, const char *message)
{
    return apr_psprintf(pool, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":\"%s\"}}",
                        type, message);
}

/* Upstream bodies */
#define RATE_LIMIT_BODY \
    "{\"error\":{\"message\":\"Rate limit reached for gpt-4o-mini\",\"type\":\"requests\"," \
    "\"param\":null,\"code\":\"rate_limit_exceeded\"}}"
#define INVALID_KEY_BODY \
    "{\"error\":{\"message\":\"Incorrect API key provided\",\"type\":\"invalid_request_error\"," \
    "\"param\":null,\"code\":\"invalid_api_key\"}}"
#define FORBIDDEN_BODY \
    "{\"error\":{\"message\":\"You are not allowed\",\"type\":\"invalid_request_error\"," \
    "\"param\":null,\"code\":null}}"
#define OK_BODY "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"choices\":[]}"

#define JSON_HEADERS "Content-Type", "application/json"

/* ---- a single key ------------------------------------------------------ */

static void test_single_key_ok(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 200, { JSON_HEADERS, "Content-Length", "62", "x-request-id", "req_1",
                 "Set-Cookie", "__cf_bm=1", "Connection", "keep-alive", NULL },
          { "{\"id\":\"chatcmpl-1\",", "\"object\":\"chat.completion\",\"choices\":[]}", NULL },
          AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 1);
    assert_string_equal(transport.calls[0].method, "POST");
    assert_string_equal(transport.calls[0].url, "https://api.openai.com/v1/chat/completions");
    assert_int_equal(transport.calls[0].body_len, sizeof(request_body) - 1);
    assert_string_equal(transport.calls[0].body, request_body);
    assert_openai_call(0, "a");
    assert_string_equal(apr_table_get(transport.calls[0].headers, "User-Agent"),
                        "OpenAI/Python 1.50.0");
    ASSERT_I64(transport.calls[0].timeout_ms, pv->timeout_ms);
    ASSERT_I64(transport.calls[0].connect_timeout_ms, pv->connect_timeout_ms);
    ASSERT_I64(transport.calls[0].idle_timeout_ms, pv->idle_timeout_ms);
    /* The interception's own headers are not the upstream's. */
    assert_null(apr_table_get(ic->headers, "Authorization"));

    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.status, 200);
    assert_string_equal(header("Content-Type"), "application/json");
    assert_string_equal(header("x-request-id"), "req_1");
    assert_null(header("Content-Length"));
    assert_null(header("Set-Cookie"));
    assert_null(header("Connection"));
    assert_string_equal(body_of(), OK_BODY);
    assert_int_equal(rec.writes_before_start, 0);
    assert_int_equal(rec.flushed_writes, 0);   /* not a stream */
    assert_int_equal(rec.fails, 0);

    assert_int_equal(ic->status, 200);
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
    assert_string_equal(aib_outcome_name(ic->outcome), "ok");
    assert_int_equal(ic->attempts, 1);
    assert_string_equal(ic->key_hint, hint(kp, 0));
    assert_string_equal(ic->key_hint, "sk-t...keya");
    assert_all_available(kp);
    assert_counters(kp, 0, 1, 0, 0, 0);
    ASSERT_I64(slot(kp, 0).last_used_ms, NOW);
    assert_no_secret(kp);
}

static void test_stream_has_no_whole_call_timeout(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = OPENAI(kp, "timeout=30", "idle-timeout=7");
    aib_interception_t *ic = interception(pv, CHAT, 1);
    const step_t steps[] = {
        { 200, { "Content-Type", "text/event-stream", NULL },
          { "data: {\"id\":1}\n\n", "data: [DONE]\n\n", NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    ASSERT_I64(transport.calls[0].timeout_ms, 0);
    ASSERT_I64(transport.calls[0].idle_timeout_ms, 7000);
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
}

/* ---- failover ---------------------------------------------------------- */

static void test_failover_429_retry_after(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 429, { JSON_HEADERS, "Retry-After", "5", "x-request-id", "req_429", NULL },
          { "{\"error\":{\"message\":\"Rate limit reached for gpt-4o-mini\",",
            "\"type\":\"requests\",\"param\":null,\"code\":\"rate_limit_exceeded\"}}", NULL },
          AIB_XFER_OK, NULL },
        { 200, { JSON_HEADERS, "x-request-id", "req_200", NULL }, { OK_BODY, NULL },
          AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 2);
    assert_openai_call(0, "a");
    assert_openai_call(1, "b");
    assert_key(kp, 0, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + 5000);
    ASSERT_AVAILABLE(kp, 1);

    /* The client sees the second answer only. */
    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.status, 200);
    assert_string_equal(body_of(), OK_BODY);
    assert_null(strstr(body_of(), "Rate limit reached"));
    assert_null(header("Retry-After"));
    assert_string_equal(header("x-request-id"), "req_200");

    assert_int_equal(ic->status, 200);
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
    assert_int_equal(ic->attempts, 2);
    assert_string_equal(ic->key_hint, hint(kp, 1));
    assert_counters(kp, 0, 1, 1, 0, 0);
    assert_counters(kp, 1, 1, 0, 0, 0);
    assert_true(logged(AIB_LOG_INFO, "sk-t...keya"));
    assert_true(logged(AIB_LOG_INFO, "Retry-After"));
    assert_true(logged(AIB_LOG_INFO, "429"));
    assert_no_secret(kp);

    /* The next request skips the cooling key, until its deadline. */
    memset(&rec, 0, sizeof(rec));
    {
        const step_t again[] = {
            { 200, { JSON_HEADERS, NULL }, { OK_BODY, NULL }, AIB_XFER_OK, NULL },
        };
        SCRIPT(again);
        clock_ms = NOW + 4999;
        ic = interception(pv, CHAT, 0);
        aib_bridge_run(ic);
        assert_int_equal(transport.ncalls, 1);
        assert_openai_call(0, "b");
        assert_int_equal(ic->attempts, 1);

        memset(&rec, 0, sizeof(rec));
        SCRIPT(again);
        clock_ms = NOW + 5000;
        ic = interception(pv, CHAT, 0);
        aib_bridge_run(ic);
        assert_int_equal(transport.ncalls, 1);
        assert_openai_call(0, "a");
    }
    assert_counters(kp, 0, 2, 1, 0, 0);
    assert_counters(kp, 1, 2, 0, 0, 0);
}

static void test_failover_429_without_headers_uses_cooldown(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp, "cooldown=42");
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 429, { JSON_HEADERS, NULL }, { RATE_LIMIT_BODY, NULL }, AIB_XFER_OK, NULL },
        { 200, { JSON_HEADERS, NULL }, { OK_BODY, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_key(kp, 0, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + 42000);
    assert_int_equal(rec.status, 200);
}

static void test_failover_retry_after_clamped_to_max(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp, "max-cooldown=120");
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 429, { "Retry-After", "86400", NULL }, { RATE_LIMIT_BODY, NULL }, AIB_XFER_OK, NULL },
        { 200, { JSON_HEADERS, NULL }, { OK_BODY, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_key(kp, 0, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + 120000);
}

static void test_failover_401_403_disable_forever(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", "c", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 401, { JSON_HEADERS, NULL }, { INVALID_KEY_BODY, NULL }, AIB_XFER_OK, NULL },
        { 403, { JSON_HEADERS, NULL }, { FORBIDDEN_BODY, NULL }, AIB_XFER_OK, NULL },
        { 200, { JSON_HEADERS, NULL }, { OK_BODY, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 3);
    assert_openai_call(0, "a");
    assert_openai_call(1, "b");
    assert_openai_call(2, "c");
    assert_key(kp, 0, AIB_KEY_DISABLED, AIB_REASON_UNAUTHORIZED, AIB_FOREVER);
    assert_key(kp, 1, AIB_KEY_DISABLED, AIB_REASON_FORBIDDEN, AIB_FOREVER);
    ASSERT_AVAILABLE(kp, 2);
    /* Disabled, not cooling. */
    ASSERT_I64(slot(kp, 0).cooldown_until_ms, 0);
    ASSERT_I64(slot(kp, 1).cooldown_until_ms, 0);

    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.status, 200);
    assert_string_equal(body_of(), OK_BODY);
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
    assert_int_equal(ic->attempts, 3);
    assert_string_equal(ic->key_hint, hint(kp, 2));
    assert_counters(kp, 0, 1, 0, 1, 0);
    assert_counters(kp, 1, 1, 0, 0, 1);
    assert_counters(kp, 2, 1, 0, 0, 0);
    assert_true(logged(AIB_LOG_WARNING, "until re-enabled"));
    assert_no_secret(kp);

    /* Still disabled a year later. */
    clock_ms = NOW + INT64_C(365) * 86400 * 1000;
    assert_key(kp, 0, AIB_KEY_DISABLED, AIB_REASON_UNAUTHORIZED, AIB_FOREVER);
}

static void test_failover_disable_for(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", "c", NULL);
    aib_provider_t *pv = OPENAI(kp, "disable-for=600");
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 401, { JSON_HEADERS, NULL }, { INVALID_KEY_BODY, NULL }, AIB_XFER_OK, NULL },
        { 403, { JSON_HEADERS, NULL }, { FORBIDDEN_BODY, NULL }, AIB_XFER_OK, NULL },
        { 200, { JSON_HEADERS, NULL }, { OK_BODY, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_key(kp, 0, AIB_KEY_DISABLED, AIB_REASON_UNAUTHORIZED, NOW + 600000);
    assert_key(kp, 1, AIB_KEY_DISABLED, AIB_REASON_FORBIDDEN, NOW + 600000);
    assert_true(logged(AIB_LOG_WARNING, "for 600 s"));
    clock_ms = NOW + 600000;
    ASSERT_AVAILABLE(kp, 0);
    ASSERT_AVAILABLE(kp, 1);
}

static void test_insufficient_quota_cools_for_max(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", "c", NULL);
    aib_provider_t *pv = OPENAI(kp, "max-cooldown=900");
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        /* The code split across chunks: the held body is classified whole. */
        { 429, { JSON_HEADERS, "Retry-After", "1", NULL },
          { "{\"error\":{\"message\":\"You exceeded your current quota\",\"type\":\"insuff",
            "icient_quota\",\"param\":null,\"code\":\"insuff", "icient_quota\"}}", NULL },
          AIB_XFER_OK, NULL },
        /* The type alone says so too. */
        { 429, { JSON_HEADERS, "Retry-After", "1", NULL },
          { "{\"error\":{\"message\":\"quota\",\"type\":\"insufficient_quota\",\"code\":null}}",
            NULL },
          AIB_XFER_OK, NULL },
        { 200, { JSON_HEADERS, NULL }, { OK_BODY, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 3);
    assert_key(kp, 0, AIB_KEY_COOLING, AIB_REASON_QUOTA, NOW + 900000);
    assert_key(kp, 1, AIB_KEY_COOLING, AIB_REASON_QUOTA, NOW + 900000);
    assert_counters(kp, 0, 1, 1, 0, 0);
    assert_int_equal(rec.status, 200);
    assert_string_equal(body_of(), OK_BODY);
    assert_true(logged(AIB_LOG_INFO, "insufficient_quota"));
}

/* ---- exhaustion -------------------------------------------------------- */

static void test_all_rate_limited_openai(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 429, { JSON_HEADERS, "Retry-After", "5", NULL }, { RATE_LIMIT_BODY, NULL },
          AIB_XFER_OK, NULL },
        { 429, { JSON_HEADERS, "retry-after-ms", "2500", "x-request-id", "req_b", NULL },
          { RATE_LIMIT_BODY, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 2);
    assert_key(kp, 0, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + 5000);
    assert_key(kp, 1, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + 2500);
    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.status, 429);
    /* The smallest remaining cooldown, 2.5 s, rounded up. */
    assert_string_equal(header("Retry-After"), "3");
    assert_string_equal(header("Content-Type"), "application/json");
    assert_null(header("x-request-id"));
    assert_string_equal(body_of(),
                        openai_error("all configured keys are rate-limited (retry after 3s)",
                                     "rate_limit_error", "rate_limit_exceeded"));
    assert_int_equal(ic->status, 429);
    assert_int_equal(ic->outcome, AIB_OUTCOME_EXHAUSTED);
    assert_string_equal(aib_outcome_name(ic->outcome), "exhausted");
    assert_int_equal(ic->attempts, 2);
    assert_true(logged(AIB_LOG_WARNING, "rate-limited"));
    assert_no_secret(kp);
}

static void test_all_rate_limited_anthropic(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic = interception(pv, MESSAGES, 0);
    const step_t steps[] = {
        { 429, { JSON_HEADERS, "retry-after", "8", NULL },
          { "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow\"}}",
            NULL }, AIB_XFER_OK, NULL },
        { 429, { JSON_HEADERS, "retry-after", "4", NULL },
          { "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow\"}}",
            NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 2);
    assert_int_equal(rec.status, 429);
    assert_string_equal(header("Retry-After"), "4");
    assert_string_equal(body_of(),
                        anthropic_error("rate_limit_error",
                                        "all configured keys are rate-limited (retry after 4s)"));
    assert_int_equal(ic->outcome, AIB_OUTCOME_EXHAUSTED);
}

static void test_all_unauthorized(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 401, { JSON_HEADERS, NULL }, { INVALID_KEY_BODY, NULL }, AIB_XFER_OK, NULL },
        { 403, { JSON_HEADERS, NULL }, { FORBIDDEN_BODY, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 2);
    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.status, 502);
    assert_null(header("Retry-After"));
    assert_string_equal(body_of(), openai_error("all configured keys failed authentication",
                                                "api_error", "server_error"));
    assert_int_equal(ic->status, 502);
    assert_int_equal(ic->outcome, AIB_OUTCOME_EXHAUSTED);
    assert_true(logged(AIB_LOG_WARNING, "failed authentication"));
}

static void test_all_unauthorized_anthropic(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic = interception(pv, MESSAGES, 0);
    const step_t steps[] = {
        { 401, { JSON_HEADERS, NULL },
          { "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\","
            "\"message\":\"invalid x-api-key\"}}", NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_int_equal(rec.status, 502);
    assert_null(header("Retry-After"));
    assert_string_equal(body_of(), anthropic_error("api_error",
                                                   "all configured keys failed authentication"));
    assert_key(kp, 0, AIB_KEY_DISABLED, AIB_REASON_UNAUTHORIZED, AIB_FOREVER);
}

static void test_disabled_and_cooling_is_rate_limited(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 401, { JSON_HEADERS, NULL }, { INVALID_KEY_BODY, NULL }, AIB_XFER_OK, NULL },
        { 429, { JSON_HEADERS, "Retry-After", "7", NULL }, { RATE_LIMIT_BODY, NULL },
          AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_int_equal(rec.status, 429);
    assert_string_equal(header("Retry-After"), "7");
    assert_int_equal(ic->outcome, AIB_OUTCOME_EXHAUSTED);
}

static void test_exhausted_before_request(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", "c", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 0);

    (void)state;
    script(NULL, 0);   /* any call fails the test */
    aib_key_cooldown(kp, 0, NOW + 30000, AIB_REASON_RATE_LIMITED);
    aib_key_disable(kp, 1, AIB_FOREVER, AIB_REASON_UNAUTHORIZED);
    aib_key_cooldown(kp, 2, NOW + 10001, AIB_REASON_QUOTA);
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 0);
    assert_int_equal(ic->attempts, 0);
    assert_int_equal(rec.status, 429);
    assert_string_equal(header("Retry-After"), "11");
    assert_string_equal(body_of(),
                        openai_error("all configured keys are rate-limited (retry after 11s)",
                                     "rate_limit_error", "rate_limit_exceeded"));
    assert_int_equal(ic->outcome, AIB_OUTCOME_EXHAUSTED);
    assert_counters(kp, 0, 0, 0, 0, 0);
    assert_counters(kp, 2, 0, 0, 0, 0);
}

static void test_all_disabled_before_request(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic = interception(pv, MESSAGES, 0);

    (void)state;
    script(NULL, 0);
    aib_key_disable(kp, 0, AIB_FOREVER, AIB_REASON_UNAUTHORIZED);
    aib_key_disable(kp, 1, NOW + 1000, AIB_REASON_FORBIDDEN);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 0);
    assert_int_equal(rec.status, 502);
    assert_null(header("Retry-After"));
    assert_string_equal(body_of(), anthropic_error("api_error",
                                                   "all configured keys failed authentication"));
}

static void test_no_pool_without_client_key(void **state)
{
    aib_provider_t *pv = OPENAI(NULL);
    aib_interception_t *ic = interception(pv, CHAT, 0);

    (void)state;
    script(NULL, 0);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 0);
    assert_int_equal(rec.status, 401);
    assert_int_equal(ic->outcome, AIB_OUTCOME_REJECTED);
    assert_string_equal(body_of(),
                        openai_error("provider 'up' has no key pool: send your own API key",
                                     "invalid_request_error", "invalid_api_key"));
}

/* ---- relayed, nothing marked ------------------------------------------- */

static void test_500_relayed(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 0);
    static const char body[] =
        "{\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}";
    const step_t steps[] = {
        { 500, { JSON_HEADERS, "x-request-id", "req_500", "Retry-After", "1", NULL },
          { body, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 1);
    assert_int_equal(rec.status, 500);
    assert_string_equal(body_of(), body);
    assert_string_equal(header("x-request-id"), "req_500");
    assert_string_equal(header("Retry-After"), "1");
    assert_int_equal(ic->status, 500);
    assert_int_equal(ic->outcome, AIB_OUTCOME_UPSTREAM_ERROR);
    assert_string_equal(aib_outcome_name(ic->outcome), "upstream_error");
    assert_all_available(kp);
    assert_counters(kp, 0, 1, 0, 0, 0);
    assert_counters(kp, 1, 0, 0, 0, 0);
}

static void test_400_relayed(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic = interception(pv, MESSAGES, 0);
    static const char body[] =
        "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"bad\"}}";
    const step_t steps[] = {
        { 400, { JSON_HEADERS, NULL }, { body, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 1);
    assert_int_equal(rec.status, 400);
    assert_string_equal(body_of(), body);
    assert_int_equal(ic->outcome, AIB_OUTCOME_UPSTREAM_ERROR);
    assert_all_available(kp);
}

static void test_unsupported_region_relayed(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 0);
    static const char body[] =
        "{\"error\":{\"code\":\"unsupported_country_region_territory\",\"message\":"
        "\"Country, region, or territory not supported\",\"param\":null,"
        "\"type\":\"request_forbidden\"}}";
    const step_t steps[] = {
        { 403, { JSON_HEADERS, "x-request-id", "req_403", NULL },
          { "{\"error\":{\"code\":\"unsupported_country_region_territory\",\"message\":",
            "\"Country, region, or territory not supported\",\"param\":null,"
            "\"type\":\"request_forbidden\"}}", NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 1);
    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.status, 403);
    assert_string_equal(header("x-request-id"), "req_403");
    assert_string_equal(body_of(), body);
    assert_int_equal(ic->outcome, AIB_OUTCOME_UPSTREAM_ERROR);
    assert_int_equal(ic->attempts, 1);
    assert_all_available(kp);
    assert_true(logged(AIB_LOG_INFO, "not the key's fault"));
}

/* A failover body is held whole up to 64 KiB; the rest is dropped, never
 * written past the buffer. */
static void test_large_failover_body(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = ANTHROPIC(kp, "failover=429,401,403,529");
    aib_interception_t *ic = interception(pv, MESSAGES, 0);
    char *pad = apr_palloc(pool, 40001);
    const char *head = "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"";
    step_t steps[2];

    (void)state;
    memset(pad, 'x', 40000);
    pad[40000] = '\0';
    memset(steps, 0, sizeof(steps));
    /* 429 first: ~160 KB in five chunks, still failed over. */
    steps[0].status = 429;
    steps[0].headers[0] = "Retry-After";
    steps[0].headers[1] = "2";
    steps[0].chunks[0] = "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"";
    steps[0].chunks[1] = pad;
    steps[0].chunks[2] = pad;
    steps[0].chunks[3] = pad;
    steps[0].chunks[4] = pad;
    steps[0].result = AIB_XFER_OK;
    /* Then an overload (not the key's fault) of ~120 KB: relayed, cut at 64 KiB. */
    steps[1].status = 529;
    steps[1].chunks[0] = head;
    steps[1].chunks[1] = pad;
    steps[1].chunks[2] = pad;
    steps[1].chunks[3] = pad;
    steps[1].chunks[4] = "\"}}";
    steps[1].result = AIB_XFER_OK;
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 2);
    assert_key(kp, 0, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + 2000);
    ASSERT_AVAILABLE(kp, 1);
    assert_int_equal(rec.status, 529);
    assert_int_equal(rec.body.len, 64 * 1024);
    assert_memory_equal(rec.body.data, head, strlen(head));
    assert_int_equal(ic->outcome, AIB_OUTCOME_UPSTREAM_ERROR);
}

static void test_status_outside_failover_set_relayed(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp, "failover=429,401");
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 403, { JSON_HEADERS, NULL }, { FORBIDDEN_BODY, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 1);
    assert_int_equal(rec.status, 403);
    assert_string_equal(body_of(), FORBIDDEN_BODY);
    assert_int_equal(ic->outcome, AIB_OUTCOME_UPSTREAM_ERROR);
    assert_all_available(kp);
    assert_counters(kp, 0, 1, 0, 0, 1);
}

static void test_extra_failover_status(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp, "failover=429,401,403,503", "cooldown=20");
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 503, { JSON_HEADERS, NULL }, { "{\"error\":{\"message\":\"overloaded\"}}", NULL },
          AIB_XFER_OK, NULL },
        { 200, { JSON_HEADERS, NULL }, { OK_BODY, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 2);
    assert_key(kp, 0, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + 20000);
    assert_int_equal(rec.status, 200);
    assert_string_equal(body_of(), OK_BODY);
}

static void test_anthropic_529_relayed(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = ANTHROPIC(kp, "failover=429,401,403,529");
    aib_interception_t *ic = interception(pv, MESSAGES, 0);
    static const char body[] =
        "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}";
    const step_t steps[] = {
        { 529, { JSON_HEADERS, NULL }, { body, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 1);
    assert_int_equal(rec.status, 529);
    assert_string_equal(body_of(), body);
    assert_all_available(kp);
}

/* ---- bring your own key ------------------------------------------------ */

static void test_byok_single_attempt(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 429, { JSON_HEADERS, "Retry-After", "9", NULL }, { RATE_LIMIT_BODY, NULL },
          AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    ic->client_key = "sk-client-own-key-0000";
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 1);
    assert_string_equal(apr_table_get(transport.calls[0].headers, "Authorization"),
                        "Bearer sk-client-own-key-0000");
    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.status, 429);
    assert_string_equal(header("Retry-After"), "9");
    assert_string_equal(body_of(), RATE_LIMIT_BODY);
    assert_int_equal(ic->outcome, AIB_OUTCOME_UPSTREAM_ERROR);
    assert_int_equal(ic->attempts, 1);
    assert_string_equal(ic->key_hint, "byok");
    assert_all_available(kp);
    assert_counters(kp, 0, 0, 0, 0, 0);
    assert_counters(kp, 1, 0, 0, 0, 0);
}

static void test_byok_401_relayed(void **state)
{
    aib_provider_t *pv = ANTHROPIC(NULL, "byok=on");
    aib_interception_t *ic = interception(pv, MESSAGES, 0);
    static const char body[] =
        "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\","
        "\"message\":\"invalid x-api-key\"}}";
    const step_t steps[] = {
        { 401, { JSON_HEADERS, NULL }, { body, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    ic->client_key = "sk-ant-client";
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 1);
    assert_string_equal(apr_table_get(transport.calls[0].headers, "x-api-key"), "sk-ant-client");
    assert_null(apr_table_get(transport.calls[0].headers, "Authorization"));
    assert_int_equal(rec.status, 401);
    assert_string_equal(body_of(), body);
    assert_int_equal(ic->outcome, AIB_OUTCOME_UPSTREAM_ERROR);
}

static void test_byok_ok(void **state)
{
    aib_provider_t *pv = OPENAI(NULL, "byok=on");
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 200, { JSON_HEADERS, NULL }, { OK_BODY, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    ic->client_key = "sk-mine";
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 1);
    assert_int_equal(rec.status, 200);
    assert_string_equal(body_of(), OK_BODY);
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
}

/* ---- transport failures ------------------------------------------------ */

static void test_connect_error(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 0, { NULL }, { NULL }, AIB_XFER_CONNECT, "Could not resolve host: api.openai.com" },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 1);
    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.status, 502);
    assert_string_equal(header("Content-Type"), "application/json");
    assert_string_equal(body_of(),
                        openai_error("upstream unreachable: Could not resolve host: api.openai.com",
                                     "api_error", "server_error"));
    assert_int_equal(ic->status, 502);
    assert_int_equal(ic->outcome, AIB_OUTCOME_TRANSPORT_ERROR);
    assert_string_equal(aib_outcome_name(ic->outcome), "transport_error");
    assert_int_equal(ic->attempts, 1);
    assert_all_available(kp);
    assert_counters(kp, 0, 1, 0, 0, 0);
    assert_true(logged(AIB_LOG_ERROR, "unreachable"));
}

static void test_connect_error_anthropic(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic = interception(pv, MESSAGES, 0);
    const step_t steps[] = {
        { 0, { NULL }, { NULL }, AIB_XFER_CONNECT, "Connection refused" },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 1);
    assert_int_equal(rec.status, 502);
    assert_string_equal(body_of(), anthropic_error("api_error",
                                                   "upstream unreachable: Connection refused"));
    assert_all_available(kp);
}

static void test_timeout(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 0, { NULL }, { NULL }, AIB_XFER_TIMEOUT, "Operation timed out" },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 1);
    assert_int_equal(rec.status, 504);
    assert_string_equal(body_of(), openai_error("upstream timed out: Operation timed out",
                                                "api_error", "timeout"));
    assert_int_equal(ic->status, 504);
    assert_int_equal(ic->outcome, AIB_OUTCOME_TRANSPORT_ERROR);
    assert_all_available(kp);
}

static void test_timeout_anthropic(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic = interception(pv, MESSAGES, 0);
    const step_t steps[] = {
        { 0, { NULL }, { NULL }, AIB_XFER_TIMEOUT, "idle" },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_int_equal(rec.status, 504);
    assert_string_equal(body_of(), anthropic_error("timeout_error", "upstream timed out: idle"));
}

static void test_broken_before_response(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 0, { NULL }, { NULL }, AIB_XFER_BROKEN, "Connection reset by peer" },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 1);
    assert_int_equal(rec.status, 502);
    assert_string_equal(body_of(),
                        openai_error("upstream connection broken: Connection reset by peer",
                                     "api_error", "server_error"));
    assert_int_equal(rec.fails, 0);
    assert_all_available(kp);
}

static void test_non_sse_broken_after_commit(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 200, { JSON_HEADERS, "Content-Length", "62", NULL }, { "{\"id\":\"chatcmpl-1\",", NULL },
          AIB_XFER_BROKEN, "transfer closed with 43 bytes remaining to read" },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 1);
    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.status, 200);
    /* What arrived, and nothing after: no error JSON glued to it. */
    assert_string_equal(body_of(), "{\"id\":\"chatcmpl-1\",");
    assert_int_equal(rec.fails, 1);
    assert_int_equal(rec.writes_after_fail, 0);
    assert_int_equal(ic->outcome, AIB_OUTCOME_TRANSPORT_ERROR);
    assert_all_available(kp);
}

/* Headers, then nothing: no byte reached the client, so it still gets the
 * provider's error in place of the upstream's headers. */
static void test_non_sse_timeout_before_body(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 200, { JSON_HEADERS, "Content-Length", "62", NULL }, { NULL },
          AIB_XFER_TIMEOUT, "no data for 1000 ms" },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 1);
    assert_int_equal(rec.starts, 2);
    assert_int_equal(rec.status, 504);
    assert_string_equal(body_of(), openai_error("upstream timed out: no data for 1000 ms",
                                                "api_error", "timeout"));
    assert_int_equal(rec.fails, 0);
    assert_int_equal(ic->status, 504);
    assert_int_equal(ic->outcome, AIB_OUTCOME_TRANSPORT_ERROR);
    assert_all_available(kp);
}

/* ---- streams ----------------------------------------------------------- */

#define SSE_HEADERS "Content-Type", "text/event-stream; charset=utf-8"

static void assert_all_flushed(void)
{
    assert_true(rec.writes > 0);
    assert_int_equal(rec.flushed_writes, rec.writes);
}

static void test_stream_chat_broken(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 1);
    const step_t steps[] = {
        { 200, { SSE_HEADERS, NULL },
          { "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n", NULL },
          AIB_XFER_BROKEN, "Connection reset by peer" },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 1);
    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.status, 200);
    assert_string_equal(header("Content-Type"), "text/event-stream; charset=utf-8");
    assert_string_equal(body_of(),
        "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n"
        "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n"
        "data: {\"error\":{\"message\":\"upstream connection broken: Connection reset by peer\","
        "\"type\":\"api_error\",\"param\":null,\"code\":\"server_error\"}}\n\n");
    assert_int_equal(rec.writes, 3);
    assert_all_flushed();
    assert_int_equal(rec.fails, 0);
    assert_int_equal(ic->status, 200);
    assert_int_equal(ic->outcome, AIB_OUTCOME_TRANSPORT_ERROR);
    assert_all_available(kp);
}

static void test_stream_responses_broken(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, RESPONSES, 1);
    const step_t steps[] = {
        { 200, { SSE_HEADERS, NULL },
          { "event: response.created\n"
            "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{}}\n\n"
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",",
            /* The event cut between chunks. */
            "\"delta\":\"Hi\",\"sequence_number\":41}\n\n", NULL },
          AIB_XFER_BROKEN, "reset" },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(rec.status, 200);
    assert_string_equal(body_of(),
        "event: response.created\n"
        "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{}}\n\n"
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\","
        "\"delta\":\"Hi\",\"sequence_number\":41}\n\n"
        "event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\","
        "\"message\":\"upstream connection broken: reset\",\"param\":null,"
        "\"sequence_number\":42}\n\n");
    assert_all_flushed();
    assert_int_equal(ic->outcome, AIB_OUTCOME_TRANSPORT_ERROR);
}

static void test_stream_responses_broken_before_any_event(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, RESPONSES, 1);
    const step_t steps[] = {
        { 200, { SSE_HEADERS, NULL }, { NULL }, AIB_XFER_TIMEOUT, "idle" },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_int_equal(rec.status, 200);
    assert_string_equal(body_of(),
        "event: error\ndata: {\"type\":\"error\",\"code\":\"timeout\","
        "\"message\":\"upstream timed out: idle\",\"param\":null,\"sequence_number\":0}\n\n");
    assert_all_flushed();
}

static void test_stream_anthropic_broken(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic = interception(pv, MESSAGES, 1);
    const step_t steps[] = {
        { 200, { SSE_HEADERS, "request-id", "req_ant", NULL },
          { "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
            "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n", NULL },
          AIB_XFER_BROKEN, "reset" },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(rec.status, 200);
    assert_string_equal(header("request-id"), "req_ant");
    assert_string_equal(body_of(),
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
        "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n"
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\","
        "\"message\":\"upstream connection broken: reset\"}}\n\n");
    assert_int_equal(rec.writes, 3);
    assert_all_flushed();
    assert_int_equal(rec.fails, 0);
    assert_int_equal(ic->outcome, AIB_OUTCOME_TRANSPORT_ERROR);
}

#define INCOMPLETE_MESSAGE "upstream stream ended before completion"

static void test_stream_chat_ends_without_done(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 1);
    const step_t steps[] = {
        { 200, { SSE_HEADERS, NULL }, { "data: {\"id\":1}\n\n", "data: {\"id\":2}\n\n", NULL },
          AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_string_equal(body_of(),
        "data: {\"id\":1}\n\ndata: {\"id\":2}\n\n"
        "data: {\"error\":{\"message\":\"" INCOMPLETE_MESSAGE "\",\"type\":\"api_error\","
        "\"param\":null,\"code\":\"server_error\"}}\n\n");
    assert_all_flushed();
    assert_int_equal(rec.fails, 0);
    assert_int_equal(ic->outcome, AIB_OUTCOME_TRANSPORT_ERROR);
    assert_true(logged(AIB_LOG_ERROR, "before its final event"));
}

static void test_stream_responses_ends_without_completed(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, RESPONSES, 1);
    const step_t steps[] = {
        { 200, { SSE_HEADERS, NULL },
          { "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0}\n\n",
            "event: response.output_text.done\n"
            "data: {\"type\":\"response.output_text.done\",\"sequence_number\":1}\n\n", NULL },
          AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_non_null(strstr(body_of(), "\"sequence_number\":1}\n\nevent: error\ndata: "));
    assert_non_null(strstr(body_of(), "\"message\":\"" INCOMPLETE_MESSAGE "\""));
    assert_non_null(strstr(body_of(), "\"sequence_number\":2}\n\n"));
    assert_all_flushed();
    assert_int_equal(ic->outcome, AIB_OUTCOME_TRANSPORT_ERROR);
}

static void test_stream_anthropic_ends_without_stop(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic = interception(pv, MESSAGES, 1);
    const step_t steps[] = {
        { 200, { SSE_HEADERS, NULL },
          { "event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\"}\n\n", NULL },
          AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_string_equal(body_of(),
        "event: message_start\ndata: {\"type\":\"message_start\"}\n\n"
        "event: message_delta\ndata: {\"type\":\"message_delta\"}\n\n"
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\","
        "\"message\":\"" INCOMPLETE_MESSAGE "\"}}\n\n");
    assert_all_flushed();
    assert_int_equal(ic->outcome, AIB_OUTCOME_TRANSPORT_ERROR);
}

/* A complete stream: exactly the upstream's bytes, nothing appended. */
static void run_complete_stream(aib_provider_t *pv, const char *path, const char *const *chunks)
{
    aib_interception_t *ic = interception(pv, path, 1);
    step_t steps[1];
    const char *expected = "";
    int i;

    memset(steps, 0, sizeof(steps));
    steps[0].status = 200;
    steps[0].headers[0] = "Content-Type";
    steps[0].headers[1] = "text/event-stream";
    for (i = 0; chunks[i]; i++) {
        steps[0].chunks[i] = chunks[i];
        expected = apr_pstrcat(pool, expected, chunks[i], NULL);
    }
    steps[0].result = AIB_XFER_OK;
    memset(&rec, 0, sizeof(rec));
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_int_equal(rec.status, 200);
    assert_string_equal(body_of(), expected);
    assert_int_equal(rec.writes, i);
    assert_all_flushed();
    assert_int_equal(rec.fails, 0);
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
}

static void test_stream_complete(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    static const char *const chat[] = {
        "data: {\"id\":1}\n\n", "data: {\"id\":2}\n\n", "data: [DONE]\n\n", NULL
    };
    /* [DONE] cut across chunks, CRLF line ends. */
    static const char *const chat_split[] = {
        "data: {\"id\":1}\r\n\r\ndata: [DO", "NE]\r", "\n\r\n", NULL
    };
    /* The upstream's own error chunk is its last word. */
    static const char *const chat_error[] = {
        "data: {\"id\":1}\n\n", "data: {\"error\":{\"message\":\"overloaded\"}}\n\n", NULL
    };
    static const char *const responses[] = {
        "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":1}\n\n",
        NULL
    };
    static const char *const responses_incomplete[] = {
        "event: response.incomplete\ndata: {\"type\":\"response.incomplete\"}\n\n", NULL
    };
    static const char *const messages[] = {
        "event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n", NULL
    };
    static const char *const messages_error[] = {
        "event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n",
        NULL
    };

    (void)state;
    run_complete_stream(OPENAI(kp), CHAT, chat);
    run_complete_stream(OPENAI(kp), CHAT, chat_split);
    run_complete_stream(OPENAI(kp), CHAT, chat_error);
    run_complete_stream(OPENAI(kp), RESPONSES, responses);
    run_complete_stream(OPENAI(kp), RESPONSES, responses_incomplete);
    run_complete_stream(ANTHROPIC(kp), MESSAGES, messages);
    run_complete_stream(ANTHROPIC(kp), MESSAGES, messages_error);
}

/* The answer was whole; a connection cut after its last event must not
 * turn it into an error (the Anthropic SDK raises on any error event). */
static void test_stream_broken_after_final_event(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic = interception(pv, MESSAGES, 1);
    const step_t steps[] = {
        { 200, { SSE_HEADERS, NULL },
          { "event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n", NULL },
          AIB_XFER_BROKEN, "transfer closed with outstanding read data remaining" },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_string_equal(body_of(),
        "event: message_start\ndata: {\"type\":\"message_start\"}\n\n"
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    assert_int_equal(rec.fails, 0);
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
}

/* A stream the client did not ask for is still relayed event by event. */
static void test_failover_then_stream(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 1);
    const step_t steps[] = {
        { 429, { JSON_HEADERS, "Retry-After", "3", NULL }, { RATE_LIMIT_BODY, NULL },
          AIB_XFER_OK, NULL },
        { 200, { SSE_HEADERS, NULL }, { "data: {\"id\":1}\n\n", "data: [DONE]\n\n", NULL },
          AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 2);
    assert_int_equal(rec.starts, 1);
    assert_string_equal(body_of(), "data: {\"id\":1}\n\ndata: [DONE]\n\n");
    assert_int_equal(rec.writes, 2);
    assert_all_flushed();
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
    assert_key(kp, 0, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + 3000);
}

/* ---- first-event inspection -------------------------------------------- */
/* A 2xx stream is held back until its first event is whole: an error event
 * that is a key's failure fails over like its status would. */

#define ANT_ERROR_EVENT(type, message) \
    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"" type "\"," \
    "\"message\":\"" message "\"}}\n\n"
#define ANT_RATE_LIMIT_EVENT \
    ANT_ERROR_EVENT("rate_limit_error", "Number of request tokens has exceeded your rate limit")
#define ANT_START "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n"
#define ANT_DELTA "event: content_block_delta\ndata: {\"type\":\"content_block_delta\"," \
    "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n"
#define ANT_STOP "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"

static void assert_anthropic_call(int n, const char *tag)
{
    const apr_table_t *h = transport.calls[n].headers;

    assert_string_equal(apr_table_get(h, "x-api-key"), key_value(tag));
    assert_null(apr_table_get(h, "Authorization"));
}

static void test_first_event_rate_limit_fails_over(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic = interception(pv, MESSAGES, 1);
    const step_t steps[] = {
        { 200, { SSE_HEADERS, "retry-after", "7", "request-id", "req_1", NULL },
          { ANT_RATE_LIMIT_EVENT, ANT_STOP, NULL }, AIB_XFER_OK, NULL },
        { 200, { SSE_HEADERS, "request-id", "req_2", NULL },
          { ANT_START, ANT_DELTA, ANT_STOP, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 2);
    assert_anthropic_call(0, "a");
    assert_anthropic_call(1, "b");
    /* The first attempt ended at its first event. */
    assert_true(transport.calls[0].stopped);
    assert_int_equal(transport.calls[0].chunks_delivered, 0);
    /* The 200's own retry-after set the cooldown, as on a 429. */
    assert_key(kp, 0, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + 7000);
    ASSERT_AVAILABLE(kp, 1);
    assert_counters(kp, 0, 1, 1, 0, 0);
    assert_counters(kp, 1, 1, 0, 0, 0);

    /* The sink saw the second attempt only. */
    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.status, 200);
    assert_string_equal(header("request-id"), "req_2");
    assert_string_equal(body_of(), ANT_START ANT_DELTA ANT_STOP);
    assert_int_equal(rec.writes_before_start, 0);
    assert_all_flushed();
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
    assert_int_equal(ic->attempts, 2);
    assert_string_equal(ic->key_hint, hint(kp, 1));
    assert_true(logged(AIB_LOG_INFO, "answered 200 with an error event"));
    assert_true(logged(AIB_LOG_INFO, "Retry-After"));
    assert_no_secret(kp);
}

static void test_first_event_auth_errors_disable(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", "c", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic = interception(pv, MESSAGES, 1);
    const step_t steps[] = {
        { 200, { SSE_HEADERS, NULL },
          { ANT_ERROR_EVENT("authentication_error", "invalid x-api-key"), NULL },
          AIB_XFER_OK, NULL },
        { 200, { SSE_HEADERS, NULL },
          { ANT_ERROR_EVENT("permission_error", "not allowed"), NULL }, AIB_XFER_OK, NULL },
        { 200, { SSE_HEADERS, NULL }, { ANT_START, ANT_STOP, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 3);
    assert_key(kp, 0, AIB_KEY_DISABLED, AIB_REASON_UNAUTHORIZED, AIB_FOREVER);
    assert_key(kp, 1, AIB_KEY_DISABLED, AIB_REASON_FORBIDDEN, AIB_FOREVER);
    ASSERT_AVAILABLE(kp, 2);
    assert_counters(kp, 0, 1, 0, 1, 0);
    assert_counters(kp, 1, 1, 0, 0, 1);
    assert_int_equal(rec.starts, 1);
    assert_string_equal(body_of(), ANT_START ANT_STOP);
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
}

/* Every key's first event a rate limit: the pool's 429, nothing else. */
static void test_first_event_rate_limit_exhausts(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic = interception(pv, MESSAGES, 1);
    const step_t steps[] = {
        { 200, { SSE_HEADERS, "retry-after", "9", NULL }, { ANT_RATE_LIMIT_EVENT, NULL },
          AIB_XFER_OK, NULL },
        { 200, { SSE_HEADERS, "retry-after", "4", NULL }, { ANT_RATE_LIMIT_EVENT, NULL },
          AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 2);
    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.status, 429);
    assert_string_equal(header("Retry-After"), "4");
    assert_string_equal(body_of(), anthropic_error("rate_limit_error",
                        "all configured keys are rate-limited (retry after 4s)"));
    assert_int_equal(ic->outcome, AIB_OUTCOME_EXHAUSTED);
}

/* An error that is not the key's: relayed as the upstream's last word. */
static void test_first_event_overloaded_relayed(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic = interception(pv, MESSAGES, 1);
    const step_t steps[] = {
        { 200, { SSE_HEADERS, "retry-after", "7", NULL },
          { ANT_ERROR_EVENT("overloaded_error", "Overloaded"), NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 1);
    assert_false(transport.calls[0].stopped);
    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.status, 200);
    assert_string_equal(body_of(), ANT_ERROR_EVENT("overloaded_error", "Overloaded"));
    assert_all_flushed();
    assert_int_equal(rec.fails, 0);
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
    assert_all_available(kp);
    assert_counters(kp, 0, 1, 0, 0, 0);
}

static void test_first_event_split_across_chunks(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic = interception(pv, MESSAGES, 1);
    /* The error event in four pieces, the blank line that ends it last. */
    const step_t steps[] = {
        { 200, { SSE_HEADERS, NULL },
          { "event: err", "or\ndata: {\"type\":\"error\",\"error\":{\"type\":\"rate_",
            "limit_error\",\"message\":\"slow down\"}}\n", "\n", NULL }, AIB_XFER_OK, NULL },
        /* A good first event in three pieces, then two more chunks. */
        { 200, { SSE_HEADERS, NULL },
          { "event: message_start\nda", "ta: {\"type\":\"message_start\",\"message\":{}}\n",
            "\n", ANT_DELTA, ANT_STOP, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 2);
    assert_int_equal(transport.calls[0].chunks_delivered, 3);   /* stopped at the 4th */
    assert_true(transport.calls[0].stopped);
    assert_key(kp, 0, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + pv->cooldown_ms);
    assert_int_equal(rec.starts, 1);
    assert_string_equal(body_of(), ANT_START ANT_DELTA ANT_STOP);
    assert_null(strstr(body_of(), "slow down"));
    /* Held until its first event was whole, then relayed chunk by chunk. */
    assert_int_equal(rec.writes, 3);
    assert_all_flushed();
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
}

/* A first event larger than the hold (64 KiB) is no error event: every
 * byte is relayed, in order. */
static void test_first_event_larger_than_hold(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    const apr_size_t text_len = 100 * 1024;
    char *text = apr_palloc(pool, text_len + 1);
    const char *event, *expected;
    apr_size_t len, i;
    step_t steps[1];
    aib_interception_t *ic;
    int split;

    (void)state;
    for (i = 0; i < text_len; i++)
        text[i] = (char)('a' + i % 26);
    text[text_len] = '\0';
    event = apr_pstrcat(pool, "event: message_start\ndata: {\"type\":\"message_start\","
                        "\"message\":{\"content\":\"", text, "\"}}\n\n", NULL);
    len = strlen(event);
    expected = apr_pstrcat(pool, event, ANT_DELTA, ANT_STOP, NULL);

    /* One chunk past the hold; then 30000-byte chunks, the hold overflowing
     * in the middle of the third. */
    for (split = 0; split < 2; split++) {
        int n = 0;
        apr_size_t at;

        memset(&rec, 0, sizeof(rec));
        memset(steps, 0, sizeof(steps));
        steps[0].status = 200;
        steps[0].headers[0] = "Content-Type";
        steps[0].headers[1] = "text/event-stream";
        if (!split)
            steps[0].chunks[n++] = event;
        else
            for (at = 0; at < len; at += 30000)
                steps[0].chunks[n++] = apr_pstrmemdup(pool, event + at,
                                                      len - at < 30000 ? len - at : 30000);
        steps[0].chunks[n++] = ANT_DELTA;
        steps[0].chunks[n++] = ANT_STOP;
        steps[0].result = AIB_XFER_OK;
        SCRIPT(steps);
        ic = interception(pv, MESSAGES, 1);
        aib_bridge_run(ic);

        assert_int_equal(transport.ncalls, 1);
        assert_int_equal(rec.starts, 1);
        assert_int_equal(rec.status, 200);
        assert_int_equal(rec.writes_before_start, 0);
        assert_int_equal(rec.body.len, strlen(expected));
        assert_memory_equal(rec.body.data, expected, rec.body.len);
        assert_all_flushed();
        assert_int_equal(rec.fails, 0);
        assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
        assert_all_available(kp);
    }
}

/* The stream ends (or breaks) before its first event is whole: what was
 * held goes out, then the module's error event. */
static void test_first_event_never_completes(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic = interception(pv, MESSAGES, 1);
    const step_t ends[] = {
        { 200, { SSE_HEADERS, NULL },
          { "event: message_start\n", "data: {\"type\":\"message_st", NULL }, AIB_XFER_OK, NULL },
    };
    const step_t breaks[] = {
        { 200, { SSE_HEADERS, NULL }, { "event: error\ndata: {\"type\":\"err", NULL },
          AIB_XFER_BROKEN, "reset" },
    };

    (void)state;
    SCRIPT(ends);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 1);
    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.status, 200);
    assert_string_equal(body_of(),
        "event: message_start\ndata: {\"type\":\"message_st"
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\","
        "\"message\":\"" INCOMPLETE_MESSAGE "\"}}\n\n");
    assert_all_flushed();
    assert_int_equal(ic->outcome, AIB_OUTCOME_TRANSPORT_ERROR);
    assert_all_available(kp);

    memset(&rec, 0, sizeof(rec));
    SCRIPT(breaks);
    ic = interception(pv, MESSAGES, 1);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 1);
    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.status, 200);
    assert_string_equal(body_of(),
        "event: error\ndata: {\"type\":\"err"
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\","
        "\"message\":\"upstream connection broken: reset\"}}\n\n");
    assert_int_equal(ic->outcome, AIB_OUTCOME_TRANSPORT_ERROR);
    assert_all_available(kp);
}

/* failover=429: an authentication_error event is no failover here. */
static void test_first_event_outside_failover_set_relayed(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = ANTHROPIC(kp, "failover=429");
    aib_interception_t *ic = interception(pv, MESSAGES, 1);
    const step_t steps[] = {
        { 200, { SSE_HEADERS, NULL },
          { ANT_ERROR_EVENT("authentication_error", "invalid x-api-key"), NULL },
          AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 1);
    assert_int_equal(rec.status, 200);
    assert_string_equal(body_of(), ANT_ERROR_EVENT("authentication_error", "invalid x-api-key"));
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
    assert_all_available(kp);
    assert_counters(kp, 0, 1, 0, 0, 0);
}

/* The client's own key: one attempt, relayed chunk by chunk as it comes. */
static void test_first_event_byok_not_held(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = ANTHROPIC(kp, "byok=on");
    aib_interception_t *ic = interception(pv, MESSAGES, 1);
    const step_t steps[] = {
        { 200, { SSE_HEADERS, NULL },
          { "event: error\ndata: {\"type\":\"error\",",
            "\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow down\"}}\n\n", NULL },
          AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    ic->client_key = "sk-ant-client";
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 1);
    assert_string_equal(apr_table_get(transport.calls[0].headers, "x-api-key"), "sk-ant-client");
    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.status, 200);
    assert_string_equal(body_of(), ANT_ERROR_EVENT("rate_limit_error", "slow down"));
    /* Not held: the cut first event went out in its two pieces. */
    assert_int_equal(rec.writes, 2);
    assert_all_flushed();
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
    assert_all_available(kp);
    assert_counters(kp, 0, 0, 0, 0, 0);
}

/* OpenAI's disguises: a Chat error chunk, a Responses error event. */
static void test_first_event_openai(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", "c", NULL);
    aib_provider_t *pv = OPENAI(kp, "max-cooldown=900");
    aib_interception_t *ic = interception(pv, CHAT, 1);
    const step_t chat[] = {
        { 200, { SSE_HEADERS, "retry-after-ms", "2500", NULL },
          { "data: " RATE_LIMIT_BODY "\n\n", NULL }, AIB_XFER_OK, NULL },
        { 200, { SSE_HEADERS, NULL }, { "data: {\"id\":1}\n\n", "data: [DONE]\n\n", NULL },
          AIB_XFER_OK, NULL },
    };
    const step_t responses[] = {
        { 200, { SSE_HEADERS, NULL },
          { "event: error\ndata: {\"type\":\"error\",\"code\":\"insufficient_quota\","
            "\"message\":\"You exceeded your current quota\",\"param\":null,"
            "\"sequence_number\":0}\n\n", NULL }, AIB_XFER_OK, NULL },
        { 200, { SSE_HEADERS, NULL },
          { "event: response.completed\ndata: {\"type\":\"response.completed\","
            "\"sequence_number\":0}\n\n", NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(chat);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 2);
    assert_openai_call(1, "b");
    assert_key(kp, 0, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + 2500);
    assert_string_equal(body_of(), "data: {\"id\":1}\n\ndata: [DONE]\n\n");
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);

    memset(&rec, 0, sizeof(rec));
    SCRIPT(responses);
    ic = interception(pv, RESPONSES, 1);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 2);
    assert_openai_call(0, "b");
    assert_openai_call(1, "c");
    assert_key(kp, 1, AIB_KEY_COOLING, AIB_REASON_QUOTA, NOW + 900000);
    assert_null(strstr(body_of(), "quota"));
    assert_int_equal(rec.starts, 1);
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
}

/* ---- the client goes away ---------------------------------------------- */

static void test_client_gone_on_write(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 1);
    const step_t steps[] = {
        { 200, { SSE_HEADERS, NULL },
          { "data: {\"id\":1}\n\n", "data: {\"id\":2}\n\n", "data: {\"id\":3}\n\n",
            "data: [DONE]\n\n", NULL },
          AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    rec.refuse_write = 2;
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 1);
    assert_true(transport.calls[0].stopped);
    assert_int_equal(transport.calls[0].chunks_delivered, 1);
    assert_int_equal(rec.writes, 2);        /* nothing tried after the refusal */
    assert_string_equal(body_of(), "data: {\"id\":1}\n\n");
    assert_int_equal(ic->outcome, AIB_OUTCOME_CLIENT_ABORT);
    assert_string_equal(aib_outcome_name(ic->outcome), "client_abort");
    assert_int_equal(ic->status, 200);
    assert_all_available(kp);
    assert_true(logged(AIB_LOG_INFO, "client went away"));
}

static void test_client_gone_while_waiting(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 429, { JSON_HEADERS, NULL }, { RATE_LIMIT_BODY, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    rec.gone = 1;
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 1);          /* no failover for a gone client */
    assert_true(transport.calls[0].stopped);
    assert_int_equal(rec.starts, 0);
    assert_int_equal(rec.writes, 0);
    assert_int_equal(ic->status, 499);
    assert_int_equal(ic->outcome, AIB_OUTCOME_CLIENT_ABORT);
    assert_all_available(kp);
}

static void test_client_gone_mid_stream_tick(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic = interception(pv, MESSAGES, 1);
    const step_t steps[] = {
        { 200, { SSE_HEADERS, NULL },
          { "event: message_start\ndata: {}\n\n", "event: content_block_delta\ndata: {}\n\n",
            "event: message_stop\ndata: {}\n\n", NULL },
          AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    /* Gone after the first chunk: the tick that follows it notices. */
    rec.gone_after_writes = 1;
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 1);
    assert_true(transport.calls[0].stopped);
    assert_int_equal(transport.calls[0].chunks_delivered, 1);
    assert_string_equal(body_of(), "event: message_start\ndata: {}\n\n");
    /* No error event pushed at a client that is gone. */
    assert_int_equal(rec.writes, 1);
    assert_int_equal(rec.fails, 0);
    assert_int_equal(ic->outcome, AIB_OUTCOME_CLIENT_ABORT);
    assert_int_equal(ic->status, 200);
}

static void test_client_gone_on_first_write(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, CHAT, 0);
    const step_t steps[] = {
        { 200, { JSON_HEADERS, NULL }, { OK_BODY, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    rec.refuse_write = 1;
    aib_bridge_run(ic);
    assert_true(transport.calls[0].stopped);
    assert_int_equal(transport.calls[0].chunks_delivered, 0);
    assert_int_equal(rec.writes, 1);
    assert_int_equal(rec.fails, 0);
    assert_int_equal(ic->outcome, AIB_OUTCOME_CLIENT_ABORT);
}

/* ---- credentials ------------------------------------------------------- */

static void test_anthropic_credentials(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic = interception(pv, MESSAGES, 0);
    apr_table_t *h;
    const step_t steps[] = {
        { 401, { JSON_HEADERS, NULL }, { "{}", NULL }, AIB_XFER_OK, NULL },
        { 200, { JSON_HEADERS, NULL }, { "{\"type\":\"message\"}", NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 2);
    assert_string_equal(transport.calls[0].url, "https://api.anthropic.com/v1/messages");
    h = transport.calls[0].headers;
    assert_string_equal(apr_table_get(h, "x-api-key"), key_value("a"));
    assert_null(apr_table_get(h, "Authorization"));
    assert_string_equal(apr_table_get(h, "anthropic-version"), "2023-06-01");
    h = transport.calls[1].headers;
    assert_string_equal(apr_table_get(h, "x-api-key"), key_value("b"));
    assert_null(apr_table_get(h, "Authorization"));
    assert_string_equal(apr_table_get(h, "anthropic-version"), "2023-06-01");
    /* Content-Type, User-Agent, x-api-key, anthropic-version */
    assert_int_equal(apr_table_elts(h)->nelts, 4);
    assert_int_equal(rec.status, 200);
    assert_string_equal(ic->key_hint, "sk-t...keyb");
}

static void test_anthropic_keeps_client_version(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic = interception(pv, MESSAGES, 0);
    apr_table_t *h = apr_table_copy(pool, ic->headers);
    const apr_array_header_t *arr;
    const apr_table_entry_t *e;
    int i, versions = 0;
    const step_t steps[] = {
        { 200, { JSON_HEADERS, NULL }, { "{}", NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    apr_table_setn(h, "Anthropic-Version", "2024-10-22");
    apr_table_setn(h, "anthropic-beta", "prompt-caching-2024-07-31");
    /* Would the client's Authorization slip through, it must not reach upstream. */
    apr_table_setn(h, "Authorization", "Bearer leaked");
    ic->headers = h;
    SCRIPT(steps);
    aib_bridge_run(ic);

    h = transport.calls[0].headers;
    arr = apr_table_elts(h);
    e = (const apr_table_entry_t *)arr->elts;
    for (i = 0; i < arr->nelts; i++)
        if (!strcasecmp(e[i].key, "anthropic-version")) {
            versions++;
            assert_string_equal(e[i].val, "2024-10-22");
        }
    assert_int_equal(versions, 1);
    assert_string_equal(apr_table_get(h, "anthropic-beta"), "prompt-caching-2024-07-31");
    assert_string_equal(apr_table_get(h, "x-api-key"), key_value("a"));
    assert_null(apr_table_get(h, "Authorization"));
}

static void test_openai_adds_no_version(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic = interception(pv, RESPONSES, 0);
    const step_t steps[] = {
        { 200, { JSON_HEADERS, NULL }, { "{}", NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    aib_bridge_run(ic);
    assert_string_equal(transport.calls[0].url, "https://api.openai.com/v1/responses");
    assert_null(apr_table_get(transport.calls[0].headers, "anthropic-version"));
    assert_openai_call(0, "a");
}

/* ---- counters over several requests ------------------------------------ */

static void test_counters(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", "c", NULL);
    aib_provider_t *pv = OPENAI(kp, "disable-for=10");
    const step_t first[] = {
        { 429, { "Retry-After", "1", NULL }, { RATE_LIMIT_BODY, NULL }, AIB_XFER_OK, NULL },
        { 401, { NULL }, { INVALID_KEY_BODY, NULL }, AIB_XFER_OK, NULL },
        { 403, { NULL }, { FORBIDDEN_BODY, NULL }, AIB_XFER_OK, NULL },
    };
    const step_t second[] = {
        { 200, { JSON_HEADERS, NULL }, { OK_BODY, NULL }, AIB_XFER_OK, NULL },
    };
    aib_interception_t *ic;

    (void)state;
    SCRIPT(first);
    ic = interception(pv, CHAT, 0);
    aib_bridge_run(ic);
    assert_int_equal(rec.status, 429);
    assert_string_equal(header("Retry-After"), "1");
    assert_counters(kp, 0, 1, 1, 0, 0);
    assert_counters(kp, 1, 1, 0, 1, 0);
    assert_counters(kp, 2, 1, 0, 0, 1);

    /* One second on: a is back, b and c are still disabled. */
    clock_ms = NOW + 1000;
    memset(&rec, 0, sizeof(rec));
    SCRIPT(second);
    ic = interception(pv, CHAT, 0);
    aib_bridge_run(ic);
    assert_int_equal(transport.ncalls, 1);
    assert_openai_call(0, "a");
    assert_counters(kp, 0, 2, 1, 0, 0);
    assert_counters(kp, 1, 1, 0, 1, 0);
    assert_counters(kp, 2, 1, 0, 0, 1);
    ASSERT_I64(slot(kp, 0).last_used_ms, NOW + 1000);
    ASSERT_I64(slot(kp, 1).last_used_ms, NOW);
}

/* ---- aib_bridge_reject -------------------------------------------------- */

static void test_reject(void **state)
{
    aib_provider_t *pv = OPENAI(NULL, "byok=on");
    aib_interception_t *ic;

    (void)state;
    ic = interception(pv, CHAT, 0);
    ic->outcome = AIB_OUTCOME_OK;
    aib_bridge_reject(ic, AIB_ERROR_METHOD, "GET is not allowed here", "POST", 0);
    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.status, 405);
    assert_string_equal(header("Allow"), "POST");
    assert_string_equal(header("Content-Type"), "application/json");
    assert_null(header("Retry-After"));
    assert_string_equal(body_of(), openai_error("GET is not allowed here",
                                                "invalid_request_error", "method_not_allowed"));
    assert_int_equal(ic->status, 405);
    assert_int_equal(ic->outcome, AIB_OUTCOME_REJECTED);
    assert_string_equal(aib_outcome_name(ic->outcome), "rejected");

    memset(&rec, 0, sizeof(rec));
    ic = interception(pv, CHAT, 0);
    ic->outcome = AIB_OUTCOME_OK;
    aib_bridge_reject(ic, AIB_ERROR_RATE_LIMIT, "slow down \"now\"", NULL, 12);
    assert_int_equal(rec.status, 429);
    assert_string_equal(header("Retry-After"), "12");
    assert_null(header("Allow"));
    assert_string_equal(body_of(), "{\"error\":{\"message\":\"slow down \\\"now\\\"\","
                        "\"type\":\"rate_limit_error\",\"param\":null,"
                        "\"code\":\"rate_limit_exceeded\"}}");

    memset(&rec, 0, sizeof(rec));
    ic = interception(pv, CHAT, 0);
    ic->outcome = AIB_OUTCOME_OK;
    aib_bridge_reject(ic, AIB_ERROR_TOO_LARGE, "too large", NULL, 0);
    assert_int_equal(rec.status, 413);
    assert_null(header("Retry-After"));

    /* An outcome already decided stays. */
    memset(&rec, 0, sizeof(rec));
    ic = interception(pv, CHAT, 0);
    ic->outcome = AIB_OUTCOME_TRANSPORT_ERROR;
    aib_bridge_reject(ic, AIB_ERROR_UPSTREAM, "x", NULL, 0);
    assert_int_equal(rec.status, 502);
    assert_int_equal(ic->outcome, AIB_OUTCOME_TRANSPORT_ERROR);
}

static void test_reject_anthropic(void **state)
{
    aib_provider_t *pv = ANTHROPIC(NULL, "byok=on");
    aib_interception_t *ic = interception(pv, MESSAGES, 0);

    (void)state;
    ic->outcome = AIB_OUTCOME_OK;
    aib_bridge_reject(ic, AIB_ERROR_NOT_FOUND, "no such route", NULL, 0);
    assert_int_equal(rec.status, 404);
    assert_string_equal(body_of(), anthropic_error("not_found_error", "no such route"));

    memset(&rec, 0, sizeof(rec));
    ic = interception(pv, MESSAGES, 0);
    ic->outcome = AIB_OUTCOME_OK;
    aib_bridge_reject(ic, AIB_ERROR_RATE_LIMIT, "wait", NULL, 3);
    assert_int_equal(rec.status, 429);
    assert_string_equal(header("Retry-After"), "3");
    assert_string_equal(body_of(), anthropic_error("rate_limit_error", "wait"));
}

/* ---- provider hooks ---------------------------------------------------- */
/* A provider that needs more than the table (Bedrock: the model in the
 * path, a signature over the request, a stream framing of its own) gets it
 * through hooks. Each test gives a known provider's ops one hook. */

static aib_provider_ops_t hooked_ops;
static int prepare_calls;

/* The provider's ops with no hook yet, for `pv` to use. */
static aib_provider_ops_t *hooks_of(aib_provider_t *pv)
{
    hooked_ops = *pv->ops;
    pv->ops = &hooked_ops;
    prepare_calls = 0;
    return &hooked_ops;
}

/* Bedrock-like: the model moves into the path, a header into the body. */
static const char *model_into_path(const aib_interception_t *ic, aib_outgoing_t *req)
{
    prepare_calls++;
    if (!ic->model)
        return "the request names no model";
    req->url = apr_pstrcat(ic->pool, ic->provider->base_url, "/model/", ic->model,
                           ic->stream ? "/invoke-with-response-stream" : "/invoke", NULL);
    req->body = apr_psprintf(ic->pool, "{\"agent\":\"%s\",\"client_body_len\":%d}",
                             apr_table_get(req->headers, "User-Agent"), (int)req->body_len);
    req->body_len = strlen(req->body);
    apr_table_unset(req->headers, "User-Agent");
    return NULL;
}

/* A toy signature: FNV-1a over what goes upstream, credential included. */
static const char *toy_signature(const char *method, const char *url, const char *credential,
                                 const char *body, apr_size_t body_len)
{
    const char *parts[] = { method, url, credential };
    uint32_t h = 2166136261u;
    apr_size_t i, j;

    for (i = 0; i < 3; i++)
        for (j = 0; parts[i][j]; j++)
            h = (h ^ (unsigned char)parts[i][j]) * 16777619u;
    for (j = 0; j < body_len; j++)
        h = (h ^ (unsigned char)body[j]) * 16777619u;
    return apr_psprintf(pool, "%08x", h);
}

static const char *sign_request(const aib_interception_t *ic, apr_pool_t *p, const char *key,
                                aib_outgoing_t *req)
{
    (void)ic;
    (void)key;
    apr_table_setn(req->headers, "x-signature",
                   apr_pstrdup(p, toy_signature(req->method, req->url,
                                                apr_table_get(req->headers, "Authorization"),
                                                req->body, req->body_len)));
    return NULL;
}

static void assert_signed(int n)
{
    const call_t *c = &transport.calls[n];

    assert_non_null(apr_table_get(c->headers, "x-signature"));
    assert_string_equal(apr_table_get(c->headers, "x-signature"),
                        toy_signature(c->method, c->url,
                                      apr_table_get(c->headers, "Authorization"),
                                      c->body, c->body_len));
}

/* The toy framing: one "event|data\n" line per event; a line "!why" is a
 * malformed frame, and so is a line cut by the end of the stream. */
typedef struct {
    aib_sse_event_fn *on_event;
    void *ctx;
    char line[512];
    apr_size_t len;
    const char *error;
} toy_decoder_t;

static int toy_is_stream(const apr_table_t *headers)
{
    const char *type = apr_table_get(headers, "Content-Type");
    return type && !strcmp(type, "application/x-toy-stream");
}

static void *toy_create(apr_pool_t *p, apr_size_t max_event, aib_sse_event_fn *on_event,
                        void *ctx)
{
    toy_decoder_t *d = apr_pcalloc(p, sizeof(*d));

    (void)max_event;
    d->on_event = on_event;
    d->ctx = ctx;
    return d;
}

static int toy_feed(void *decoder, const char *buf, apr_size_t len)
{
    toy_decoder_t *d = decoder;
    apr_size_t i;
    char *bar;
    int rv;

    for (i = 0; i < len; i++) {
        if (buf[i] != '\n') {
            assert_true(d->len < sizeof(d->line) - 1);
            d->line[d->len++] = buf[i];
            continue;
        }
        d->line[d->len] = '\0';
        d->len = 0;
        if (d->line[0] == '!') {
            d->error = apr_pstrdup(pool, d->line + 1);
            return AIB_FRAMING_MALFORMED;
        }
        bar = strchr(d->line, '|');
        assert_non_null(bar);
        *bar = '\0';
        rv = d->on_event(d->ctx, d->line, bar + 1, strlen(bar + 1));
        if (rv)
            return rv;
    }
    return 0;
}

static const char *toy_error(void *decoder)
{
    return ((toy_decoder_t *)decoder)->error;
}

static int toy_finish(void *decoder)
{
    toy_decoder_t *d = decoder;

    if (d->len)
        d->error = "cut inside a line";
    return d->error ? AIB_FRAMING_MALFORMED : 0;
}

static const aib_stream_framing_t toy_framing = {
    toy_is_stream, toy_create, toy_feed, toy_error, toy_finish
};

/* The SSE error event that ends a stream the toy framing could not decode. */
static const char *malformed_event(const char *why)
{
    return apr_pstrcat(pool, "event: error\ndata: ",
                       anthropic_error("api_error",
                                       apr_pstrcat(pool, "upstream stream malformed: ", why, NULL)),
                       "\n\n", NULL);
}

/* One streaming Messages interception of pv through the toy framing. */
static aib_interception_t *run_toy_stream(aib_provider_t *pv)
{
    aib_interception_t *ic;

    hooks_of(pv)->stream_framing = &toy_framing;
    ic = interception(pv, MESSAGES, 1);
    aib_bridge_run(ic);
    return ic;
}

#define TOY_HEADERS "Content-Type", "application/x-toy-stream"
#define TOY_START "message_start|{\"type\":\"message_start\",\"message\":" \
    "{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n"
#define TOY_DELTA "message_delta|{\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}\n"
#define TOY_STOP "message_stop|{\"type\":\"message_stop\"}\n"
#define SSE_START "event: message_start\ndata: {\"type\":\"message_start\",\"message\":" \
    "{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n"
#define SSE_DELTA "event: message_delta\ndata: {\"type\":\"message_delta\"," \
    "\"usage\":{\"output_tokens\":5}}\n\n"
#define SSE_STOP "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"

static void test_prepare_rewrites_once(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic;
    const step_t steps[] = {
        { 429, { JSON_HEADERS, "Retry-After", "3", NULL }, { RATE_LIMIT_BODY, NULL },
          AIB_XFER_OK, NULL },
        { 200, { JSON_HEADERS, NULL }, { "{\"id\":\"x\"}", NULL }, AIB_XFER_OK, NULL },
    };
    const char *body = "{\"agent\":\"OpenAI/Python 1.50.0\",\"client_body_len\":37}";
    int n;

    (void)state;
    hooks_of(pv)->prepare = model_into_path;
    ic = interception(pv, CHAT, 0);
    ic->model = "gpt-4o-mini";
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(prepare_calls, 1);
    assert_int_equal(transport.ncalls, 2);
    for (n = 0; n < 2; n++) {
        assert_string_equal(transport.calls[n].method, "POST");
        assert_string_equal(transport.calls[n].url,
                            "https://api.openai.com/model/gpt-4o-mini/invoke");
        assert_string_equal(transport.calls[n].body, body);
        assert_int_equal(transport.calls[n].body_len, strlen(body));
        assert_null(apr_table_get(transport.calls[n].headers, "User-Agent"));
    }
    /* Each attempt still gets its own key on the rewritten request. */
    assert_string_equal(apr_table_get(transport.calls[0].headers, "Authorization"), bearer("a"));
    assert_string_equal(apr_table_get(transport.calls[1].headers, "Authorization"), bearer("b"));
    /* The interception itself is left as the client sent it. */
    assert_string_equal(ic->url, "https://api.openai.com/v1/chat/completions");
    assert_string_equal(ic->body, request_body);
    assert_int_equal(rec.status, 200);
    assert_string_equal(body_of(), "{\"id\":\"x\"}");
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);

    /* The stream flag reaches the hook. */
    memset(&rec, 0, sizeof(rec));
    ic = interception(pv, CHAT, 1);
    ic->model = "gpt-4o-mini";
    script(&steps[1], 1);
    aib_bridge_run(ic);
    assert_string_equal(transport.calls[0].url,
                        "https://api.openai.com/model/gpt-4o-mini/invoke-with-response-stream");
}

static void test_prepare_refusal_is_a_400(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic;

    (void)state;
    hooks_of(pv)->prepare = model_into_path;
    ic = interception(pv, CHAT, 0);
    script(NULL, 0);
    aib_bridge_run(ic);

    assert_int_equal(prepare_calls, 1);
    assert_int_equal(transport.ncalls, 0);
    assert_int_equal(rec.status, 400);
    assert_string_equal(body_of(), openai_error("the request names no model",
                                                "invalid_request_error", "invalid_request"));
    assert_int_equal(ic->outcome, AIB_OUTCOME_REJECTED);
    assert_true(logged(AIB_LOG_INFO, "the request names no model"));
    assert_counters(kp, 0, 0, 0, 0, 0);
}

/* The signature covers the request as sent: rewritten, with its key. */
static void test_sign_covers_each_attempt(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_provider_ops_t *ops = hooks_of(pv);
    aib_interception_t *ic;
    const step_t steps[] = {
        { 429, { JSON_HEADERS, NULL }, { RATE_LIMIT_BODY, NULL }, AIB_XFER_OK, NULL },
        { 200, { JSON_HEADERS, NULL }, { "{\"id\":\"x\"}", NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    ops->prepare = model_into_path;
    ops->sign = sign_request;
    ic = interception(pv, CHAT, 0);
    ic->model = "gpt-4o-mini";
    SCRIPT(steps);
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 2);
    assert_signed(0);
    assert_signed(1);
    assert_string_not_equal(apr_table_get(transport.calls[0].headers, "x-signature"),
                            apr_table_get(transport.calls[1].headers, "x-signature"));
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
    assert_no_secret(kp);
}

/* A stream in the provider's own framing reaches the client as SSE, and
 * the bridge reads its events as it reads SSE ones. */
static void test_stream_framing_of_the_provider(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic;
    /* Events cut across chunks. */
    const step_t steps[] = {
        { 200, { TOY_HEADERS, "request-id", "req_1", NULL },
          { TOY_START "message_de", "lta|{\"type\":\"message_delta\",\"usage\":"
            "{\"output_tokens\":5}}\n", TOY_STOP, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    ic = run_toy_stream(pv);

    assert_int_equal(rec.status, 200);
    assert_string_equal(header("Content-Type"), "text/event-stream");
    assert_string_equal(header("request-id"), "req_1");
    assert_string_equal(body_of(), SSE_START SSE_DELTA SSE_STOP);
    /* Re-emitted events go out with one flush per upstream read that
     * brought them: none waits past its read. */
    assert_int_equal(rec.flushed_writes, transport.calls[0].chunks_delivered);
    assert_int_equal(rec.unflushed, 0);
    assert_int_equal(rec.fails, 0);
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
    ASSERT_I64(ic->usage.input, 10);
    ASSERT_I64(ic->usage.output, 5);
}

static void test_stream_framing_first_event_fails_over(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic;
    const step_t steps[] = {
        { 200, { TOY_HEADERS, NULL },
          { "error|{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\","
            "\"message\":\"slow down\"}}\n", NULL }, AIB_XFER_OK, NULL },
        { 200, { TOY_HEADERS, NULL }, { TOY_START, NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    ic = run_toy_stream(pv);

    assert_int_equal(transport.ncalls, 2);
    assert_key(kp, 0, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + 60000);
    assert_int_equal(rec.starts, 1);
    /* The second stream ended before its final event: told so, in SSE. */
    assert_string_equal(body_of(), apr_pstrcat(pool, SSE_START, "event: error\ndata: ",
                                               anthropic_error("api_error",
                                                   "upstream stream ended before completion"),
                                               "\n\n", NULL));
    assert_int_equal(ic->outcome, AIB_OUTCOME_TRANSPORT_ERROR);
}

/* The events of one upstream read go out together, with one flush: a
 * flush per event costs a system call each. */
static void test_reframed_events_of_one_read_flushed_once(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    const step_t steps[] = {
        { 200, { TOY_HEADERS, NULL }, { TOY_START TOY_DELTA TOY_STOP, NULL }, AIB_XFER_OK,
          NULL },
    };

    (void)state;
    SCRIPT(steps);
    run_toy_stream(pv);

    assert_string_equal(body_of(), SSE_START SSE_DELTA SSE_STOP);
    assert_int_equal(rec.flushed_writes, 1);
    assert_int_equal(rec.unflushed, 0);
}

/* A stream its framing cannot decode ends in an SSE error event and an
 * error-log line; the key is not at fault. */
static void test_stream_framing_malformed(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic;
    const step_t steps[] = {
        { 200, { TOY_HEADERS, NULL }, { TOY_START, "!message CRC mismatch\n", TOY_STOP, NULL },
          AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    ic = run_toy_stream(pv);

    assert_int_equal(transport.ncalls, 1);
    assert_int_equal(rec.status, 200);
    assert_string_equal(body_of(), apr_pstrcat(pool, SSE_START, malformed_event("message CRC mismatch"), NULL));
    assert_true(logged(AIB_LOG_ERROR, "malformed stream: message CRC mismatch"));
    assert_int_equal(ic->outcome, AIB_OUTCOME_TRANSPORT_ERROR);
    ASSERT_AVAILABLE(kp, 0);
}

/* Malformed before any event: no failover, the client gets the error. */
static void test_stream_framing_malformed_first(void **state)
{
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic;
    const step_t steps[] = {
        { 200, { TOY_HEADERS, NULL }, { "!prelude CRC mismatch\n", NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    ic = run_toy_stream(pv);

    assert_int_equal(transport.ncalls, 1);
    assert_int_equal(rec.starts, 1);
    assert_int_equal(rec.status, 200);
    assert_string_equal(header("Content-Type"), "text/event-stream");
    assert_string_equal(body_of(), malformed_event("prelude CRC mismatch"));
    assert_int_equal(ic->outcome, AIB_OUTCOME_TRANSPORT_ERROR);
    ASSERT_AVAILABLE(kp, 0);
}

/* The stream ends inside a frame: finish() says so. */
static void test_stream_framing_cut_inside_a_frame(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic;
    const step_t steps[] = {
        { 200, { TOY_HEADERS, NULL }, { TOY_START, "message_del", NULL }, AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    ic = run_toy_stream(pv);

    assert_string_equal(body_of(), apr_pstrcat(pool, SSE_START, malformed_event("cut inside a line"), NULL));
    assert_true(logged(AIB_LOG_ERROR, "malformed stream: cut inside a line"));
    assert_int_equal(ic->outcome, AIB_OUTCOME_TRANSPORT_ERROR);
    ASSERT_AVAILABLE(kp, 0);
}

/* Past the final event, a malformed tail is only logged. */
static void test_stream_framing_malformed_after_the_end(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_interception_t *ic;
    const step_t steps[] = {
        { 200, { TOY_HEADERS, NULL }, { TOY_START, TOY_STOP, "!trailing bytes\n", NULL },
          AIB_XFER_OK, NULL },
    };

    (void)state;
    SCRIPT(steps);
    ic = run_toy_stream(pv);

    assert_string_equal(body_of(), SSE_START SSE_STOP);
    assert_true(logged(AIB_LOG_ERROR, "malformed stream: trailing bytes"));
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
}

/* A request sent to another API than the client called: prepare() flags
 * it, and its blocking answer is rewritten whole before the client sees
 * anything (Bedrock's CountTokens answering an Anthropic count_tokens). */
static const char *flag_for_rewrite(const aib_interception_t *ic, aib_outgoing_t *req)
{
    (void)ic;
    prepare_calls++;
    req->rewrite_answer = 1;
    return NULL;
}

/* The toy rewrite: the status moved by 3, the answer wrapped with it. */
static int wrap_answer(const aib_interception_t *ic, apr_pool_t *p, int status,
                       const apr_table_t *headers, const char **body, apr_size_t *len)
{
    (void)ic;
    *body = apr_psprintf(p, "{\"upstream\":%d,\"type\":\"%s\",\"answer\":%.*s}", status,
                         apr_table_get(headers, "Content-Type"), (int)*len, *body);
    *len = strlen(*body);
    return status + 3;
}

static void test_rewrite_answer_of_a_flagged_request(void **state)
{
    /* A failover answer is the bridge's, not rewritten; the answer that
     * reaches the client is, though it came in pieces, and so is an error
     * that is no key's fault. */
    const step_t steps[] = {
        { 429, { JSON_HEADERS, NULL }, { RATE_LIMIT_BODY, NULL }, AIB_XFER_OK, NULL },
        { 200, { JSON_HEADERS, NULL }, { "{\"inputTokens\"", ":7}", NULL }, AIB_XFER_OK, NULL },
        { 400, { JSON_HEADERS, NULL }, { "{\"error\":1}", NULL }, AIB_XFER_OK, NULL },
    };
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_provider_t *pv = OPENAI(kp);
    aib_interception_t *ic;

    (void)state;
    hooks_of(pv)->prepare = flag_for_rewrite;
    hooked_ops.rewrite_answer = wrap_answer;
    ic = interception(pv, CHAT, 0);
    script(steps, 2);
    aib_bridge_run(ic);

    assert_int_equal(transport.ncalls, 2);
    assert_int_equal(rec.status, 203);
    assert_string_equal(body_of(), "{\"upstream\":200,\"type\":\"application/json\","
                        "\"answer\":{\"inputTokens\":7}}");
    assert_int_equal(ic->status, 203);
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
    assert_counters(kp, 0, 1, 1, 0, 0);

    memset(&rec, 0, sizeof(rec));
    ic = interception(pv, CHAT, 0);
    script(&steps[2], 1);
    aib_bridge_run(ic);
    assert_int_equal(rec.status, 403);
    assert_string_equal(body_of(), "{\"upstream\":400,\"type\":\"application/json\","
                        "\"answer\":{\"error\":1}}");
    assert_int_equal(ic->outcome, AIB_OUTCOME_UPSTREAM_ERROR);

    /* A request prepare() did not flag goes as it came. */
    memset(&rec, 0, sizeof(rec));
    hooked_ops.prepare = model_into_path;
    ic = interception(pv, CHAT, 0);
    ic->model = "gpt-4o-mini";
    script(&steps[1], 1);
    aib_bridge_run(ic);
    assert_int_equal(rec.status, 200);
    assert_string_equal(body_of(), "{\"inputTokens\":7}");
}

/* The toy provider's own counts: x-toy-output on a blocking answer, and
 * "toy_output" in a message_stop event. */
static void toy_usage_from_headers(aib_usage_t *u, const apr_table_t *headers)
{
    const char *n = apr_table_get(headers, "x-toy-output");

    if (n && !u->output) {
        u->seen = 1;
        u->output = atoi(n);
    }
}

static void toy_usage_from_event(aib_usage_t *u, const char *event, const char *data,
                                 apr_size_t len)
{
    const char *n = strstr(data, "\"toy_output\":");

    (void)len;
    if (n && !strcmp(event, "message_stop") && !u->output) {
        u->seen = 1;
        u->output = atoi(n + 13);
    }
}

static void test_usage_of_the_provider(void **state)
{
    aib_keypool_t *kp = keypool("a", NULL);
    aib_provider_t *pv = ANTHROPIC(kp);
    aib_provider_ops_t *ops = hooks_of(pv);
    aib_interception_t *ic;
    /* The body's usage lacks the output, the stream's message_delta too. */
    const step_t blocking[] = {
        { 200, { JSON_HEADERS, "x-toy-output", "6", NULL },
          { "{\"type\":\"message\",\"usage\":{\"input_tokens\":10}}", NULL }, AIB_XFER_OK, NULL },
    };
    const step_t stream[] = {
        { 200, { TOY_HEADERS, NULL },
          { "message_start|{\"type\":\"message_start\",\"message\":{\"usage\":"
            "{\"input_tokens\":10}}}\n",
            "message_stop|{\"type\":\"message_stop\",\"toy_output\":8}\n", NULL },
          AIB_XFER_OK, NULL },
    };

    (void)state;
    ops->usage_from_headers = toy_usage_from_headers;
    ops->usage_from_event = toy_usage_from_event;
    ops->stream_framing = &toy_framing;
    ic = interception(pv, MESSAGES, 0);
    SCRIPT(blocking);
    aib_bridge_run(ic);
    assert_true(ic->usage.seen);
    ASSERT_I64(ic->usage.input, 10);
    ASSERT_I64(ic->usage.output, 6);

    memset(&rec, 0, sizeof(rec));
    ic = interception(pv, MESSAGES, 1);
    SCRIPT(stream);
    aib_bridge_run(ic);
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
    ASSERT_I64(ic->usage.input, 10);
    ASSERT_I64(ic->usage.output, 8);
}


/* ---- the agentic loop (src/agent_loop.c) --------------------------------- */

/* The MCP server's answers, in the order the client asks: initialize (id
 * 1), notifications/initialized, tools/list (id 2), then tools/call (3...). */
#define MCP_INIT \
    { 200, { JSON_HEADERS, "Mcp-Session-Id", "s1", NULL }, \
      { "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":\"2025-06-18\"," \
        "\"capabilities\":{\"tools\":{}},\"serverInfo\":{\"name\":\"t\",\"version\":\"1\"}}}", \
        NULL }, AIB_XFER_OK, NULL }, \
    { 202, { NULL }, { NULL }, AIB_XFER_OK, NULL }, \
    { 200, { JSON_HEADERS, NULL }, \
      { "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[{\"name\":\"echo\"," \
        "\"description\":\"Echoes\",\"inputSchema\":{\"type\":\"object\"}}]}}", NULL }, \
      AIB_XFER_OK, NULL }
#define MCP_ECHO(id) \
    { 200, { JSON_HEADERS, NULL }, \
      { "{\"jsonrpc\":\"2.0\",\"id\":" #id ",\"result\":{\"content\":[{\"type\":\"text\"," \
        "\"text\":\"Echo: hi\"}]}}", NULL }, AIB_XFER_OK, NULL }
#define CHAT_TOOL_CALL \
    { 200, { JSON_HEADERS, NULL }, \
      { "{\"id\":\"c1\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":" \
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\"," \
        "\"type\":\"function\",\"function\":{\"name\":\"bmcp_tools_echo\",\"arguments\":" \
        "\"{\\\"message\\\":\\\"hi\\\"}\"}}]},\"finish_reason\":\"tool_calls\"}]," \
        "\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":4,\"total_tokens\":14}}", NULL }, \
      AIB_XFER_OK, NULL }
#define CHAT_ANSWER \
    { 200, { JSON_HEADERS, NULL }, \
      { "{\"id\":\"c2\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":" \
        "{\"role\":\"assistant\",\"content\":\"done\"},\"finish_reason\":\"stop\"}]," \
        "\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":5,\"total_tokens\":25}}", NULL }, \
      AIB_XFER_OK, NULL }
#define UPSTREAM_429(s) \
    { 429, { JSON_HEADERS, "Retry-After", #s, NULL }, \
      { "{\"error\":{\"message\":\"slow down\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}", \
        NULL }, AIB_XFER_OK, NULL }

/* An agent offering the tools of MCP server "tools". */
static aib_agent_t *agent(int max_iterations)
{
    aib_agent_t *a = apr_pcalloc(pool, sizeof(*a));
    apr_array_header_t *sources = apr_array_make(pool, 1, sizeof(aib_agent_source_t));
    aib_agent_source_t *src = apr_array_push(sources);
    char *argv[] = { "tools", "http://mcp.test/mcp" };
    aib_mcp_server_t *ms;

    assert_null(aib_mcp_server_parse(pool, 2, argv, &ms));
    src->name = "tools";
    src->client = aib_mcp_client_create(pool, ms);
    assert_non_null(src->client);
    a->sources = sources;
    a->transport = &transport.base;
    a->max_iterations = max_iterations;
    return a;
}

static int is_upstream(int call)
{
    return !strncmp(transport.calls[call].url, "https://api.openai.com", 22)
           || !strncmp(transport.calls[call].url, "https://api.anthropic.com", 25);
}

/* The key of upstream call `call`. */
static const char *upstream_key(int call)
{
    const char *auth = apr_table_get(transport.calls[call].headers, "Authorization");
    const char *x = apr_table_get(transport.calls[call].headers, "x-api-key");

    assert_true(is_upstream(call));
    return auth ? auth + 7 : x;
}

static void test_loop_runs_a_tool_and_sums_usage(void **state)
{
    static const step_t steps[] = { MCP_INIT, CHAT_TOOL_CALL, MCP_ECHO(3), CHAT_ANSWER };
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_interception_t *ic = interception(OPENAI(kp), CHAT, 0);
    aib_agent_t *a = agent(10);
    const aib_tool_run_t *run;

    (void)state;
    SCRIPT(steps);
    aib_agent_run(ic, a);
    assert_int_equal(rec.status, 200);
    assert_non_null(strstr(body_of(), "\"content\":\"done\""));
    /* Usage summed over both iterations, in the answer and the record. */
    assert_non_null(strstr(body_of(), "\"prompt_tokens\":30"));
    assert_non_null(strstr(body_of(), "\"completion_tokens\":9"));
    assert_non_null(strstr(body_of(), "\"total_tokens\":39"));
    ASSERT_I64(ic->usage.input, 30);
    ASSERT_I64(ic->usage.output, 9);
    assert_int_equal(transport.ncalls, 6);
    assert_true(is_upstream(3) && is_upstream(5));
    assert_string_equal(upstream_key(3), key_value("a"));
    assert_string_equal(upstream_key(5), key_value("a"));
    /* The tool went to the model in the first request, its result in the second. */
    assert_non_null(strstr(transport.calls[3].body, "\"name\":\"bmcp_tools_echo\""));
    assert_non_null(strstr(transport.calls[3].body, "\"parallel_tool_calls\":false"));
    assert_non_null(strstr(transport.calls[5].body, "\"role\":\"tool\""));
    assert_non_null(strstr(transport.calls[5].body, "\"content\":\"Echo: hi\""));
    assert_int_equal(a->iterations, 2);
    assert_int_equal(ic->attempts, 2);
    assert_int_equal(ic->outcome, AIB_OUTCOME_OK);
    assert_int_equal(a->tool_runs->nelts, 1);
    run = &APR_ARRAY_IDX(a->tool_runs, 0, aib_tool_run_t);
    assert_string_equal(run->server, "tools");
    assert_string_equal(run->tool, "echo");
    assert_int_equal(run->outcome, AIB_TOOL_OK);
}

static void test_loop_continuation_fails_over(void **state)
{
    static const step_t steps[] = { MCP_INIT, CHAT_TOOL_CALL, MCP_ECHO(3), UPSTREAM_429(30),
                                    CHAT_ANSWER };
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_interception_t *ic = interception(OPENAI(kp), CHAT, 0);
    aib_agent_t *a = agent(10);

    (void)state;
    SCRIPT(steps);
    aib_agent_run(ic, a);
    assert_int_equal(rec.status, 200);
    assert_non_null(strstr(body_of(), "\"content\":\"done\""));
    assert_string_equal(upstream_key(3), key_value("a"));
    assert_string_equal(upstream_key(5), key_value("a"));
    assert_string_equal(upstream_key(6), key_value("b"));
    assert_string_equal(transport.calls[5].body, transport.calls[6].body);
    assert_int_equal(ic->attempts, 3);
    assert_int_equal(ic->tried->nelts, 3);
    assert_key(kp, 0, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + 30000);
}

static void test_loop_pool_exhausted_in_a_continuation(void **state)
{
    static const step_t steps[] = { MCP_INIT, CHAT_TOOL_CALL, MCP_ECHO(3), UPSTREAM_429(30),
                                    UPSTREAM_429(7) };
    aib_keypool_t *kp = keypool("a", "b", NULL);
    aib_interception_t *ic = interception(OPENAI(kp), CHAT, 0);

    (void)state;
    SCRIPT(steps);
    aib_agent_run(ic, agent(10));
    assert_int_equal(rec.status, 429);
    assert_int_equal(rec.starts, 1);
    assert_string_equal(header("Retry-After"), "7");
    assert_non_null(strstr(body_of(), "rate-limited"));
    assert_int_equal(ic->outcome, AIB_OUTCOME_EXHAUSTED);
}

static void test_loop_iteration_limit(void **state)
{
    static const step_t steps[] = { MCP_INIT, CHAT_TOOL_CALL };
    aib_keypool_t *kp = keypool("a", NULL);
    aib_interception_t *ic = interception(OPENAI(kp), CHAT, 0);

    (void)state;
    SCRIPT(steps);
    aib_agent_run(ic, agent(1));
    assert_int_equal(rec.status, 502);
    assert_non_null(strstr(body_of(), "AIBridgeMaxToolIterations"));
    assert_int_equal(transport.ncalls, 4);      /* no tool ran */
    assert_int_equal(ic->outcome, AIB_OUTCOME_REJECTED);
}

#define MSG_EVENT(type, json) "event: " type "\ndata: " json "\n\n"
#define MSG_START(id) MSG_EVENT("message_start", "{\"type\":\"message_start\",\"message\":{" \
    "\"id\":\"" id "\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[]," \
    "\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}")
#define MSG_END(reason) \
    MSG_EVENT("message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"" \
              reason "\"},\"usage\":{\"output_tokens\":3}}") \
    MSG_EVENT("message_stop", "{\"type\":\"message_stop\"}")

static void test_loop_stream_is_one_stream(void **state)
{
    static const step_t steps[] = {
        MCP_INIT,
        { 200, { SSE_HEADERS, NULL }, {
            MSG_START("msg_1"),
            MSG_EVENT("content_block_start", "{\"type\":\"content_block_start\",\"index\":0,"
                      "\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\","
                      "\"name\":\"bmcp_tools_echo\",\"input\":{}}}"),
            MSG_EVENT("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,"
                      "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":"
                      "\"{\\\"message\\\":\\\"hi\\\"}\"}}"),
            MSG_EVENT("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}"),
            MSG_END("tool_use"), NULL }, AIB_XFER_OK, NULL },
        MCP_ECHO(3),
        { 200, { SSE_HEADERS, NULL }, {
            MSG_START("msg_2"),
            MSG_EVENT("content_block_start", "{\"type\":\"content_block_start\",\"index\":0,"
                      "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}"),
            MSG_EVENT("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,"
                      "\"delta\":{\"type\":\"text_delta\",\"text\":\"done\"}}"),
            MSG_EVENT("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}"),
            MSG_END("end_turn"), NULL }, AIB_XFER_OK, NULL },
    };
    aib_keypool_t *kp = keypool("a", NULL);
    aib_interception_t *ic = interception(ANTHROPIC(kp), MESSAGES, 1);
    const char *out, *first;

    (void)state;
    SCRIPT(steps);
    aib_agent_run(ic, agent(10));
    out = body_of();
    assert_int_equal(rec.status, 200);
    assert_int_equal(rec.starts, 1);
    first = strstr(out, "event: message_start");
    assert_non_null(first);
    assert_null(strstr(first + 1, "event: message_start"));
    assert_null(strstr(out, "bmcp_"));
    assert_non_null(strstr(out, "event: ping"));
    assert_non_null(strstr(out, "\"text\":\"done\""));
    first = strstr(out, "event: message_stop");
    assert_non_null(first);
    assert_null(strstr(first + 1, "event: message_stop"));
    assert_non_null(strstr(transport.calls[5].body, "\"type\":\"tool_result\""));
    assert_non_null(strstr(transport.calls[5].body, "Echo: hi"));
}

static void test_loop_stream_error_after_it_began(void **state)
{
    static const step_t steps[] = {
        MCP_INIT,
        { 200, { SSE_HEADERS, NULL }, {
            MSG_START("msg_1"),
            MSG_EVENT("content_block_start", "{\"type\":\"content_block_start\",\"index\":0,"
                      "\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\","
                      "\"name\":\"bmcp_tools_echo\",\"input\":{}}}"),
            MSG_EVENT("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}"),
            MSG_END("tool_use"), NULL }, AIB_XFER_OK, NULL },
        MCP_ECHO(3),
        UPSTREAM_429(9),
    };
    aib_keypool_t *kp = keypool("a", NULL);
    aib_interception_t *ic = interception(ANTHROPIC(kp), MESSAGES, 1);

    (void)state;
    SCRIPT(steps);
    aib_agent_run(ic, agent(10));
    assert_int_equal(rec.status, 200);
    assert_int_equal(rec.starts, 1);
    assert_non_null(strstr(body_of(), "event: error\ndata: "));
    assert_non_null(strstr(body_of(), "rate_limit_error"));
    assert_null(strstr(body_of(), "message_stop"));
    assert_int_equal(ic->status, 200);
    assert_int_equal(ic->outcome, AIB_OUTCOME_EXHAUSTED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_loop_runs_a_tool_and_sums_usage),
        T(test_loop_continuation_fails_over),
        T(test_loop_pool_exhausted_in_a_continuation),
        T(test_loop_iteration_limit),
        T(test_loop_stream_is_one_stream),
        T(test_loop_stream_error_after_it_began),
        T(test_single_key_ok),
        T(test_stream_has_no_whole_call_timeout),
        T(test_failover_429_retry_after),
        T(test_failover_429_without_headers_uses_cooldown),
        T(test_failover_retry_after_clamped_to_max),
        T(test_failover_401_403_disable_forever),
        T(test_failover_disable_for),
        T(test_insufficient_quota_cools_for_max),
        T(test_all_rate_limited_openai),
        T(test_all_rate_limited_anthropic),
        T(test_all_unauthorized),
        T(test_all_unauthorized_anthropic),
        T(test_disabled_and_cooling_is_rate_limited),
        T(test_exhausted_before_request),
        T(test_all_disabled_before_request),
        T(test_no_pool_without_client_key),
        T(test_500_relayed),
        T(test_400_relayed),
        T(test_unsupported_region_relayed),
        T(test_large_failover_body),
        T(test_status_outside_failover_set_relayed),
        T(test_extra_failover_status),
        T(test_anthropic_529_relayed),
        T(test_byok_single_attempt),
        T(test_byok_401_relayed),
        T(test_byok_ok),
        T(test_connect_error),
        T(test_connect_error_anthropic),
        T(test_timeout),
        T(test_timeout_anthropic),
        T(test_broken_before_response),
        T(test_non_sse_broken_after_commit),
        T(test_non_sse_timeout_before_body),
        T(test_stream_chat_broken),
        T(test_stream_responses_broken),
        T(test_stream_responses_broken_before_any_event),
        T(test_stream_anthropic_broken),
        T(test_stream_chat_ends_without_done),
        T(test_stream_responses_ends_without_completed),
        T(test_stream_anthropic_ends_without_stop),
        T(test_stream_complete),
        T(test_stream_broken_after_final_event),
        T(test_failover_then_stream),
        T(test_first_event_rate_limit_fails_over),
        T(test_first_event_auth_errors_disable),
        T(test_first_event_rate_limit_exhausts),
        T(test_first_event_overloaded_relayed),
        T(test_first_event_split_across_chunks),
        T(test_first_event_larger_than_hold),
        T(test_first_event_never_completes),
        T(test_first_event_outside_failover_set_relayed),
        T(test_first_event_byok_not_held),
        T(test_first_event_openai),
        T(test_client_gone_on_write),
        T(test_client_gone_while_waiting),
        T(test_client_gone_mid_stream_tick),
        T(test_client_gone_on_first_write),
        T(test_anthropic_credentials),
        T(test_anthropic_keeps_client_version),
        T(test_openai_adds_no_version),
        T(test_counters),
        T(test_reject),
        T(test_reject_anthropic),
        T(test_prepare_rewrites_once),
        T(test_prepare_refusal_is_a_400),
        T(test_sign_covers_each_attempt),
        T(test_stream_framing_of_the_provider),
        T(test_stream_framing_first_event_fails_over),
        T(test_reframed_events_of_one_read_flushed_once),
        T(test_stream_framing_malformed),
        T(test_stream_framing_malformed_first),
        T(test_stream_framing_cut_inside_a_frame),
        T(test_stream_framing_malformed_after_the_end),
        T(test_rewrite_answer_of_a_flagged_request),
        T(test_usage_of_the_provider),
#undef T
    };
    return AIB_RUN_TESTS(tests);
}
