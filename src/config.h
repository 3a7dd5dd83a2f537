/* Parsing and validating the AIBridge* directives' arguments. Pure APR:
 * the httpd glue calls these and prefixes errors with the directive. */
#ifndef AIB_CONFIG_H
#define AIB_CONFIG_H

#include <stdint.h>
#include <apr_pools.h>

#include "keypool.h"
#include "provider.h"
#include "stats.h"

typedef struct aib_provider {
    const char *name;
    const aib_provider_ops_t *ops;
    void *type_conf;               /* the type's own options (its ops' option hook), or NULL */
    const char *base_url;          /* without trailing slash */
    const char *pool_name;         /* NULL: no pool= */
    aib_keypool_t *pool;           /* resolved once the whole configuration is read */
    aib_provider_stats_t *stats;   /* in shared memory, once assigned */
    int byok;
    int64_t cooldown_ms;
    int64_t max_cooldown_ms;
    int64_t disable_for_ms;        /* 0: until re-enabled */
    int64_t connect_timeout_ms;
    int64_t timeout_ms;
    int64_t idle_timeout_ms;
    uint64_t failover[10];         /* bitmap of HTTP statuses 0..639 */
    const char *proxy;
    const char *ca_file;
    apr_array_header_t *mcp_names; /* mcp=: const char *, NULL: none */
    apr_array_header_t *mcp;       /* mcp= resolved: const aib_mcp_server_t * (mcp.h) */
} aib_provider_t;

/* Parses `AIBridgeProvider <name> <type> [<base-url>] [option=value ...]`.
 * Returns NULL and sets *out, or an error message. */
const char *aib_provider_parse(apr_pool_t *p, int argc, char *const argv[],
                               aib_provider_t **out);

int aib_provider_fails_over(const aib_provider_t *pv, int status);

/* Adds the keys of one source: a literal key, file:/path or env:VAR. */
const char *aib_keypool_add_source(aib_keypool_t *kp, apr_pool_t *p, const char *source);

/* Names are [a-z0-9]+(-[a-z0-9]+)* */
int aib_valid_name(const char *name);

/* Non-negative seconds ("30", "0.5") to milliseconds. */
const char *aib_parse_seconds(const char *value, int64_t *out_ms);

#endif
