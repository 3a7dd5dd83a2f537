/* The shared JSON helpers (see json_helpers.h).
 *
 * json-c takes a NUL byte for the end of its input, wherever it is: inside
 * a comment it even returns the innermost open value as a success
 * ({"":{}//<NUL> gives {}). No JSON text holds a raw NUL, so a text with
 * one is refused before json-c sees it. */
#include <limits.h>
#include <string.h>

#include <apr_strings.h>

#include "json_helpers.h"

int aib_json_only_space(const char *s, apr_size_t n)
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
        return json_tokener_new_ex(AIB_JSON_MAX_DEPTH);
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
    if (memchr(data, '\0', len))
        return NULL;
    tok = aib_json_tokener_take();
    if (!tok)
        return NULL;
    root = json_tokener_parse_ex(tok, data, (int)len);
    if (root && (!json_object_is_type(root, json_type_object)
                 || !aib_json_only_space(data + json_tokener_get_parse_end(tok),
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

const char *aib_json_string(json_object *obj, const char *key)
{
    json_object *v = aib_json_member(obj, key, json_type_string);

    return v ? json_object_get_string(v) : NULL;
}

const char *aib_json_strdup(apr_pool_t *p, json_object *obj, const char *key)
{
    const char *v = aib_json_string(obj, key);

    return v ? apr_pstrdup(p, v) : NULL;
}

void aib_json_set_string(json_object *obj, const char *key, const char *value)
{
    json_object_object_add(obj, key, json_object_new_string(value ? value : ""));
}

int aib_json_string_is(json_object *s, const char *value)
{
    return s && json_object_is_type(s, json_type_string)
           && !strcmp(json_object_get_string(s), value);
}

int aib_str_is(const char *a, const char *b)
{
    return a && !strcmp(a, b);
}

int aib_json_member_is(const char *body, apr_size_t len, const char *object,
                       const char *member, const char *value)
{
    json_tokener *tok;
    json_object *root, *parent, *field;
    int match = 0;

    if (!body || !len)
        return 0;
    tok = json_tokener_new();
    if (!tok)
        return 0;
    root = json_tokener_parse_ex(tok, body, (int)len);
    parent = root;
    if (root && (!object || json_object_object_get_ex(root, object, &parent))
        && json_object_object_get_ex(parent, member, &field)
        && json_object_is_type(field, json_type_string))
        match = !strcmp(json_object_get_string(field), value);
    json_object_put(root);
    json_tokener_free(tok);
    return match;
}

int aib_json_set_int(json_object *obj, const char *key, int64_t n, int add)
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

const char *aib_json_text(apr_pool_t *p, json_object *obj)
{
    size_t n;
    const char *s = json_object_to_json_string_length(obj, AIB_JSON_FLAGS, &n);

    return s ? apr_pstrmemdup(p, s, n) : NULL;
}

const char *aib_json_quote(apr_pool_t *p, const char *text)
{
    json_object *s = json_object_new_string(text);
    const char *quoted = apr_pstrdup(p, json_object_to_json_string_ext(
                                            s, JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(s);
    return quoted;
}
