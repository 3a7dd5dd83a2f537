/* One client stream over the iterations of the agentic loop (see
 * agent_stream.h).
 *
 * Design notes:
 * - Every event is parsed (json-c, a few microseconds for a delta): the
 *   filter must know what each belongs to. An event that needs no change
 *   goes out as the upstream's own data, so a single iteration without
 *   injected calls reaches the client byte for byte; a changed one is
 *   re-serialised (plain, no slash escapes).
 * - The end of an iteration that stops for injected calls (Chat finish and
 *   usage chunks and [DONE], Anthropic message_delta and message_stop,
 *   Responses response.completed) is dropped: the next iteration's end,
 *   through relay_end(), writes the summed usage.
 * - Usage: each iteration is read with aib_usage_from_event into its own
 *   record and added to the total when it ends. Input tokens are summed as
 *   each upstream call reports (and bills) them, although every call
 *   re-sends the conversation: the total is what the provider charged.
 *   Anthropic: the first message_start goes out as it came (the only one
 *   the client sees); the final message_delta carries the summed
 *   output_tokens and, once there was more than one iteration, the summed
 *   input_tokens and cache counts, which the SDKs take over message_start's.
 *   Only values that differ are written, so one iteration stays unchanged.
 * - Chat: only choices[0] is followed (the loop asks for n=1). Client tool
 *   calls keep consecutive indices once injected ones are taken out; a
 *   chunk left with nothing in it is dropped.
 * - Responses: output_index of relayed items and sequence_number of every
 *   event are renumbered to run on across iterations; the final
 *   response.completed carries the first response's id and, in `output`,
 *   the relayed items of every iteration.
 * - Anthropic: content block indices of relayed blocks run on across
 *   iterations; held tool_use blocks take none.
 * - Memory: what is kept (call arguments, the assistant turn, items) is
 *   counted against max_held; an iteration's data lives in
 *   a pool cleared when the next iteration begins. */
#include <string.h>

#include <json.h>
#include <apr_strings.h>

#include "agent.h"
#include "agent_stream.h"
#include "buffer.h"
#include "request.h"
#include "sse.h"

#define JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* A tool call (Chat), content block (Anthropic) or output item (Responses)
 * of the current iteration. */
typedef struct {
    int64_t up;          /* the upstream's index */
    int64_t client;      /* the index the client sees; held parts have none */
    int held;            /* an injected call: never relayed */
    const char *id;
    const char *name;
    const char *json;    /* Anthropic content_block at its start, Responses item when done */
    aib_buffer_t text;          /* arguments, text, thinking or partial_json */
    aib_buffer_t signature;     /* Anthropic thinking signature */
} part_t;

struct aib_agent_stream {
    apr_pool_t *pool;
    apr_pool_t *it_pool;          /* the current iteration's */
    aib_usage_kind_e kind;
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
    int over;                     /* the stream's end went out */
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
    apr_size_t held;
    apr_array_header_t *parts;    /* part_t */
    aib_buffer_t text;                   /* Chat content */
    int64_t next_call;            /* Chat: index of the next client tool call */
    int injected;
    int client_tools;
    int ended;                    /* the iteration's final event came */
    int tool_turn;                /* it ends for injected calls only */
};

static const char *const keepalive_openai = ": keep-alive\n\n";
static const char *const keepalive_anthropic = "event: ping\ndata: {\"type\": \"ping\"}\n\n";

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static int fail(aib_agent_stream_t *s, aib_agent_outcome_e outcome, const char *error)
{
    if (!s->failed) {
        s->failed = 1;
        s->failure = outcome;
        s->error = apr_pstrdup(s->pool, error);
    }
    return 1;
}

/* Counts n more bytes held back; non-zero when that passes the cap. */
static int hold(aib_agent_stream_t *s, apr_size_t n)
{
    s->held += n;
    if (s->held + s->kept > s->max_held)
        return fail(s, AIB_AGENT_TOO_LARGE,
                    apr_psprintf(s->pool, "the agentic loop held back more than %"
                                 APR_SIZE_T_FMT " bytes of the stream", s->max_held));
    return 0;
}

static int append(aib_agent_stream_t *s, aib_buffer_t *b, const char *data, apr_size_t n)
{
    if (hold(s, n))
        return 1;
    aib_buffer_append(b, s->it_pool, data, n);
    return 0;
}

static int append_string(aib_agent_stream_t *s, aib_buffer_t *b, json_object *str)
{
    return str ? append(s, b, json_object_get_string(str),
                        (apr_size_t)json_object_get_string_len(str)) : 0;
}

/* A copy of a string member in the iteration's pool, counted. */
static const char *take_string(aib_agent_stream_t *s, json_object *str)
{
    if (!str || hold(s, (apr_size_t)json_object_get_string_len(str)))
        return NULL;
    return apr_pstrmemdup(s->it_pool, json_object_get_string(str),
                          (apr_size_t)json_object_get_string_len(str));
}

static const char *take_json(aib_agent_stream_t *s, json_object *obj)
{
    size_t n;
    const char *text = json_object_to_json_string_length(obj, JSON_FLAGS, &n);

    if (!text || hold(s, n))
        return NULL;
    return apr_pstrmemdup(s->it_pool, text, n);
}

static json_object *member(json_object *obj, const char *key, json_type type)
{
    return aib_json_member(obj, key, type);
}

static const char *string_of(json_object *obj, const char *key)
{
    json_object *v = member(obj, key, json_type_string);

    return v ? json_object_get_string(v) : NULL;
}

static int is(const char *a, const char *b)
{
    return a && !strcmp(a, b);
}

static int injected_name(const aib_agent_stream_t *s, const char *name)
{
    int i;

    if (!name || strncmp(name, s->prefix, s->prefix_len))
        return 0;
    for (i = 0; s->client_names && i < s->client_names->nelts; i++)
        if (!strcmp(APR_ARRAY_IDX(s->client_names, i, const char *), name))
            return 0;
    return 1;
}

/* Sets obj's integer member key to n; 1 if that changed it. Only members
 * the upstream sent are touched unless `add`. */
static int set_int(json_object *obj, const char *key, int64_t n, int add)
{
    json_object *v;

    if (!obj)
        return 0;
    if (json_object_object_get_ex(obj, key, &v)) {
        if (json_object_is_type(v, json_type_int) && json_object_get_int64(v) == n)
            return 0;
    }
    else if (!add) {
        return 0;
    }
    json_object_object_add(obj, key, json_object_new_int64(n));
    return 1;
}

static part_t *find_part(aib_agent_stream_t *s, int64_t up)
{
    int i;

    for (i = 0; i < s->parts->nelts; i++)
        if (APR_ARRAY_IDX(s->parts, i, part_t).up == up)
            return &APR_ARRAY_IDX(s->parts, i, part_t);
    return NULL;
}

static part_t *new_part(aib_agent_stream_t *s, int64_t up)
{
    part_t *p = apr_array_push(s->parts);

    memset(p, 0, sizeof(*p));
    p->up = up;
    p->client = -1;
    return p;
}

/* The upstream's own index member, -1 when there is none. */
static int64_t index_of(json_object *obj, const char *key)
{
    json_object *v = member(obj, key, json_type_int);

    return v ? json_object_get_int64(v) : -1;
}

/* What the upstream said went wrong. */
static const char *error_message(json_object *root)
{
    const char *m = string_of(member(root, "error", json_type_object), "message");

    if (!m)
        m = string_of(member(member(root, "response", json_type_object), "error",
                             json_type_object), "message");
    if (!m)
        m = string_of(root, "message");
    return m ? m : "the upstream reported an error";
}

/* The usage to report so far: the ended iterations and, while one runs,
 * the current one. */
static void sum_usage(const aib_agent_stream_t *s, aib_usage_t *u)
{
    *u = s->total;
    if (!s->fresh)
        aib_agent_usage_add(u, &s->usage);
}

/* ------------------------------------------------------------------ */
/* Writing to the client                                               */

static int put(aib_agent_stream_t *s, const char *event, const char *data, apr_size_t len)
{
    apr_size_t at = AIB_SSE_FRAME_MAX(event ? strlen(event) : 0, len), n;

    if (s->failed)
        return 1;
    if (at + len > s->frame_cap) {
        s->frame_cap = (at + len) * 2;
        s->frame = apr_palloc(s->pool, s->frame_cap);
    }
    if (s->kind == AIB_USAGE_CHAT && !s->include_usage) {
        /* The client did not ask for usage: hide what the loop asked for. */
        if (!aib_usage_strip(data, len, s->frame + at, &n))
            return 0;
        data = s->frame + at;
        len = n;
    }
    n = aib_sse_frame(s->frame, event, data, len);
    if (s->emit(s->ctx, s->frame, n))
        return fail(s, AIB_AGENT_CLIENT_GONE, "the client went away");
    return 0;
}

/* The event as the upstream sent it, or root re-serialised if changed. */
static int put_json(aib_agent_stream_t *s, const char *event, json_object *root,
                    int changed, const char *data, apr_size_t len)
{
    size_t n;

    if (changed) {
        data = json_object_to_json_string_length(root, JSON_FLAGS, &n);
        len = n;
    }
    return put(s, event, data, len);
}

/* Responses: every relayed event takes the next sequence number; the
 * first keeps its own, so the numbers start where the upstream's did. */
static int put_seq(aib_agent_stream_t *s, const char *event, json_object *root,
                   int changed, const char *data, apr_size_t len)
{
    json_object *seq = member(root, "sequence_number", json_type_int);

    if (seq) {
        if (!s->seq_started) {
            int64_t first = json_object_get_int64(seq);
            /* A start no real stream has (negative, beyond JSON's exact
             * integers) would overflow as it counts on: 0 then. */
            s->next_seq = first >= 0 && first < (INT64_C(1) << 53) ? first : 0;
            s->seq_started = 1;
        }
        changed |= set_int(root, "sequence_number", s->next_seq++, 0);
    }
    return put_json(s, event, root, changed, data, len);
}

/* ------------------------------------------------------------------ */
/* The end of the stream, with the summed usage                        */

static int chat_usage(const aib_agent_stream_t *s, json_object *root)
{
    json_object *usage = member(root, "usage", json_type_object);
    aib_usage_t u;
    int changed = 0;

    if (!usage)
        return 0;
    sum_usage(s, &u);
    changed |= set_int(usage, "prompt_tokens", u.input, 0);
    changed |= set_int(usage, "completion_tokens", u.output, 0);
    changed |= set_int(usage, "total_tokens", aib_count_add(u.input, u.output), 0);
    changed |= set_int(member(usage, "prompt_tokens_details", json_type_object),
                       "cached_tokens", u.cache_read, 0);
    changed |= set_int(member(usage, "completion_tokens_details", json_type_object),
                       "reasoning_tokens", u.reasoning, 0);
    return changed;
}

static int messages_usage(const aib_agent_stream_t *s, json_object *root)
{
    json_object *usage = member(root, "usage", json_type_object);
    int more = s->iteration > 0;    /* message_start's counts are no longer the whole */
    aib_usage_t u;
    int changed = 0;

    if (!usage)
        return 0;
    sum_usage(s, &u);
    changed |= set_int(usage, "output_tokens", u.output, 1);
    changed |= set_int(usage, "input_tokens", u.input, more);
    changed |= set_int(usage, "cache_creation_input_tokens", u.cache_write, more);
    changed |= set_int(usage, "cache_read_input_tokens", u.cache_read, more);
    return changed;
}

/* The relayed output items of every iteration, in the client's order. */
static json_object *responses_output(const aib_agent_stream_t *s)
{
    json_object *out = json_object_new_array();
    int i, j;

    for (i = 0; i < s->items->nelts; i++) {
        json_object *item = aib_json_parse_object(APR_ARRAY_IDX(s->items, i, const char *),
                                                  strlen(APR_ARRAY_IDX(s->items, i,
                                                                       const char *)));
        if (item)
            json_object_array_add(out, item);
    }
    if (s->fresh)
        return out;
    /* Parts were numbered in order of arrival: client order. */
    for (j = 0; j < s->parts->nelts; j++) {
        const part_t *p = &APR_ARRAY_IDX(s->parts, j, part_t);
        json_object *item;

        if (p->held || !p->json)
            continue;
        item = aib_json_parse_object(p->json, strlen(p->json));
        if (item)
            json_object_array_add(out, item);
    }
    return out;
}

static int responses_end(const aib_agent_stream_t *s, json_object *root)
{
    json_object *resp = member(root, "response", json_type_object);
    json_object *usage = member(resp, "usage", json_type_object);
    const char *id = string_of(resp, "id");
    aib_usage_t u;
    int changed = 0;

    if (!resp)
        return 0;
    if (s->first_id && id && strcmp(id, s->first_id)) {
        json_object_object_add(resp, "id", json_object_new_string(s->first_id));
        changed = 1;
    }
    if (usage) {
        sum_usage(s, &u);
        changed |= set_int(usage, "input_tokens", u.input, 0);
        changed |= set_int(usage, "output_tokens", u.output, 0);
        changed |= set_int(usage, "total_tokens", aib_count_add(u.input, u.output), 0);
        changed |= set_int(member(usage, "input_tokens_details", json_type_object),
                           "cached_tokens", u.cache_read, 0);
        changed |= set_int(member(usage, "output_tokens_details", json_type_object),
                           "reasoning_tokens", u.reasoning, 0);
    }
    /* Its output differs from the upstream's once something was held or
     * an earlier iteration relayed items. */
    if (s->iteration > 0 || s->injected) {
        json_object_object_add(resp, "output", responses_output(s));
        changed = 1;
    }
    return changed;
}

static int is_responses_end(const char *type)
{
    return is(type, "response.completed") || is(type, "response.incomplete")
           || is(type, "response.failed");
}

/* Relays an event that ends the client's stream. */
static int relay_end(aib_agent_stream_t *s, const char *event, const char *type,
                     json_object *root, int changed, const char *data, apr_size_t len)
{
    switch (s->kind) {
    case AIB_USAGE_CHAT:
        changed |= chat_usage(s, root);
        break;
    case AIB_USAGE_MESSAGES:
        if (is(type, "message_delta"))
            changed |= messages_usage(s, root);
        break;
    default:
        if (is_responses_end(type))
            changed |= responses_end(s, root);
        return put_seq(s, event, root, changed, data, len);
    }
    return put_json(s, event, root, changed, data, len);
}

/* ------------------------------------------------------------------ */
/* Chat Completions                                                    */

/* Takes the injected calls' fragments out of delta.tool_calls and
 * renumbers the client's. */
static int chat_calls(aib_agent_stream_t *s, json_object *delta, json_object *calls,
                      int *changed, int *removed)
{
    json_object *kept = json_object_new_array();
    size_t i, n = json_object_array_length(calls);
    int rc = 0;

    for (i = 0; i < n && !rc; i++) {
        json_object *frag = json_object_array_get_idx(calls, i);
        json_object *fn = member(frag, "function", json_type_object);
        int64_t up = index_of(frag, "index");
        part_t *p;

        if (up < 0)
            up = (int64_t)i;
        p = find_part(s, up);
        if (!p) {
            p = new_part(s, up);
            if (injected_name(s, string_of(fn, "name"))) {
                p->held = 1;
                s->injected++;
            }
            else {
                p->client = s->next_call++;
                s->client_tools = 1;
            }
        }
        if (!p->id && member(frag, "id", json_type_string))
            p->id = take_string(s, member(frag, "id", json_type_string));
        if (!p->name && member(fn, "name", json_type_string))
            p->name = take_string(s, member(fn, "name", json_type_string));
        rc = append_string(s, &p->text, member(fn, "arguments", json_type_string));
        if (p->held) {
            (*removed)++;
            continue;
        }
        *changed |= set_int(frag, "index", p->client, 0);
        json_object_array_add(kept, json_object_get(frag));
    }
    if (*removed && json_object_array_length(kept)) {
        json_object_object_add(delta, "tool_calls", kept);
        return rc;
    }
    if (*removed)
        json_object_object_del(delta, "tool_calls");
    json_object_put(kept);
    return rc;
}

static int chat_event(aib_agent_stream_t *s, const char *data, apr_size_t len)
{
    json_object *root, *choices, *choice = NULL, *delta, *calls;
    const char *id, *finish;
    int changed = 0, removed = 0, rc = 0;

    if (len == 6 && !memcmp(data, "[DONE]", 6)) {
        s->ended = 1;
        return s->tool_turn ? 0 : put(s, NULL, data, len);
    }
    root = aib_json_parse_object(data, len);
    if (!root)
        return put(s, NULL, data, len); /* not a chunk: not the loop's business */
    if (member(root, "error", json_type_object)) {
        rc = put(s, NULL, data, len);
        if (!rc)
            rc = fail(s, AIB_AGENT_ERROR, error_message(root));
        json_object_put(root);
        return rc;
    }
    id = string_of(root, "id");
    if (id && !s->first_id) {
        s->first_id = apr_pstrdup(s->pool, id);
    }
    else if (id && strcmp(id, s->first_id)) {
        json_object_object_add(root, "id", json_object_new_string(s->first_id));
        changed = 1;
    }
    choices = member(root, "choices", json_type_array);
    if (choices && json_object_array_length(choices))
        choice = json_object_array_get_idx(choices, 0);
    delta = member(choice, "delta", json_type_object);
    /* One stream names the role once: later iterations' first chunks don't. */
    if (member(delta, "role", json_type_string)) {
        if (s->role_sent) {
            json_object_object_del(delta, "role");
            changed = 1;
        }
        s->role_sent = 1;
    }
    calls = member(delta, "tool_calls", json_type_array);
    /* After the finish chunk of a tool turn only its end is taken. */
    if (calls && !s->tool_turn) {
        rc = chat_calls(s, delta, calls, &changed, &removed);
        changed |= removed > 0;
    }
    if (!rc)
        rc = append_string(s, &s->text, member(delta, "content", json_type_string));
    finish = string_of(choice, "finish_reason");
    if (is(finish, "tool_calls") && s->injected && !s->client_tools)
        s->tool_turn = 1;
    /* The end of a tool turn is dropped (the last iteration's goes out),
     * and so is a chunk that held only injected fragments. */
    if (!rc && !s->tool_turn && !(removed && !json_object_object_length(delta) && !finish
                                  && !member(root, "usage", json_type_object)))
        rc = relay_end(s, NULL, NULL, root, changed, data, len);
    json_object_put(root);
    return rc;
}

static const char *chat_assistant(aib_agent_stream_t *s, apr_pool_t *p)
{
    json_object *msg = json_object_new_object(), *calls;
    const char *out;
    int i;

    json_object_object_add(msg, "role", json_object_new_string("assistant"));
    json_object_object_add(msg, "content", s->text.len
                           ? json_object_new_string_len(s->text.data, (int)s->text.len) : NULL);
    if (s->parts->nelts) {
        calls = json_object_new_array();
        for (i = 0; i < s->parts->nelts; i++) {
            const part_t *pt = &APR_ARRAY_IDX(s->parts, i, part_t);
            json_object *call = json_object_new_object(), *fn = json_object_new_object();

            json_object_object_add(call, "id", json_object_new_string(pt->id ? pt->id : ""));
            json_object_object_add(call, "type", json_object_new_string("function"));
            json_object_object_add(fn, "name", json_object_new_string(pt->name ? pt->name : ""));
            json_object_object_add(fn, "arguments", pt->text.len
                                   ? json_object_new_string_len(pt->text.data, (int)pt->text.len)
                                   : json_object_new_string("{}"));
            json_object_object_add(call, "function", fn);
            json_object_array_add(calls, call);
        }
        json_object_object_add(msg, "tool_calls", calls);
    }
    out = apr_pstrdup(p, json_object_to_json_string_ext(msg, JSON_FLAGS));
    json_object_put(msg);
    return out;
}

/* ------------------------------------------------------------------ */
/* Anthropic Messages                                                  */

static int messages_block(aib_agent_stream_t *s, const char *type, json_object *root,
                          int *changed, int *drop)
{
    int64_t up = index_of(root, "index");
    part_t *p = find_part(s, up);
    json_object *delta;

    if (is(type, "content_block_start") && !p) {
        json_object *block = member(root, "content_block", json_type_object);
        const char *btype = string_of(block, "type");

        p = new_part(s, up);
        if (is(btype, "tool_use") && injected_name(s, string_of(block, "name"))) {
            p->held = 1;
            s->injected++;
            p->id = take_string(s, member(block, "id", json_type_string));
            p->name = take_string(s, member(block, "name", json_type_string));
        }
        else {
            if (is(btype, "tool_use"))
                s->client_tools = 1;
            p->client = s->next_index++;
        }
        p->json = take_json(s, block);
        if (!p->json)
            return 1;
    }
    if (!p)
        return 0;   /* a block we never saw start: relayed as it is */
    delta = member(root, "delta", json_type_object);
    if (is(type, "content_block_delta")) {
        const char *dtype = string_of(delta, "type");

        if (is(dtype, "text_delta") && append_string(s, &p->text,
                                                     member(delta, "text", json_type_string)))
            return 1;
        if (is(dtype, "thinking_delta")
            && append_string(s, &p->text, member(delta, "thinking", json_type_string)))
            return 1;
        if (is(dtype, "input_json_delta")
            && append_string(s, &p->text, member(delta, "partial_json", json_type_string)))
            return 1;
        if (is(dtype, "signature_delta")
            && append_string(s, &p->signature, member(delta, "signature", json_type_string)))
            return 1;
    }
    *drop = p->held;
    if (!p->held)
        *changed |= set_int(root, "index", p->client, 0);
    return 0;
}

static int messages_event(aib_agent_stream_t *s, const char *event, const char *type,
                          json_object *root, const char *data, apr_size_t len)
{
    int changed = 0, drop = 0;

    if (is(type, "error")) {
        if (put(s, event, data, len))
            return 1;
        return fail(s, AIB_AGENT_ERROR, error_message(root));
    }
    /* After message_delta of a tool turn only message_stop is taken: a
     * block the upstream still sent could neither go out (its message
     * ended) nor change what the turn was. */
    if (s->tool_turn && !is(type, "message_stop"))
        return 0;
    if (is(type, "message_start"))
        return s->iteration ? 0 : put(s, event, data, len);
    if (is(type, "content_block_start") || is(type, "content_block_delta")
        || is(type, "content_block_stop")) {
        if (messages_block(s, type, root, &changed, &drop))
            return 1;
        return drop ? 0 : put_json(s, event, root, changed, data, len);
    }
    if (is(type, "message_delta")) {
        if (is(string_of(member(root, "delta", json_type_object), "stop_reason"), "tool_use")
            && s->injected && !s->client_tools)
            s->tool_turn = 1;
        return s->tool_turn ? 0 : relay_end(s, event, type, root, 0, data, len);
    }
    if (is(type, "message_stop")) {
        s->ended = 1;
        return s->tool_turn ? 0 : put(s, event, data, len);
    }
    return put(s, event, data, len);   /* ping and what is yet unknown */
}

/* Sets a block's string member to what its deltas brought, if anything. */
static void set_text(json_object *block, const char *key, const aib_buffer_t *b)
{
    if (b->len)
        json_object_object_add(block, key, json_object_new_string_len(b->data, (int)b->len));
}

static const char *messages_assistant(aib_agent_stream_t *s, apr_pool_t *p)
{
    json_object *msg = json_object_new_object(), *content = json_object_new_array();
    const char *out;
    int i;

    for (i = 0; i < s->parts->nelts; i++) {
        const part_t *pt = &APR_ARRAY_IDX(s->parts, i, part_t);
        json_object *block = pt->json ? aib_json_parse_object(pt->json, strlen(pt->json))
                                      : NULL;
        const char *type = string_of(block, "type");

        if (!block)
            continue;
        if (is(type, "text") && !pt->text.len) {
            /* The API refuses empty text blocks in a request. */
            json_object_put(block);
            continue;
        }
        if (is(type, "text"))
            set_text(block, "text", &pt->text);
        else if (is(type, "thinking")) {
            set_text(block, "thinking", &pt->text);
            set_text(block, "signature", &pt->signature);
        }
        else if (is(type, "tool_use") || is(type, "server_tool_use")) {
            json_object *input = pt->text.len ? aib_json_parse_object(pt->text.data, pt->text.len)
                                              : NULL;
            json_object_object_add(block, "input", input ? input : json_object_new_object());
        }
        json_object_array_add(content, block);
    }
    json_object_object_add(msg, "role", json_object_new_string("assistant"));
    json_object_object_add(msg, "content", content);
    out = apr_pstrdup(p, json_object_to_json_string_ext(msg, JSON_FLAGS));
    json_object_put(msg);
    return out;
}

/* ------------------------------------------------------------------ */
/* OpenAI Responses                                                    */

static int responses_item(aib_agent_stream_t *s, const char *type, json_object *root,
                          int *changed, int *drop)
{
    int64_t up = index_of(root, "output_index");
    part_t *p = find_part(s, up);
    json_object *item = member(root, "item", json_type_object);

    if (is(type, "response.output_item.added") && !p) {
        int call = is(string_of(item, "type"), "function_call");

        p = new_part(s, up);
        if (call && injected_name(s, string_of(item, "name"))) {
            p->held = 1;
            s->injected++;
        }
        else {
            if (call)
                s->client_tools = 1;
            p->client = s->next_index++;
        }
    }
    if (!p)
        return 0;
    if (is(type, "response.output_item.done") && item) {
        p->json = take_json(s, item);
        if (!p->json)
            return 1;
        if (p->held) {
            p->id = take_string(s, member(item, "call_id", json_type_string));
            p->name = take_string(s, member(item, "name", json_type_string));
            if (append_string(s, &p->text, member(item, "arguments", json_type_string)))
                return 1;
        }
    }
    *drop = p->held;
    if (!p->held)
        *changed |= set_int(root, "output_index", p->client, 0);
    return 0;
}

static int responses_event(aib_agent_stream_t *s, const char *event, const char *type,
                           json_object *root, const char *data, apr_size_t len)
{
    int changed = 0, drop = 0;

    if (s->tool_turn)
        return 0;   /* nothing is meant to follow response.completed */
    if (is(type, "error")) {
        if (put_seq(s, event, root, 0, data, len))
            return 1;
        return fail(s, AIB_AGENT_ERROR, error_message(root));
    }
    if (is(type, "response.created") || is(type, "response.in_progress")
        || is(type, "response.queued")) {
        if (s->iteration)
            return 0;
        if (!s->first_id)
            s->first_id = apr_pstrdup(s->pool, string_of(member(root, "response",
                                                                json_type_object), "id"));
        return put_seq(s, event, root, 0, data, len);
    }
    if (is_responses_end(type)) {
        s->ended = 1;
        if (is(type, "response.completed") && s->injected && !s->client_tools) {
            s->tool_turn = 1;
            return 0;
        }
        if (relay_end(s, event, type, root, 0, data, len))
            return 1;
        return is(type, "response.failed") ? fail(s, AIB_AGENT_ERROR, error_message(root)) : 0;
    }
    if (member(root, "output_index", json_type_int)) {
        if (responses_item(s, type, root, &changed, &drop))
            return 1;
        if (drop)
            return 0;
    }
    return put_seq(s, event, root, changed, data, len);
}

static const char *responses_assistant(aib_agent_stream_t *s, apr_pool_t *p)
{
    apr_array_header_t *items = apr_array_make(p, s->parts->nelts + 1, sizeof(const char *));
    int i;

    for (i = 0; i < s->parts->nelts; i++) {
        const part_t *pt = &APR_ARRAY_IDX(s->parts, i, part_t);

        if (pt->json) {
            if (items->nelts)
                *(const char **)apr_array_push(items) = ",";
            *(const char **)apr_array_push(items) = pt->json;
        }
    }
    return apr_pstrcat(p, "[", apr_array_pstrcat(p, items, 0), "]", NULL);
}

/* ------------------------------------------------------------------ */
/* The filter                                                          */

aib_agent_stream_t *aib_agent_stream_create(apr_pool_t *pool, aib_usage_kind_e kind,
                                            const char *prefix,
                                            const apr_array_header_t *client_tools,
                                            int include_usage,
                                            apr_size_t max_held,
                                            aib_agent_emit_fn *emit, void *ctx)
{
    aib_agent_stream_t *s = apr_pcalloc(pool, sizeof(*s));

    s->pool = pool;
    apr_pool_create(&s->it_pool, pool);
    s->kind = kind;
    s->prefix = apr_pstrdup(pool, prefix);
    s->prefix_len = strlen(prefix);
    s->client_names = client_tools;
    s->include_usage = include_usage;
    s->max_held = max_held ? max_held : AIB_AGENT_HELD_MAX;
    s->emit = emit;
    s->ctx = ctx;
    s->fresh = 1;
    s->items = apr_array_make(pool, 4, sizeof(const char *));
    aib_usage_init(&s->total, pool);
    return s;
}

static void begin(aib_agent_stream_t *s)
{
    apr_pool_clear(s->it_pool);
    aib_usage_init(&s->usage, s->it_pool);
    s->held = 0;
    s->parts = apr_array_make(s->it_pool, 4, sizeof(part_t));
    memset(&s->text, 0, sizeof(s->text));
    s->next_call = 0;
    s->injected = s->client_tools = s->ended = s->tool_turn = 0;
    s->fresh = 0;
}

int aib_agent_stream_event(void *filter, const char *event, const char *data,
                           apr_size_t len)
{
    aib_agent_stream_t *s = filter;
    json_object *root;
    const char *type;
    int rc;

    if (s->failed || s->over)
        return 1;
    if (s->fresh)
        begin(s);
    aib_usage_from_event(&s->usage, s->it_pool, s->kind, event, data, len);
    if (s->kind == AIB_USAGE_CHAT)
        return chat_event(s, data, len);
    root = aib_json_parse_object(data, len);
    if (!root)
        return put(s, event, data, len);
    type = event && *event ? event : string_of(root, "type");
    rc = s->kind == AIB_USAGE_MESSAGES ? messages_event(s, event, type, root, data, len)
                                       : responses_event(s, event, type, root, data, len);
    json_object_put(root);
    return rc;
}

static void add_usage(aib_usage_t *to, const aib_usage_t *u)
{
    int i;

    aib_agent_usage_add(to, u);
    for (i = 0; i < u->tools->nelts; i++)
        *(const char **)apr_array_push(to->tools) =
            apr_pstrdup(to->tools->pool, APR_ARRAY_IDX(u->tools, i, const char *));
}

aib_agent_turn_t *aib_agent_stream_end(aib_agent_stream_t *s, apr_pool_t *p)
{
    aib_agent_turn_t *t = apr_pcalloc(p, sizeof(*t));
    int i;

    if (s->fresh)
        begin(s);   /* an iteration without a single event */
    t->outcome = s->failed ? s->failure : !s->ended ? AIB_AGENT_TRUNCATED
                 : s->tool_turn ? AIB_AGENT_TOOLS : AIB_AGENT_DONE;
    t->client_tools = s->client_tools;
    t->error = s->failed ? apr_pstrdup(p, s->error) : NULL;
    t->calls = apr_array_make(p, s->injected + 1, sizeof(aib_agent_stream_call_t));
    for (i = 0; i < s->parts->nelts; i++) {
        const part_t *pt = &APR_ARRAY_IDX(s->parts, i, part_t);
        aib_agent_stream_call_t *c;

        if (!pt->held)
            continue;
        c = apr_array_push(t->calls);
        c->id = apr_pstrdup(p, pt->id ? pt->id : "");
        c->name = apr_pstrdup(p, pt->name ? pt->name : "");
        c->arguments = pt->text.len ? apr_pstrmemdup(p, pt->text.data, pt->text.len) : "{}";
    }
    if (t->outcome != AIB_AGENT_TOO_LARGE)
        t->assistant = s->kind == AIB_USAGE_CHAT ? chat_assistant(s, p)
                       : s->kind == AIB_USAGE_MESSAGES ? messages_assistant(s, p)
                       : responses_assistant(s, p);
    aib_usage_init(&t->usage, p);
    add_usage(&t->usage, &s->usage);
    add_usage(&s->total, &s->usage);
    if (t->outcome == AIB_AGENT_TOOLS && s->kind == AIB_USAGE_RESPONSES) {
        /* The final response.completed lists them. */
        for (i = 0; i < s->parts->nelts; i++) {
            const part_t *pt = &APR_ARRAY_IDX(s->parts, i, part_t);

            if (pt->held || !pt->json)
                continue;
            s->kept += strlen(pt->json);
            *(const char **)apr_array_push(s->items) = apr_pstrdup(s->pool, pt->json);
        }
    }
    s->iteration++;
    s->fresh = 1;
    if (t->outcome != AIB_AGENT_TOOLS)
        s->over = 1;
    return t;
}

const aib_usage_t *aib_agent_stream_usage(const aib_agent_stream_t *s)
{
    return &s->total;
}

int64_t aib_agent_stream_next_sequence(const aib_agent_stream_t *s)
{
    return s->next_seq;
}

const char *aib_agent_stream_keepalive(aib_usage_kind_e kind, apr_size_t *len)
{
    const char *frame = kind == AIB_USAGE_MESSAGES ? keepalive_anthropic : keepalive_openai;

    *len = strlen(frame);
    return frame;
}
