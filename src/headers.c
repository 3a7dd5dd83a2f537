#include <string.h>
#include <apr_strings.h>

#include "headers.h"

static const char *const hop_by_hop[] = {
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
    "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade", NULL
};

static const char *const request_drop[] = {
    "Host", "Content-Length", "Accept-Encoding", "Cookie", "Authorization",
    "X-Api-Key", "Forwarded", "Expect", NULL
};

static const char *const response_drop[] = {
    "Content-Length", "Set-Cookie", "Set-Cookie2", NULL
};

static int in_list(const char *name, const char *const *list)
{
    for (; *list; list++)
        if (!strcasecmp(name, *list))
            return 1;
    return 0;
}

/* Whether a Connection header of `in` lists `name` (RFC 9110 7.6.1). Several
 * Connection lines (the transport adds each line it reads) are one list. */
static int named_by_connection(apr_pool_t *p, const apr_table_t *in, const char *name)
{
    const apr_array_header_t *arr = apr_table_elts(in);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
    char *copy, *state, *token;
    int i;

    for (i = 0; i < arr->nelts; i++) {
        if (!e[i].key || !e[i].val || strcasecmp(e[i].key, "Connection"))
            continue;
        copy = apr_pstrdup(p, e[i].val);
        for (token = apr_strtok(copy, ", \t", &state); token;
             token = apr_strtok(NULL, ", \t", &state))
            if (!strcasecmp(token, name))
                return 1;
    }
    return 0;
}

static apr_table_t *filtered(apr_pool_t *p, const apr_table_t *in,
                             const char *const *drop, int drop_forwarded)
{
    const apr_array_header_t *arr = apr_table_elts(in);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
    apr_table_t *out = apr_table_make(p, arr->nelts + 2);
    int i;

    for (i = 0; i < arr->nelts; i++) {
        const char *name = e[i].key;
        if (!name || in_list(name, hop_by_hop) || in_list(name, drop)
            || (drop_forwarded && !strncasecmp(name, "X-Forwarded-", 12))
            || named_by_connection(p, in, name))
            continue;
        apr_table_addn(out, name, e[i].val);
    }
    return out;
}

apr_table_t *aib_upstream_request_headers(apr_pool_t *p, const apr_table_t *client)
{
    return filtered(p, client, request_drop, 1);
}

apr_table_t *aib_client_response_headers(apr_pool_t *p, const apr_table_t *upstream)
{
    return filtered(p, upstream, response_drop, 0);
}

int aib_is_event_stream(const apr_table_t *headers)
{
    const char *type = apr_table_get(headers, "Content-Type");

    return type && !strncasecmp(type, "text/event-stream", 17);
}
