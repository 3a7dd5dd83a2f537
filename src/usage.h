/* Token usage and tool calls, read from what the upstream sends back.
 *
 * Blocking responses are fed chunk by chunk as they are relayed (an
 * incremental JSON parse, never delaying the relay); streams are read
 * event by event. Pure logic: json-c and APR only. */
#ifndef AIB_USAGE_H
#define AIB_USAGE_H

#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>

typedef struct {
    int seen;                   /* some usage was reported */
    int64_t input;              /* prompt / input tokens (Anthropic: not counting cache) */
    int64_t output;
    int64_t cache_read;
    int64_t cache_write;        /* Anthropic cache_creation_input_tokens */
    int64_t reasoning;
    apr_array_header_t *tools;  /* const char *: names of tool calls the model made, in order */
} aib_usage_t;

typedef enum {
    AIB_USAGE_CHAT,             /* OpenAI Chat Completions */
    AIB_USAGE_RESPONSES,        /* OpenAI Responses */
    AIB_USAGE_MESSAGES,         /* Anthropic Messages */
    AIB_USAGE_NONE              /* passthrough: nothing to read */
} aib_usage_kind_e;

/* The kind for a route name ("chat", "responses", "messages", other). */
aib_usage_kind_e aib_usage_kind(const char *route_name);

void aib_usage_init(aib_usage_t *u, apr_pool_t *pool);

/* a + b for token counts (both in [0, INT64_MAX]): a hostile upstream's
 * huge ones saturate rather than overflow. */
int64_t aib_count_add(int64_t a, int64_t b);

/* A blocking JSON response, fed in pieces as it is relayed. Bodies larger
 * than max_bytes, and bodies that are not one strict JSON object (RFC 8259:
 * no comments, NaN or single quotes; whitespace around it), are not read
 * (usage stays unseen). */
typedef struct aib_usage_reader aib_usage_reader_t;
aib_usage_reader_t *aib_usage_reader_create(apr_pool_t *pool, aib_usage_kind_e kind,
                                            aib_usage_t *u, apr_size_t max_bytes);
void aib_usage_reader_feed(aib_usage_reader_t *reader, const char *data, apr_size_t len);
/* Reads the usage (and tool names) from the whole body; frees the parser. */
void aib_usage_reader_finish(aib_usage_reader_t *reader);

/* One SSE event of a stream: chat chunks (the final usage chunk, and
 * delta.tool_calls names), Responses response.completed (usage, function
 * calls) and response.output_item.added (function_call names), Anthropic
 * message_start (message.usage) and message_delta (usage: cumulative
 * output_tokens), content_block_start (tool_use names). */
void aib_usage_from_event(aib_usage_t *u, apr_pool_t *pool, aib_usage_kind_e kind,
                          const char *event, const char *data, apr_size_t len);

/* Chat streams: the client did not ask for usage, so the module asks for it
 * upstream (stream_options.include_usage) and takes back what that adds.
 * Returns the request body to send: `body` unchanged when the client asked
 * for include_usage already, else a copy with include_usage set (*injected
 * is then 1). The body is a JSON object already validated by the caller. */
const char *aib_usage_inject(apr_pool_t *pool, const char *body, apr_size_t len,
                             apr_size_t *out_len, int *injected);

/* For a chat stream whose usage the module injected: the data of one event
 * as the client should see it. Returns 0 to drop the event (the usage-only
 * chunk: "choices":[] with usage), else 1 with `out` (room for `len` bytes:
 * stripping only shortens) holding the data without its "usage":null
 * member and *out_len its length. No allocation: it runs on every event of
 * a stream. */
int aib_usage_strip(const char *data, apr_size_t len, char *out, apr_size_t *out_len);

#endif
