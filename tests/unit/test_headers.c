/* Unit tests for src/headers.c: which headers cross the bridge.
 *
 * Requests: the client's hop-by-hop headers, those its Connection header
 * names, Host, Content-Length, Accept-Encoding, Cookie, credentials,
 * forwarding claims and Expect stay behind; what the SDKs send (OpenAI-*,
 * X-Stainless-*, anthropic-*, User-Agent, Content-Type) goes on.
 * Responses: hop-by-hop, Content-Length and Set-Cookie stay behind; request
 * ids, rate-limit headers, Retry-After and Content-Type reach the client. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "unit.h"

#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <apr_tables.h>

#include "headers.h"


/* ---- helpers ----------------------------------------------------------- */

/* A table from NULL-terminated name, value pairs (added, so names repeat). */
static apr_table_t *table_of(const char *name, ...)
{
    apr_table_t *t = apr_table_make(pool, 8);
    va_list ap;

    va_start(ap, name);
    while (name) {
        const char *value = va_arg(ap, const char *);
        apr_table_add(t, name, value);
        name = va_arg(ap, const char *);
    }
    va_end(ap);
    return t;
}

/* How many entries named `name` (any case) the table holds. */
static int count(const apr_table_t *t, const char *name)
{
    const apr_array_header_t *arr = apr_table_elts(t);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
    int i, n = 0;

    for (i = 0; i < arr->nelts; i++)
        if (!strcasecmp(e[i].key, name))
            n++;
    return n;
}

static void assert_dropped(const apr_table_t *t, const char *name)
{
    if (count(t, name)) {
        print_error("header '%s' was forwarded\n", name);
        fail();
    }
}

static void assert_kept(const apr_table_t *t, const char *name, const char *value)
{
    const char *got = apr_table_get(t, name);

    if (!got) {
        print_error("header '%s' was dropped\n", name);
        fail();
    }
    assert_string_equal(got, value);
}

static int nelts(const apr_table_t *t)
{
    return apr_table_elts(t)->nelts;
}

/* ---- request headers --------------------------------------------------- */

static void test_request_drops_hop_by_hop(void **state)
{
    apr_table_t *in = table_of(
        "Connection", "keep-alive",
        "Keep-Alive", "timeout=5",
        "TE", "trailers",
        "Trailer", "X-Checksum",
        "Transfer-Encoding", "chunked",
        "Upgrade", "h2c",
        "Proxy-Authorization", "Basic cHJveHk6c2VjcmV0",
        "Proxy-Connection", "keep-alive",
        "Content-Type", "application/json",
        NULL);
    apr_table_t *out;

    (void)state;
    out = aib_upstream_request_headers(pool, in);
    assert_dropped(out, "Connection");
    assert_dropped(out, "Keep-Alive");
    assert_dropped(out, "TE");
    assert_dropped(out, "Trailer");
    assert_dropped(out, "Transfer-Encoding");
    assert_dropped(out, "Upgrade");
    assert_dropped(out, "Proxy-Authorization");
    assert_dropped(out, "Proxy-Connection");
    assert_kept(out, "Content-Type", "application/json");
    assert_int_equal(nelts(out), 1);
}

static void test_request_drops_own_and_credentials(void **state)
{
    apr_table_t *in = table_of(
        "Host", "bridge.example",
        "Content-Length", "42",
        "Accept-Encoding", "gzip, br",
        "Cookie", "session=1",
        "Authorization", "Bearer sk-client-secret",
        "X-Api-Key", "sk-ant-client-secret",
        "Forwarded", "for=203.0.113.9",
        "X-Forwarded-For", "203.0.113.9",
        "X-Forwarded-Host", "evil.example",
        "x-forwarded-proto", "https",
        "X-FORWARDED-PORT", "443",
        "Expect", "100-continue",
        "User-Agent", "OpenAI/Python 1.50.0",
        NULL);
    apr_table_t *out;

    (void)state;
    out = aib_upstream_request_headers(pool, in);
    assert_dropped(out, "Host");
    assert_dropped(out, "Content-Length");
    assert_dropped(out, "Accept-Encoding");
    assert_dropped(out, "Cookie");
    assert_dropped(out, "Authorization");
    assert_dropped(out, "X-Api-Key");
    assert_dropped(out, "Forwarded");
    assert_dropped(out, "X-Forwarded-For");
    assert_dropped(out, "X-Forwarded-Host");
    assert_dropped(out, "X-Forwarded-Proto");
    assert_dropped(out, "X-Forwarded-Port");
    assert_dropped(out, "Expect");
    assert_kept(out, "User-Agent", "OpenAI/Python 1.50.0");
    assert_int_equal(nelts(out), 1);
}

static void test_request_drops_any_case(void **state)
{
    apr_table_t *in = table_of(
        "authorization", "Bearer a",
        "x-api-key", "b",
        "HOST", "h",
        "content-length", "1",
        "connection", "close",
        "transfer-encoding", "chunked",
        "cookie", "c=1",
        "expect", "100-continue",
        "x-forwarded-for", "1.2.3.4",
        NULL);

    (void)state;
    assert_int_equal(nelts(aib_upstream_request_headers(pool, in)), 0);
}

static void test_request_drops_connection_named(void **state)
{
    apr_table_t *in = table_of(
        "Connection", "keep-alive, X-Hop-One,x-hop-two\tX-Hop-Three",
        "X-Hop-One", "1",
        "X-Hop-Two", "2",
        "x-hop-three", "3",
        "X-Hop-Four", "4",       /* not named: stays */
        "X-Hop", "5",            /* a prefix of a named one: stays */
        "X-Hop-One-More", "6",   /* a named one is its prefix: stays */
        NULL);
    apr_table_t *out;

    (void)state;
    out = aib_upstream_request_headers(pool, in);
    assert_dropped(out, "X-Hop-One");
    assert_dropped(out, "X-Hop-Two");
    assert_dropped(out, "X-Hop-Three");
    assert_kept(out, "X-Hop-Four", "4");
    assert_kept(out, "X-Hop", "5");
    assert_kept(out, "X-Hop-One-More", "6");
    assert_int_equal(nelts(out), 3);
}

/* RFC 9110 5.3: several Connection fields are one comma-joined list. */
static void test_request_drops_named_by_second_connection(void **state)
{
    apr_table_t *in = table_of(
        "Connection", "keep-alive",
        "Connection", "X-Hop-One",
        "X-Hop-One", "1",
        "Content-Type", "application/json",
        NULL);
    apr_table_t *out;

    (void)state;
    out = aib_upstream_request_headers(pool, in);
    assert_dropped(out, "X-Hop-One");
    assert_int_equal(nelts(out), 1);
}

static void test_request_keeps_sdk_headers(void **state)
{
    apr_table_t *in = table_of(
        "OpenAI-Organization", "org-123",
        "OpenAI-Project", "proj_456",
        "User-Agent", "AsyncOpenAI/Python 1.50.0",
        "X-Stainless-Lang", "python",
        "X-Stainless-Package-Version", "1.50.0",
        "x-stainless-retry-count", "0",
        "anthropic-version", "2023-06-01",
        "anthropic-beta", "prompt-caching-2024-07-31",
        "Content-Type", "application/json",
        "Accept", "application/json",
        "Idempotency-Key", "stainless-python-retry-1",
        NULL);
    apr_table_t *out;

    (void)state;
    out = aib_upstream_request_headers(pool, in);
    assert_kept(out, "OpenAI-Organization", "org-123");
    assert_kept(out, "OpenAI-Project", "proj_456");
    assert_kept(out, "User-Agent", "AsyncOpenAI/Python 1.50.0");
    assert_kept(out, "X-Stainless-Lang", "python");
    assert_kept(out, "X-Stainless-Package-Version", "1.50.0");
    assert_kept(out, "X-Stainless-Retry-Count", "0");
    assert_kept(out, "anthropic-version", "2023-06-01");
    assert_kept(out, "anthropic-beta", "prompt-caching-2024-07-31");
    assert_kept(out, "Content-Type", "application/json");
    assert_kept(out, "Accept", "application/json");
    assert_kept(out, "Idempotency-Key", "stainless-python-retry-1");
    assert_int_equal(nelts(out), nelts(in));
}

static void test_request_keeps_repeated_in_order(void **state)
{
    apr_table_t *in = table_of(
        "anthropic-beta", "tools-2024-04-04",
        "Cookie", "a=1",
        "anthropic-beta", "prompt-caching-2024-07-31",
        "Cookie", "b=2",
        NULL);
    apr_table_t *out;
    const apr_table_entry_t *e;

    (void)state;
    out = aib_upstream_request_headers(pool, in);
    assert_int_equal(nelts(out), 2);
    e = (const apr_table_entry_t *)apr_table_elts(out)->elts;
    assert_string_equal(e[0].key, "anthropic-beta");
    assert_string_equal(e[0].val, "tools-2024-04-04");
    assert_string_equal(e[1].key, "anthropic-beta");
    assert_string_equal(e[1].val, "prompt-caching-2024-07-31");
}

static void test_request_input_untouched(void **state)
{
    apr_table_t *in = table_of("Authorization", "Bearer x", "User-Agent", "u", NULL);

    (void)state;
    aib_upstream_request_headers(pool, in);
    assert_int_equal(nelts(in), 2);
    assert_string_equal(apr_table_get(in, "Authorization"), "Bearer x");
}

static void test_request_empty(void **state)
{
    (void)state;
    assert_int_equal(nelts(aib_upstream_request_headers(pool, apr_table_make(pool, 0))), 0);
}

/* ---- response headers -------------------------------------------------- */

static void test_response_filters(void **state)
{
    apr_table_t *in = table_of(
        "Connection", "keep-alive",
        "Keep-Alive", "timeout=5",
        "Transfer-Encoding", "chunked",
        "Trailer", "X-Checksum",
        "Upgrade", "h2c",
        "Proxy-Authenticate", "Basic",
        "Proxy-Connection", "keep-alive",
        "Content-Length", "1234",
        "Set-Cookie", "__cf_bm=abc; path=/",
        "set-cookie", "_cfuvid=def; path=/",
        "Set-Cookie2", "old=1",
        "Content-Type", "application/json",
        "x-request-id", "req_123",
        "x-ratelimit-limit-requests", "500",
        "x-ratelimit-remaining-requests", "0",
        "x-ratelimit-reset-requests", "1s",
        "retry-after", "1",
        "retry-after-ms", "900",
        "openai-processing-ms", "42",
        "anthropic-ratelimit-requests-remaining", "0",
        "request-id", "req_ant_1",
        NULL);
    apr_table_t *out;

    (void)state;
    out = aib_client_response_headers(pool, in);
    assert_dropped(out, "Connection");
    assert_dropped(out, "Keep-Alive");
    assert_dropped(out, "Transfer-Encoding");
    assert_dropped(out, "Trailer");
    assert_dropped(out, "Upgrade");
    assert_dropped(out, "Proxy-Authenticate");
    assert_dropped(out, "Proxy-Connection");
    assert_dropped(out, "Content-Length");
    assert_dropped(out, "Set-Cookie");
    assert_dropped(out, "Set-Cookie2");
    assert_kept(out, "Content-Type", "application/json");
    assert_kept(out, "x-request-id", "req_123");
    assert_kept(out, "x-ratelimit-limit-requests", "500");
    assert_kept(out, "x-ratelimit-remaining-requests", "0");
    assert_kept(out, "x-ratelimit-reset-requests", "1s");
    assert_kept(out, "Retry-After", "1");
    assert_kept(out, "retry-after-ms", "900");
    assert_kept(out, "openai-processing-ms", "42");
    assert_kept(out, "anthropic-ratelimit-requests-remaining", "0");
    assert_kept(out, "request-id", "req_ant_1");
    assert_int_equal(nelts(out), 10);
}

static void test_response_keeps_forwarded_and_credentials_names(void **state)
{
    /* Only the request direction drops these. */
    apr_table_t *in = table_of("X-Forwarded-For", "10.0.0.1", "Expect", "x", NULL);
    apr_table_t *out;

    (void)state;
    out = aib_client_response_headers(pool, in);
    assert_kept(out, "X-Forwarded-For", "10.0.0.1");
    assert_int_equal(nelts(out), 2);
}

static void test_response_drops_connection_named(void **state)
{
    apr_table_t *in = table_of(
        "Connection", "close, X-Backend-Hop",
        "X-Backend-Hop", "1",
        "x-request-id", "req_1",
        NULL);
    apr_table_t *out;

    (void)state;
    out = aib_client_response_headers(pool, in);
    assert_dropped(out, "X-Backend-Hop");
    assert_kept(out, "x-request-id", "req_1");
    assert_int_equal(nelts(out), 1);
}

/* The transport adds header lines one by one: two Connection lines are
 * possible and both count. */
static void test_response_drops_named_by_second_connection(void **state)
{
    apr_table_t *in = table_of(
        "Connection", "keep-alive",
        "Connection", "X-Backend-Hop",
        "X-Backend-Hop", "1",
        "x-request-id", "req_1",
        NULL);
    apr_table_t *out;

    (void)state;
    out = aib_client_response_headers(pool, in);
    assert_dropped(out, "X-Backend-Hop");
    assert_int_equal(nelts(out), 1);
}

static void test_response_keeps_repeated(void **state)
{
    apr_table_t *in = table_of(
        "Vary", "Origin",
        "Set-Cookie", "a=1",
        "Vary", "Accept-Encoding",
        "x-ratelimit-remaining-tokens", "10",
        NULL);
    apr_table_t *out;
    const apr_table_entry_t *e;

    (void)state;
    out = aib_client_response_headers(pool, in);
    assert_int_equal(nelts(out), 3);
    e = (const apr_table_entry_t *)apr_table_elts(out)->elts;
    assert_string_equal(e[0].key, "Vary");
    assert_string_equal(e[0].val, "Origin");
    assert_string_equal(e[1].key, "Vary");
    assert_string_equal(e[1].val, "Accept-Encoding");
    assert_string_equal(e[2].key, "x-ratelimit-remaining-tokens");
    assert_string_equal(e[2].val, "10");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_teardown(f, aib_clear_pool)
        T(test_request_drops_hop_by_hop),
        T(test_request_drops_own_and_credentials),
        T(test_request_drops_any_case),
        T(test_request_drops_connection_named),
        T(test_request_drops_named_by_second_connection),
        T(test_request_keeps_sdk_headers),
        T(test_request_keeps_repeated_in_order),
        T(test_request_input_untouched),
        T(test_request_empty),
        T(test_response_filters),
        T(test_response_keeps_forwarded_and_credentials_names),
        T(test_response_drops_connection_named),
        T(test_response_drops_named_by_second_connection),
        T(test_response_keeps_repeated),
#undef T
    };
    return AIB_RUN_TESTS(tests);
}
