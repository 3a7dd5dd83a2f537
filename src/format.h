/* One description per wire format (OpenAI Chat Completions, OpenAI
 * Responses, Anthropic Messages): its usage members, how usage is read
 * from a body and from stream events, how tool calls and results are found
 * and built, how a stream ends and reports an error, how usage is asked
 * for in a stream, and how the agentic stream filter follows its events.
 * Nothing outside the format files asks which format a request uses: it
 * calls the description. A new wire format is one format_<name>.c and one
 * entry in format.c's table.
 *
 * A provider speaks one or more formats (aib_provider_ops_t.formats) and
 * tells which one a route uses (aib_route_t.format); a provider whose
 * errors have another shape still fits a format: the format asks the
 * provider for the error body and code. */
#ifndef AIB_FORMAT_H
#define AIB_FORMAT_H

#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>
#include <json.h>

#include "provider.h"
#include "usage.h"

typedef struct aib_agent_stream aib_agent_stream_t;
typedef struct aib_agent_tool aib_agent_tool_t;
typedef struct aib_agent_call aib_agent_call_t;
typedef struct aib_agent_result aib_agent_result_t;

/* The token counts of aib_usage_t, plus the total some formats report. */
typedef enum {
    AIB_COUNT_INPUT,
    AIB_COUNT_OUTPUT,
    AIB_COUNT_TOTAL,           /* input + output, written, never read */
    AIB_COUNT_CACHE_READ,
    AIB_COUNT_CACHE_WRITE,
    AIB_COUNT_REASONING
} aib_count_e;

/* Where a format's usage object holds one count. */
typedef struct {
    aib_count_e count;
    const char *object;        /* the detail object holding it; NULL: the usage object */
    const char *member;
} aib_usage_field_t;

/* The count of u a field stands for. */
int64_t aib_usage_count(const aib_usage_t *u, aib_count_e count);

struct aib_format {
    const char *name;          /* the route's name: "chat", "responses", "messages" */

    /* ---- Usage ---- */
    /* The usage object's members, in the order they are written; the
     * list ends with a NULL member. */
    const aib_usage_field_t *usage_fields;
    /* Whether a stream event may carry usage or tool names: a cheap test
     * run before parsing (never wrong the other way). */
    int (*usage_event_wanted)(const char *event, const char *data, apr_size_t len);
    /* Reads usage and tool names from a parsed event; `type` is the event
     * name, or the data's "type" when it has none. */
    void (*usage_from_event)(aib_usage_t *u, apr_pool_t *pool, const char *type,
                             json_object *root);
    /* Reads the tool names of a complete blocking response. */
    void (*tools_from_body)(aib_usage_t *u, apr_pool_t *pool, json_object *root);

    /* ---- Asking for usage in a stream; both NULL: the format always sends it ---- */
    /* The request body asking for usage: `body` itself when the client
     * asked already, else a copy that asks (*injected set to 1). */
    const char *(*stream_usage_ask)(apr_pool_t *pool, const char *body, apr_size_t len,
                                    apr_size_t *out_len, int *injected);
    /* The data of one event as a client that did not ask should see it:
     * 0 to drop the event, else 1 with out (room for len bytes, may be
     * data itself) holding it and *out_len its length. No allocation. */
    int (*stream_usage_strip)(const char *data, apr_size_t len, char *out,
                              apr_size_t *out_len);

    /* ---- The end of a stream, errors, keep-alive ---- */
    /* Whether an SSE event ends the stream (the last event of a complete
     * answer, or an error the upstream reported itself). */
    int (*stream_complete)(const char *event, const char *data);
    /* A complete SSE frame reporting an error mid-stream, in the
     * provider's error shape. `sequence`: the number the next event would
     * carry (Responses). */
    const char *(*stream_error)(apr_pool_t *p, const aib_provider_ops_t *provider,
                                aib_error_kind_e kind, const char *message, int64_t sequence);
    /* The frame that keeps a client's stream alive while tools run. */
    const char *keepalive;
    /* Sets *sequence to the number an event carries for ordering, which an
     * error frame continues (Responses' sequence_number): 1 when it has
     * one. NULL: the format numbers no events. */
    int (*event_sequence)(const char *data, int64_t *sequence);

    /* ---- Tools of a blocking exchange (agent_body.c) ---- */
    /* Whether the request's tool_choice forbids tools (*none), or why it
     * is malformed. */
    const char *(*tool_choice_none)(json_object *choice, int *none);
    /* An injected tool in the format's form, taking schema over. */
    json_object *(*tool_entry)(const aib_agent_tool_t *t, json_object *schema);
    /* The name of a client tool of the request's tools[], or NULL. */
    const char *(*client_tool_name)(json_object *item);
    /* Turns parallel tool calls off; choice: the request's tool_choice or NULL. */
    void (*serial_tool_calls)(json_object *root, json_object *choice);
    /* The response's array the calls are items of (NULL: none), or an error. */
    const char *(*call_array)(json_object *root, json_object **arr);
    /* One item of the call array into c; 0 when it is no call (*err set
     * when it is malformed). */
    int (*read_call)(apr_pool_t *p, json_object *item, aib_agent_call_t *c, const char **err);
    /* The request's conversation array (created or converted as the
     * format allows), or NULL with *err. */
    json_object *(*history)(json_object *request, const char **err);
    /* Appends the response's turn to the conversation; returns where the
     * results go. */
    json_object *(*append_turn)(json_object *history, json_object *response);
    /* Appends the result of call c. */
    void (*append_result)(apr_pool_t *p, json_object *to, const aib_agent_call_t *c,
                          const aib_agent_result_t *r);
    /* The response once no call is left in it (finish/stop reasons). */
    void (*no_calls_left)(json_object *response);
    /* A stream's assistant turn (aib_agent_turn_t.assistant) in the shape of
     * a blocking response, for aib_agent_continue. */
    const char *(*turn_as_response)(apr_pool_t *p, const char *assistant);

    /* ---- The agentic stream filter (agent_stream.c) ---- */
    /* One event of the current iteration; root: its parsed data or NULL. */
    int (*filter_event)(aib_agent_stream_t *s, const char *event, const char *type,
                        json_object *root, const char *data, apr_size_t len);
    /* The iteration's assistant turn, JSON text in p. */
    const char *(*filter_assistant)(aib_agent_stream_t *s, apr_pool_t *p);
    /* An iteration ended for injected calls; NULL: nothing to keep. */
    void (*filter_tool_turn_end)(aib_agent_stream_t *s);
};

#define AIB_FORMAT_COUNT 3

extern const aib_format_t aib_format_chat;
extern const aib_format_t aib_format_responses;
extern const aib_format_t aib_format_messages;

/* Every format, in a fixed order (the stats' route indices). */
extern const aib_format_t *const aib_formats[AIB_FORMAT_COUNT];

/* The format of a route name, or NULL. */
const aib_format_t *aib_format_find(const char *name);

/* Writes u's counts into `usage` as f names them. A count whose bit
 * (1 << aib_count_e) is in `add` is written even when absent (its detail
 * object created when the count is not 0); the others only replace
 * members present. Returns 1 if something changed. */
int aib_format_usage_write(const aib_format_t *f, json_object *usage, const aib_usage_t *u,
                           unsigned add);
#define AIB_COUNT_ALL 0xffu
#define AIB_COUNT_BIT(c) (1u << (c))

/* Whether `provider` speaks format f (has a route in it). */
int aib_format_spoken_by(const aib_format_t *f, const aib_provider_ops_t *provider);

/* Whether an SSE event ends a stream of `route`: as its format says, or
 * for a passthrough as any format the provider speaks would. */
int aib_route_stream_complete(const aib_route_t *route, const aib_provider_ops_t *provider,
                              const char *event, const char *data);

/* The SSE frame reporting an error in a stream of `route`: its format's,
 * or for a passthrough the provider's first format's. */
const char *aib_route_stream_error(apr_pool_t *p, const aib_route_t *route,
                                   const aib_provider_ops_t *provider, aib_error_kind_e kind,
                                   const char *message, int64_t sequence);

#endif
