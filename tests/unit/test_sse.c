/* Unit tests for the incremental SSE parser (src/sse.c).
 *
 * Most streams are checked under many cuttings into feeds (whole, every
 * fixed chunk size up to 64, every 2-way cut, every 3-way cut for short
 * streams): the parser must report the same events however the bytes
 * arrive. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>

#include "sse.h"

/* ------------------------------------------------------------------ */
/* Recording callback                                                  */

typedef struct {
    char *event; /* NULL when the parser passed NULL */
    char *data;
    size_t len;
} got_event_t;

typedef struct {
    got_event_t *ev;
    size_t n, cap;
    size_t stop_at; /* return stop_rc from the stop_at-th event (1-based) */
    int stop_rc;
} rec_t;

static int rec_cb(void *ctx, const char *event, const char *data,
                  apr_size_t len)
{
    rec_t *r = ctx;
    got_event_t *g;

    assert_non_null(data);
    assert_int_equal(data[len], '\0'); /* promised NUL termination */
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 8;
        r->ev = realloc(r->ev, r->cap * sizeof(*r->ev));
        assert_non_null(r->ev);
    }
    g = &r->ev[r->n++];
    g->event = event ? strdup(event) : NULL;
    g->data = malloc(len + 1);
    assert_non_null(g->data);
    memcpy(g->data, data, len + 1);
    g->len = len;
    if (r->stop_at && r->n == r->stop_at)
        return r->stop_rc;
    return 0;
}

static void rec_reset(rec_t *r)
{
    size_t i;

    for (i = 0; i < r->n; i++) {
        free(r->ev[i].event);
        free(r->ev[i].data);
    }
    free(r->ev);
    r->ev = NULL;
    r->n = r->cap = 0;
}

typedef struct {
    const char *event;
    const char *data;
    size_t len;
} exp_event_t;

/* For string literals only. */
#define EV(e, d) { (e), (d), sizeof(d) - 1 }

static int events_match(const rec_t *r, const exp_event_t *exp, size_t nexp)
{
    size_t i;

    if (r->n != nexp) {
        print_error("got %zu events, expected %zu\n", r->n, nexp);
        return 0;
    }
    for (i = 0; i < nexp; i++) {
        const got_event_t *g = &r->ev[i];

        if ((exp[i].event == NULL) != (g->event == NULL) ||
            (exp[i].event && strcmp(exp[i].event, g->event) != 0)) {
            print_error("event %zu: name '%s', expected '%s'\n", i,
                        g->event ? g->event : "(null)",
                        exp[i].event ? exp[i].event : "(null)");
            return 0;
        }
        if (g->len != exp[i].len || memcmp(g->data, exp[i].data, g->len)) {
            print_error("event %zu: data '%.*s' (%zu), expected '%.*s' "
                        "(%zu)\n", i, (int)g->len, g->data, g->len,
                        (int)exp[i].len, exp[i].data, exp[i].len);
            return 0;
        }
    }
    return 1;
}

/* ------------------------------------------------------------------ */
/* Feeding helpers                                                     */

static apr_pool_t *root_pool;

typedef struct {
    size_t too_large; /* feeds that returned AIB_SSE_TOO_LARGE */
    int stop_rc;      /* first other non-zero return (feeding stops) */
    size_t count;     /* aib_sse_event_count() afterwards */
} run_t;

/* Feed s[0..len) cut before each offset in cuts (ascending). */
static void run_cuts(apr_size_t max_event, const char *s, size_t len,
                     const size_t *cuts, size_t ncuts, rec_t *r, run_t *res)
{
    apr_pool_t *pool;
    aib_sse_parser_t *p;
    size_t i, from = 0;

    assert_int_equal(apr_pool_create(&pool, root_pool), APR_SUCCESS);
    p = aib_sse_parser_create(pool, max_event, rec_cb, r);
    assert_non_null(p);
    memset(res, 0, sizeof(*res));
    for (i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        int rc = aib_sse_feed(p, s + from, to - from);

        if (rc == AIB_SSE_TOO_LARGE)
            res->too_large++;
        else if (rc != AIB_SSE_OK) {
            res->stop_rc = rc;
            break;
        }
        from = to;
    }
    res->count = aib_sse_event_count(p);
    apr_pool_destroy(pool);
}

static void run_chunked(apr_size_t max_event, const char *s, size_t len,
                        size_t chunk, rec_t *r, run_t *res)
{
    size_t ncuts = len ? (len - 1) / chunk : 0;
    size_t *cuts = malloc((ncuts + 1) * sizeof(*cuts));
    size_t i;

    assert_non_null(cuts);
    for (i = 0; i < ncuts; i++)
        cuts[i] = (i + 1) * chunk;
    run_cuts(max_event, s, len, cuts, ncuts, r, res);
    free(cuts);
}

static void expect_run(const rec_t *r, const run_t *res, const exp_event_t *exp,
                       size_t nexp, size_t exp_too_large, int exact_tl,
                       const char *how, size_t a, size_t b)
{
    int ok = events_match(r, exp, nexp) && res->count == nexp &&
             res->stop_rc == 0 &&
             (exact_tl ? res->too_large == exp_too_large
                       : (res->too_large > 0) == (exp_too_large > 0) &&
                             res->too_large <= exp_too_large);

    if (!ok) {
        print_error("failed when fed %s (%zu, %zu): count %zu, too_large "
                    "%zu (expected %zu), stop_rc %d\n", how, a, b,
                    res->count, res->too_large, exp_too_large, res->stop_rc);
        fail();
    }
}

/* The stream must yield exactly `exp` however it is cut. exp_too_large is
 * the number of oversized events: byte-by-byte feeding must return
 * AIB_SSE_TOO_LARGE exactly that often (one feed per event); coarser
 * cuttings may report several in one feed. */
static void check_all_cuttings(apr_size_t max_event, const char *s,
                               size_t len, const exp_event_t *exp,
                               size_t nexp, size_t exp_too_large)
{
    rec_t r = { 0 };
    run_t res;
    size_t i, j, chunk;

    run_cuts(max_event, s, len, NULL, 0, &r, &res);
    expect_run(&r, &res, exp, nexp, exp_too_large, exp_too_large <= 1,
               "whole", len, 0);
    rec_reset(&r);

    for (chunk = 1; chunk <= 64 && chunk < len; chunk++) {
        run_chunked(max_event, s, len, chunk, &r, &res);
        expect_run(&r, &res, exp, nexp, exp_too_large,
                   chunk == 1 || exp_too_large <= 1, "in chunks", chunk, 0);
        rec_reset(&r);
    }

    for (i = 1; i < len; i++) {
        run_cuts(max_event, s, len, &i, 1, &r, &res);
        expect_run(&r, &res, exp, nexp, exp_too_large, exp_too_large <= 1,
                   "cut at", i, 0);
        rec_reset(&r);
    }

    if (len <= 200) {
        for (i = 1; i < len; i++) {
            for (j = i + 1; j < len; j++) {
                size_t cuts[2] = { i, j };

                run_cuts(max_event, s, len, cuts, 2, &r, &res);
                expect_run(&r, &res, exp, nexp, exp_too_large,
                           exp_too_large <= 1, "cut at", i, j);
                rec_reset(&r);
            }
        }
    }
}

#define CHECK(max, str, exp, tl) \
    check_all_cuttings((max), (str), sizeof(str) - 1, (exp), \
                       sizeof(exp) / sizeof((exp)[0]), (tl))

/* ------------------------------------------------------------------ */
/* Basic framing                                                       */

static void test_single_event(void **state)
{
    static const exp_event_t exp[] = { EV(NULL, "hello") };
    rec_t r = { 0 };
    run_t res;

    (void)state;
    run_cuts(1024, "data: hello\n\n", 13, NULL, 0, &r, &res);
    assert_int_equal(res.stop_rc, 0);
    assert_int_equal(res.too_large, 0);
    assert_int_equal(res.count, 1);
    assert_true(events_match(&r, exp, 1));
    assert_null(r.ev[0].event);
    rec_reset(&r);

    CHECK(1024, "data: hello\n\n", exp, 0);
}

static void test_named_events(void **state)
{
    /* Last event: wins; the name does not leak into the next frame. */
    static const exp_event_t exp[] = {
        EV("a", "1"), EV("c", "2"), EV(NULL, "3"), EV("d", "4"),
    };

    (void)state;
    CHECK(1024, "event: a\ndata: 1\n\n"
                "event: b\nevent: c\ndata: 2\n\n"
                "data: 3\n\n"
                "data: 4\nevent: d\n\n", exp, 0);
}

static void test_multiline_data(void **state)
{
    /* `data:` and bare `data` add empty lines; joins use '\n' with no
     * trailing newline. */
    static const exp_event_t exp[] = {
        EV(NULL, "a\n\nb\n"), EV(NULL, "{\"x\":1}\n{\"y\":2}"),
    };

    (void)state;
    CHECK(1024, "data: a\ndata:\ndata: b\ndata\n\n"
                "data: {\"x\":1}\ndata: {\"y\":2}\n\n", exp, 0);
}

static void test_comments(void **state)
{
    static const exp_event_t exp[] = { EV(NULL, "x\ny"), EV("e", "z") };

    (void)state;
    CHECK(1024, ": keep-alive\n\n"
                ":\n\n"
                ": ping\ndata: x\n: data: not data\ndata: y\n\n"
                ":data: z\n\n"
                "event: e\n: event: nope\ndata: z\n\n", exp, 0);
}

static void test_line_endings(void **state)
{
    static const exp_event_t exp[] = {
        EV("a", "1\n2"), EV(NULL, "3"), EV("b", ""),
    };

    (void)state;
    CHECK(1024, "event: a\ndata: 1\ndata: 2\n\ndata: 3\n\n"
                "event: b\ndata\n\n", exp, 0);
    CHECK(1024, "event: a\r\ndata: 1\r\ndata: 2\r\n\r\ndata: 3\r\n\r\n"
                "event: b\r\ndata\r\n\r\n", exp, 0);
    CHECK(1024, "event: a\rdata: 1\rdata: 2\r\rdata: 3\r\r"
                "event: b\rdata\r\r", exp, 0);
    /* Mixed: "\r\r\n" is a CR then a CRLF, i.e. two line ends; "\n\r" is
     * two line ends as well. */
    CHECK(1024, "event: a\rdata: 1\r\ndata: 2\r\r\ndata: 3\n\r"
                "event: b\r\ndata\n\n", exp, 0);
}

static void test_crlf_split_across_feeds(void **state)
{
    static const char *feeds[] = {
        "data: a\r",          /* CR ends the feed ...              */
        "\ndata: b\r\n\r",    /* ... and this LF is the same end   */
        "\n",                 /* LF after CR again: the blank line */
        "data: c\r",
        "\r",                 /* a second CR is a blank line       */
        "\n",                 /* ... and this LF pairs with it     */
        "data: d\n\n",
    };
    static const exp_event_t exp[] = {
        EV(NULL, "a\nb"), EV(NULL, "c"), EV(NULL, "d"),
    };
    rec_t r = { 0 };
    apr_pool_t *pool;
    aib_sse_parser_t *p;
    size_t i;

    (void)state;
    assert_int_equal(apr_pool_create(&pool, root_pool), APR_SUCCESS);
    p = aib_sse_parser_create(pool, 1024, rec_cb, &r);
    for (i = 0; i < sizeof(feeds) / sizeof(feeds[0]); i++)
        assert_int_equal(aib_sse_feed(p, feeds[i], strlen(feeds[i])),
                         AIB_SSE_OK);
    assert_true(events_match(&r, exp, 3));
    assert_int_equal(aib_sse_event_count(p), 3);
    rec_reset(&r);
    apr_pool_destroy(pool);

    CHECK(1024, "data: a\r\ndata: b\r\n\r\ndata: c\r\r\ndata: d\n\n", exp, 0);
}

static void test_frames_without_data(void **state)
{
    static const exp_event_t exp[] = { EV(NULL, "y"), EV("z", "w") };

    (void)state;
    CHECK(1024, "event: x\n\n"
                "id: 1\nretry: 10\n\n"
                ": c\n\n"
                "\n\n\n"
                "data: y\n\n"
                "event: z\nid: 7\nretry: 5\nfoo: bar\ndata: w\n\n", exp, 0);
}

static void test_field_without_colon(void **state)
{
    static const exp_event_t exp[] = {
        EV(NULL, ""), EV("", "q"), EV(NULL, "r"),
    };

    (void)state;
    CHECK(1024, "data\n\n"
                "event\ndata: q\n\n"
                "foo\nid\nretry\ndata: r\n\n", exp, 0);
}

static void test_no_space_after_colon(void **state)
{
    /* Exactly one space is removed, and only a space. */
    static const exp_event_t exp[] = {
        EV(NULL, "x"), EV(NULL, " x"), EV("e", "y"), EV(NULL, ""),
        EV(NULL, "\tt "), EV(NULL, "a:b: c"),
    };

    (void)state;
    CHECK(1024, "data:x\n\n"
                "data:  x\n\n"
                "event:e\ndata:y\n\n"
                "data: \n\n"
                "data:\tt \n\n"
                "data: a:b: c\n\n", exp, 0);
}

static void test_field_names_exact(void **state)
{
    /* Field names are case-sensitive and must match exactly. */
    static const exp_event_t exp[] = { EV(NULL, "ok") };

    (void)state;
    CHECK(1024, "Data: no\ndata : no\ndatas: no\ndat: no\n"
                "Event: no\nevents: no\n data: no\n"
                "data: ok\n\n", exp, 0);
}

static void test_embedded_nul(void **state)
{
    static const char s[] = "data: a\0b\n\n";
    static const exp_event_t exp[] = { { NULL, "a\0b", 3 } };

    (void)state;
    check_all_cuttings(1024, s, sizeof(s) - 1, exp, 1, 0);
}

static void test_unterminated_frame(void **state)
{
    rec_t r = { 0 };
    apr_pool_t *pool;
    aib_sse_parser_t *p;

    (void)state;
    assert_int_equal(apr_pool_create(&pool, root_pool), APR_SUCCESS);
    p = aib_sse_parser_create(pool, 1024, rec_cb, &r);
    assert_int_equal(aib_sse_feed(p, "data: x\n", 8), AIB_SSE_OK);
    assert_int_equal(r.n, 0);
    assert_int_equal(aib_sse_feed(p, "", 0), AIB_SSE_OK);
    assert_int_equal(r.n, 0);
    assert_int_equal(aib_sse_event_count(p), 0);
    assert_int_equal(aib_sse_feed(p, "\n", 1), AIB_SSE_OK);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.ev[0].data, "x");
    assert_int_equal(aib_sse_event_count(p), 1);
    rec_reset(&r);
    apr_pool_destroy(pool);
}

static void test_bom(void **state)
{
    static const exp_event_t exp_x[] = { EV(NULL, "x") };
    static const exp_event_t exp_a[] = { EV(NULL, "a") };
    static const exp_event_t exp_z[] = { EV(NULL, "z") };

    (void)state;
    CHECK(1024, "\xEF\xBB\xBF" "data: x\n\n", exp_x, 0);
    /* Only at stream start: later it is part of a field name. */
    CHECK(1024, "data: a\n\n\xEF\xBB\xBF" "data: b\n\n", exp_a, 0);
    /* A partial BOM is not skipped: the first line is an unknown field. */
    CHECK(1024, "\xEF\xBB" "data: y\n\ndata: z\n\n", exp_z, 0);
}

/* ------------------------------------------------------------------ */
/* Realistic streams                                                   */

static const char openai_chat[] =
    "data: {\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\","
    "\"created\":1718000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\","
    "\"created\":1718000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n"
    "\n"
    ": keep-alive\n"
    "\n"
    "data: {\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\","
    "\"created\":1718000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\" world\"},\"finish_reason\":null}]}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\","
    "\"created\":1718000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,"
    "\"delta\":{},\"finish_reason\":\"stop\"}]}\n"
    "\n"
    "data: {\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\","
    "\"created\":1718000000,\"model\":\"gpt-4o-mini\",\"choices\":[],"
    "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n"
    "\n"
    "data: [DONE]\n"
    "\n";

static void test_openai_chat_stream(void **state)
{
    static const exp_event_t exp[] = {
        EV(NULL, "{\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\","
                 "\"created\":1718000000,\"model\":\"gpt-4o-mini\",\"choices\":"
                 "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":"
                 "\"\"},\"finish_reason\":null}]}"),
        EV(NULL, "{\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\","
                 "\"created\":1718000000,\"model\":\"gpt-4o-mini\",\"choices\":"
                 "[{\"index\":0,\"delta\":{\"content\":\"Hello\"},"
                 "\"finish_reason\":null}]}"),
        EV(NULL, "{\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\","
                 "\"created\":1718000000,\"model\":\"gpt-4o-mini\",\"choices\":"
                 "[{\"index\":0,\"delta\":{\"content\":\" world\"},"
                 "\"finish_reason\":null}]}"),
        EV(NULL, "{\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\","
                 "\"created\":1718000000,\"model\":\"gpt-4o-mini\",\"choices\":"
                 "[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}"),
        EV(NULL, "{\"id\":\"chatcmpl-9x\",\"object\":\"chat.completion.chunk\","
                 "\"created\":1718000000,\"model\":\"gpt-4o-mini\",\"choices\":"
                 "[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,"
                 "\"total_tokens\":11}}"),
        EV(NULL, "[DONE]"),
    };
    rec_t r = { 0 };
    run_t res;

    (void)state;
    /* Explicitly byte by byte, then every other cutting. */
    run_chunked(4096, openai_chat, sizeof(openai_chat) - 1, 1, &r, &res);
    assert_int_equal(res.stop_rc, 0);
    assert_int_equal(res.too_large, 0);
    assert_int_equal(res.count, 6);
    assert_true(events_match(&r, exp, 6));
    assert_string_equal(r.ev[5].data, "[DONE]");
    rec_reset(&r);

    CHECK(4096, openai_chat, exp, 0);
}

static const char openai_responses[] =
    "event: response.created\n"
    "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":"
    "{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\"}}\n"
    "\n"
    "event: response.in_progress\n"
    "data: {\"type\":\"response.in_progress\",\"sequence_number\":1}\n"
    "\n"
    ": keep-alive\n"
    "\n"
    "event: response.output_text.delta\n"
    "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":2,"
    "\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,"
    "\"delta\":\"Hi\"}\n"
    "\n"
    "event: response.output_text.delta\n"
    "data: {\"type\":\"response.output_text.delta\",\"sequence_number\":3,"
    "\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,"
    "\"delta\":\" there\"}\n"
    "\n"
    "event: response.completed\n"
    "data: {\"type\":\"response.completed\",\"sequence_number\":4,\"response\":"
    "{\"id\":\"resp_1\",\"status\":\"completed\",\"usage\":{\"input_tokens\":5,"
    "\"output_tokens\":2,\"total_tokens\":7}}}\n"
    "\n";

static void test_openai_responses_stream(void **state)
{
    static const exp_event_t exp[] = {
        EV("response.created",
           "{\"type\":\"response.created\",\"sequence_number\":0,\"response\":"
           "{\"id\":\"resp_1\",\"object\":\"response\",\"status\":"
           "\"in_progress\"}}"),
        EV("response.in_progress",
           "{\"type\":\"response.in_progress\",\"sequence_number\":1}"),
        EV("response.output_text.delta",
           "{\"type\":\"response.output_text.delta\",\"sequence_number\":2,"
           "\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,"
           "\"delta\":\"Hi\"}"),
        EV("response.output_text.delta",
           "{\"type\":\"response.output_text.delta\",\"sequence_number\":3,"
           "\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,"
           "\"delta\":\" there\"}"),
        EV("response.completed",
           "{\"type\":\"response.completed\",\"sequence_number\":4,"
           "\"response\":{\"id\":\"resp_1\",\"status\":\"completed\","
           "\"usage\":{\"input_tokens\":5,\"output_tokens\":2,"
           "\"total_tokens\":7}}}"),
    };
    rec_t r = { 0 };
    run_t res;
    char *crlf, *d;
    const char *s;

    (void)state;
    run_chunked(4096, openai_responses, sizeof(openai_responses) - 1, 1, &r,
                &res);
    assert_int_equal(res.stop_rc, 0);
    assert_int_equal(res.count, 5);
    assert_true(events_match(&r, exp, 5));
    rec_reset(&r);

    CHECK(4096, openai_responses, exp, 0);

    /* Same stream with CRLF line ends, byte by byte and in all cuttings. */
    crlf = malloc(2 * sizeof(openai_responses));
    assert_non_null(crlf);
    for (s = openai_responses, d = crlf; *s; s++) {
        if (*s == '\n')
            *d++ = '\r';
        *d++ = *s;
    }
    check_all_cuttings(4096, crlf, (size_t)(d - crlf), exp, 5, 0);
    free(crlf);
}

/* ------------------------------------------------------------------ */
/* Callback stop                                                       */

static void test_callback_stop(void **state)
{
    static const char s[] = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    rec_t r = { 0 };
    run_t res;
    apr_pool_t *pool;
    aib_sse_parser_t *p;
    size_t chunk;

    (void)state;
    assert_int_equal(apr_pool_create(&pool, root_pool), APR_SUCCESS);
    r.stop_at = 2;
    r.stop_rc = 42;
    p = aib_sse_parser_create(pool, 1024, rec_cb, &r);
    /* The callback's value comes back; event 3 is not delivered. */
    assert_int_equal(aib_sse_feed(p, s, sizeof(s) - 1), 42);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.ev[1].data, "2");
    assert_int_equal(aib_sse_event_count(p), 2);
    /* The parser stopped at a frame boundary and stays usable. */
    r.stop_at = 0;
    assert_int_equal(aib_sse_feed(p, "data: z\n\n", 9), AIB_SSE_OK);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.ev[2].data, "z");
    assert_int_equal(aib_sse_event_count(p), 3);
    rec_reset(&r);
    apr_pool_destroy(pool);

    /* Whatever the cutting: the feed carrying the 2nd blank line returns
     * the value, and only two events were delivered. A negative value is
     * propagated as is too. */
    for (chunk = 1; chunk < sizeof(s); chunk++) {
        r.stop_at = 2;
        r.stop_rc = chunk % 2 ? 7 : -7;
        run_chunked(1024, s, sizeof(s) - 1, chunk, &r, &res);
        assert_int_equal(res.stop_rc, r.stop_rc);
        assert_int_equal(r.n, 2);
        assert_int_equal(res.count, 2);
        rec_reset(&r);
    }
}

static void test_null_callback_counts(void **state)
{
    apr_pool_t *pool;
    aib_sse_parser_t *p;

    (void)state;
    assert_int_equal(apr_pool_create(&pool, root_pool), APR_SUCCESS);
    p = aib_sse_parser_create(pool, 1024, NULL, NULL);
    assert_int_equal(aib_sse_feed(p, "data: a\n\ndata: b\n\n", 18), AIB_SSE_OK);
    assert_int_equal(aib_sse_event_count(p), 2);
    apr_pool_destroy(pool);
}

/* ------------------------------------------------------------------ */
/* Size limit                                                          */

static void test_too_large_skipped(void **state)
{
    static const exp_event_t exp[] = {
        EV(NULL, "small1"), EV(NULL, "small2"), EV("next", "ok"),
    };
    static const char s[] =
        "data: small1\n\n"
        "event: big\n"
        "data: 0123456789012345678901234567890123456789\n"
        "data: more\n"
        ": comment\n"
        "\r\n"
        "data: small2\n\n"
        "event: next\ndata: ok\n\n";
    rec_t r = { 0 };
    apr_pool_t *pool;
    aib_sse_parser_t *p;

    (void)state;
    CHECK(32, s, exp, 1);

    /* The oversized event's end arrives several feeds later. */
    assert_int_equal(apr_pool_create(&pool, root_pool), APR_SUCCESS);
    p = aib_sse_parser_create(pool, 32, rec_cb, &r);
    assert_int_equal(aib_sse_feed(p, "data: a\n\nevent: big\ndata: ", 26),
                     AIB_SSE_OK);
    assert_int_equal(r.n, 1);
    /* name 3 + pending line 6 + 10 + 10 fits 32; 10 more does not. */
    assert_int_equal(aib_sse_feed(p, "0123456789", 10), AIB_SSE_OK);
    assert_int_equal(aib_sse_feed(p, "0123456789", 10), AIB_SSE_OK);
    assert_int_equal(aib_sse_feed(p, "0123456789", 10), AIB_SSE_TOO_LARGE);
    assert_int_equal(aib_sse_feed(p, "0123456789", 10), AIB_SSE_OK);
    assert_int_equal(aib_sse_feed(p, "\ndata: x\n", 9), AIB_SSE_OK);
    assert_int_equal(aib_sse_feed(p, "data: still the big one\n", 24),
                     AIB_SSE_OK);
    assert_int_equal(r.n, 1);
    assert_int_equal(aib_sse_feed(p, "\ndata: b\n\n", 10), AIB_SSE_OK);
    assert_int_equal(r.n, 2);
    assert_null(r.ev[1].event); /* "big" did not leak */
    assert_string_equal(r.ev[1].data, "b");
    assert_int_equal(aib_sse_event_count(p), 2);
    rec_reset(&r);
    apr_pool_destroy(pool);
}

static void test_too_large_accumulated(void **state)
{
    static const exp_event_t exp[] = { EV(NULL, "after") };

    (void)state;
    /* Many small data lines add up past the limit. */
    CHECK(32, "data: aaaaaaaaaa\ndata: aaaaaaaaaa\ndata: aaaaaaaaaa\n"
              "data: aaaaaaaaaa\n\ndata: after\n\n", exp, 1);
    /* The event name counts too. */
    CHECK(32, "event: nnnnnnnnnnnnnnnnnnnn\ndata: ddddddddddddddd\n\n"
              "data: after\n\n", exp, 1);
    /* Two oversized events in a row are each reported. */
    CHECK(16, "data: 0123456789abcdef\n\n"
              "data: 0123456789abcdef\n\n"
              "data: after\n\n", exp, 2);
}

static void test_too_large_boundary(void **state)
{
    /* Limit = data + event name + current line. "data:" + 11 bytes is a
     * 16-byte line: fits max_event 16; one more byte does not. Must hold
     * for lines parsed in place and for lines completed across feeds. */
    static const exp_event_t exp_fit[] = {
        EV(NULL, "0123456789a"), EV(NULL, "end"),
    };
    static const exp_event_t exp_big[] = { EV(NULL, "end") };
    static const exp_event_t exp_ev_fit[] = {
        EV("abc", "01234567"), EV(NULL, "end"),
    };

    (void)state;
    CHECK(16, "data:0123456789a\n\ndata:end\n\n", exp_fit, 0);
    CHECK(16, "data:0123456789ab\n\ndata:end\n\n", exp_big, 1);
    /* 3 (name) + 13 (line) = 16 fits; one more byte of data does not. */
    CHECK(16, "event:abc\ndata:01234567\n\ndata:end\n\n", exp_ev_fit, 0);
    CHECK(16, "event:abc\ndata:012345678\n\ndata:end\n\n", exp_big, 1);
}

static void test_large_event_grows(void **state)
{
    /* Events larger than the initial buffer, with the event name set
     * between data lines, and a long event line completed across feeds. */
    size_t a = 5000, b = 5000, e = 3000;
    size_t cap = a + b + e + 200;
    char *s = malloc(cap), *data = malloc(a + b + 2), *name = malloc(e + 1);
    size_t n = 0;
    exp_event_t exp[2];
    rec_t r = { 0 };
    run_t res;
    size_t chunks[] = { 1, 3, 1000, 4095, 4096, 4097, 9999, 100000 };
    size_t i;

    (void)state;
    assert_non_null(s);
    assert_non_null(data);
    assert_non_null(name);
    memset(name, 'N', e);
    name[e] = '\0';
    memset(data, 'a', a);
    data[a] = '\n';
    memset(data + a + 1, 'b', b);

    n += (size_t)sprintf(s + n, "data: ");
    memcpy(s + n, data, a);
    n += a;
    n += (size_t)sprintf(s + n, "\nevent: %s\ndata: ", name);
    memcpy(s + n, data + a + 1, b);
    n += b;
    n += (size_t)sprintf(s + n, "\n\ndata: tail\n\n");
    assert_true(n < cap);

    exp[0].event = name;
    exp[0].data = data;
    exp[0].len = a + 1 + b;
    exp[1].event = NULL;
    exp[1].data = "tail";
    exp[1].len = 4;

    for (i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        run_chunked(64 * 1024, s, n, chunks[i], &r, &res);
        expect_run(&r, &res, exp, 2, 0, 1, "in chunks", chunks[i], 0);
        rec_reset(&r);
    }
    /* Same stream with a limit just too small. */
    run_chunked(a + b + e, s, n, 1, &r, &res);
    assert_int_equal(res.too_large, 1);
    assert_true(events_match(&r, exp + 1, 1));
    rec_reset(&r);

    free(s);
    free(data);
    free(name);
}

/* ------------------------------------------------------------------ */
/* Counting and long streams                                           */

static void test_event_count(void **state)
{
    static const char s[] =
        "data: 1\n\n"
        "event: nodata\n\n"
        ": comment\n\n"
        "data: 0123456789012345678901234567890123456789\n\n"
        "data: 2\n\n"
        "data: 3\n";
    rec_t r = { 0 };
    apr_pool_t *pool;
    aib_sse_parser_t *p;

    (void)state;
    assert_int_equal(apr_pool_create(&pool, root_pool), APR_SUCCESS);
    p = aib_sse_parser_create(pool, 32, rec_cb, &r);
    assert_int_equal(aib_sse_event_count(p), 0);
    assert_int_equal(aib_sse_feed(p, s, 9), AIB_SSE_OK);
    assert_int_equal(aib_sse_event_count(p), 1);
    /* Data-less, comment-only and oversized frames are not counted; an
     * unterminated frame not yet. */
    assert_int_equal(aib_sse_feed(p, s + 9, sizeof(s) - 1 - 9),
                     AIB_SSE_TOO_LARGE);
    assert_int_equal(aib_sse_event_count(p), 2);
    assert_int_equal(aib_sse_feed(p, "\n", 1), AIB_SSE_OK);
    assert_int_equal(aib_sse_event_count(p), 3);
    assert_int_equal(r.n, 3);
    rec_reset(&r);
    apr_pool_destroy(pool);
}

typedef struct {
    size_t next_seq;
    size_t big;
    size_t big_len;
} seq_ctx_t;

static int seq_cb(void *ctx, const char *event, const char *data,
                  apr_size_t len)
{
    seq_ctx_t *c = ctx;

    if (event && strcmp(event, "big") == 0) {
        /* Pad events: all 'x', fixed length. */
        if (len != c->big_len || data[0] != 'x' || data[len - 1] != 'x')
            return 99;
        c->big++;
        return 0;
    }
    if (!event || strcmp(event, "response.output_text.delta") != 0)
        return 98;
    if (strncmp(data, "{\"seq\":", 7) != 0 ||
        strtoul(data + 7, NULL, 10) != c->next_seq)
        return 97;
    if (data[len] != '\0' || data[len - 1] != '}')
        return 96;
    c->next_seq++;
    return 0;
}

/* Builds n delta events; every big_every-th is followed by a big_len
 * pad event. Returns a malloc'd buffer. */
static char *build_stream(size_t n, size_t big_every, size_t big_len,
                          size_t *out_len)
{
    size_t nbig = big_every ? n / big_every : 0;
    size_t cap = n * 128 + nbig * (big_len + 32) + 64;
    char *s = malloc(cap);
    size_t i, len = 0;

    assert_non_null(s);
    for (i = 0; i < n; i++) {
        len += (size_t)snprintf(s + len, cap - len,
                                "event: response.output_text.delta\r\n"
                                "data: {\"seq\":%zu,\"delta\":\"tok\"}\r\n\r\n",
                                i);
        if (i % 1000 == 999)
            len += (size_t)snprintf(s + len, cap - len, ": ping\n\n");
        if (big_every && i % big_every == big_every - 1) {
            len += (size_t)snprintf(s + len, cap - len, "event: big\ndata: ");
            memset(s + len, 'x', big_len);
            len += big_len;
            len += (size_t)snprintf(s + len, cap - len, "\n\n");
        }
        assert_true(len + big_len + 256 < cap);
    }
    *out_len = len;
    return s;
}

/* Pool growth check: two 1-byte allocations made with nothing in between
 * are adjacent. If the parser allocated anything from the pool between
 * the two markers, they are not. */
static void check_no_pool_growth(apr_pool_t *pool, aib_sse_parser_t *p,
                                 const char *s, size_t len, size_t chunk)
{
    char *m1, *m2, *m3;
    size_t off;

    m1 = apr_palloc(pool, 1);
    m2 = apr_palloc(pool, 1);
    if ((uintptr_t)m2 != (uintptr_t)m1 + APR_ALIGN_DEFAULT(1))
        skip(); /* not a pool implementation this check understands */
    for (off = 0; off < len; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;

        assert_int_equal(aib_sse_feed(p, s + off, n), AIB_SSE_OK);
    }
    m3 = apr_palloc(pool, 1);
    assert_true((uintptr_t)m3 == (uintptr_t)m2 + APR_ALIGN_DEFAULT(1));
}

static void test_long_stream_constant_memory(void **state)
{
    const size_t n = 100000, big_every = 997, big_len = 20000;
    seq_ctx_t c = { 0, 0, big_len };
    apr_pool_t *pool;
    aib_sse_parser_t *p;
    size_t len, warm_len;
    char *s, *warm;

    (void)state;
    assert_int_equal(apr_pool_create(&pool, root_pool), APR_SUCCESS);
    p = aib_sse_parser_create(pool, 64 * 1024, seq_cb, &c);

    /* Warm-up: the largest event of the stream may grow the buffer once. */
    warm = malloc(big_len + 32);
    assert_non_null(warm);
    warm_len = (size_t)sprintf(warm, "event: big\ndata: ");
    memset(warm + warm_len, 'x', big_len);
    warm_len += big_len;
    warm[warm_len++] = '\n';
    warm[warm_len++] = '\n';
    assert_int_equal(aib_sse_feed(p, warm, warm_len), AIB_SSE_OK);
    assert_int_equal(c.big, 1);
    free(warm);

    /* 100k events (plus 100 big ones) in odd-sized chunks: no pool
     * allocation at all. */
    s = build_stream(n, big_every, big_len, &len);
    check_no_pool_growth(pool, p, s, len, 7919);
    assert_int_equal(c.next_seq, n);
    assert_int_equal(c.big, 1 + n / big_every);
    assert_int_equal(aib_sse_event_count(p), 1 + n + n / big_every);
    free(s);
    apr_pool_destroy(pool);
}

static void test_long_stream_bytewise_constant_memory(void **state)
{
    const size_t n = 20000;
    seq_ctx_t c = { 0, 0, 0 };
    apr_pool_t *pool;
    aib_sse_parser_t *p;
    size_t len;
    char *s;

    (void)state;
    assert_int_equal(apr_pool_create(&pool, root_pool), APR_SUCCESS);
    p = aib_sse_parser_create(pool, 64 * 1024, seq_cb, &c);
    s = build_stream(n, 0, 0, &len);
    /* Nothing in this stream exceeds the initial buffer, so even byte by
     * byte (every line pending) nothing may be allocated after create. */
    check_no_pool_growth(pool, p, s, len, 1);
    assert_int_equal(c.next_seq, n);
    assert_int_equal(aib_sse_event_count(p), n);
    free(s);
    apr_pool_destroy(pool);
}

/* aib_sse_frame writes what the parser reads back, also from data placed
 * in its own output buffer. */
static void test_frame(void **state)
{
    static const char data[] = "{\"a\":1}\nsecond\n\nfourth";
    static const char want[] = "event: x.y\ndata: {\"a\":1}\ndata: second\ndata: \n"
                               "data: fourth\n\n";
    apr_size_t len = sizeof(data) - 1, at = AIB_SSE_FRAME_MAX(3, len), n;
    char buf[256];
    rec_t r = { 0 };
    apr_pool_t *pool;
    aib_sse_parser_t *p;

    (void)state;
    assert_true(at + len <= sizeof(buf));
    n = aib_sse_frame(buf, "x.y", data, len);
    assert_int_equal(n, sizeof(want) - 1);
    assert_memory_equal(buf, want, n);
    memcpy(buf + at, data, len);
    assert_int_equal(aib_sse_frame(buf, "x.y", buf + at, len), n);
    assert_memory_equal(buf, want, n);
    assert_int_equal(aib_sse_frame(buf, NULL, "[DONE]", 6), 14);
    assert_memory_equal(buf, "data: [DONE]\n\n", 14);

    assert_int_equal(apr_pool_create(&pool, root_pool), APR_SUCCESS);
    p = aib_sse_parser_create(pool, 1024, rec_cb, &r);
    n = aib_sse_frame(buf, "x.y", data, len);
    assert_int_equal(aib_sse_feed(p, buf, n), AIB_SSE_OK);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.ev[0].event, "x.y");
    assert_int_equal(r.ev[0].len, len);
    assert_memory_equal(r.ev[0].data, data, len);
    rec_reset(&r);
    apr_pool_destroy(pool);
}

/* ------------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    if (apr_initialize() != APR_SUCCESS)
        return -1;
    return apr_pool_create(&root_pool, NULL) == APR_SUCCESS ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    apr_pool_destroy(root_pool);
    apr_terminate();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_event),
        cmocka_unit_test(test_named_events),
        cmocka_unit_test(test_multiline_data),
        cmocka_unit_test(test_comments),
        cmocka_unit_test(test_line_endings),
        cmocka_unit_test(test_crlf_split_across_feeds),
        cmocka_unit_test(test_frames_without_data),
        cmocka_unit_test(test_field_without_colon),
        cmocka_unit_test(test_no_space_after_colon),
        cmocka_unit_test(test_field_names_exact),
        cmocka_unit_test(test_embedded_nul),
        cmocka_unit_test(test_unterminated_frame),
        cmocka_unit_test(test_bom),
        cmocka_unit_test(test_openai_chat_stream),
        cmocka_unit_test(test_openai_responses_stream),
        cmocka_unit_test(test_callback_stop),
        cmocka_unit_test(test_null_callback_counts),
        cmocka_unit_test(test_too_large_skipped),
        cmocka_unit_test(test_too_large_accumulated),
        cmocka_unit_test(test_too_large_boundary),
        cmocka_unit_test(test_large_event_grows),
        cmocka_unit_test(test_event_count),
        cmocka_unit_test(test_long_stream_constant_memory),
        cmocka_unit_test(test_long_stream_bytewise_constant_memory),
        cmocka_unit_test(test_frame),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
