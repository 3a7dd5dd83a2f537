/* Unit tests for src/config.c: names, durations, AIBridgeProvider arguments
 * and key sources (literal, env:, file:). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <apr_tables.h>

#include "config.h"
#include "format.h"
#include "provider.h"

#define SENTINEL INT64_C(-777)


/* ---- helpers ----------------------------------------------------------- */

#define ASSERT_I64(a, b) check_i64((a), (b), __FILE__, __LINE__)

static void check_i64(int64_t got, int64_t want, const char *file, int line)
{
    if (got != want) {
        print_error("got %lld, want %lld\n", (long long)got, (long long)want);
        _fail(file, line);
    }
}

static apr_status_t unlink_file(void *path)
{
    unlink(path);
    return APR_SUCCESS;
}

/* A temporary file holding `content`, removed when the pool is cleared. */
static const char *temp_file(const char *content)
{
    const char *dir = getenv("TMPDIR");
    char *path = apr_pstrcat(pool, dir && *dir ? dir : "/tmp", "/aib-test-XXXXXX", NULL);
    size_t len = strlen(content);
    int fd = mkstemp(path);

    assert_true(fd >= 0);
    apr_pool_cleanup_register(pool, path, unlink_file, apr_pool_cleanup_null);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
    return path;
}

/* AIBridgeProvider arguments as (argc, argv). */
#define ARGS(...) \
    (int)(sizeof((char *[]){ __VA_ARGS__ }) / sizeof(char *)), (char *[]){ __VA_ARGS__ }

#define PARSE_OK(...) parse_ok(__FILE__, __LINE__, ARGS(__VA_ARGS__))
#define PARSE_ERR(fragment, ...) \
    parse_err(__FILE__, __LINE__, (fragment), ARGS(__VA_ARGS__))

static aib_provider_t *parse_ok(const char *file, int line, int argc, char *argv[])
{
    aib_provider_t *pv = NULL;
    const char *err = aib_provider_parse(pool, argc, argv, &pv);

    if (err || !pv) {
        print_error("rejected: %s\n", err ? err : "(no error, no provider)");
        _fail(file, line);
    }
    return pv;
}

/* Expects an error that mentions `fragment` (the culprit). */
static void parse_err(const char *file, int line, const char *fragment, int argc,
                      char *argv[])
{
    aib_provider_t *pv = NULL;
    const char *err = aib_provider_parse(pool, argc, argv, &pv);

    if (!err) {
        print_error("accepted, expected an error about '%s'\n", fragment);
        _fail(file, line);
    }
    else if (!strstr(err, fragment)) {
        print_error("error \"%s\" does not mention '%s'\n", err, fragment);
        _fail(file, line);
    }
    else if (pv) {
        print_error("error \"%s\" but a provider was returned\n", err);
        _fail(file, line);
    }
}

static const char *key_at(const aib_keypool_t *kp, int i)
{
    return APR_ARRAY_IDX(kp->keys, i, aib_key_t).value;
}

/* An error from adding a source: present, and not naming `secret`. */
#define SOURCE_ERR(kp, source, secret) \
    source_err(__FILE__, __LINE__, (kp), (source), (secret))

static const char *source_err(const char *file, int line, aib_keypool_t *kp,
                              const char *source, const char *secret)
{
    const char *err = aib_keypool_add_source(kp, pool, source);

    if (!err) {
        print_error("source '%s' accepted\n", source);
        _fail(file, line);
    }
    if (secret && strstr(err, secret)) {
        print_error("error \"%s\" reveals the key\n", err);
        _fail(file, line);
    }
    return err;
}

/* ---- names and durations ----------------------------------------------- */

static void test_valid_name(void **state)
{
    static const char *const good[] = { "openai", "a-b-1", "a", "0", "gpt4-eu-west" };
    static const char *const bad[] = { "", "-a", "a-", "a--b", "A", "a_b", "a.b",
                                       "Openai", "a b", "a/b" };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!aib_valid_name(good[i]))
            fail_msg("'%s' rejected", good[i]);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (aib_valid_name(bad[i]))
            fail_msg("'%s' accepted", bad[i]);
    assert_false(aib_valid_name(NULL));
}

static void test_parse_seconds(void **state)
{
    static const struct {
        const char *value;
        int64_t ms;
    } good[] = {
        { "0", 0 }, { "30", 30000 }, { "0.5", 500 }, { "1.25", 1250 },
        { "0.001", 1 }, { "3600", 3600000 },
        { "4.35", 4350 }, { "1.005", 1005 },   /* inexact in binary */
    };
    static const char *const bad[] = {
        "-1", "abc", "", "1e3", "inf", "nan", "0x10", "1s", " 1", "1 ", "+1",
        ".", "1.2.3", "-0",
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        int64_t ms = SENTINEL;
        const char *err = aib_parse_seconds(good[i].value, &ms);
        if (err)
            fail_msg("\"%s\" rejected: %s", good[i].value, err);
        ASSERT_I64(ms, good[i].ms);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t ms = SENTINEL;
        if (!aib_parse_seconds(bad[i], &ms))
            fail_msg("\"%s\" accepted as %lld ms", bad[i], (long long)ms);
        ASSERT_I64(ms, SENTINEL);
    }
}

/* ---- AIBridgeProvider -------------------------------------------------- */

static void test_provider_defaults(void **state)
{
    aib_provider_t *pv = PARSE_OK("main", "openai", "pool=team");
    int status;

    (void)state;
    assert_string_equal(pv->name, "main");
    assert_ptr_equal(pv->ops, &aib_provider_openai);
    assert_string_equal(pv->base_url, "https://api.openai.com");
    assert_string_equal(pv->pool_name, "team");
    assert_null(pv->pool);
    assert_int_equal(pv->byok, 0);
    ASSERT_I64(pv->cooldown_ms, 60000);
    ASSERT_I64(pv->max_cooldown_ms, 3600000);
    ASSERT_I64(pv->disable_for_ms, 0);
    ASSERT_I64(pv->connect_timeout_ms, 10000);
    ASSERT_I64(pv->timeout_ms, 600000);
    ASSERT_I64(pv->idle_timeout_ms, 300000);
    assert_null(pv->proxy);
    assert_null(pv->ca_file);
    for (status = 100; status < 600; status++)
        assert_int_equal(aib_provider_fails_over(pv, status),
                         status == 429 || status == 401 || status == 403);

    pv = PARSE_OK("claude", "anthropic", "byok=on");
    assert_ptr_equal(pv->ops, &aib_provider_anthropic);
    assert_string_equal(pv->base_url, "https://api.anthropic.com");
    assert_null(pv->pool_name);
    assert_int_equal(pv->byok, 1);
}

static void test_provider_base_url(void **state)
{
    aib_provider_t *pv;

    (void)state;
    pv = PARSE_OK("p", "openai", "https://gateway.example.com/", "pool=x");
    assert_string_equal(pv->base_url, "https://gateway.example.com");
    pv = PARSE_OK("p", "openai", "https://gateway.example.com/openai/v1//", "pool=x");
    assert_string_equal(pv->base_url, "https://gateway.example.com/openai/v1");
    pv = PARSE_OK("p", "anthropic", "http://127.0.0.1:8080", "pool=x");
    assert_string_equal(pv->base_url, "http://127.0.0.1:8080");
    pv = PARSE_OK("p", "openai", "HTTPS://Example.COM/Path", "byok=on");
    assert_string_equal(pv->base_url, "HTTPS://Example.COM/Path");
}

static void test_provider_every_option(void **state)
{
    const char *ca = temp_file("-----BEGIN CERTIFICATE-----\n");
    char *ca_opt = apr_pstrcat(pool, "ca-file=", ca, NULL);
    aib_provider_t *pv;
    int status;

    (void)state;
    pv = PARSE_OK("my-gw", "anthropic", "https://llm.example.com/anthropic/",
                  "cooldown=5", "max-cooldown=120.5", "disable-for=300",
                  "connect-timeout=2.5", "timeout=30", "idle-timeout=0.25",
                  "pool=team-a", "byok=ON", "failover=429,500,503",
                  "proxy=http://proxy.local:3128/", ca_opt, "mcp=tools,github-2");
    assert_string_equal(pv->name, "my-gw");
    assert_int_equal(pv->mcp_names->nelts, 2);
    assert_string_equal(APR_ARRAY_IDX(pv->mcp_names, 0, const char *), "tools");
    assert_string_equal(APR_ARRAY_IDX(pv->mcp_names, 1, const char *), "github-2");
    assert_string_equal(pv->base_url, "https://llm.example.com/anthropic");
    ASSERT_I64(pv->cooldown_ms, 5000);
    ASSERT_I64(pv->max_cooldown_ms, 120500);
    ASSERT_I64(pv->disable_for_ms, 300000);
    ASSERT_I64(pv->connect_timeout_ms, 2500);
    ASSERT_I64(pv->timeout_ms, 30000);
    ASSERT_I64(pv->idle_timeout_ms, 250);
    assert_string_equal(pv->pool_name, "team-a");
    assert_int_equal(pv->byok, 1);
    assert_string_equal(pv->proxy, "http://proxy.local:3128");
    assert_string_equal(pv->ca_file, ca);
    /* failover= replaces the default list. */
    for (status = 100; status < 600; status++)
        assert_int_equal(aib_provider_fails_over(pv, status),
                         status == 429 || status == 500 || status == 503);

    /* The last occurrence wins; byok=off with a pool is fine. */
    pv = PARSE_OK("p", "openai", "pool=one", "byok=on", "pool=two", "byok=off",
                  "cooldown=0", "max-cooldown=0");
    assert_string_equal(pv->pool_name, "two");
    assert_int_equal(pv->byok, 0);
    ASSERT_I64(pv->cooldown_ms, 0);
    ASSERT_I64(pv->max_cooldown_ms, 0);
}

static void test_provider_fails_over(void **state)
{
    aib_provider_t *pv = PARSE_OK("p", "openai", "pool=x", "failover=100,599,404");

    (void)state;
    assert_true(aib_provider_fails_over(pv, 100));
    assert_true(aib_provider_fails_over(pv, 599));
    assert_true(aib_provider_fails_over(pv, 404));
    assert_false(aib_provider_fails_over(pv, 429));
    assert_false(aib_provider_fails_over(pv, 101));
    assert_false(aib_provider_fails_over(pv, 598));
    /* Out of range, never a failover, never out of bounds. */
    assert_false(aib_provider_fails_over(pv, -1));
    assert_false(aib_provider_fails_over(pv, 0));
    assert_false(aib_provider_fails_over(pv, 640));
    assert_false(aib_provider_fails_over(pv, 100000));
}

static void test_provider_errors(void **state)
{
    (void)state;
    PARSE_ERR("name", "only-a-name");
    PARSE_ERR("gemini", "p", "gemini", "pool=x");
    PARSE_ERR("colour", "p", "openai", "pool=x", "colour=blue");
    PARSE_ERR("My_Provider", "My_Provider", "openai", "pool=x");
    PARSE_ERR("-p", "-p", "openai", "pool=x");
    PARSE_ERR("mcp=a,B_2: 'B_2' is no MCP server name", "p", "openai", "pool=x", "mcp=a,B_2");
    PARSE_ERR("mcp= takes one or more", "p", "openai", "pool=x", "mcp=,");

    /* Base URL */
    PARSE_ERR("ftp://x", "p", "openai", "ftp://x", "pool=x");
    PARSE_ERR("not a url", "p", "openai", "not a url", "pool=x");
    PARSE_ERR("api.openai.com", "p", "openai", "api.openai.com", "pool=x");
    PARSE_ERR("https://h/#top", "p", "openai", "https://h/#top", "pool=x");
    PARSE_ERR("https://h/?q", "p", "openai", "https://h/?q", "pool=x");
    /* A query's '=' does not make the URL an option. */
    PARSE_ERR("base URL 'https://h/v1?api-version=1'", "p", "openai",
              "https://h/v1?api-version=1", "pool=x");
    PARSE_ERR("proxy", "p", "openai", "pool=x", "proxy=socks5://127.0.0.1:1080");

    /* Values */
    PARSE_ERR("Team_A", "p", "openai", "pool=Team_A");
    PARSE_ERR("pool", "p", "openai", "pool=");
    PARSE_ERR("maybe", "p", "openai", "pool=x", "byok=maybe");
    PARSE_ERR("abc", "p", "openai", "pool=x", "failover=abc");
    PARSE_ERR("99", "p", "openai", "pool=x", "failover=99");
    PARSE_ERR("600", "p", "openai", "pool=x", "failover=600");
    PARSE_ERR("4o1", "p", "openai", "pool=x", "failover=429,4o1");
    PARSE_ERR("cooldown", "p", "openai", "pool=x", "cooldown=-1");
    PARSE_ERR("timeout", "p", "openai", "pool=x", "timeout=abc");
    PARSE_ERR("idle-timeout", "p", "openai", "pool=x", "idle-timeout=");
    PARSE_ERR("connect-timeout", "p", "openai", "pool=x", "connect-timeout=10s");
    PARSE_ERR("disable-for", "p", "openai", "pool=x", "disable-for=-5");
    PARSE_ERR("max-cooldown", "p", "openai", "pool=x", "max-cooldown=inf");
    PARSE_ERR("ca-file", "p", "openai", "pool=x", "ca-file=/nonexistent/aib/ca.pem");
    PARSE_ERR("ca-file", "p", "openai", "pool=x", "ca-file=/");

    /* Consistency */
    PARSE_ERR("max-cooldown", "p", "openai", "pool=x", "cooldown=120", "max-cooldown=60");
    PARSE_ERR("max-cooldown", "p", "openai", "pool=x", "max-cooldown=60", "cooldown=60.001");
    PARSE_ERR("max-cooldown", "p", "openai", "pool=x", "cooldown=3601");
    PARSE_OK("p", "openai", "pool=x", "cooldown=3600");
    PARSE_ERR("neither", "p", "openai");
    PARSE_ERR("neither", "p", "openai", "byok=off");
    PARSE_ERR("neither", "p", "openai", "https://api.example.com");

    /* Shape */
    PARSE_ERR("byok", "p", "openai", "pool=x", "byok");
    PARSE_ERR("=on", "p", "openai", "pool=x", "=on");
    PARSE_ERR("https://late.example.com", "p", "openai", "pool=x",
              "https://late.example.com");

    /* A key in the wrong place is shown masked. */
    PARSE_ERR("base URL 'sk-p...wxyz'", "p", "openai", "sk-proj-Secret_0123456789wxyz", "pool=x");
    PARSE_ERR("type 'sk-p...wxyz'", "p", "sk-proj-Secret_0123456789wxyz", "pool=x");
    PARSE_ERR("'sk-p...wxyz' is not", "p", "openai", "pool=x", "sk-proj-Secret_0123456789wxyz");
    PARSE_ERR("pool='sk-p...wxyz'", "p", "openai", "pool=sk-proj-Secret_0123456789wxyz");
    PARSE_ERR("name 'Sk-p...wxyz'", "Sk-proj-Secret_0123456789wxyz", "openai", "pool=x");
}

/* apr_uri_parse gives an empty, not a NULL, hostname for these. */
/* The provider table is the one place that knows the types. */
static void test_provider_table(void **state)
{
    static const struct {
        const char *type, *path, *route;
    } bridged[] = {
        { "openai", "/v1/chat/completions", "chat" },
        { "openai", "/v1/responses", "responses" },
        { "anthropic", "/v1/messages", "messages" },
        { "azure", "/v1/chat/completions", "chat" },
        { "azure", "/v1/responses", "responses" },
    };
    aib_route_t route;
    size_t i;

    (void)state;
    assert_ptr_equal(aib_provider_ops_find("openai"), &aib_provider_openai);
    assert_ptr_equal(aib_provider_ops_find("anthropic"), &aib_provider_anthropic);
    assert_ptr_equal(aib_provider_ops_find("azure"), &aib_provider_azure);
    assert_null(aib_provider_ops_find("gemini"));
    assert_string_equal(aib_provider_types(pool), "openai, anthropic, azure, bedrock");
    PARSE_ERR("unknown provider type 'gemini' (openai, anthropic, azure, bedrock)", "p", "gemini",
              "pool=x");
    /* The formats a provider lists are those its route() gives. */
    for (i = 0; i < sizeof(bridged) / sizeof(bridged[0]); i++) {
        const aib_provider_ops_t *ops = aib_provider_ops_find(bridged[i].type);
        ops->route("POST", bridged[i].path, &route);
        assert_int_equal(route.kind, AIB_ROUTE_BRIDGED);
        assert_string_equal(route.name, bridged[i].route);
        assert_true(aib_format_spoken_by(route.format, ops));
    }
    assert_false(aib_format_spoken_by(&aib_format_messages, &aib_provider_openai));
    assert_false(aib_format_spoken_by(&aib_format_chat, &aib_provider_anthropic));
}

/* Azure's own options, and the base URL it cannot do without (the URLs
 * they make: test_provider_azure.c). */
static void test_provider_azure_options(void **state)
{
    (void)state;
    PARSE_OK("az", "azure", "https://res.openai.azure.com", "pool=x");
    PARSE_OK("az", "azure", "https://res.openai.azure.com", "pool=x", "api-version=2024-10-21",
             "deployment-map=gpt-4o=prod-4o", "deployment-map=gpt-4o-mini=mini");
    PARSE_OK("az", "azure", "https://res.openai.azure.com/openai/v1/", "byok=on",
             "deployment-map=gpt-4o=prod-4o");
    PARSE_ERR("provider 'az' of type azure needs its base URL", "az", "azure", "pool=x");
    PARSE_ERR("base URL 'https://res.openai.azure.com/openai' ends in /openai", "az", "azure",
              "https://res.openai.azure.com/openai/", "pool=x");
    PARSE_ERR("api-version=2024-10-21&x=1: takes a version", "az", "azure",
              "https://res.openai.azure.com", "pool=x", "api-version=2024-10-21&x=1");
    PARSE_ERR("api-version=: takes a version", "az", "azure", "https://res.openai.azure.com",
              "pool=x", "api-version=");
    PARSE_ERR("api-version= does not apply", "az", "azure",
              "https://res.openai.azure.com/openai/v1", "pool=x", "api-version=2024-10-21");
    PARSE_ERR("deployment-map=gpt-4o: takes <model>=<deployment>", "az", "azure",
              "https://res.openai.azure.com", "pool=x", "deployment-map=gpt-4o");
    PARSE_ERR("deployment-map==d: takes", "az", "azure", "https://res.openai.azure.com",
              "pool=x", "deployment-map==d");
    PARSE_ERR("deployment-map=m=: takes", "az", "azure", "https://res.openai.azure.com",
              "pool=x", "deployment-map=m=");
    PARSE_ERR("model 'gpt-4o' is mapped twice", "az", "azure", "https://res.openai.azure.com",
              "pool=x", "deployment-map=gpt-4o=a", "deployment-map=gpt-4o=b");
    PARSE_ERR("unknown option 'region'", "az", "azure", "https://res.openai.azure.com",
              "pool=x", "region=eu");
    /* Azure's options are Azure's only. */
    PARSE_ERR("unknown option 'api-version'", "p", "openai", "pool=x", "api-version=2024-10-21");
    PARSE_ERR("unknown option 'deployment-map'", "p", "anthropic", "pool=x",
              "deployment-map=a=b");
}

static void test_provider_url_needs_host(void **state)
{
    (void)state;
    PARSE_ERR("http://", "p", "openai", "http://", "pool=x");
    PARSE_ERR("https:///v1", "p", "openai", "https:///v1", "pool=x");
    PARSE_ERR("https://:8443/v1", "p", "openai", "https://:8443/v1", "pool=x");
    PARSE_ERR("proxy", "p", "openai", "pool=x", "proxy=http://:3128");
}

/* ---- key sources ------------------------------------------------------- */

static void test_source_literal(void **state)
{
    aib_keypool_t *kp = aib_keypool_create(pool, "p");
    const char *err;

    (void)state;
    assert_null(aib_keypool_add_source(kp, pool, "sk-literal-0123456789abcdef"));
    assert_int_equal(kp->keys->nelts, 1);
    assert_string_equal(key_at(kp, 0), "sk-literal-0123456789abcdef");

    err = SOURCE_ERR(kp, "sk-literal-0123456789abcdef", "sk-literal-0123456789abcdef");
    assert_non_null(strstr(err, "#2"));
    assert_non_null(strstr(err, "sk-l...cdef"));
    assert_int_equal(kp->keys->nelts, 1);
}

static void test_source_env(void **state)
{
    aib_keypool_t *kp = aib_keypool_create(pool, "p");

    (void)state;
    assert_int_equal(setenv("AIB_TEST_KEYS", "sk-env-one,sk-env-two sk-env-three\t"
                            " , sk-env-four,,\nsk-env-five ", 1), 0);
    assert_null(aib_keypool_add_source(kp, pool, "env:AIB_TEST_KEYS"));
    assert_int_equal(kp->keys->nelts, 5);
    assert_string_equal(key_at(kp, 0), "sk-env-one");
    assert_string_equal(key_at(kp, 1), "sk-env-two");
    assert_string_equal(key_at(kp, 2), "sk-env-three");
    assert_string_equal(key_at(kp, 3), "sk-env-four");
    assert_string_equal(key_at(kp, 4), "sk-env-five");
    /* The environment is read, not borrowed. */
    assert_int_equal(setenv("AIB_TEST_KEYS", "xxxxxxxxxxxxxxxxxxxxxxxxxxxx", 1), 0);
    assert_string_equal(key_at(kp, 0), "sk-env-one");
    unsetenv("AIB_TEST_KEYS");
}

static void test_source_env_errors(void **state)
{
    aib_keypool_t *kp = aib_keypool_create(pool, "p");
    const char *err;

    (void)state;
    unsetenv("AIB_TEST_UNSET");
    err = SOURCE_ERR(kp, "env:AIB_TEST_UNSET", NULL);
    assert_non_null(strstr(err, "AIB_TEST_UNSET"));

    assert_int_equal(setenv("AIB_TEST_EMPTY", "", 1), 0);
    err = SOURCE_ERR(kp, "env:AIB_TEST_EMPTY", NULL);
    assert_non_null(strstr(err, "AIB_TEST_EMPTY"));
    assert_int_equal(setenv("AIB_TEST_EMPTY", " ,\t, ", 1), 0);
    err = SOURCE_ERR(kp, "env:AIB_TEST_EMPTY", NULL);
    assert_non_null(strstr(err, "AIB_TEST_EMPTY"));
    unsetenv("AIB_TEST_EMPTY");

    SOURCE_ERR(kp, "env:", NULL);
    assert_int_equal(kp->keys->nelts, 0);

    assert_int_equal(setenv("AIB_TEST_DUP", "sk-dup-secret-0123456789 sk-other-key-1234567890,"
                            "sk-dup-secret-0123456789", 1), 0);
    err = SOURCE_ERR(kp, "env:AIB_TEST_DUP", "sk-dup-secret-0123456789");
    assert_non_null(strstr(err, "AIB_TEST_DUP"));
    assert_non_null(strstr(err, "#3"));
    assert_non_null(strstr(err, "sk-d...6789"));
    unsetenv("AIB_TEST_DUP");
}

static void test_source_file(void **state)
{
    aib_keypool_t *kp = aib_keypool_create(pool, "p");
    const char *path = temp_file(
        "# production keys\n"
        "\n"
        "   sk-file-one-0123456789  \n"
        "\tsk-file-two-0123456789\t\r\n"
        "  # indented comment\r\n"
        "\r\n"
        "   \t  \n"
        "sk-file-three-0123456789\r\n"
        "sk-file-four-0123456789");        /* no final newline */

    (void)state;
    assert_null(aib_keypool_add_source(kp, pool, apr_pstrcat(pool, "file:", path, NULL)));
    assert_int_equal(kp->keys->nelts, 4);
    assert_string_equal(key_at(kp, 0), "sk-file-one-0123456789");
    assert_string_equal(key_at(kp, 1), "sk-file-two-0123456789");
    assert_string_equal(key_at(kp, 2), "sk-file-three-0123456789");
    assert_string_equal(key_at(kp, 3), "sk-file-four-0123456789");
}

static void test_source_file_errors(void **state)
{
    aib_keypool_t *kp = aib_keypool_create(pool, "p");
    const char *path, *err;

    (void)state;
    err = SOURCE_ERR(kp, "file:/nonexistent/aib/keys.txt", NULL);
    assert_non_null(strstr(err, "/nonexistent/aib/keys.txt"));
    /* Opening a directory succeeds; reading it does not. */
    err = SOURCE_ERR(kp, "file:/", NULL);
    assert_non_null(strstr(err, "file:/: cannot read"));
    SOURCE_ERR(kp, "file:", NULL);

    path = temp_file("");
    err = SOURCE_ERR(kp, apr_pstrcat(pool, "file:", path, NULL), NULL);
    assert_non_null(strstr(err, path));
    path = temp_file("# nothing yet\n\n   \r\n");
    err = SOURCE_ERR(kp, apr_pstrcat(pool, "file:", path, NULL), NULL);
    assert_non_null(strstr(err, path));
    assert_int_equal(kp->keys->nelts, 0);

    path = temp_file("sk-dup-secret-0123456789\nsk-other-0123456789\n"
                     "  sk-dup-secret-0123456789\r\n");
    err = SOURCE_ERR(kp, apr_pstrcat(pool, "file:", path, NULL), "sk-dup-secret-0123456789");
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "#3"));
    assert_non_null(strstr(err, "sk-d...6789"));
}

static void test_source_duplicate_across_sources(void **state)
{
    aib_keypool_t *kp = aib_keypool_create(pool, "p");
    const char *path = temp_file("sk-shared-0123456789abcdef\n");

    (void)state;
    assert_null(aib_keypool_add_source(kp, pool, "sk-shared-0123456789abcdef"));
    assert_int_equal(setenv("AIB_TEST_SHARED", "sk-shared-0123456789abcdef", 1), 0);
    SOURCE_ERR(kp, "env:AIB_TEST_SHARED", "sk-shared-0123456789abcdef");
    unsetenv("AIB_TEST_SHARED");
    SOURCE_ERR(kp, apr_pstrcat(pool, "file:", path, NULL), "sk-shared-0123456789abcdef");
    assert_int_equal(kp->keys->nelts, 1);
}

int main(void)
{
#define T(f) cmocka_unit_test_teardown(f, aib_clear_pool)
    const struct CMUnitTest tests[] = {
        T(test_valid_name),
        T(test_parse_seconds),
        T(test_provider_defaults),
        T(test_provider_base_url),
        T(test_provider_every_option),
        T(test_provider_fails_over),
        T(test_provider_errors),
        T(test_provider_table),
        T(test_provider_azure_options),
        T(test_provider_url_needs_host),
        T(test_source_literal),
        T(test_source_env),
        T(test_source_env_errors),
        T(test_source_file),
        T(test_source_file_errors),
        T(test_source_duplicate_across_sources),
    };
#undef T
    return AIB_RUN_TESTS(tests);
}
