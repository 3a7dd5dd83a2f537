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
#include <json.h>

typedef struct {
    int seen;                   /* some usage was reported */
    int64_t input;              /* prompt / input tokens (Anthropic: not counting cache) */
    int64_t output;
    int64_t cache_read;
    int64_t cache_write;        /* Anthropic cache_creation_input_tokens */
    int64_t reasoning;
    apr_array_header_t *tools;  /* const char *: names of tool calls the model made, in order */
} aib_usage_t;

/* A wire format (format.h). */
typedef struct aib_format aib_format_t;

void aib_usage_init(aib_usage_t *u, apr_pool_t *pool);

/* a + b for token counts (both in [0, INT64_MAX]): a hostile upstream's
 * huge ones saturate rather than overflow. */
int64_t aib_count_add(int64_t a, int64_t b);

/* A blocking JSON response, fed in pieces as it is relayed. Bodies larger
 * than max_bytes, and bodies that are not one strict JSON object (RFC 8259:
 * no comments, NaN or single quotes; whitespace around it), are not read
 * (usage stays unseen); nor is anything with a NULL format (passthrough).
 * What is read where is the format's (format.h: usage_fields,
 * tools_from_body). */
typedef struct aib_usage_reader aib_usage_reader_t;
aib_usage_reader_t *aib_usage_reader_create(apr_pool_t *pool, const aib_format_t *format,
                                            aib_usage_t *u, apr_size_t max_bytes);
void aib_usage_reader_feed(aib_usage_reader_t *reader, const char *data, apr_size_t len);
/* Reads the usage (and tool names) from the whole body; frees the parser. */
void aib_usage_reader_finish(aib_usage_reader_t *reader);

/* One SSE event of a stream, read as the format says (format.h:
 * usage_event_wanted, usage_from_event). A NULL format reads nothing. */
void aib_usage_from_event(aib_usage_t *u, apr_pool_t *pool, const aib_format_t *format,
                          const char *event, const char *data, apr_size_t len);

/* The request body to send for a stream of `format`: for a format that
 * sends usage only when asked (format.h: stream_usage_ask), a copy asking
 * for it unless the client did (*injected is then 1); else `body` itself.
 * The body is a JSON object already validated by the caller. */
const char *aib_usage_request(apr_pool_t *pool, const aib_format_t *format, const char *body,
                              apr_size_t len, apr_size_t *out_len, int *injected);

/* For the format files. */

/* Reads a usage object (nothing if `usage` is not an object) through the
 * format's usage fields. */
void aib_usage_read(aib_usage_t *u, const aib_format_t *format, json_object *usage);

/* Adds a tool name (nothing if `name` is not a string). */
void aib_usage_add_tool(aib_usage_t *u, apr_pool_t *pool, json_object *name);

/* Adds item's "name" if its "type" is `type`. */
void aib_usage_add_typed_tool(aib_usage_t *u, apr_pool_t *pool, json_object *item,
                              const char *type);

/* Adds the names of the items of `array` whose "type" is `type`. */
void aib_usage_add_typed_tools(aib_usage_t *u, apr_pool_t *pool, json_object *array,
                               const char *type);

#endif
