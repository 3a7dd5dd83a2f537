#include <string.h>
#include <apr_strings.h>

#include "provider.h"

const aib_provider_ops_t *aib_provider_ops_find(const char *type)
{
    static const aib_provider_ops_t *const all[] = {
        &aib_provider_openai, &aib_provider_anthropic
    };
    size_t i;

    for (i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (!strcmp(all[i]->type, type))
            return all[i];
    return NULL;
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
