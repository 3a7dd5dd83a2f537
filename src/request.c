/* The client's request body (see request.h).
 *
 * json-c's tokener is iterative, so the depth limit also bounds the work
 * and memory of a hostile body: 100,000 '[' are refused at level 513, no
 * recursion involved. Nothing here reads past body + len.
 *
 * json-c takes a NUL byte for the end of its input (see json_helpers.c),
 * so it only sees the bytes before the first one; a NUL and what follows
 * it are then data after the value, or the value is unfinished. */
#include <limits.h>
#include <string.h>

#include <apr_strings.h>

#include "request.h"

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
    else if (!aib_json_only_space(body + json_tokener_get_parse_end(tok),
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
