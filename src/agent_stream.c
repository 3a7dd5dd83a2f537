/* One client stream over the iterations of the agentic loop (see
 * agent_stream.h). What each wire format's events mean is its format
 * file's (format_*.c, through agent_stream_int.h); this is what they share.
 *
 * Design notes:
 * - Every event is parsed (json-c, a few microseconds for a delta): the
 *   filter must know what each belongs to. An event that needs no change
 *   goes out as the upstream's own data, so a single iteration without
 *   injected calls reaches the client byte for byte; a changed one is
 *   re-serialised (plain, no slash escapes).
 * - The end of an iteration that stops for injected calls (Chat finish and
 *   usage chunks and [DONE], Anthropic message_delta and message_stop,
 *   Responses response.completed) is dropped: the next iteration's end
 *   carries the summed usage (aib_stream_sum_usage, written through the
 *   format's usage fields).
 * - Usage: each iteration is read with aib_usage_from_event into its own
 *   record and added to the total when it ends. Input tokens are summed as
 *   each upstream call reports (and bills) them, although every call
 *   re-sends the conversation: the total is what the provider charged.
 * - How each format's events are followed, renumbered and summed is said
 *   in its format file.
 * - Memory: what is kept (call arguments, the assistant turn, items) is
 *   counted against max_held; an iteration's data lives in
 *   a pool cleared when the next iteration begins. */
#include <string.h>

#include <json.h>
#include <apr_strings.h>

#include "agent_body.h"
#include "agent_stream_int.h"
#include "json_helpers.h"
#include "sse.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

int aib_stream_fail(aib_agent_stream_t *s, aib_agent_outcome_e outcome, const char *error)
{
    if (!s->failed) {
        s->failed = 1;
        s->failure = outcome;
        s->error = apr_pstrdup(s->pool, error);
    }
    return 1;
}

int aib_stream_charge(aib_agent_stream_t *s, apr_size_t n)
{
    s->held_bytes += n;
    if (s->held_bytes + s->kept > s->max_held)
        return aib_stream_fail(s, AIB_AGENT_TOO_LARGE,
                               apr_psprintf(s->pool, "the agentic loop held back more than %"
                                            APR_SIZE_T_FMT " bytes of the stream",
                                            s->max_held));
    return 0;
}

static int append(aib_agent_stream_t *s, aib_buffer_t *b, const char *data, apr_size_t n)
{
    if (aib_stream_charge(s, n))
        return 1;
    aib_buffer_append(b, s->it_pool, data, n);
    return 0;
}

int aib_stream_append_string(aib_agent_stream_t *s, aib_buffer_t *b, json_object *str)
{
    return str ? append(s, b, json_object_get_string(str),
                        (apr_size_t)json_object_get_string_len(str)) : 0;
}

const char *aib_stream_take_string(aib_agent_stream_t *s, json_object *str)
{
    if (!str || aib_stream_charge(s, (apr_size_t)json_object_get_string_len(str)))
        return NULL;
    return apr_pstrmemdup(s->it_pool, json_object_get_string(str),
                          (apr_size_t)json_object_get_string_len(str));
}

const char *aib_stream_take_json(aib_agent_stream_t *s, json_object *obj)
{
    size_t n;
    const char *text = json_object_to_json_string_length(obj, AIB_JSON_FLAGS, &n);

    if (!text || aib_stream_charge(s, n))
        return NULL;
    return apr_pstrmemdup(s->it_pool, text, n);
}

int aib_stream_injected_name(const aib_agent_stream_t *s, const char *name)
{
    int i;

    if (!name || strncmp(name, s->prefix, s->prefix_len))
        return 0;
    for (i = 0; s->client_names && i < s->client_names->nelts; i++)
        if (!strcmp(APR_ARRAY_IDX(s->client_names, i, const char *), name))
            return 0;
    return 1;
}

aib_stream_part_t *aib_stream_find_part(aib_agent_stream_t *s, int64_t up)
{
    int i;

    for (i = 0; i < s->parts->nelts; i++)
        if (APR_ARRAY_IDX(s->parts, i, aib_stream_part_t).up == up)
            return &APR_ARRAY_IDX(s->parts, i, aib_stream_part_t);
    return NULL;
}

aib_stream_part_t *aib_stream_new_part(aib_agent_stream_t *s, int64_t up)
{
    aib_stream_part_t *p = apr_array_push(s->parts);

    memset(p, 0, sizeof(*p));
    p->up = up;
    p->client = -1;
    return p;
}

int64_t aib_stream_index_of(json_object *obj, const char *key)
{
    json_object *v = aib_json_member(obj, key, json_type_int);

    return v ? json_object_get_int64(v) : -1;
}

const char *aib_stream_error_message(json_object *root)
{
    const char *m = aib_json_string(aib_json_member(root, "error", json_type_object),
                                    "message");

    if (!m)
        m = aib_json_string(aib_json_member(aib_json_member(root, "response",
                                                            json_type_object),
                                            "error", json_type_object), "message");
    if (!m)
        m = aib_json_string(root, "message");
    return m ? m : "the upstream reported an error";
}

void aib_stream_sum_usage(const aib_agent_stream_t *s, aib_usage_t *u)
{
    *u = s->total;
    if (!s->fresh)
        aib_agent_usage_add(u, &s->usage);
}

int aib_stream_send(aib_agent_stream_t *s, const char *event, const char *data,
                    apr_size_t len)
{
    apr_size_t at = AIB_SSE_FRAME_MAX(event ? strlen(event) : 0, len), n;

    if (s->failed)
        return 1;
    if (at + len > s->frame_cap) {
        s->frame_cap = (at + len) * 2;
        s->frame = apr_palloc(s->pool, s->frame_cap);
    }
    if (s->format->stream_usage_strip && !s->include_usage) {
        /* The client did not ask for usage: hide what the loop asked for. */
        if (!s->format->stream_usage_strip(data, len, s->frame + at, &n))
            return 0;
        data = s->frame + at;
        len = n;
    }
    n = aib_sse_frame(s->frame, event, data, len);
    if (s->emit(s->ctx, s->frame, n))
        return aib_stream_fail(s, AIB_AGENT_CLIENT_GONE, "the client went away");
    return 0;
}

int aib_stream_send_json(aib_agent_stream_t *s, const char *event, json_object *root,
                         int changed, const char *data, apr_size_t len)
{
    size_t n;

    if (changed) {
        data = json_object_to_json_string_length(root, AIB_JSON_FLAGS, &n);
        len = n;
    }
    return aib_stream_send(s, event, data, len);
}

/* ------------------------------------------------------------------ */
/* The filter                                                          */

aib_agent_stream_t *aib_agent_stream_create(apr_pool_t *pool, const aib_format_t *format,
                                            const char *prefix,
                                            const apr_array_header_t *client_tools,
                                            int include_usage,
                                            apr_size_t max_held,
                                            aib_agent_emit_fn *emit, void *ctx)
{
    aib_agent_stream_t *s = apr_pcalloc(pool, sizeof(*s));

    s->pool = pool;
    apr_pool_create(&s->it_pool, pool);
    s->format = format;
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
    s->held_bytes = 0;
    s->parts = apr_array_make(s->it_pool, 4, sizeof(aib_stream_part_t));
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

    if (s->failed || s->finished)
        return 1;
    if (s->fresh)
        begin(s);
    aib_usage_from_event(&s->usage, s->it_pool, s->format, event, data, len);
    root = aib_json_parse_object(data, len);
    type = event && *event ? event : aib_json_string(root, "type");
    rc = s->format->filter_event(s, event, type, root, data, len);
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
        const aib_stream_part_t *pt = &APR_ARRAY_IDX(s->parts, i, aib_stream_part_t);
        aib_agent_stream_call_t *c;

        if (!pt->withheld)
            continue;
        c = apr_array_push(t->calls);
        c->id = apr_pstrdup(p, pt->id ? pt->id : "");
        c->name = apr_pstrdup(p, pt->name ? pt->name : "");
        c->arguments = pt->text.len ? apr_pstrmemdup(p, pt->text.data, pt->text.len) : "{}";
    }
    if (t->outcome != AIB_AGENT_TOO_LARGE)
        t->assistant = s->format->filter_assistant(s, p);
    aib_usage_init(&t->usage, p);
    add_usage(&t->usage, &s->usage);
    add_usage(&s->total, &s->usage);
    if (t->outcome == AIB_AGENT_TOOLS && s->format->filter_tool_turn_end)
        s->format->filter_tool_turn_end(s);
    s->iteration++;
    s->fresh = 1;
    if (t->outcome != AIB_AGENT_TOOLS)
        s->finished = 1;
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

const char *aib_agent_stream_keepalive(const aib_format_t *format, apr_size_t *len)
{
    *len = strlen(format->keepalive);
    return format->keepalive;
}
