/* Incremental decoder of the AWS event stream framing
 * (application/vnd.amazon.eventstream), as Bedrock's
 * InvokeModelWithResponseStream answers.
 *
 * A message: total length (u32 BE), headers length (u32 BE), CRC32 of those
 * eight bytes; headers; payload; CRC32 of everything before it (IEEE, as
 * zlib). Both CRCs are checked. Frames may be split across any number of
 * feeds; a frame is held whole, so memory is bounded by max_frame, and a
 * longer frame is an error, not an allocation.
 *
 * Events are handed on as an Anthropic SSE stream would carry them:
 * - `chunk` event: its payload {"bytes":"<base64>"} decodes to one
 *   Anthropic event's JSON; the event name is that JSON's "type";
 * - `exception` message (throttlingException...) or `error` message: an
 *   "error" event, {"type":"error","error":{"type":<Anthropic type>,
 *   "message":...,"aws_exception":<the AWS name>}}, the type mapped so that
 *   Anthropic's stream_fault() reads a throttling as a rate limit;
 * - other events (none is documented for this API): skipped.
 * A malformed stream (bad CRC, impossible length, undecodable chunk, cut
 * mid-frame) is reported once and the decoder stays failed: the framing is
 * lost, nothing after it can be trusted. */
#ifndef AIB_EVENTSTREAM_H
#define AIB_EVENTSTREAM_H

#include <stdint.h>
#include <apr_pools.h>

#include "sse.h"

typedef struct aib_eventstream aib_eventstream_t;

/* The CRC32 (IEEE 802.3, zlib's crc32) of buf, continuing from crc (0 to
 * start). */
uint32_t aib_crc32(uint32_t crc, const void *buf, apr_size_t len);

aib_eventstream_t *aib_eventstream_create(apr_pool_t *pool, apr_size_t max_frame,
                                          aib_sse_event_fn *on_event, void *ctx);

/* Feeds the next bytes. Returns 0, on_event's non-zero value (the rest of
 * buf is then not decoded), or AIB_FRAMING_MALFORMED. */
int aib_eventstream_feed(aib_eventstream_t *decoder, const char *buf, apr_size_t len);

/* At the end of the stream: AIB_FRAMING_MALFORMED if it was cut inside a
 * frame (or had failed before), else 0. */
int aib_eventstream_finish(aib_eventstream_t *decoder);

/* Why the stream is malformed, or NULL while it is not. */
const char *aib_eventstream_error(const aib_eventstream_t *decoder);

/* The framing for aib_provider_ops_t.stream_framing. */
extern const aib_stream_framing_t aib_eventstream_framing;

#endif
