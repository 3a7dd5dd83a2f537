/* Unit tests for the AWS event stream decoder (src/eventstream.c).
 *
 * Frames come from a small encoder below (its CRCs from aib_crc32, which
 * the check value and the golden frame verify independently). Streams are
 * decoded under every cutting into two feeds and byte by byte: the events
 * must not depend on how the bytes arrive. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "unit.h"

#include <string.h>

#include <apr_base64.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <apr_tables.h>

#include "eventstream.h"

/* ------------------------------------------------------------------ */
/* Recording callback                                                  */

typedef struct {
    apr_array_header_t *names;   /* const char * */
    apr_array_header_t *data;    /* const char * */
    int stop_at;                 /* return 7 from this event (1-based), 0: never */
} rec_t;

static int record(void *ctx, const char *event, const char *data, apr_size_t len)
{
    rec_t *r = ctx;

    assert_non_null(event);
    assert_int_equal(data[len], '\0');
    assert_int_equal(strlen(data), len);
    APR_ARRAY_PUSH(r->names, const char *) = apr_pstrdup(pool, event);
    APR_ARRAY_PUSH(r->data, const char *) = apr_pstrmemdup(pool, data, len);
    return r->stop_at == r->names->nelts ? 7 : 0;
}

static rec_t *recorder(void)
{
    rec_t *r = apr_pcalloc(pool, sizeof(*r));

    r->names = apr_array_make(pool, 4, sizeof(const char *));
    r->data = apr_array_make(pool, 4, sizeof(const char *));
    return r;
}

#define NAME(r, i) APR_ARRAY_IDX((r)->names, i, const char *)
#define DATA(r, i) APR_ARRAY_IDX((r)->data, i, const char *)

/* ------------------------------------------------------------------ */
/* Encoder                                                             */

typedef struct {
    char *buf;
    apr_size_t len;
} bytes_t;

static void put(bytes_t *b, const void *p, apr_size_t n)
{
    char *nbuf = apr_palloc(pool, b->len + n + 1);

    if (b->len)
        memcpy(nbuf, b->buf, b->len);
    memcpy(nbuf + b->len, p, n);
    b->buf = nbuf;
    b->len += n;
}

static void put32(bytes_t *b, uint32_t v)
{
    unsigned char be[4] = { v >> 24, v >> 16, v >> 8, v };
    put(b, be, 4);
}

/* A header with a string value (type 7). */
static void header(bytes_t *h, const char *name, const char *value)
{
    unsigned char n = (unsigned char)strlen(name), type = 7;
    unsigned char vlen[2] = { strlen(value) >> 8, strlen(value) & 0xff };

    put(h, &n, 1);
    put(h, name, n);
    put(h, &type, 1);
    put(h, vlen, 2);
    put(h, value, strlen(value));
}

static bytes_t frame(const bytes_t *headers, const char *payload)
{
    bytes_t f = { NULL, 0 };
    apr_size_t plen = strlen(payload);

    put32(&f, (uint32_t)(16 + headers->len + plen));
    put32(&f, (uint32_t)headers->len);
    put32(&f, aib_crc32(0, f.buf, 8));
    if (headers->len)
        put(&f, headers->buf, headers->len);
    put(&f, payload, plen);
    put32(&f, aib_crc32(0, f.buf, f.len));
    return f;
}

static bytes_t message(const char *type, const char *kind_header, const char *kind,
                       const char *payload)
{
    bytes_t h = { NULL, 0 };

    header(&h, kind_header, kind);
    header(&h, ":content-type", "application/json");
    header(&h, ":message-type", type);
    return frame(&h, payload);
}

/* A chunk carrying one Anthropic event, with the padding Bedrock adds. */
static bytes_t chunk(const char *json)
{
    char *b64 = apr_palloc(pool, apr_base64_encode_len((int)strlen(json)));

    apr_base64_encode(b64, json, (int)strlen(json));
    return message("event", ":event-type", "chunk",
                   apr_psprintf(pool, "{\"bytes\":\"%s\",\"p\":\"abcdef\"}", b64));
}

static bytes_t cat(bytes_t a, bytes_t b)
{
    put(&a, b.buf, b.len);
    return a;
}

/* ------------------------------------------------------------------ */
/* Decoding helpers                                                    */

#define MAX_FRAME (64 * 1024)

/* Feeds s whole, then finish(): the first non-zero result, or 0. */
static int decode(const bytes_t *s, rec_t *r, apr_size_t max_frame, const char **error)
{
    aib_eventstream_t *d = aib_eventstream_create(pool, max_frame, record, r);
    int rc = aib_eventstream_feed(d, s->buf, s->len);

    if (!rc)
        rc = aib_eventstream_finish(d);
    *error = aib_eventstream_error(d);
    return rc;
}

/* Every cutting into two feeds, then byte by byte, must give `want`'s
 * events. */
static void same_when_cut(const bytes_t *s, const rec_t *want)
{
    apr_size_t cut, i;

    for (cut = 0; cut <= s->len + 1; cut++) {
        rec_t *r = recorder();
        aib_eventstream_t *d = aib_eventstream_create(pool, MAX_FRAME, record, r);
        int j;

        if (cut <= s->len) {
            assert_int_equal(aib_eventstream_feed(d, s->buf, cut), 0);
            assert_int_equal(aib_eventstream_feed(d, s->buf + cut, s->len - cut), 0);
        }
        else {
            for (i = 0; i < s->len; i++)
                assert_int_equal(aib_eventstream_feed(d, s->buf + i, 1), 0);
        }
        assert_int_equal(aib_eventstream_finish(d), 0);
        assert_int_equal(r->names->nelts, want->names->nelts);
        for (j = 0; j < want->names->nelts; j++) {
            assert_string_equal(NAME(r, j), NAME(want, j));
            assert_string_equal(DATA(r, j), DATA(want, j));
        }
    }
}

/* The one event s decodes to: its data (the name with *name). */
static const char *only_event(const bytes_t *s, const char **name)
{
    rec_t *r = recorder();
    const char *error;

    assert_int_equal(decode(s, r, MAX_FRAME, &error), 0);
    assert_int_equal(r->names->nelts, 1);
    *name = NAME(r, 0);
    return DATA(r, 0);
}

/* ------------------------------------------------------------------ */
/* Tests                                                               */

#define START "{\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10," \
              "\"output_tokens\":1}}}"
#define DELTA "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":" \
              "\"text_delta\",\"text\":\"Hi \\\"there\\\"/\\n\"}}"
#define STOP "{\"type\":\"message_stop\",\"amazon-bedrock-invocationMetrics\":" \
             "{\"inputTokenCount\":10,\"outputTokenCount\":5}}"

static void test_crc32_check_value(void **state)
{
    (void)state;
    assert_int_equal(aib_crc32(0, "123456789", 9), 0xCBF43926);
    assert_int_equal(aib_crc32(aib_crc32(0, "1234", 4), "56789", 5), 0xCBF43926);
    assert_int_equal(aib_crc32(0, "", 0), 0);
}

/* Written by hand in Python (struct + zlib.crc32) and parsed back by
 * botocore 1.29's botocore.eventstream.EventStreamBuffer. */
static const char golden_delta[] =
    "\x00\x00\x00\xd8\x00\x00\x00\x4b\x3d\xa9\x73\xe9\x0b\x3a\x65\x76\x65\x6e"
    "\x74\x2d\x74\x79\x70\x65\x07\x00\x05\x63\x68\x75\x6e\x6b\x0d\x3a\x63\x6f"
    "\x6e\x74\x65\x6e\x74\x2d\x74\x79\x70\x65\x07\x00\x10\x61\x70\x70\x6c\x69"
    "\x63\x61\x74\x69\x6f\x6e\x2f\x6a\x73\x6f\x6e\x0d\x3a\x6d\x65\x73\x73\x61"
    "\x67\x65\x2d\x74\x79\x70\x65\x07\x00\x05\x65\x76\x65\x6e\x74\x7b\x22\x62"
    "\x79\x74\x65\x73\x22\x3a\x20\x22\x65\x79\x4a\x30\x65\x58\x42\x6c\x49\x6a"
    "\x6f\x69\x59\x32\x39\x75\x64\x47\x56\x75\x64\x46\x39\x69\x62\x47\x39\x6a"
    "\x61\x31\x39\x6b\x5a\x57\x78\x30\x59\x53\x49\x73\x49\x6d\x6c\x75\x5a\x47"
    "\x56\x34\x49\x6a\x6f\x77\x4c\x43\x4a\x6b\x5a\x57\x78\x30\x59\x53\x49\x36"
    "\x65\x79\x4a\x30\x65\x58\x42\x6c\x49\x6a\x6f\x69\x64\x47\x56\x34\x64\x46"
    "\x39\x6b\x5a\x57\x78\x30\x59\x53\x49\x73\x49\x6e\x52\x6c\x65\x48\x51\x69"
    "\x4f\x69\x4a\x49\x61\x53\x4a\x39\x66\x51\x3d\x3d\x22\x7d\xbd\xe3\xb0\x5f";
#define GOLDEN_DELTA "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":" \
                     "{\"type\":\"text_delta\",\"text\":\"Hi\"}}"

static void test_golden_frame(void **state)
{
    bytes_t s = { (char *)golden_delta, sizeof(golden_delta) - 1 };
    rec_t *r = recorder();
    const char *error;

    (void)state;
    assert_int_equal(decode(&s, r, MAX_FRAME, &error), 0);
    assert_null(error);
    assert_int_equal(r->names->nelts, 1);
    assert_string_equal(NAME(r, 0), "content_block_delta");
    assert_string_equal(DATA(r, 0), GOLDEN_DELTA);
    same_when_cut(&s, r);
}

static void test_stream_cut_anywhere(void **state)
{
    bytes_t s = cat(cat(chunk(START), chunk(DELTA)), chunk(STOP));
    rec_t *r = recorder();
    const char *error;

    (void)state;
    /* Several frames in one feed. */
    assert_int_equal(decode(&s, r, MAX_FRAME, &error), 0);
    assert_int_equal(r->names->nelts, 3);
    assert_string_equal(NAME(r, 0), "message_start");
    assert_string_equal(DATA(r, 0), START);
    assert_string_equal(NAME(r, 1), "content_block_delta");
    assert_string_equal(DATA(r, 1), DELTA);
    assert_string_equal(NAME(r, 2), "message_stop");
    assert_string_equal(DATA(r, 2), STOP);
    same_when_cut(&s, r);
}

/* A frame larger than the decoder's first buffer, arriving in pieces. */
static void test_large_frame(void **state)
{
    char *text = apr_palloc(pool, 20001);
    const char *json, *error;
    bytes_t s;
    rec_t *r = recorder();
    apr_size_t i;

    (void)state;
    memset(text, 'x', 20000);
    text[20000] = '\0';
    json = apr_psprintf(pool, "{\"type\":\"content_block_delta\",\"text\":\"%s\"}", text);
    s = cat(chunk(json), chunk(STOP));
    assert_int_equal(decode(&s, r, MAX_FRAME, &error), 0);
    assert_int_equal(r->names->nelts, 2);
    assert_string_equal(DATA(r, 0), json);
    for (i = 1; i < s.len; i += 997) {
        rec_t *cut = recorder();
        aib_eventstream_t *d = aib_eventstream_create(pool, MAX_FRAME, record, cut);

        assert_int_equal(aib_eventstream_feed(d, s.buf, i), 0);
        assert_int_equal(aib_eventstream_feed(d, s.buf + i, s.len - i), 0);
        assert_int_equal(cut->names->nelts, 2);
        assert_string_equal(DATA(cut, 0), json);
        assert_string_equal(DATA(cut, 1), STOP);
    }
}

static void test_callback_stop(void **state)
{
    bytes_t s = cat(cat(chunk(START), chunk(DELTA)), chunk(STOP));
    rec_t *r = recorder();
    const char *error;

    (void)state;
    r->stop_at = 2;
    assert_int_equal(decode(&s, r, MAX_FRAME, &error), 7);
    assert_null(error);
    assert_int_equal(r->names->nelts, 2);
}

/* Decoding s must fail with `why` after `events` events, however cut in
 * two, and stay failed. */
static void malformed(const bytes_t *s, apr_size_t max_frame, int events, const char *why)
{
    apr_size_t cut;

    for (cut = 0; cut <= s->len; cut++) {
        rec_t *r = recorder();
        aib_eventstream_t *d = aib_eventstream_create(pool, max_frame, record, r);
        int rc = aib_eventstream_feed(d, s->buf, cut);

        if (!rc)
            rc = aib_eventstream_feed(d, s->buf + cut, s->len - cut);
        if (!rc)
            rc = aib_eventstream_finish(d);
        assert_int_equal(rc, AIB_FRAMING_MALFORMED);
        assert_string_equal(aib_eventstream_error(d), why);
        assert_int_equal(r->names->nelts, events);
        assert_int_equal(aib_eventstream_feed(d, golden_delta, sizeof(golden_delta) - 1),
                         AIB_FRAMING_MALFORMED);
        assert_int_equal(aib_eventstream_finish(d), AIB_FRAMING_MALFORMED);
        assert_int_equal(r->names->nelts, events);
    }
}

static void test_bad_prelude_crc(void **state)
{
    bytes_t s = cat(chunk(START), chunk(DELTA));

    (void)state;
    s.buf[chunk(START).len + 9] ^= 0x01;   /* the second prelude's CRC */
    malformed(&s, MAX_FRAME, 1, "prelude CRC mismatch");
    s = chunk(START);
    s.buf[3] ^= 0x40;   /* the length, under that CRC */
    malformed(&s, MAX_FRAME, 0, "prelude CRC mismatch");
}

static void test_bad_message_crc(void **state)
{
    bytes_t s = cat(chunk(START), chunk(DELTA));
    apr_size_t i, first = chunk(START).len;

    (void)state;
    /* Flipped bits anywhere past the second frame's prelude. */
    for (i = first + 12; i < s.len; i += 7) {
        bytes_t t = s;

        t.buf = apr_pmemdup(pool, s.buf, s.len);
        t.buf[i] ^= (char)(1 << (i % 8));
        malformed(&t, MAX_FRAME, 1, "message CRC mismatch");
    }
}

/* A prelude with a good CRC, for lengths that cannot be. */
static bytes_t prelude(uint32_t total, uint32_t headers)
{
    bytes_t p = { NULL, 0 };

    put32(&p, total);
    put32(&p, headers);
    put32(&p, aib_crc32(0, p.buf, 8));
    return p;
}

static void test_impossible_lengths(void **state)
{
    bytes_t s;

    (void)state;
    s = prelude(15, 0);
    malformed(&s, MAX_FRAME, 0, "impossible frame length");
    s = prelude(0, 0);
    malformed(&s, MAX_FRAME, 0, "impossible frame length");
    s = prelude(100, 85);
    malformed(&s, MAX_FRAME, 0, "impossible frame length");
    s = prelude(100, 0xffffffff);
    malformed(&s, MAX_FRAME, 0, "impossible frame length");
}

/* The smallest frame: no header, no payload, no event. */
static void test_empty_frame(void **state)
{
    bytes_t none = { NULL, 0 };
    bytes_t s = cat(frame(&none, ""), chunk(STOP));
    rec_t *r = recorder();
    const char *error;

    (void)state;
    assert_int_equal(s.len - chunk(STOP).len, 16);
    assert_int_equal(decode(&s, r, MAX_FRAME, &error), 0);
    assert_int_equal(r->names->nelts, 1);
    same_when_cut(&s, r);
}

/* Over max_frame, judged from the prelude: never held. */
static void test_oversize(void **state)
{
    bytes_t s = cat(chunk(START), chunk(DELTA));
    rec_t *r = recorder();
    const char *error;

    (void)state;
    malformed(&s, chunk(START).len, 1, "frame larger than the limit");
    s = prelude(0xffffffff, 0);
    malformed(&s, MAX_FRAME, 0, "frame larger than the limit");
    /* Exactly at the limit is fine. */
    s = chunk(DELTA);
    assert_int_equal(decode(&s, r, s.len, &error), 0);
    assert_int_equal(r->names->nelts, 1);
}

static void test_truncated(void **state)
{
    bytes_t s = cat(chunk(START), chunk(DELTA));
    apr_size_t cut;

    (void)state;
    for (cut = chunk(START).len + 1; cut < s.len; cut++) {
        rec_t *r = recorder();
        aib_eventstream_t *d = aib_eventstream_create(pool, MAX_FRAME, record, r);

        assert_int_equal(aib_eventstream_feed(d, s.buf, cut), 0);
        assert_int_equal(r->names->nelts, 1);
        assert_null(aib_eventstream_error(d));
        assert_int_equal(aib_eventstream_finish(d), AIB_FRAMING_MALFORMED);
        assert_string_equal(aib_eventstream_error(d), "stream cut inside a frame");
    }
}

static void test_exceptions(void **state)
{
    static const char *const cases[][2] = {
        { "throttlingException", "rate_limit_error" },
        { "ThrottlingException", "rate_limit_error" },
        { "serviceUnavailableException", "overloaded_error" },
        { "modelTimeoutException", "timeout_error" },
        { "validationException", "invalid_request_error" },
        { "internalServerException", "api_error" },
        { "modelStreamErrorException", "api_error" },
        { "somethingNewException", "api_error" },
    };
    apr_size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bytes_t s = message("exception", ":exception-type", cases[i][0],
                            "{\"message\":\"Too many \\\"requests\\\"/\"}");
        rec_t *r = recorder();
        const char *error;

        assert_int_equal(decode(&s, r, MAX_FRAME, &error), 0);
        assert_int_equal(r->names->nelts, 1);
        assert_string_equal(NAME(r, 0), "error");
        assert_string_equal(DATA(r, 0),
                            apr_psprintf(pool, "{\"type\":\"error\",\"error\":{\"type\":\"%s\","
                                         "\"message\":\"Too many \\\"requests\\\"/\","
                                         "\"aws_exception\":\"%s\"}}",
                                         cases[i][1], cases[i][0]));
        same_when_cut(&s, r);
    }
}

/* Without a message in the payload, the exception's name is the message. */
static void test_exception_without_message(void **state)
{
    bytes_t s = message("exception", ":exception-type", "throttlingException", "");
    const char *name;

    (void)state;
    assert_string_equal(only_event(&s, &name),
                        "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\","
                        "\"message\":\"throttlingException\","
                        "\"aws_exception\":\"throttlingException\"}}");
    s = message("exception", ":content-type", "application/json", "{}");
    assert_string_equal(only_event(&s, &name),
                        "{\"type\":\"error\",\"error\":{\"type\":\"api_error\","
                        "\"message\":\"unknownException\","
                        "\"aws_exception\":\"unknownException\"}}");
}

/* The framing's own error message: :error-code and :error-message. */
static void test_error_message(void **state)
{
    bytes_t h = { NULL, 0 }, s;
    const char *name, *data;

    (void)state;
    header(&h, ":message-type", "error");
    header(&h, ":error-code", "InternalFailure");
    header(&h, ":error-message", "something broke");
    s = frame(&h, "");
    data = only_event(&s, &name);
    assert_string_equal(name, "error");
    assert_string_equal(data, "{\"type\":\"error\",\"error\":{\"type\":\"api_error\","
                        "\"message\":\"something broke\",\"aws_exception\":\"InternalFailure\"}}");
}

/* Events other than chunk carry no answer: skipped, the stream goes on.
 * Headers of every value type are read over. */
static void test_other_events_skipped(void **state)
{
    static const unsigned char typed[] = {
        2, 'b', '0', 0,                                 /* true */
        2, 'b', '1', 1,                                 /* false */
        2, 'b', '2', 2, 0x7f,                           /* byte */
        2, 'b', '3', 3, 0, 1,                           /* short */
        2, 'b', '4', 4, 0, 0, 0, 1,                     /* int */
        2, 'b', '5', 5, 0, 0, 0, 0, 0, 0, 0, 1,         /* long */
        2, 'b', '6', 6, 0, 3, 'a', 'b', 'c',            /* bytes */
        2, 'b', '8', 8, 0, 0, 1, 0x8c, 0, 0, 0, 0,      /* timestamp */
        2, 'b', '9', 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, /* uuid */
        /* A wanted name whose value is no string: not taken. */
        11, ':', 'e', 'v', 'e', 'n', 't', '-', 't', 'y', 'p', 'e', 4, 0, 0, 0, 1,
    };
    bytes_t h = { NULL, 0 }, odd = { NULL, 0 }, s;
    rec_t *r = recorder();
    const char *error;

    (void)state;
    put(&odd, typed, sizeof(typed));
    header(&odd, ":message-type", "event");
    header(&h, ":message-type", "event");
    header(&h, ":event-type", "initial-response");
    s = cat(cat(cat(frame(&h, "{}"), chunk(START)), frame(&odd, "{}")), chunk(STOP));
    s = cat(s, message("surprise", ":event-type", "chunk", "{}"));
    assert_int_equal(decode(&s, r, MAX_FRAME, &error), 0);
    assert_int_equal(r->names->nelts, 2);
    assert_string_equal(NAME(r, 0), "message_start");
    assert_string_equal(NAME(r, 1), "message_stop");
    same_when_cut(&s, r);
}

static void test_bad_headers(void **state)
{
    static const unsigned char unknown_type[] = { 1, 'x', 10, 0 };
    static const unsigned char empty_name[] = { 0, 0 };
    static const unsigned char long_value[] = { 1, 'x', 7, 0, 9, 'a' };
    static const unsigned char cut_length[] = { 1, 'x', 6, 0 };
    static const unsigned char cut_name[] = { 5, 'x', 'y' };
    static const unsigned char cut_fixed[] = { 1, 'x', 4, 0, 0 };
    static const struct {
        const unsigned char *h;
        apr_size_t len;
        const char *why;
    } cases[] = {
        { unknown_type, sizeof(unknown_type), "unknown header value type" },
        { empty_name, sizeof(empty_name), "header cut short" },
        { long_value, sizeof(long_value), "header cut short" },
        { cut_length, sizeof(cut_length), "header cut short" },
        { cut_name, sizeof(cut_name), "header cut short" },
        { cut_fixed, sizeof(cut_fixed), "header cut short" },
    };
    apr_size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bytes_t h = { NULL, 0 }, s;

        put(&h, cases[i].h, cases[i].len);
        s = cat(chunk(START), frame(&h, "{}"));
        malformed(&s, MAX_FRAME, 1, cases[i].why);
    }
}

/* Base64 garbage and chunks that carry no Anthropic event. */
static void test_bad_chunks(void **state)
{
    static const char *const cases[][2] = {
        { "{}", "chunk without its bytes" },
        { "not json", "chunk without its bytes" },
        { "{\"bytes\":42}", "chunk without its bytes" },
        { "{\"bytes\":\"\"}", "chunk bytes are no base64 JSON object" },
        { "{\"bytes\":\"!!!!\"}", "chunk bytes are no base64 JSON object" },
        { "{\"bytes\":\"eyJ0eXBlIjoieCJ9\\u0000\"}", "chunk bytes are no base64 JSON object" },
        { "{\"bytes\":\"eyJ0eXBlIjoieCJ\"}", "chunk bytes are no base64 JSON object" },
        { "{\"bytes\":\"eyJ0eXBlIjoieCJ9===\"}", "chunk bytes are no base64 JSON object" },
        { "{\"bytes\":\"eyJ0eXBl=joieCJ9\"}", "chunk bytes are no base64 JSON object" },
        /* "not json", "[1]", {"type":1}, {"a":"b"} */
        { "{\"bytes\":\"bm90IGpzb24=\"}", "chunk bytes are no base64 JSON object" },
        { "{\"bytes\":\"WzFd\"}", "chunk bytes are no base64 JSON object" },
        { "{\"bytes\":\"eyJ0eXBlIjoxfQ==\"}", "chunk event has no type" },
        { "{\"bytes\":\"eyJhIjoiYiJ9\"}", "chunk event has no type" },
        /* {"type":""}, {"type":"a\nb"} */
        { "{\"bytes\":\"eyJ0eXBlIjoiIn0=\"}", "chunk event has no type" },
        { "{\"bytes\":\"eyJ0eXBlIjoiYVxuYiJ9\"}", "chunk event has no type" },
    };
    apr_size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bytes_t s = cat(chunk(START), message("event", ":event-type", "chunk", cases[i][0]));
        malformed(&s, MAX_FRAME, 1, cases[i][1]);
    }
}

/* JSON may escape the slashes of the base64. */
static void test_escaped_base64(void **state)
{
    /* {"type":"x","v":"???"}, whose base64 has a '/'. */
    bytes_t s = message("event", ":event-type", "chunk",
                        "{\"bytes\":\"eyJ0eXBlIjoieCIsInYiOiI\\/Pz8ifQ==\"}");
    const char *name;

    (void)state;
    assert_string_equal(only_event(&s, &name), "{\"type\":\"x\",\"v\":\"???\"}");
}

/* A raw CR, JSON whitespace, would end the line of the SSE data. */
static void test_carriage_return(void **state)
{
    bytes_t s = chunk("{\"type\":\"x\",\r\n\"v\":1}\r");
    const char *name;

    (void)state;
    assert_string_equal(only_event(&s, &name), "{\"type\":\"x\", \n\"v\":1} ");
}

static void test_framing(void **state)
{
    apr_table_t *headers = apr_table_make(pool, 1);
    bytes_t s = chunk(STOP);
    rec_t *r = recorder();
    void *d;

    (void)state;
    assert_false(aib_eventstream_framing.is_stream(headers));
    apr_table_setn(headers, "Content-Type", "application/json");
    assert_false(aib_eventstream_framing.is_stream(headers));
    apr_table_setn(headers, "Content-Type", "application/vnd.amazon.eventstream");
    assert_true(aib_eventstream_framing.is_stream(headers));
    d = aib_eventstream_framing.create(pool, MAX_FRAME, record, r);
    assert_int_equal(aib_eventstream_framing.feed(d, s.buf, s.len - 1), 0);
    assert_null(aib_eventstream_framing.error(d));
    assert_int_equal(aib_eventstream_framing.finish(d), AIB_FRAMING_MALFORMED);
    assert_string_equal(aib_eventstream_framing.error(d), "stream cut inside a frame");
    assert_int_equal(r->names->nelts, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32_check_value),
        cmocka_unit_test_teardown(test_golden_frame, aib_clear_pool),
        cmocka_unit_test_teardown(test_stream_cut_anywhere, aib_clear_pool),
        cmocka_unit_test_teardown(test_large_frame, aib_clear_pool),
        cmocka_unit_test_teardown(test_callback_stop, aib_clear_pool),
        cmocka_unit_test_teardown(test_bad_prelude_crc, aib_clear_pool),
        cmocka_unit_test_teardown(test_bad_message_crc, aib_clear_pool),
        cmocka_unit_test_teardown(test_impossible_lengths, aib_clear_pool),
        cmocka_unit_test_teardown(test_empty_frame, aib_clear_pool),
        cmocka_unit_test_teardown(test_oversize, aib_clear_pool),
        cmocka_unit_test_teardown(test_truncated, aib_clear_pool),
        cmocka_unit_test_teardown(test_exceptions, aib_clear_pool),
        cmocka_unit_test_teardown(test_exception_without_message, aib_clear_pool),
        cmocka_unit_test_teardown(test_error_message, aib_clear_pool),
        cmocka_unit_test_teardown(test_other_events_skipped, aib_clear_pool),
        cmocka_unit_test_teardown(test_bad_headers, aib_clear_pool),
        cmocka_unit_test_teardown(test_bad_chunks, aib_clear_pool),
        cmocka_unit_test_teardown(test_escaped_base64, aib_clear_pool),
        cmocka_unit_test_teardown(test_carriage_return, aib_clear_pool),
        cmocka_unit_test_teardown(test_framing, aib_clear_pool),
    };
    return AIB_RUN_TESTS(tests);
}
