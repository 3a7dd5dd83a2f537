/* Token usage and tool calls from upstream responses (see usage.h).
 *
 * Design notes:
 * - Usage fields are assigned when present as integers in [0, INT64_MAX];
 *   anything else (null, strings, doubles, negative or out-of-range
 *   numbers) leaves the field as it was. `seen` is set once a usage member
 *   that is a JSON object was read. A later usage object overwrites the
 *   fields it carries (Anthropic message_delta's cumulative output_tokens).
 * - Tool names are copied into the pool of u->tools, so they live as long
 *   as the usage record whichever pool a reader or event was given.
 * - Responses streams: function_call names are taken only from
 *   response.output_item.added (they arrive as the calls start, and a
 *   stream cut short still reports them); response.completed, .failed and
 *   .incomplete give the usage only, so no name is counted twice.
 * - Chat streams: every chunk is a candidate, so a cheap scan first skips
 *   chunks with neither "tool_calls" nor a non-null "usage" (the text
 *   deltas, the bulk of a stream) without parsing them.
 * - The blocking reader parses incrementally (json_tokener_parse_ex), so
 *   it holds json-c objects, not a copy of the body. json-c allocates with
 *   malloc: finish() frees everything, and a pool cleanup does it if the
 *   pool goes first.
 * - inject and strip edit the bytes in place of re-serialising, so what the
 *   client sent or receives stays byte-identical apart from the edit. strip
 *   only scans the top-level members (no parse, no allocation); a key
 *   written with escapes ("us\u0061ge") is not recognised and the data is
 *   left as it is. */
#include <limits.h>
#include <string.h>

#include <json.h>
#include <apr_strings.h>

#include "request.h"
#include "usage.h"

/* JSON is parsed with aib_json_tokener_take's tokeners: AIB_REQUEST_MAX_DEPTH
 * (512) levels, as the request's. */

#define INCLUDE_USAGE "\"stream_options\":{\"include_usage\":true}"

aib_usage_kind_e aib_usage_kind(const char *route_name)
{
    if (!route_name)
        return AIB_USAGE_NONE;
    if (!strcmp(route_name, "chat"))
        return AIB_USAGE_CHAT;
    if (!strcmp(route_name, "responses"))
        return AIB_USAGE_RESPONSES;
    if (!strcmp(route_name, "messages"))
        return AIB_USAGE_MESSAGES;
    return AIB_USAGE_NONE;
}

int64_t aib_count_add(int64_t a, int64_t b)
{
    return b > INT64_MAX - a ? INT64_MAX : a + b;
}

void aib_usage_init(aib_usage_t *u, apr_pool_t *pool)
{
    memset(u, 0, sizeof(*u));
    u->tools = apr_array_make(pool, 4, sizeof(const char *));
}

/* ------------------------------------------------------------------ */
/* Reading a parsed JSON object                                        */

static APR_INLINE int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int all_ws(const char *s, apr_size_t n)
{
    apr_size_t i;

    for (i = 0; i < n; i++)
        if (!is_ws(s[i]))
            return 0;
    return 1;
}

static void set_count(int64_t *field, json_object *obj, const char *key)
{
    json_object *v = aib_json_member(obj, key, json_type_int);
    int64_t n;

    if (!v)
        return;
    n = json_object_get_int64(v);
    /* json-c clamps a uint64 above INT64_MAX to INT64_MAX: not a count. */
    if (n < 0 || (n == INT64_MAX && json_object_get_uint64(v) != (uint64_t)INT64_MAX))
        return;
    *field = n;
}

/* Reads a usage object (nothing if `usage` is not an object). */
static void read_usage(aib_usage_t *u, aib_usage_kind_e kind, json_object *usage)
{
    if (!usage || !json_object_is_type(usage, json_type_object))
        return;
    u->seen = 1;
    switch (kind) {
    case AIB_USAGE_CHAT:
        set_count(&u->input, usage, "prompt_tokens");
        set_count(&u->output, usage, "completion_tokens");
        set_count(&u->cache_read,
                  aib_json_member(usage, "prompt_tokens_details", json_type_object),
                  "cached_tokens");
        set_count(&u->reasoning,
                  aib_json_member(usage, "completion_tokens_details", json_type_object),
                  "reasoning_tokens");
        break;
    case AIB_USAGE_RESPONSES:
        set_count(&u->input, usage, "input_tokens");
        set_count(&u->output, usage, "output_tokens");
        set_count(&u->cache_read,
                  aib_json_member(usage, "input_tokens_details", json_type_object),
                  "cached_tokens");
        set_count(&u->reasoning,
                  aib_json_member(usage, "output_tokens_details", json_type_object),
                  "reasoning_tokens");
        break;
    case AIB_USAGE_MESSAGES:
        set_count(&u->input, usage, "input_tokens");
        set_count(&u->output, usage, "output_tokens");
        set_count(&u->cache_write, usage, "cache_creation_input_tokens");
        set_count(&u->cache_read, usage, "cache_read_input_tokens");
        break;
    default:
        break;
    }
}

static void add_tool(aib_usage_t *u, apr_pool_t *pool, json_object *name)
{
    const char *s;

    if (!name || !json_object_is_type(name, json_type_string))
        return;
    s = json_object_get_string(name);
    if (!s || !*s)
        return;
    if (!u->tools)
        u->tools = apr_array_make(pool, 4, sizeof(const char *));
    *(const char **)apr_array_push(u->tools) = apr_pstrdup(u->tools->pool, s);
}

/* Names of the items of `array` whose "type" is `type` (Responses output[],
 * Anthropic content[]). */
static void add_typed_tools(aib_usage_t *u, apr_pool_t *pool, json_object *array,
                            const char *type)
{
    size_t i, n;

    if (!array)
        return;
    n = json_object_array_length(array);
    for (i = 0; i < n; i++) {
        json_object *item = json_object_array_get_idx(array, i);
        json_object *t = aib_json_member(item, "type", json_type_string);

        if (t && !strcmp(json_object_get_string(t), type))
            add_tool(u, pool, aib_json_member(item, "name", json_type_string));
    }
}

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
            add_tool(u, pool, aib_json_member(fn, "name", json_type_string));
        }
    }
}

static void read_blocking(aib_usage_t *u, apr_pool_t *pool, aib_usage_kind_e kind,
                          json_object *root)
{
    read_usage(u, kind, aib_json_member(root, "usage", json_type_object));
    switch (kind) {
    case AIB_USAGE_CHAT:
        add_chat_tools(u, pool, root, "message");
        break;
    case AIB_USAGE_RESPONSES:
        add_typed_tools(u, pool, aib_json_member(root, "output", json_type_array),
                        "function_call");
        break;
    case AIB_USAGE_MESSAGES:
        add_typed_tools(u, pool, aib_json_member(root, "content", json_type_array),
                        "tool_use");
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------------ */
/* Blocking responses                                                  */

typedef enum {
    READER_PARSING,     /* the tokener wants more */
    READER_COMPLETE,    /* root parsed; only whitespace may follow */
    READER_FAILED,      /* too large or not JSON: nothing to read */
    READER_FINISHED
} reader_state_e;

struct aib_usage_reader {
    apr_pool_t *pool;
    aib_usage_t *u;
    aib_usage_kind_e kind;
    reader_state_e state;
    apr_size_t max_bytes;
    apr_size_t fed;
    json_tokener *tok;
    json_object *root;
    int registered;     /* reader_release is a cleanup of pool */
};

static apr_status_t reader_release(void *data)
{
    aib_usage_reader_t *r = data;

    if (r->tok) {
        aib_json_tokener_give(r->tok, r->fed);
        r->tok = NULL;
    }
    if (r->root) {
        json_object_put(r->root);
        r->root = NULL;
    }
    return APR_SUCCESS;
}

static void reader_fail(aib_usage_reader_t *r)
{
    reader_release(r);
    r->state = READER_FAILED;
}

aib_usage_reader_t *aib_usage_reader_create(apr_pool_t *pool, aib_usage_kind_e kind,
                                            aib_usage_t *u, apr_size_t max_bytes)
{
    aib_usage_reader_t *r = apr_pcalloc(pool, sizeof(*r));

    r->pool = pool;
    r->u = u;
    r->kind = kind;
    r->max_bytes = max_bytes;
    if (kind != AIB_USAGE_CHAT && kind != AIB_USAGE_RESPONSES
        && kind != AIB_USAGE_MESSAGES) {
        r->state = READER_FAILED;
        return r;
    }
    r->tok = aib_json_tokener_take();
    if (!r->tok) {
        r->state = READER_FAILED;
        return r;
    }
    /* Strict: what may follow the object must not depend on where the
     * body was cut. json-c's default mode takes a comment after the value
     * for whitespace when it arrives in the same piece, while a later
     * piece is checked by all_ws(): {"usage":{..}}//x read whole gave
     * usage, cut after the '}' not. Upstream bodies are strict JSON. */
    json_tokener_set_flags(r->tok, JSON_TOKENER_STRICT);
    r->state = READER_PARSING;
    apr_pool_cleanup_register(pool, r, reader_release, apr_pool_cleanup_null);
    r->registered = 1;
    return r;
}

void aib_usage_reader_feed(aib_usage_reader_t *r, const char *data, apr_size_t len)
{
    if (!r || !len || (r->state != READER_PARSING && r->state != READER_COMPLETE))
        return;
    /* A NUL: not JSON, and json-c would take it for the end (see
     * aib_json_parse_object in request.c). */
    if (!data || len > r->max_bytes - r->fed || memchr(data, '\0', len)) {
        reader_fail(r);
        return;
    }
    r->fed += len;
    while (len) {
        int n = len > INT_MAX ? INT_MAX : (int)len;
        size_t used;
        json_object *obj;

        if (r->state == READER_COMPLETE) {
            if (!all_ws(data, len))
                reader_fail(r);
            return;
        }
        obj = json_tokener_parse_ex(r->tok, data, n);
        if (obj) {
            r->root = obj;
            r->state = READER_COMPLETE;
            used = json_tokener_get_parse_end(r->tok);
        }
        else if (json_tokener_get_error(r->tok) == json_tokener_continue) {
            used = (size_t)n;
        }
        else {
            reader_fail(r);
            return;
        }
        if (used > len) /* cannot happen; never loop on it */
            used = len;
        data += used;
        len -= used;
    }
}

void aib_usage_reader_finish(aib_usage_reader_t *r)
{
    if (!r || r->state == READER_FINISHED)
        return;
    if (r->state == READER_COMPLETE)
        read_blocking(r->u, r->pool, r->kind, r->root);
    reader_release(r);
    if (r->registered)
        apr_pool_cleanup_kill(r->pool, r, reader_release);
    r->state = READER_FINISHED;
}

/* ------------------------------------------------------------------ */
/* Streams                                                             */

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
static int chat_chunk_relevant(const char *s, apr_size_t len)
{
    apr_size_t i = 0;

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

static int event_is(const char *type, const char *name)
{
    return type && !strcmp(type, name);
}

/* For Responses and Messages: whether a named event may carry something. */
static int event_relevant(aib_usage_kind_e kind, const char *event)
{
    if (kind == AIB_USAGE_RESPONSES)
        return event_is(event, "response.completed")
               || event_is(event, "response.failed")
               || event_is(event, "response.incomplete")
               || event_is(event, "response.output_item.added");
    return event_is(event, "message_start") || event_is(event, "message_delta")
           || event_is(event, "content_block_start");
}

void aib_usage_from_event(aib_usage_t *u, apr_pool_t *pool, aib_usage_kind_e kind,
                          const char *event, const char *data, apr_size_t len)
{
    json_object *root, *t;
    const char *type;

    if (!u || !data || !len)
        return;
    if (kind == AIB_USAGE_CHAT) {
        if (!chat_chunk_relevant(data, len))
            return;
    }
    else if (kind == AIB_USAGE_RESPONSES || kind == AIB_USAGE_MESSAGES) {
        /* Without an event name, the data's "type" says (after parsing). */
        if (event && *event && !event_relevant(kind, event))
            return;
    }
    else {
        return;
    }
    root = aib_json_parse_object(data, len);
    if (!root)
        return;

    if (kind == AIB_USAGE_CHAT) {
        read_usage(u, kind, aib_json_member(root, "usage", json_type_object));
        add_chat_tools(u, pool, root, "delta");
        json_object_put(root);
        return;
    }

    type = event;
    if (!type || !*type) {
        t = aib_json_member(root, "type", json_type_string);
        type = t ? json_object_get_string(t) : NULL;
    }
    if (kind == AIB_USAGE_RESPONSES) {
        if (event_is(type, "response.completed") || event_is(type, "response.failed")
            || event_is(type, "response.incomplete")) {
            read_usage(u, kind, aib_json_member(aib_json_member(root, "response", json_type_object),
                                       "usage", json_type_object));
        }
        else if (event_is(type, "response.output_item.added")) {
            json_object *item = aib_json_member(root, "item", json_type_object);

            t = aib_json_member(item, "type", json_type_string);
            if (t && !strcmp(json_object_get_string(t), "function_call"))
                add_tool(u, pool, aib_json_member(item, "name", json_type_string));
        }
    }
    else {
        if (event_is(type, "message_start")) {
            read_usage(u, kind, aib_json_member(aib_json_member(root, "message", json_type_object),
                                       "usage", json_type_object));
        }
        else if (event_is(type, "message_delta")) {
            read_usage(u, kind, aib_json_member(root, "usage", json_type_object));
        }
        else if (event_is(type, "content_block_start")) {
            json_object *block = aib_json_member(root, "content_block", json_type_object);

            t = aib_json_member(block, "type", json_type_string);
            if (t && !strcmp(json_object_get_string(t), "tool_use"))
                add_tool(u, pool, aib_json_member(block, "name", json_type_string));
        }
    }
    json_object_put(root);
}

/* ------------------------------------------------------------------ */
/* Asking for usage, and taking back what that adds                   */

const char *aib_usage_inject(apr_pool_t *pool, const char *body, apr_size_t len,
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
        s = json_object_to_json_string_length(
            root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &slen);
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

int aib_usage_strip(const char *data, apr_size_t len, char *out, apr_size_t *out_len)
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
