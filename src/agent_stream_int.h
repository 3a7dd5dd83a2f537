/* The agentic stream filter's state and helpers, for the format files
 * that follow each wire format's events (format_*.c). Not for anyone else:
 * agent_stream.h is the filter's interface. */
#ifndef AIB_AGENT_STREAM_INT_H
#define AIB_AGENT_STREAM_INT_H

#include <json.h>

#include "agent_stream.h"
#include "buffer.h"
#include "format.h"

/* A tool call (Chat), content block (Anthropic) or output item (Responses)
 * of the current iteration. */
typedef struct {
    int64_t up;          /* the upstream's index */
    int64_t client;      /* the index the client sees; withheld parts have none */
    int withheld;        /* an injected call: never relayed */
    const char *id;
    const char *name;
    const char *json;    /* Anthropic content_block at its start, Responses item when done */
    aib_buffer_t text;          /* arguments, text, thinking or partial_json */
    aib_buffer_t signature;     /* Anthropic thinking signature */
} aib_stream_part_t;

struct aib_agent_stream {
    apr_pool_t *pool;
    apr_pool_t *it_pool;          /* the current iteration's */
    const aib_format_t *format;
    const char *prefix;
    apr_size_t prefix_len;
    const apr_array_header_t *client_names;   /* const char *: the client's own tools */
    int include_usage;
    apr_size_t max_held;
    apr_size_t kept;              /* held for the whole stream (Responses items) */
    aib_agent_emit_fn *emit;
    void *ctx;
    char *frame;
    apr_size_t frame_cap;
    int iteration;                /* iterations ended */
    int fresh;                    /* the next event begins an iteration */
    int finished;                 /* the stream's end went out */
    int failed;
    aib_agent_outcome_e failure;
    const char *error;
    aib_usage_t total;            /* of the iterations ended */
    const char *first_id;         /* Chat chunk id, Responses response id */
    int role_sent;                /* Chat: a chunk named the role */
    int64_t next_index;           /* Anthropic block index, Responses output_index */
    int64_t next_seq;             /* Responses */
    int seq_started;
    apr_array_header_t *items;    /* const char *: Responses items relayed in ended iterations */
    /* The current iteration. */
    aib_usage_t usage;
    apr_size_t held_bytes;        /* held back, counted against max_held */
    apr_array_header_t *parts;    /* aib_stream_part_t */
    aib_buffer_t text;            /* Chat content */
    int64_t next_call;            /* Chat: index of the next client tool call */
    int injected;
    int client_tools;
    int ended;                    /* the iteration's final event came */
    int tool_turn;                /* it ends for injected calls only */
};

/* Records the first failure; returns 1 (stop). */
int aib_stream_fail(aib_agent_stream_t *s, aib_agent_outcome_e outcome, const char *error);

/* Counts n more bytes held back; non-zero (failed) when that passes the cap. */
int aib_stream_charge(aib_agent_stream_t *s, apr_size_t n);

/* Appends a string's text to b, counted; non-zero when over the cap. */
int aib_stream_append_string(aib_agent_stream_t *s, aib_buffer_t *b, json_object *str);

/* A copy in the iteration's pool, counted; NULL when over the cap. */
const char *aib_stream_take_string(aib_agent_stream_t *s, json_object *str);
const char *aib_stream_take_json(aib_agent_stream_t *s, json_object *obj);

/* Whether a call of `name` is to an injected tool (and no client tool). */
int aib_stream_injected_name(const aib_agent_stream_t *s, const char *name);

aib_stream_part_t *aib_stream_find_part(aib_agent_stream_t *s, int64_t up);
aib_stream_part_t *aib_stream_new_part(aib_agent_stream_t *s, int64_t up);

/* The upstream's own index member, -1 when there is none. */
int64_t aib_stream_index_of(json_object *obj, const char *key);

/* What the upstream said went wrong. */
const char *aib_stream_error_message(json_object *root);

/* The usage to report so far: the ended iterations and, while one runs,
 * the current one. */
void aib_stream_sum_usage(const aib_agent_stream_t *s, aib_usage_t *u);

/* Writes an event to the client; non-zero once the filter must stop. */
int aib_stream_send(aib_agent_stream_t *s, const char *event, const char *data,
                    apr_size_t len);

/* The event as the upstream sent it, or root re-serialised if changed. */
int aib_stream_send_json(aib_agent_stream_t *s, const char *event, json_object *root,
                         int changed, const char *data, apr_size_t len);

#endif
