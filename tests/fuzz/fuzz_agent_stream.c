/* libFuzzer target: the agentic loop's stream filter (src/agent_stream.c),
 * fed as the module feeds it: SSE cut into events by src/sse.c.
 *
 * The input is a run of iterations separated by a 0x1e byte; the first
 * byte picks the route, whether the client asked for usage and a cap on
 * held-back data (small ones reach AIB_AGENT_TOO_LARGE). Every frame the
 * client gets must be one whole SSE event that the parser reads back with
 * the same data; an iteration that asks for tools has calls and an
 * assistant turn that is JSON; after a stopping outcome nothing more goes
 * out. */
#include <json.h>

#include "fuzz.h"
#include "agent_stream.h"
#include "sse.h"

typedef struct {
    apr_pool_t *pool;
    int frames;
    int events;      /* read back from the last frame */
} ctx_t;

static int count(void *arg, const char *event, const char *data, apr_size_t len)
{
    (void)event;
    (void)data;
    (void)len;
    ((ctx_t *)arg)->events++;
    return 0;
}

static int emit(void *arg, const char *frame, apr_size_t len)
{
    ctx_t *c = arg;
    apr_pool_t *p;
    aib_sse_parser_t *parser;
    int comment = len > 0 && frame[0] == ':';

    FUZZ_CHECK(len >= 2 && frame[len - 1] == '\n' && frame[len - 2] == '\n');
    apr_pool_create(&p, c->pool);
    c->events = 0;
    parser = aib_sse_parser_create(p, (apr_size_t)-1, count, c);
    FUZZ_CHECK(aib_sse_feed(parser, frame, len) == AIB_SSE_OK);
    FUZZ_CHECK(c->events == (comment ? 0 : 1));
    apr_pool_destroy(p);
    c->frames++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const aib_format_t *const kinds[3] = {
        &aib_format_chat, &aib_format_responses, &aib_format_messages
    };
    apr_pool_t *pool;
    aib_agent_stream_t *s;
    ctx_t c = { 0 };
    const uint8_t *end = data + size, *cut;
    int over = 0, frames;

    if (!size)
        return 0;
    pool = fuzz_pool();
    c.pool = pool;
    s = aib_agent_stream_create(pool, kinds[data[0] % 3], "bmcp_", NULL, data[0] & 4,
                                data[0] & 8 ? 64 + 16 * (data[0] >> 4) : 0, emit, &c);
    for (data++; data <= end && !over; data = cut + 1) {
        aib_sse_parser_t *p = aib_sse_parser_create(pool, 1 << 20, aib_agent_stream_event, s);
        aib_agent_turn_t *t;

        cut = memchr(data, 0x1e, (size_t)(end - data));
        if (!cut)
            cut = end;
        aib_sse_feed(p, (const char *)data, (size_t)(cut - data));
        aib_sse_feed(p, "\n\n", 2);
        t = aib_agent_stream_end(s, pool);
        FUZZ_CHECK(t->outcome >= AIB_AGENT_DONE && t->outcome <= AIB_AGENT_CLIENT_GONE);
        if (t->outcome == AIB_AGENT_TOOLS) {
            json_object *turn = json_tokener_parse(t->assistant);

            FUZZ_CHECK(t->calls->nelts > 0 && !t->client_tools);
            FUZZ_CHECK(turn != NULL);
            json_object_put(turn);
        }
        FUZZ_CHECK((t->outcome == AIB_AGENT_ERROR || t->outcome == AIB_AGENT_TOO_LARGE)
                   == (t->error != NULL));
        over = t->outcome != AIB_AGENT_TOOLS;
    }
    frames = c.frames;
    if (over) {
        /* The stream is over: nothing more reaches the client. */
        FUZZ_CHECK(aib_agent_stream_event(s, NULL, "{}", 2) != 0);
        FUZZ_CHECK(c.frames == frames);
    }
    FUZZ_CHECK(aib_agent_stream_usage(s)->input >= 0 && aib_agent_stream_usage(s)->output >= 0);
    apr_pool_destroy(pool);
    return 0;
}
