/* Incremental Server-Sent Events parser.
 *
 * The bridge relays upstream bytes as they arrive and feeds the same bytes
 * here to learn about events (first-event inspection, sequence numbers,
 * usage) without delaying or buffering the stream itself. Frames may be split
 * across any number of feeds. Memory is bounded by max_event. */
#ifndef AIB_SSE_H
#define AIB_SSE_H

#include <apr_pools.h>
#include <apr_tables.h>

typedef struct aib_sse_parser aib_sse_parser_t;

/* Called once per complete event (a frame with at least one data line).
 * `event` is the value of the last `event:` field or NULL when there was
 * none; `data` is the data lines joined with '\n', NUL-terminated. Both
 * are valid only during the call. Return 0 to go on, non-zero to stop:
 * aib_sse_feed then returns that value. */
typedef int aib_sse_event_fn(void *ctx, const char *event, const char *data,
                             apr_size_t data_len);

#define AIB_SSE_OK        0
#define AIB_SSE_TOO_LARGE (-1) /* one event exceeded max_event bytes */

aib_sse_parser_t *aib_sse_parser_create(apr_pool_t *pool, apr_size_t max_event,
                                        aib_sse_event_fn *on_event, void *ctx);

/* Feed the next bytes of the stream. Returns AIB_SSE_OK, AIB_SSE_TOO_LARGE
 * (the parser then skips to the end of that event and stays usable), or
 * the callback's non-zero value. */
int aib_sse_feed(aib_sse_parser_t *parser, const char *buf, apr_size_t len);

/* Number of complete events seen so far. */
apr_size_t aib_sse_event_count(const aib_sse_parser_t *parser);

/* Room aib_sse_frame needs at most: the frame, with a "data: " prefix
 * for every line in the worst case. */
#define AIB_SSE_FRAME_MAX(event_len, len) ((event_len) + 8 + 7 * ((len) + 1) + 2)

/* Writes one event back as a frame (the inverse of the parser): an
 * `event:` line when event is not NULL, a `data:` line for every line of
 * data, the blank line. Returns the frame's length. data may lie in `out`
 * itself at offset AIB_SSE_FRAME_MAX(strlen(event), len) or later: the
 * frame is written no faster than data is read. */
apr_size_t aib_sse_frame(char *out, const char *event, const char *data, apr_size_t len);

/* How a stream's bytes become events. SSE (aib_sse_framing, this parser)
 * is the default; a provider whose upstream streams in another framing
 * describes it (provider.h), and the bridge writes its events to the
 * client as SSE. */
typedef struct {
    /* Whether a response with these headers is a stream in this framing. */
    int (*is_stream)(const apr_table_t *headers);
    /* A decoder calling on_event once per event; events over max_event
     * bytes are skipped (SSE), or make the stream malformed in a framing
     * whose frames are held whole. */
    void *(*create)(apr_pool_t *pool, apr_size_t max_event, aib_sse_event_fn *on_event,
                    void *ctx);
    /* Feeds the next bytes; returns 0 to go on, on_event's non-zero value,
     * or AIB_FRAMING_MALFORMED. */
    int (*feed)(void *decoder, const char *buf, apr_size_t len);
    /* Why feed() or finish() returned AIB_FRAMING_MALFORMED. NULL for a
     * framing that never does. */
    const char *(*error)(void *decoder);
    /* At the end of the stream: AIB_FRAMING_MALFORMED if it was cut inside
     * a frame, else 0. NULL when a cut needs no check of its own (SSE: a
     * cut event is no event, and the provider's stream_complete tells a
     * stream cut short). */
    int (*finish)(void *decoder);
} aib_stream_framing_t;

/* The bytes are not a stream in that framing (a bad checksum, an
 * impossible length, a cut frame): the decoder stays failed, as nothing
 * after the fault can be trusted. Distinct from any on_event value the
 * bridge returns (those are positive). */
#define AIB_FRAMING_MALFORMED (-2)

extern const aib_stream_framing_t aib_sse_framing;

#endif
