#include <string.h>
#include <json.h>
#include <apr_strings.h>

#include "provider.h"

/* Every provider type: the one entry a new provider adds. */
static const aib_provider_ops_t *const providers[] = {
    &aib_provider_openai, &aib_provider_anthropic
};

#define PROVIDER_COUNT (sizeof(providers) / sizeof(providers[0]))

const aib_provider_ops_t *aib_provider_ops_find(const char *type)
{
    size_t i;

    for (i = 0; i < PROVIDER_COUNT; i++)
        if (!strcmp(providers[i]->type, type))
            return providers[i];
    return NULL;
}

int aib_provider_bridges(const aib_provider_ops_t *ops, const char *route_name)
{
    const char *const *name;

    for (name = ops->bridged_routes; *name; name++)
        if (!strcmp(*name, route_name))
            return 1;
    return 0;
}

const char *aib_provider_types(apr_pool_t *p)
{
    const char *types = providers[0]->type;
    size_t i;

    for (i = 1; i < PROVIDER_COUNT; i++)
        types = apr_pstrcat(p, types, ", ", providers[i]->type, NULL);
    return types;
}

const aib_reset_headers_t *const *aib_provider_reset_headers(apr_pool_t *p)
{
    const aib_reset_headers_t **all = apr_pcalloc(p, (PROVIDER_COUNT + 1) * sizeof(*all));
    size_t i, n = 0;

    for (i = 0; i < PROVIDER_COUNT; i++)
        if (providers[i]->reset_headers)
            all[n++] = providers[i]->reset_headers;
    return all;
}

int aib_error_status(aib_error_kind_e kind)
{
    switch (kind) {
    case AIB_ERROR_INVALID_REQUEST: return 400;
    case AIB_ERROR_AUTHENTICATION:  return 401;
    case AIB_ERROR_NOT_FOUND:       return 404;
    case AIB_ERROR_METHOD:          return 405;
    case AIB_ERROR_TOO_LARGE:       return 413;
    case AIB_ERROR_RATE_LIMIT:      return 429;
    case AIB_ERROR_TIMEOUT:         return 504;
    default:                        return 502;
    }
}

const char *aib_bearer_key(const apr_table_t *headers)
{
    const char *v = apr_table_get(headers, "Authorization");

    if (!v || strncasecmp(v, "Bearer ", 7))
        return NULL;
    v += 7;
    while (*v == ' ')
        v++;
    return *v ? v : NULL;
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

int aib_fault_status(aib_fault_e fault)
{
    switch (fault) {
    case AIB_FAULT_RATE_LIMITED:
    case AIB_FAULT_QUOTA:        return 429;
    case AIB_FAULT_UNAUTHORIZED: return 401;
    case AIB_FAULT_FORBIDDEN:    return 403;
    default:                     return 0;
    }
}

const char *aib_json_quote(apr_pool_t *p, const char *text)
{
    json_object *s = json_object_new_string(text);
    const char *quoted = apr_pstrdup(p, json_object_to_json_string_ext(
                                            s, JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(s);
    return quoted;
}
