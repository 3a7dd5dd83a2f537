/* The streaming side of the agentic loop (issue #9): several upstream
 * streams, one per iteration, shown to the client as ONE stream.
 *
 * The gateway injects tools (named <prefix><server>_<tool>, "bmcp_...")
 * into a request. When the model calls them, the gateway runs them and asks
 * again: a new upstream stream. This filter is fed the events of one
 * iteration at a time, as aib_sse delivers them, and writes what the client
 * must see through the emit callback:
 * - text and everything else that is not an injected tool call is relayed
 *   at once (never buffered); an event needing no change is re-framed
 *   byte-identically (`event: `/`data: ` lines, one blank line);
 * - events of injected tool calls are held back, never relayed, and
 *   collected into the iteration's result;
 * - the stream's start is relayed once (Chat's id, Anthropic message_start,
 *   Responses response.created/in_progress) and its end once, at the end of
 *   the last iteration, with usage summed over the iterations; indices and
 *   sequence numbers are renumbered so they run on across iterations;
 * - an iteration is a tool turn when it ends for tool calls (Chat
 *   finish_reason "tool_calls", Anthropic stop_reason "tool_use", Responses
 *   response.completed) that are all injected; once a client tool is
 *   called, everything goes out and the loop ends there (injected calls of
 *   that iteration stay hidden and are only reported). What the upstream
 *   sends after a tool turn's end signal, but its end events, is ignored.
 * Pure logic: APR and json-c. Memory is bounded by max_held. */
#ifndef AIB_AGENT_STREAM_H
#define AIB_AGENT_STREAM_H

#include <apr_pools.h>
#include <apr_tables.h>

#include "format.h"
#include "usage.h"

/* Held-back data of a stream (tool calls, the assistant turn, Responses
 * output items) beyond which it fails with AIB_AGENT_TOO_LARGE. */
#define AIB_AGENT_HELD_MAX (8 * 1024 * 1024)


/* Writes one complete SSE frame to the client. Non-zero: the client is
 * gone (the filter stops). */
typedef int aib_agent_emit_fn(void *ctx, const char *frame, apr_size_t len);

typedef enum {
    AIB_AGENT_DONE,        /* the answer ended and its end was relayed: no further iteration */
    AIB_AGENT_TOOLS,       /* it ended in injected tool calls only: run them, iterate */
    AIB_AGENT_ERROR,       /* the upstream reported an error, relayed: the stream is over */
    AIB_AGENT_TRUNCATED,   /* the events ended before the iteration's final event */
    AIB_AGENT_TOO_LARGE,   /* held-back data passed max_held: nothing more was relayed */
    AIB_AGENT_CLIENT_GONE  /* emit said the client went away */
} aib_agent_outcome_e;

/* One injected tool call, complete. */
typedef struct {
    const char *id;         /* Chat tool_calls[].id, Responses call_id, Anthropic tool_use id */
    const char *name;       /* as the model called it, prefix included */
    const char *arguments;  /* JSON text as the model wrote it ("{}" when it wrote none) */
} aib_agent_stream_call_t;

/* What one iteration did. */
typedef struct {
    aib_agent_outcome_e outcome;
    int client_tools;          /* a client (non-injected) tool was called, and relayed */
    apr_array_header_t *calls; /* aib_agent_stream_call_t: the injected calls, in the model's order */
    /* The assistant turn, JSON text in the provider's form, for the
     * continuation request:
     * - chat: {"role":"assistant","content":<text or null>,"tool_calls":[...]}
     *   (tool_calls only when there were calls);
     * - messages: {"role":"assistant","content":[blocks]}: text (empty ones
     *   left out), thinking with signature, tool_use with `input` parsed;
     * - responses: the JSON array of this iteration's output items
     *   (response.output_item.done), function_call items included. */
    const char *assistant;
    const char *error;         /* why, for _ERROR, _TOO_LARGE and _CLIENT_GONE; else NULL */
    aib_usage_t usage;         /* this iteration's alone */
} aib_agent_turn_t;

/* format: the route's wire format (not NULL). prefix: the
 * names of injected tools start with it; a call of such a name is held
 * unless it is one of `client_tools` (const char *, may be NULL: the
 * client's own tools win). include_usage: the client asked for usage
 * itself (formats with stream_usage_ask: the upstream must always be
 * asked, the filter sums it; when the client did not, usage is hidden from
 * it with the format's stream_usage_strip). max_held: 0 for AIB_AGENT_HELD_MAX.
 * Everything lives in pool. */
aib_agent_stream_t *aib_agent_stream_create(apr_pool_t *pool, const aib_format_t *format,
                                            const char *prefix,
                                            const apr_array_header_t *client_tools,
                                            int include_usage,
                                            apr_size_t max_held,
                                            aib_agent_emit_fn *emit, void *ctx);

/* One upstream event of the current iteration (an aib_sse_event_fn: pass
 * the filter as the parser's ctx). The first event after
 * aib_agent_stream_end starts the next iteration. Returns 0 to go on,
 * non-zero once the iteration must stop (error relayed, too large, client
 * gone): aib_agent_stream_end says which. */
int aib_agent_stream_event(void *filter, const char *event, const char *data,
                           apr_size_t len);

/* Ends the current iteration (after the upstream stream ended, or the
 * event callback said stop) and says what happened. The result and its
 * strings are allocated in p. */
aib_agent_turn_t *aib_agent_stream_end(aib_agent_stream_t *s, apr_pool_t *p);

/* Usage summed over the iterations ended so far (tools: every name). */
const aib_usage_t *aib_agent_stream_usage(const aib_agent_stream_t *s);

/* Responses: the sequence_number the next client event must carry (for an
 * error frame the caller adds); 0 before any. */
int64_t aib_agent_stream_next_sequence(const aib_agent_stream_t *s);

/* The frame that keeps the client's connection alive while tools run
 * (the format's keepalive). */
const char *aib_agent_stream_keepalive(const aib_format_t *format, apr_size_t *len);

#endif
