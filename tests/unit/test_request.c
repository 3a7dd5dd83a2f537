/* Unit tests for the request body inspection (src/request.c).
 *
 * Bodies are copied into buffers of exactly their length, without a NUL
 * after them, so a read past the end shows under valgrind and ASan. The
 * messages are the ones clients see in their 400 errors. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "unit.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <apr_general.h>
#include <apr_pools.h>
#include "request.h"

#define NOT_SET "(not set)"


typedef struct {
    const char *err;
    int stream;
    const char *model;
} result_t;

/* Inspects len bytes of body from an unterminated heap copy. */
static result_t inspect_n(const char *body, size_t len)
{
    result_t res = { NULL, -1, NOT_SET };
    char *copy = NULL;

    if (len) {
        copy = malloc(len);
        assert_non_null(copy);
        memcpy(copy, body, len);
    }
    res.err = aib_inspect_request(pool, copy, len, &res.stream, &res.model);
    free(copy);
    return res;
}

static result_t inspect(const char *body)
{
    return inspect_n(body, strlen(body));
}

/* A literal with NUL bytes in it, all of it but the terminator. */
#define INSPECT_LIT(lit) inspect_n(lit, sizeof(lit) - 1)

static void assert_ok(result_t res, int stream, const char *model)
{
    if (res.err)
        fail_msg("unexpected error: %s", res.err);
    assert_int_equal(res.stream, stream);
    assert_string_equal(res.model, model);
}

static void assert_refused(result_t res, const char *message)
{
    assert_non_null(res.err);
    assert_string_equal(res.err, message);
    assert_int_equal(res.stream, 0);
    assert_string_equal(res.model, NOT_SET);
}

/* An object whose member "x" nests `levels - 1` arrays: `levels` levels in
 * all. `close` 0 leaves every container open. */
static char *nested(int levels, int close, size_t *len)
{
    size_t n = 0, cap = 16 + 2 * (size_t)levels;
    char *s = malloc(cap);
    int i;

    assert_non_null(s);
    memcpy(s, "{\"x\":", 5);
    n = 5;
    for (i = 1; i < levels; i++)
        s[n++] = '[';
    if (close) {
        for (i = 1; i < levels; i++)
            s[n++] = ']';
        s[n++] = '}';
    }
    *len = n;
    return s;
}

/* ------------------------------------------------------------------ */

static void test_valid(void **state)
{
    (void)state;
    assert_ok(inspect("{\"model\":\"gpt-4o-mini\",\"messages\":[]}"), 0, "gpt-4o-mini");
    assert_ok(inspect("{\"model\":\"m\",\"stream\":true}"), 1, "m");
    assert_ok(inspect("{\"stream\":false,\"model\":\"m\"}"), 0, "m");
    assert_ok(inspect("{}"), 0, NOT_SET);
    /* Whitespace around the value is allowed, all four kinds. */
    assert_ok(inspect(" \t\r\n{\"stream\": true} \t\r\n"), 1, NOT_SET);
}

static void test_model(void **state)
{
    (void)state;
    /* Escapes are decoded. */
    assert_ok(inspect("{\"model\":\"gpt\\u002d4o\"}"), 0, "gpt-4o");
    assert_ok(inspect("{\"model\":\"\"}"), 0, "");
    /* Not a string, or not at the top level: no model. */
    assert_ok(inspect("{\"model\":42}"), 0, NOT_SET);
    assert_ok(inspect("{\"model\":null}"), 0, NOT_SET);
    assert_ok(inspect("{\"model\":[\"m\"]}"), 0, NOT_SET);
    assert_ok(inspect("{\"input\":{\"model\":\"inner\"}}"), 0, NOT_SET);
    /* A copy in the pool: it outlives the parse (and the body's copy). */
    assert_ok(inspect("{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":1024}"), 0,
              "claude-sonnet-4-5");
}

static void test_400(void **state)
{
    (void)state;
    assert_refused(inspect_n(NULL, 0), "request body is empty: a JSON object is required");
    assert_refused(inspect(""), "request body is empty: a JSON object is required");
    assert_refused(inspect("{\"model\": \"m\""),
                   "request body is not valid JSON: unexpected end of input");
    assert_refused(inspect("   "), "request body is not valid JSON: unexpected end of input");
    assert_refused(inspect("not json"), "request body is not valid JSON: null expected");
    {
        /* The rest is json-c's description of the error. */
        result_t res = inspect("{\"model\": \"m\",]");

        assert_non_null(res.err);
        assert_true(!strncmp(res.err, "request body is not valid JSON: ", 32));
        assert_true(strlen(res.err) > 32);
    }
    assert_refused(inspect("[1, 2]"), "request body must be a JSON object");
    assert_refused(inspect("\"text\""), "request body must be a JSON object");
    assert_refused(inspect("null\n"), "request body must be a JSON object");
    assert_refused(inspect("42 "), "request body must be a JSON object");
    /* A bare number or literal could go on: json-c wants to see its end. */
    assert_refused(inspect("42"), "request body is not valid JSON: unexpected end of input");
    assert_refused(inspect("{\"model\": \"m\", \"stream\": \"yes\"}"), "'stream' must be a boolean");
    assert_refused(inspect("{\"model\": \"m\", \"stream\": 1}"), "'stream' must be a boolean");
    assert_refused(inspect("{\"model\": \"m\", \"stream\": null}"), "'stream' must be a boolean");
    assert_refused(inspect("{\"stream\": {}}"), "'stream' must be a boolean");
}

static void test_trailing_data(void **state)
{
    (void)state;
    assert_refused(inspect("{\"model\": \"m\"} {}"),
                   "request body is not valid JSON: data after the JSON value");
    assert_refused(inspect("{}x"), "request body is not valid JSON: data after the JSON value");
    assert_refused(inspect("{}\n\n\v"), "request body is not valid JSON: data after the JSON value");
    /* A NUL after the object is data, not the end of the body. */
    assert_refused(INSPECT_LIT("{}\0"), "request body is not valid JSON: data after the JSON value");
    assert_refused(INSPECT_LIT("{} \0 "),
                   "request body is not valid JSON: data after the JSON value");
    /* json-c takes a NUL for the end of its input, and inside a comment
     * returned the last value it completed as the whole body (found by
     * tests/fuzz: corpus/request/nul_in_comment). */
    assert_refused(INSPECT_LIT("{\"\":{}//\0"),
                   "request body is not valid JSON: unexpected end of input");
    assert_refused(INSPECT_LIT("[{\"model\":\"m\",\"stream\":true}//\0"),
                   "request body is not valid JSON: unexpected end of input");
    assert_refused(INSPECT_LIT("{\"a\":1/*\0*/}"),
                   "request body is not valid JSON: unexpected end of input");
    assert_refused(INSPECT_LIT("{\"a\":\"x\0y\"}"),
                   "request body is not valid JSON: unexpected end of input");
    assert_refused(INSPECT_LIT("\0{}"), "request body is not valid JSON: unexpected end of input");
    /* Only len bytes count: what follows in memory is not looked at. */
    assert_ok(inspect_n("{\"stream\":true}garbage", 15), 1, NOT_SET);
}

static void test_depth(void **state)
{
    size_t len;
    char *body;

    (void)state;
    body = nested(AIB_REQUEST_MAX_DEPTH, 1, &len);
    assert_ok(inspect_n(body, len), 0, NOT_SET);
    free(body);
    body = nested(AIB_REQUEST_MAX_DEPTH + 1, 1, &len);
    assert_refused(inspect_n(body, len), "request body nests deeper than 512 levels");
    free(body);
    body = nested(300, 1, &len);
    assert_ok(inspect_n(body, len), 0, NOT_SET);
    free(body);
}

/* 100,000 levels, closed or not: refused at level 513 without recursion
 * (a recursive parser would overflow the stack) and without reading on. */
static void test_depth_hostile(void **state)
{
    static const int levels = 100000;
    size_t len, i;
    char *body;
    clock_t start = clock();

    (void)state;
    body = nested(levels, 1, &len);
    assert_refused(inspect_n(body, len), "request body nests deeper than 512 levels");
    free(body);
    body = nested(levels, 0, &len);
    assert_refused(inspect_n(body, len), "request body nests deeper than 512 levels");
    free(body);
    /* Objects in objects. */
    body = malloc(5 * (size_t)levels);
    assert_non_null(body);
    for (i = 0; i < (size_t)levels; i++)
        memcpy(body + 5 * i, "{\"a\":", 5);
    assert_refused(inspect_n(body, 5 * (size_t)levels),
                   "request body nests deeper than 512 levels");
    free(body);
    /* Generous even under valgrind: only the first levels are parsed. */
    assert_true((double)(clock() - start) / CLOCKS_PER_SEC < 5.0);
}

/* json-c takes an int length: a larger body is refused before it is read
 * (the pointer here is never dereferenced). */
static void test_huge_length(void **state)
{
    result_t res = { NULL, -1, NOT_SET };

    (void)state;
    res.err = aib_inspect_request(pool, "{}", (apr_size_t)INT_MAX + 1, &res.stream,
                                  &res.model);
    assert_non_null(res.err);
    assert_true(!strncmp(res.err, "request body is not valid JSON: ", 32));
    assert_int_equal(res.stream, 0);
    assert_string_equal(res.model, NOT_SET);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_model),
        cmocka_unit_test(test_400),
        cmocka_unit_test(test_trailing_data),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_depth_hostile),
        cmocka_unit_test(test_huge_length),
    };

    return AIB_RUN_TESTS(tests);
}
