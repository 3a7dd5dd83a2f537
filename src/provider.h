/* What differs between providers: routes, how a key is sent, error shapes,
 * which failures are a key's fault, rate-limit headers, the wire formats
 * it speaks, and the hooks of a provider that needs more (a request
 * rewrite, a signature, a stream framing of its own). How streams end and
 * carry errors is the wire format's (format.h). The bridge knows providers
 * only through this table, so a new provider is one new file. */
#ifndef AIB_PROVIDER_H
#define AIB_PROVIDER_H

#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>

#include "json_helpers.h"
#include "keypool.h"
#include "ratelimit.h"
#include "sse.h"
#include "usage.h"

/* A wire format (format.h). */
typedef struct aib_format aib_format_t;

typedef enum {
    AIB_ROUTE_NONE = 0,      /* not served: 404 */
    AIB_ROUTE_BRIDGED,       /* JSON body inspected, may stream */
    AIB_ROUTE_PASSTHROUGH    /* forwarded as it is */
} aib_route_kind_e;

typedef struct {
    aib_route_kind_e kind;
    const char *name;        /* the format's name, or "passthrough" */
    const aib_format_t *format;  /* the wire format of a bridged route; NULL: passthrough */
    const char *allow;       /* methods served on this path, for 405 */
    int method_allowed;
} aib_route_t;

/* Errors the module itself produces, mapped to each provider's own types. */
typedef enum {
    AIB_ERROR_INVALID_REQUEST,   /* 400 */
    AIB_ERROR_AUTHENTICATION,    /* 401 */
    AIB_ERROR_NOT_FOUND,         /* 404 */
    AIB_ERROR_METHOD,            /* 405 */
    AIB_ERROR_TOO_LARGE,         /* 413 */
    AIB_ERROR_RATE_LIMIT,        /* 429, pool exhausted */
    AIB_ERROR_UPSTREAM,          /* 502, transport or auth exhaustion */
    AIB_ERROR_TIMEOUT            /* 504 */
} aib_error_kind_e;

/* How a failover status is to be taken, decided from the response body. */
typedef enum {
    AIB_FAULT_NONE = 0,          /* not the key's fault: relay, mark nothing */
    AIB_FAULT_RATE_LIMITED,
    AIB_FAULT_QUOTA,
    AIB_FAULT_UNAUTHORIZED,
    AIB_FAULT_FORBIDDEN
} aib_fault_e;

struct aib_interception;   /* bridge.h */
struct aib_provider;       /* config.h */

/* What a provider's option hook returns for a key that is not its own. */
extern const char aib_option_unknown[];

/* The request as it goes upstream, which a provider's hooks may change. */
typedef struct {
    const char *method;
    const char *url;
    apr_table_t *headers;
    const char *body;
    apr_size_t body_len;
    /* Set by prepare when the answer comes from another API than the one
     * the client called: its blocking answer goes through rewrite_answer. */
    int rewrite_answer;
} aib_outgoing_t;

typedef struct aib_provider_ops {
    const char *type;
    const char *default_base_url;   /* NULL: AIBridgeProvider must name one */
    /* Route for a path below the provider (query excluded). */
    void (*route)(const char *method, const char *path, aib_route_t *out);
    /* Sets the upstream credential header(s) for `key`. */
    void (*set_key)(apr_pool_t *p, apr_table_t *upstream_headers, const char *key);
    /* Adds headers the provider requires when the client sent none; NULL:
     * it requires none. */
    void (*defaults)(apr_table_t *upstream_headers);
    /* The client's own key from its headers, or NULL. */
    const char *(*client_key)(const apr_table_t *client_headers);
    /* JSON error body in the provider's shape. */
    const char *(*error_body)(apr_pool_t *p, aib_error_kind_e kind, const char *message);
    /* The provider's code (or type) name of an error kind, for formats
     * whose stream errors carry it outside an error body. */
    const char *(*error_code)(aib_error_kind_e kind);
    /* Whether a failover status (429/401/403...) with this body is the
     * key's fault, and how. */
    aib_fault_e (*classify)(int status, const char *body, apr_size_t len);
    /* The rate-limit reset headers the provider sends, NULL: none of its own. */
    const aib_reset_headers_t *reset_headers;
    /* Whether the first event of a 2xx stream is really a key's failure
     * (an error event saying rate limit, bad key...): AIB_FAULT_NONE if not. */
    aib_fault_e (*stream_fault)(const char *event, const char *data, apr_size_t len);
    /* The wire formats its routes speak, NULL-terminated; the first is how
     * a passthrough stream reports an error, and a passthrough stream ends
     * where any of them would. */
    const aib_format_t *const *formats;

    /* Hooks, NULL when the provider needs none. */
    /* An option of its own on AIBridgeProvider (key=value, e.g. region=),
     * kept in pv->type_conf: NULL when taken, aib_option_unknown when it is
     * not the type's option, else what is wrong with it. */
    const char *(*option)(apr_pool_t *p, struct aib_provider *pv, const char *key,
                          const char *value);
    /* Once every option is read: NULL, or what is missing or inconsistent. */
    const char *(*options_done)(apr_pool_t *p, struct aib_provider *pv);
    /* Rewrites the request for the upstream (URL path and query, headers,
     * body) from what the interception knows (route, model, stream), once
     * before its first attempt, in the interception's pool. Returns NULL,
     * or why the request cannot go: the client gets a 400 with it. */
    const char *(*prepare)(const struct aib_interception *ic, aib_outgoing_t *req);
    /* Each attempt, once `key` and the defaults are set: adds headers
     * computed over the final method, URL, headers and body (a signature),
     * allocated from `p`, and may move the URL to the key's own host.
     * Returns NULL, or why `key` cannot be used: it is then disabled. */
    const char *(*sign)(const struct aib_interception *ic, apr_pool_t *p, const char *key,
                        aib_outgoing_t *req);
    /* Replaces classify for a provider that names its faults in a header,
     * never by status alone: every 4xx/5xx answer to a pool key is held
     * back and classified here, and *relay set to the body the client gets
     * when it is no key's fault. */
    aib_fault_e (*classify_answer)(apr_pool_t *p, int status, const apr_table_t *headers,
                                   const char *body, apr_size_t len, const char **relay);
    /* Answers a request without going upstream (a list the module knows):
     * the status, with *body (JSON), or 0 to go upstream. */
    int (*answer)(const struct aib_interception *ic, const char **body);
    /* The blocking answer to a request prepare() flagged (rewrite_answer),
     * held whole (up to 64 KiB) until it is to reach the client: a 2xx, or
     * an error that is no key's fault (after classify_answer's relay).
     * Returns the status the client gets, *body and *len set to its body. */
    int (*rewrite_answer)(const struct aib_interception *ic, apr_pool_t *p, int status,
                          const apr_table_t *headers, const char **body, apr_size_t *len);
    /* Usage the upstream reports outside the format's members, read after
     * them: from a blocking 2xx answer's headers, and from each stream
     * event. Each fills only the counts the format left at 0, so nothing
     * is counted twice. */
    void (*usage_from_headers)(aib_usage_t *u, const apr_table_t *headers);
    void (*usage_from_event)(aib_usage_t *u, const char *event, const char *data,
                             apr_size_t len);
    /* The provider says nothing of when a rate limit ends: a key limited
     * again soon after its cooldown cools down twice as long, up to
     * max-cooldown=. */
    int cooldown_grows;
    /* How the upstream frames its streams, when not as SSE (NULL). */
    const aib_stream_framing_t *stream_framing;
} aib_provider_ops_t;

extern const aib_provider_ops_t aib_provider_openai;
extern const aib_provider_ops_t aib_provider_anthropic;
extern const aib_provider_ops_t aib_provider_azure;
extern const aib_provider_ops_t aib_provider_bedrock;

/* The ops for a type name ("openai", "anthropic", "azure", "bedrock"), or NULL. */
const aib_provider_ops_t *aib_provider_ops_find(const char *type);

/* The known type names, "openai, anthropic, azure, bedrock", for messages. */
const char *aib_provider_types(apr_pool_t *p);

/* Every provider's reset headers, NULL-terminated, in the order of the
 * providers' table. All are read whatever the provider type, as before the
 * headers moved into the provider files: an upstream of one type may be a
 * gateway in front of another provider, and send that provider's. */
const aib_reset_headers_t *const *aib_provider_reset_headers(apr_pool_t *p);

/* HTTP status of an error kind. */
int aib_error_status(aib_error_kind_e kind);

/* The key from "Authorization: Bearer <key>", or NULL. */
const char *aib_bearer_key(const apr_table_t *headers);

/* The HTTP status a key fault stands for (429, 401, 403), so that an error
 * event in a stream fails over only where that status would. */
int aib_fault_status(aib_fault_e fault);


#endif
