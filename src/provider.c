#include <string.h>
#include <apr_strings.h>

#include "provider.h"

/* Every provider type: the one entry a new provider adds. */
static const aib_provider_ops_t *const providers[] = {
    &aib_provider_openai, &aib_provider_anthropic, &aib_provider_azure, &aib_provider_bedrock
};

#define PROVIDER_COUNT (sizeof(providers) / sizeof(providers[0]))

const char aib_option_unknown[] = "unknown option";

const aib_provider_ops_t *aib_provider_ops_find(const char *type)
{
    size_t i;

    for (i = 0; i < PROVIDER_COUNT; i++)
        if (!strcmp(providers[i]->type, type))
            return providers[i];
    return NULL;
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

    for (i = 0; i < PROVIDER_COUNT; i++) {
        const aib_reset_headers_t *mine = providers[i]->reset_headers;
        size_t j = 0;
        /* Providers of one shape share theirs (azure: OpenAI's): read once. */
        while (j < n && all[j] != mine)
            j++;
        if (mine && j == n)
            all[n++] = mine;
    }
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
