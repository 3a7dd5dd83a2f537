/* OpenAI Chat Completions as a wire format (see format.h).
 *
 * Design notes:
 * - Streams: every chunk is a candidate for usage, so a cheap scan first
 *   skips chunks with neither "tool_calls" nor a non-null "usage" (the
 *   text deltas, the bulk of a stream) without parsing them.
 * - Usage in a stream comes only when asked (stream_options.include_usage).
 *   The ask and the strip edit the bytes in place of re-serialising, so
 *   what the client sent or receives stays byte-identical apart from the
 *   edit. The strip only scans the top-level members (no parse, no
 *   allocation); a key written with escapes ("us\u0061ge") is not
 *   recognised and the data is left as it is.
 * - Agentic streams: only choices[0] is followed (the loop asks for n=1).
 *   Client tool calls keep consecutive indices once injected ones are taken
 *   out; a chunk left with nothing in it is dropped. */
#include <string.h>

#include <json.h>
#include <apr_strings.h>

#include "agent_body.h"
#include "agent_stream_int.h"
#include "format.h"
#include "json_helpers.h"

#define INCLUDE_USAGE "\"stream_options\":{\"include_usage\":true}"

static const aib_usage_field_t usage_fields[] = {
    { AIB_COUNT_INPUT, NULL, "prompt_tokens" },
    { AIB_COUNT_OUTPUT, NULL, "completion_tokens" },
    { AIB_COUNT_TOTAL, NULL, "total_tokens" },
    { AIB_COUNT_CACHE_READ, "prompt_tokens_details", "cached_tokens" },
    { AIB_COUNT_REASONING, "completion_tokens_details", "reasoning_tokens" },
    { AIB_COUNT_INPUT, NULL, NULL }
};

static APR_INLINE int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* ------------------------------------------------------------------ */
/* Usage and tool names                                                */

/* Chat: choices[].<part>.tool_calls[].function.name (part: "message" in a
 * response, "delta" in a stream chunk). */
static void add_chat_tools(aib_usage_t *u, apr_pool_t *pool, json_object *root,
                           const char *part)
{
    json_object *choices = aib_json_member(root, "choices", json_type_array);
    size_t i, j, n, m;

    if (!choices)
        return;
    n = json_object_array_length(choices);
    for (i = 0; i < n; i++) {
        json_object *msg = aib_json_member(json_object_array_get_idx(choices, i), part,
                                           json_type_object);
        json_object *calls = aib_json_member(msg, "tool_calls", json_type_array);

        if (!calls)
            continue;
        m = json_object_array_length(calls);
        for (j = 0; j < m; j++) {
            json_object *fn = aib_json_member(json_object_array_get_idx(calls, j),
                                              "function", json_type_object);
            aib_usage_add_tool(u, pool, aib_json_member(fn, "name", json_type_string));
        }
    }
}

static void chat_tools_from_body(aib_usage_t *u, apr_pool_t *pool, json_object *root)
{
    add_chat_tools(u, pool, root, "message");
}

/* Where needle (n > 0 bytes) first occurs in s[from, len), or len. */
static apr_size_t find(const char *s, apr_size_t len, apr_size_t from,
                       const char *needle, apr_size_t n)
{
    while (from + n <= len) {
        const char *p = memchr(s + from, needle[0], len - from - n + 1);

        if (!p)
            break;
        from = (apr_size_t)(p - s);
        if (!memcmp(p, needle, n))
            return from;
        from++;
    }
    return len;
}

/* Whether a chat chunk may carry something to read: tool calls, or a
 * "usage" whose value is not null. Never wrong the other way: any chunk
 * with either passes. */
static int chat_usage_event_wanted(const char *event, const char *s, apr_size_t len)
{
    apr_size_t i = 0;

    (void)event;
    if (find(s, len, 0, "\"tool_calls\"", 12) < len)
        return 1;
    while ((i = find(s, len, i, "\"usage\"", 7)) < len) {
        i += 7;
        while (i < len && is_ws(s[i]))
            i++;
        if (i < len && s[i] == ':') {
            i++;
            while (i < len && is_ws(s[i]))
                i++;
            if (i < len && s[i] != 'n')
                return 1;
        }
    }
    return 0;
}

static void chat_usage_from_event(aib_usage_t *u, apr_pool_t *pool, const char *type,
                                  json_object *root)
{
    (void)type;
    aib_usage_read(u, &aib_format_chat, aib_json_member(root, "usage", json_type_object));
    add_chat_tools(u, pool, root, "delta");
}

/* ------------------------------------------------------------------ */
/* Asking for usage in a stream, and taking back what that adds       */

static const char *chat_stream_usage_ask(apr_pool_t *pool, const char *body, apr_size_t len,
                                         apr_size_t *out_len, int *injected)
{
    json_object *root, *so, *iu;
    const char *out = body;
    apr_size_t i = 0;

    *injected = 0;
    *out_len = len;
    root = aib_json_parse_object(body, len);
    if (!root)
        return body;

    while (i < len && is_ws(body[i]))
        i++;
    if (!json_object_object_get_ex(root, "stream_options", &so) && i < len
        && body[i] == '{') {
        /* Insert right after the '{': the client's bytes stay as they are. */
        int empty = json_object_object_length(root) == 0;
        apr_size_t add = sizeof(INCLUDE_USAGE) - 1 + (empty ? 0 : 1);
        char *buf = apr_palloc(pool, len + add + 1);

        memcpy(buf, body, i + 1);
        memcpy(buf + i + 1, INCLUDE_USAGE, sizeof(INCLUDE_USAGE) - 1);
        if (!empty)
            buf[i + sizeof(INCLUDE_USAGE)] = ',';
        memcpy(buf + i + 1 + add, body + i + 1, len - i - 1);
        buf[len + add] = '\0';
        out = buf;
        *out_len = len + add;
        *injected = 1;
    }
    else if (!(json_object_is_type(so, json_type_object)
               && json_object_object_get_ex(so, "include_usage", &iu)
               && json_object_is_type(iu, json_type_boolean)
               && json_object_get_boolean(iu))) {
        /* stream_options without include_usage true: rewrite the body. */
        const char *s;
        size_t slen;

        if (!json_object_is_type(so, json_type_object)) {
            so = json_object_new_object();
            json_object_object_add(root, "stream_options", so);
        }
        json_object_object_add(so, "include_usage", json_object_new_boolean(1));
        s = json_object_to_json_string_length(root, AIB_JSON_FLAGS, &slen);
        if (s) {
            out = apr_pstrmemdup(pool, s, slen);
            *out_len = slen;
            *injected = 1;
        }
    }
    json_object_put(root);
    return out;
}

/* Scanning JSON text without parsing it: each returns the offset just past
 * the construct starting at s[i], or 0 when it is cut off or malformed. */
static apr_size_t skip_string(const char *s, apr_size_t len, apr_size_t i)
{
    for (i++; i < len; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return 0;
}

static apr_size_t skip_value(const char *s, apr_size_t len, apr_size_t i)
{
    apr_size_t depth = 0, start = i;

    if (i >= len)
        return 0;
    if (s[i] == '"')
        return skip_string(s, len, i);
    if (s[i] != '{' && s[i] != '[') {
        /* A scalar: up to the next delimiter. */
        while (i < len && !is_ws(s[i]) && s[i] != ',' && s[i] != '}'
               && s[i] != ']' && s[i] != ':' && s[i] != '"')
            i++;
        return i > start ? i : 0;
    }
    while (i < len) {
        switch (s[i]) {
        case '"':
            i = skip_string(s, len, i);
            if (!i)
                return 0;
            continue;
        case '{':
        case '[':
            depth++;
            break;
        case '}':
        case ']':
            if (--depth == 0)
                return i + 1;
            break;
        default:
            break;
        }
        i++;
    }
    return 0;
}

static apr_size_t skip_ws(const char *s, apr_size_t len, apr_size_t i)
{
    while (i < len && is_ws(s[i]))
        i++;
    return i;
}

/* The data as it is, into out (which may be data itself). */
static int keep(const char *data, apr_size_t len, char *out, apr_size_t *out_len)
{
    if (out != data && len)
        memmove(out, data, len);
    *out_len = len;
    return 1;
}

static int chat_stream_usage_strip(const char *data, apr_size_t len, char *out,
                                   apr_size_t *out_len)
{
    apr_size_t i, key, key_end, val, end;
    apr_size_t u_key = 0, u_val = 0, u_end = 0;
    int has_usage = 0, choices_empty = 0;
    apr_size_t cut_from, cut_to;

    *out_len = 0;
    if (!data || !len)
        return 1;
    /* One pass over the top-level members; anything unexpected leaves the
     * data as it is ("[DONE]" included). */
    i = skip_ws(data, len, 0);
    if (i >= len || data[i] != '{')
        return keep(data, len, out, out_len);
    i = skip_ws(data, len, i + 1);
    if (i < len && data[i] == '}') {
        i++;
    }
    else {
        for (;;) {
            if (i >= len || data[i] != '"')
                return keep(data, len, out, out_len);
            key = i;
            key_end = i = skip_string(data, len, i);
            if (!i)
                return keep(data, len, out, out_len);
            i = skip_ws(data, len, i);
            if (i >= len || data[i] != ':')
                return keep(data, len, out, out_len);
            val = i = skip_ws(data, len, i + 1);
            end = i = skip_value(data, len, i);
            if (!i)
                return keep(data, len, out, out_len);
            if (key_end - key == 7 && !memcmp(data + key, "\"usage\"", 7)) {
                if (has_usage) /* twice: not a chunk we know */
                    return keep(data, len, out, out_len);
                has_usage = 1;
                u_key = key;
                u_val = val;
                u_end = end;
            }
            else if (key_end - key == 9 && !memcmp(data + key, "\"choices\"", 9)) {
                choices_empty = data[val] == '['
                                && skip_ws(data, len, val + 1) + 1 == end;
            }
            i = skip_ws(data, len, i);
            if (i < len && data[i] == ',') {
                i = skip_ws(data, len, i + 1);
                continue;
            }
            if (i < len && data[i] == '}') {
                i++;
                break;
            }
            return keep(data, len, out, out_len);
        }
    }
    if (skip_ws(data, len, i) != len || !has_usage)
        return keep(data, len, out, out_len);

    if (u_end - u_val != 4 || memcmp(data + u_val, "null", 4)) {
        if (choices_empty)
            return 0; /* the usage-only chunk the module asked for */
        return keep(data, len, out, out_len);
    }

    /* Remove "usage":null with the comma before it, or else after it. */
    cut_from = u_key;
    cut_to = u_end;
    i = u_key;
    while (i > 0 && is_ws(data[i - 1]))
        i--;
    if (data[i - 1] == ',') {
        cut_from = i - 1;
    }
    else {
        i = skip_ws(data, len, u_end);
        if (data[i] == ',')
            cut_to = i + 1;
    }
    /* memmove throughout: out may be data itself (the tail moves left). */
    if (out != data)
        memmove(out, data, cut_from);
    memmove(out + cut_from, data + cut_to, len - cut_to);
    *out_len = len - (cut_to - cut_from);
    return 1;
}

/* ------------------------------------------------------------------ */
/* The end of a stream                                                 */

static int chat_stream_complete(const char *event, const char *data)
{
    if (event)
        return !strcmp(event, "error");
    /* Chat streams end with [DONE]; an error chunk is the upstream's last word. */
    return !strcmp(data, "[DONE]") || !strncmp(data, "{\"error\"", 8);
}

/* An error chunk: the provider's error body as the data. */
static const char *chat_stream_error(apr_pool_t *p, const aib_provider_ops_t *provider,
                                     aib_error_kind_e kind, const char *message,
                                     int64_t sequence)
{
    (void)sequence;
    return apr_psprintf(p, "data: %s\n\n", provider->error_body(p, kind, message));
}

/* ------------------------------------------------------------------ */
/* Tools of a blocking exchange                                        */

static const char *chat_tool_choice_none(json_object *choice, int *none)
{
    *none = aib_json_string_is(choice, "none");
    return NULL;
}

static json_object *chat_tool_entry(const aib_agent_tool_t *t, json_object *schema)
{
    json_object *entry = json_object_new_object(), *fn = json_object_new_object();

    aib_json_set_string(entry, "type", "function");
    aib_json_set_string(fn, "name", t->name);
    if (t->description)
        aib_json_set_string(fn, "description", t->description);
    json_object_object_add(fn, "parameters", schema);
    json_object_object_add(entry, "function", fn);
    return entry;
}

/* Chat nests a client tool's name under its type ("function", "custom"). */
static const char *chat_client_tool_name(json_object *item)
{
    const char *type = aib_json_string(item, "type");

    return aib_json_string(aib_json_member(item, type ? type : "function", json_type_object),
                           "name");
}

static void chat_serial_tool_calls(json_object *root, json_object *choice)
{
    (void)choice;
    json_object_object_add(root, "parallel_tool_calls", json_object_new_boolean(0));
}

/* Chat: the choices[0].message object, or NULL. */
static json_object *chat_message(json_object *root)
{
    json_object *choices = aib_json_member(root, "choices", json_type_array);

    if (!choices || !json_object_array_length(choices))
        return NULL;
    return aib_json_member(json_object_array_get_idx(choices, 0), "message",
                           json_type_object);
}

static const char *chat_call_array(json_object *root, json_object **arr)
{
    json_object *msg = chat_message(root), *v;

    *arr = NULL;
    if (!msg)
        return "response has no choices[0].message object";
    if (!json_object_object_get_ex(msg, "tool_calls", &v) || !v)
        return NULL;
    if (!json_object_is_type(v, json_type_array))
        return "'tool_calls' must be an array";
    *arr = v;
    return NULL;
}

static int chat_read_call(apr_pool_t *p, json_object *item, aib_agent_call_t *c,
                          const char **err)
{
    const char *t = aib_json_string(item, "type");
    json_object *fn;

    memset(c, 0, sizeof(*c));
    if (!json_object_is_type(item, json_type_object)) {
        *err = "a tool call or output item is not an object";
        return 0;
    }
    c->id = aib_json_strdup(p, item, "id");
    if (!c->id) {
        *err = "a tool call has no string 'id'";
        return 0;
    }
    if (t && strcmp(t, "function")) {
        /* A custom tool: the client's, whatever its name. */
        c->name = aib_json_strdup(p, aib_json_member(item, t, json_type_object), "name");
        return 1;
    }
    fn = aib_json_member(item, "function", json_type_object);
    c->name = aib_json_strdup(p, fn, "name");
    c->arguments = aib_json_strdup(p, fn, "arguments");
    if (!c->name || !c->arguments) {
        *err = "a tool call has no string function.name or function.arguments";
        return 0;
    }
    return 1;
}

static json_object *chat_history(json_object *request, const char **err)
{
    json_object *v = aib_json_member(request, "messages", json_type_array);

    if (!v)
        *err = "request has no 'messages' array";
    return v;
}

/* The assistant message as returned. */
static json_object *chat_append_turn(json_object *history, json_object *response)
{
    json_object_array_add(history, json_object_get(chat_message(response)));
    return history;
}

/* One role "tool" message per call. */
static void chat_append_result(apr_pool_t *p, json_object *to, const aib_agent_call_t *c,
                               const aib_agent_result_t *r)
{
    json_object *msg = json_object_new_object();
    const char *text = r->output ? r->output : "";

    aib_json_set_string(msg, "role", "tool");
    aib_json_set_string(msg, "tool_call_id", c->id);
    aib_json_set_string(msg, "content", r->is_error ? aib_agent_error_output(p, text) : text);
    json_object_array_add(to, msg);
}

static void chat_no_calls_left(json_object *response)
{
    json_object *choice = json_object_array_get_idx(
        aib_json_member(response, "choices", json_type_array), 0);

    json_object_object_del(chat_message(response), "tool_calls");
    if (aib_json_string_is(aib_json_member(choice, "finish_reason", json_type_string),
                           "tool_calls"))
        aib_json_set_string(choice, "finish_reason", "stop");
}

static const char *chat_turn_as_response(apr_pool_t *p, const char *assistant)
{
    return apr_pstrcat(p, "{\"choices\":[{\"message\":", assistant, "}]}", NULL);
}

/* ------------------------------------------------------------------ */
/* The agentic stream filter                                           */

/* The chunk with usage, as it ends the client's stream: the summed usage. */
static int chat_relay_end(aib_agent_stream_t *s, json_object *root, int changed,
                          const char *data, apr_size_t len)
{
    json_object *usage = aib_json_member(root, "usage", json_type_object);
    aib_usage_t u;

    if (usage) {
        aib_stream_sum_usage(s, &u);
        changed |= aib_format_usage_write(&aib_format_chat, usage, &u, 0);
    }
    return aib_stream_send_json(s, NULL, root, changed, data, len);
}

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
        json_object *fn = aib_json_member(frag, "function", json_type_object);
        int64_t up = aib_stream_index_of(frag, "index");
        aib_stream_part_t *p;

        if (up < 0)
            up = (int64_t)i;
        p = aib_stream_find_part(s, up);
        if (!p) {
            p = aib_stream_new_part(s, up);
            if (aib_stream_injected_name(s, aib_json_string(fn, "name"))) {
                p->withheld = 1;
                s->injected++;
            }
            else {
                p->client = s->next_call++;
                s->client_tools = 1;
            }
        }
        if (!p->id && aib_json_member(frag, "id", json_type_string))
            p->id = aib_stream_take_string(s, aib_json_member(frag, "id", json_type_string));
        if (!p->name && aib_json_member(fn, "name", json_type_string))
            p->name = aib_stream_take_string(s, aib_json_member(fn, "name", json_type_string));
        rc = aib_stream_append_string(s, &p->text,
                                      aib_json_member(fn, "arguments", json_type_string));
        if (p->withheld) {
            (*removed)++;
            continue;
        }
        *changed |= aib_json_set_int(frag, "index", p->client, 0);
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

static int chat_filter_event(aib_agent_stream_t *s, const char *event, const char *type,
                             json_object *root, const char *data, apr_size_t len)
{
    json_object *choices, *choice = NULL, *delta, *calls;
    const char *id, *finish;
    int changed = 0, removed = 0, rc = 0;

    (void)event;
    (void)type;
    if (len == 6 && !memcmp(data, "[DONE]", 6)) {
        s->ended = 1;
        return s->tool_turn ? 0 : aib_stream_send(s, NULL, data, len);
    }
    if (!root)
        return aib_stream_send(s, NULL, data, len); /* not a chunk: not the loop's business */
    if (aib_json_member(root, "error", json_type_object)) {
        rc = aib_stream_send(s, NULL, data, len);
        return rc ? rc : aib_stream_fail(s, AIB_AGENT_ERROR, aib_stream_error_message(root));
    }
    id = aib_json_string(root, "id");
    if (id && !s->first_id) {
        s->first_id = apr_pstrdup(s->pool, id);
    }
    else if (id && strcmp(id, s->first_id)) {
        json_object_object_add(root, "id", json_object_new_string(s->first_id));
        changed = 1;
    }
    choices = aib_json_member(root, "choices", json_type_array);
    if (choices && json_object_array_length(choices))
        choice = json_object_array_get_idx(choices, 0);
    delta = aib_json_member(choice, "delta", json_type_object);
    /* One stream names the role once: later iterations' first chunks don't. */
    if (aib_json_member(delta, "role", json_type_string)) {
        if (s->role_sent) {
            json_object_object_del(delta, "role");
            changed = 1;
        }
        s->role_sent = 1;
    }
    calls = aib_json_member(delta, "tool_calls", json_type_array);
    /* After the finish chunk of a tool turn only its end is taken. */
    if (calls && !s->tool_turn) {
        rc = chat_calls(s, delta, calls, &changed, &removed);
        changed |= removed > 0;
    }
    if (!rc)
        rc = aib_stream_append_string(s, &s->text,
                                      aib_json_member(delta, "content", json_type_string));
    finish = aib_json_string(choice, "finish_reason");
    if (aib_str_is(finish, "tool_calls") && s->injected && !s->client_tools)
        s->tool_turn = 1;
    /* The end of a tool turn is dropped (the last iteration's goes out),
     * and so is a chunk that held only injected fragments. */
    if (!rc && !s->tool_turn && !(removed && !json_object_object_length(delta) && !finish
                                  && !aib_json_member(root, "usage", json_type_object)))
        rc = chat_relay_end(s, root, changed, data, len);
    return rc;
}

static const char *chat_filter_assistant(aib_agent_stream_t *s, apr_pool_t *p)
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
            const aib_stream_part_t *pt = &APR_ARRAY_IDX(s->parts, i, aib_stream_part_t);
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
    out = aib_json_text(p, msg);
    json_object_put(msg);
    return out;
}

const aib_format_t aib_format_chat = {
    .name = "chat",
    .usage_fields = usage_fields,
    .usage_event_wanted = chat_usage_event_wanted,
    .usage_from_event = chat_usage_from_event,
    .tools_from_body = chat_tools_from_body,
    .stream_usage_ask = chat_stream_usage_ask,
    .stream_usage_strip = chat_stream_usage_strip,
    .stream_complete = chat_stream_complete,
    .stream_error = chat_stream_error,
    .keepalive = ": keep-alive\n\n",
    .tool_choice_none = chat_tool_choice_none,
    .tool_entry = chat_tool_entry,
    .client_tool_name = chat_client_tool_name,
    .serial_tool_calls = chat_serial_tool_calls,
    .call_array = chat_call_array,
    .read_call = chat_read_call,
    .history = chat_history,
    .append_turn = chat_append_turn,
    .append_result = chat_append_result,
    .no_calls_left = chat_no_calls_left,
    .turn_as_response = chat_turn_as_response,
    .filter_event = chat_filter_event,
    .filter_assistant = chat_filter_assistant,
    .filter_tool_turn_end = NULL,
};
