/* libFuzzer target: usage read from streams (src/usage.c,
 * aib_usage_from_event and the Chat format's stream_usage_strip), fed as the bridge feeds
 * them: the input is an SSE stream, cut into events by src/sse.c.
 *
 * Every event goes to aib_usage_from_event for each kind (chat, responses,
 * messages, none), with its event name and without one; counts must never
 * go negative. Every event's data also goes through the Chat strip, into
 * a separate buffer and in place: both must agree, never grow the data,
 * and stripping what was stripped must change nothing more. Data with a
 * NUL byte in it must give nothing. */
#include "fuzz.h"
#include "sse.h"
#include "format.h"
#include "usage.h"

#define KINDS 4

typedef struct {
    apr_pool_t *pool;
    aib_usage_t u[KINDS], unnamed[KINDS];
} ctx_t;

static const aib_format_t *const kinds[KINDS] = {
    &aib_format_chat, &aib_format_responses, &aib_format_messages, NULL
};

static void check_sane(const aib_usage_t *u)
{
    int i;

    FUZZ_CHECK(u->input >= 0 && u->output >= 0 && u->cache_read >= 0
               && u->cache_write >= 0 && u->reasoning >= 0);
    for (i = 0; i < u->tools->nelts; i++) {
        const char *name = APR_ARRAY_IDX(u->tools, i, const char *);

        FUZZ_CHECK(name != NULL && *name);
    }
}

static void strip(const char *data, apr_size_t len)
{
    char *in = fuzz_dup((const uint8_t *)data, len);
    char *out = malloc(len ? len : 1), *place = fuzz_dup((const uint8_t *)data, len);
    char *again = malloc(len ? len : 1);
    apr_size_t out_len = (apr_size_t)-1, place_len = (apr_size_t)-1, again_len;
    int rc, rc_place, rc_again;

    FUZZ_CHECK(out && again);
    rc = aib_format_chat.stream_usage_strip(in, len, out, &out_len);
    rc_place = aib_format_chat.stream_usage_strip(place, len, place, &place_len);
    FUZZ_CHECK(rc == 0 || rc == 1);
    FUZZ_CHECK(rc_place == rc);
    if (rc) {
        FUZZ_CHECK(out_len <= len && place_len == out_len);
        FUZZ_CHECK(out_len == 0 || !memcmp(out, place, out_len));
        FUZZ_CHECK(!memcmp(in, data, len)); /* the input is left alone */
        rc_again = aib_format_chat.stream_usage_strip(out, out_len, again, &again_len);
        FUZZ_CHECK(rc_again == 1 && again_len == out_len);
        FUZZ_CHECK(out_len == 0 || !memcmp(again, out, out_len));
    }
    free(in);
    free(out);
    free(place);
    free(again);
}

static int on_event(void *arg, const char *event, const char *data, apr_size_t len)
{
    ctx_t *c = arg;
    int k;

    for (k = 0; k < KINDS; k++) {
        aib_usage_from_event(&c->u[k], c->pool, kinds[k], event, data, len);
        aib_usage_from_event(&c->unnamed[k], c->pool, kinds[k], NULL, data, len);
        check_sane(&c->u[k]);
        check_sane(&c->unnamed[k]);
    }
    strip(data, len);
    /* Data with a NUL byte is not JSON: nothing may be read from it
     * (json-c would take the NUL for the end of its input). */
    if (memchr(data, '\0', len)) {
        for (k = 0; k < KINDS; k++) {
            aib_usage_t u;

            aib_usage_init(&u, c->pool);
            aib_usage_from_event(&u, c->pool, kinds[k], event, data, len);
            aib_usage_from_event(&u, c->pool, kinds[k], NULL, data, len);
            FUZZ_CHECK(!u.seen && u.tools->nelts == 0);
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *pool = fuzz_pool(), *events;
    aib_sse_parser_t *p;
    ctx_t c;
    int k;

    /* Tool names must outlive the pool events are read in. */
    apr_pool_create(&events, pool);
    c.pool = events;
    for (k = 0; k < KINDS; k++) {
        aib_usage_init(&c.u[k], pool);
        aib_usage_init(&c.unnamed[k], pool);
    }
    p = aib_sse_parser_create(events, 1 << 20, on_event, &c);
    aib_sse_feed(p, (const char *)data, size);
    aib_sse_feed(p, "\n\n", 2); /* a last event without its blank line */
    apr_pool_destroy(events);
    for (k = 0; k < KINDS; k++) {
        check_sane(&c.u[k]);
        check_sane(&c.unnamed[k]);
    }
    FUZZ_CHECK(!c.u[KINDS - 1].seen && c.u[KINDS - 1].tools->nelts == 0);

    /* Each event's data on its own, too: a stream of one event. */
    aib_usage_from_event(&c.u[0], pool, &aib_format_chat, NULL, (const char *)data, size);
    strip((const char *)data, size);
    apr_pool_destroy(pool);
    return 0;
}
