/* Token usage and tool calls from upstream responses (see usage.h).
 *
 * Design notes:
 * - Usage fields are assigned when present as integers in [0, INT64_MAX];
 *   anything else (null, strings, doubles, negative or out-of-range
 *   numbers) leaves the field as it was. `seen` is set once a usage member
 *   that is a JSON object was read. A later usage object overwrites the
 *   fields it carries (Anthropic message_delta's cumulative output_tokens).
 * - Which members hold the counts, which events carry them and where tool
 *   names are is the wire format's (format_*.c); this file reads through
 *   the description.
 * - Tool names are copied into the pool of u->tools, so they live as long
 *   as the usage record whichever pool a reader or event was given.
 * - The blocking reader parses incrementally (json_tokener_parse_ex), so
 *   it holds json-c objects, not a copy of the body. json-c allocates with
 *   malloc: finish() frees everything, and a pool cleanup does it if the
 *   pool goes first. */
#include <limits.h>
#include <string.h>

#include <json.h>
#include <apr_strings.h>

#include "format.h"
#include "json_helpers.h"
#include "usage.h"

/* JSON is parsed with aib_json_tokener_take's tokeners: AIB_JSON_MAX_DEPTH
 * (512) levels, as the request's. */

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

static int64_t *count_of(aib_usage_t *u, aib_count_e count)
{
    switch (count) {
    case AIB_COUNT_INPUT:       return &u->input;
    case AIB_COUNT_OUTPUT:      return &u->output;
    case AIB_COUNT_CACHE_READ:  return &u->cache_read;
    case AIB_COUNT_CACHE_WRITE: return &u->cache_write;
    case AIB_COUNT_REASONING:   return &u->reasoning;
    default:                    return NULL;    /* the total is derived */
    }
}

void aib_usage_read(aib_usage_t *u, const aib_format_t *format, json_object *usage)
{
    const aib_usage_field_t *field;

    if (!usage || !json_object_is_type(usage, json_type_object))
        return;
    u->seen = 1;
    for (field = format->usage_fields; field->member; field++) {
        int64_t *to = count_of(u, field->count);

        if (to)
            set_count(to, field->object ? aib_json_member(usage, field->object,
                                                          json_type_object) : usage,
                      field->member);
    }
}

void aib_usage_add_tool(aib_usage_t *u, apr_pool_t *pool, json_object *name)
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

void aib_usage_add_typed_tool(aib_usage_t *u, apr_pool_t *pool, json_object *item,
                              const char *type)
{
    if (aib_json_string_is(aib_json_member(item, "type", json_type_string), type))
        aib_usage_add_tool(u, pool, aib_json_member(item, "name", json_type_string));
}

void aib_usage_add_typed_tools(aib_usage_t *u, apr_pool_t *pool, json_object *array,
                               const char *type)
{
    size_t i, n = array ? json_object_array_length(array) : 0;

    for (i = 0; i < n; i++)
        aib_usage_add_typed_tool(u, pool, json_object_array_get_idx(array, i), type);
}

/* ------------------------------------------------------------------ */
/* Blocking responses                                                  */

static void read_blocking(aib_usage_t *u, apr_pool_t *pool, const aib_format_t *format,
                          json_object *root)
{
    aib_usage_read(u, format, aib_json_member(root, "usage", json_type_object));
    format->tools_from_body(u, pool, root);
}


typedef enum {
    READER_PARSING,     /* the tokener wants more */
    READER_COMPLETE,    /* root parsed; only whitespace may follow */
    READER_FAILED,      /* too large or not JSON: nothing to read */
    READER_FINISHED
} reader_state_e;

struct aib_usage_reader {
    apr_pool_t *pool;
    aib_usage_t *u;
    const aib_format_t *format;
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

aib_usage_reader_t *aib_usage_reader_create(apr_pool_t *pool, const aib_format_t *format,
                                            aib_usage_t *u, apr_size_t max_bytes)
{
    aib_usage_reader_t *r = apr_pcalloc(pool, sizeof(*r));

    r->pool = pool;
    r->u = u;
    r->format = format;
    r->max_bytes = max_bytes;
    if (!format) {
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
     * piece is checked by aib_json_only_space(): {"usage":{..}}//x read whole gave
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
     * aib_json_parse_object in json_helpers.c). */
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
            if (!aib_json_only_space(data, len))
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
        read_blocking(r->u, r->pool, r->format, r->root);
    reader_release(r);
    if (r->registered)
        apr_pool_cleanup_kill(r->pool, r, reader_release);
    r->state = READER_FINISHED;
}

/* ------------------------------------------------------------------ */
/* Streams                                                             */

void aib_usage_from_event(aib_usage_t *u, apr_pool_t *pool, const aib_format_t *format,
                          const char *event, const char *data, apr_size_t len)
{
    json_object *root;
    const char *type;

    if (!u || !format || !data || !len || !format->usage_event_wanted(event, data, len))
        return;
    root = aib_json_parse_object(data, len);
    if (!root)
        return;
    /* Without an event name, the data's "type" says. */
    type = event && *event ? event : aib_json_string(root, "type");
    format->usage_from_event(u, pool, type, root);
    json_object_put(root);
}

/* ------------------------------------------------------------------ */
/* Asking for usage in a stream                                        */

const char *aib_usage_request(apr_pool_t *pool, const aib_format_t *format, const char *body,
                              apr_size_t len, apr_size_t *out_len, int *injected)
{
    if (format && format->stream_usage_ask)
        return format->stream_usage_ask(pool, body, len, out_len, injected);
    *injected = 0;
    *out_len = len;
    return body;
}
