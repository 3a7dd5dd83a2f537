/* The client's request body (see request.h).
 *
 * json-c's tokener is iterative, so the depth limit also bounds the work
 * and memory of a hostile body: 100,000 '[' are refused at level 513, no
 * recursion involved. Nothing here reads past body + len.
 *
 * json-c takes a NUL byte for the end of its input, wherever it is: inside
 * a comment it even returns the innermost open value as a success
 * ({"":{}//<NUL> gives {}). No JSON text holds a raw NUL, so json-c only
 * sees the bytes before the first one; a NUL and what follows it are then
 * data after the value, or the value is unfinished. */
#include <limits.h>
#include <string.h>

#include <json.h>
#include <apr_strings.h>

#include "request.h"

static int all_ws(const char *s, apr_size_t n)
{
    apr_size_t i;

    for (i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return 0;
    return 1;
}

/* Bodies up to this size leave a tokener small enough to keep. */
#define AIB_TOKENER_KEEP_MAX (64 * 1024)

static __thread json_tokener *idle_tokener;

json_tokener *aib_json_tokener_take(void)
{
    json_tokener *tok = idle_tokener;

    if (!tok)
        return json_tokener_new_ex(AIB_REQUEST_MAX_DEPTH);
    idle_tokener = NULL;
    json_tokener_set_flags(tok, 0);
    return tok;
}

void aib_json_tokener_give(json_tokener *tok, apr_size_t fed)
{
    if (!tok)
        return;
    /* Only a tokener that finished its value is as good as new after a
     * reset: one cut short may hold half an escape sequence. */
    if (idle_tokener || fed > AIB_TOKENER_KEEP_MAX
        || json_tokener_get_error(tok) != json_tokener_success) {
        json_tokener_free(tok);
        return;
    }
    json_tokener_reset(tok);   /* ready for a new value */
    idle_tokener = tok;
}

json_object *aib_json_parse_object(const char *data, apr_size_t len)
{
    json_tokener *tok;
    json_object *root;

    if (!data || !len || len > INT_MAX)
        return NULL;
    /* json-c takes a NUL for the end of its input, and inside a comment
     * returns the innermost open value as a success: no JSON holds one. */
    if (memchr(data, '\0', len))
        return NULL;
    tok = aib_json_tokener_take();
    if (!tok)
        return NULL;
    root = json_tokener_parse_ex(tok, data, (int)len);
    if (root && (!json_object_is_type(root, json_type_object)
                 || !all_ws(data + json_tokener_get_parse_end(tok),
                            len - json_tokener_get_parse_end(tok)))) {
        json_object_put(root);
        root = NULL;
    }
    aib_json_tokener_give(tok, len);
    return root;
}

json_object *aib_json_member(json_object *obj, const char *key, json_type type)
{
    json_object *v;

    if (!obj || !json_object_is_type(obj, json_type_object)
        || !json_object_object_get_ex(obj, key, &v)
        || !json_object_is_type(v, type))
        return NULL;
    return v;
}

const char *aib_inspect_request(apr_pool_t *p, const char *body, apr_size_t len,
                                int *stream, const char **model)
{
    json_tokener *tok;
    json_object *root = NULL, *field = NULL;
    enum json_tokener_error jerr;
    const char *err = NULL, *nul;

    *stream = 0;
    if (!len)
        return "request body is empty: a JSON object is required";
    if (len > INT_MAX) /* json-c takes an int length */
        return apr_psprintf(p, "request body is not valid JSON: %s",
                            json_tokener_error_desc(json_tokener_error_size));
    tok = aib_json_tokener_take();
    if (!tok)
        return "out of memory";
    nul = memchr(body, '\0', len);
    root = json_tokener_parse_ex(tok, body, nul ? (int)(nul - body) : (int)len);
    jerr = json_tokener_get_error(tok);
    if (jerr == json_tokener_error_depth)
        err = apr_psprintf(p, "request body nests deeper than %d levels",
                           AIB_REQUEST_MAX_DEPTH);
    else if (jerr == json_tokener_continue)
        err = "request body is not valid JSON: unexpected end of input";
    else if (jerr != json_tokener_success)
        err = apr_psprintf(p, "request body is not valid JSON: %s",
                           json_tokener_error_desc(jerr));
    else if (!all_ws(body + json_tokener_get_parse_end(tok),
                     len - json_tokener_get_parse_end(tok)))
        err = "request body is not valid JSON: data after the JSON value";
    else if (!json_object_is_type(root, json_type_object))
        err = "request body must be a JSON object";
    else if (json_object_object_get_ex(root, "stream", &field)
             && !json_object_is_type(field, json_type_boolean))
        err = "'stream' must be a boolean";
    else {
        *stream = field && json_object_get_boolean(field);
        if (json_object_object_get_ex(root, "model", &field)
            && json_object_is_type(field, json_type_string))
            *model = apr_pstrdup(p, json_object_get_string(field));
    }
    json_object_put(root);
    aib_json_tokener_give(tok, len);
    return err;
}
