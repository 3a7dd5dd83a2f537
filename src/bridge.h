/* One interception: a client call forwarded upstream with key failover.
 *
 * The bridge decides (which key, when to fail over, what the client is
 * told); it knows neither httpd nor libcurl. It talks to a transport (the
 * upstream), a sink (the client) and the key pool. */
#ifndef AIB_BRIDGE_H
#define AIB_BRIDGE_H

#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>

#include "config.h"
#include "provider.h"
#include "transport.h"
#include "usage.h"

typedef enum {
    AIB_LOG_ERROR,
    AIB_LOG_WARNING,
    AIB_LOG_INFO
} aib_log_level_e;

/* The client side of an interception. */
typedef struct {
    void *ctx;
    /* Commits status and headers (Content-Type among them). */
    void (*start)(void *ctx, int status, const apr_table_t *headers);
    /* Body bytes; `flush` sends them on at once. Non-zero: client gone. */
    int (*write)(void *ctx, const char *data, apr_size_t len, int flush);
    /* Non-zero once the client has gone away. */
    int (*client_gone)(void *ctx);
    /* The committed response cannot be completed: the client must see it
     * broken, never as a complete answer. */
    void (*fail)(void *ctx);
    void (*log)(void *ctx, aib_log_level_e level, const char *message);
} aib_sink_t;

typedef enum {
    AIB_OUTCOME_OK,
    AIB_OUTCOME_UPSTREAM_ERROR,
    AIB_OUTCOME_EXHAUSTED,
    AIB_OUTCOME_TRANSPORT_ERROR,
    AIB_OUTCOME_CLIENT_ABORT,
    AIB_OUTCOME_REJECTED
} aib_outcome_e;

typedef struct aib_interception {
    /* What to do. */
    apr_pool_t *pool;
    const aib_provider_t *provider;
    aib_route_t route;
    const char *method;
    const char *url;
    const apr_table_t *headers;    /* for upstream, credentials removed */
    const char *body;
    apr_size_t body_len;
    int stream;                    /* the client asked for a stream */
    const char *model;             /* the client asked for, NULL: none (passthrough) */
    const char *client_key;        /* BYOK: exactly one attempt; NULL: the pool */
    int strip_usage;               /* the module asked a chat stream for usage: hide it */
    aib_transport_t *transport;
    const aib_sink_t *sink;
    int64_t (*now_ms)(void);
    /* What happened. */
    int status;                    /* given to the client */
    int upstream_status;           /* of the last upstream answer, 0: none */
    int attempts;
    int key_index;                 /* pool key that answered last, -1: none or BYOK */
    const char *key_hint;          /* the key that answered last */
    apr_array_header_t *tried;     /* const char *: hints of the keys tried, in order */
    int64_t first_byte_ms;         /* when the response was committed, 0: never */
    aib_usage_t usage;
    aib_outcome_e outcome;
} aib_interception_t;

/* Makes a zeroed interception ready (the outcome fields). */
void aib_interception_init(aib_interception_t *ic, apr_pool_t *pool);

/* Runs the interception to its end; everything reaches the client through
 * the sink. */
void aib_bridge_run(aib_interception_t *ic);

/* Answers with an error of the module's own, in the provider's shape.
 * `allow` (405) and `retry_after_s` (429, when > 0) add their headers. */
void aib_bridge_reject(aib_interception_t *ic, aib_error_kind_e kind,
                       const char *message, const char *allow, int64_t retry_after_s);

const char *aib_outcome_name(aib_outcome_e outcome);

#endif
