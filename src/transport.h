/* One upstream HTTP exchange, streamed through callbacks.
 *
 * The bridge sees only this interface; production uses libcurl (with
 * connection reuse), unit tests a scripted fake. */
#ifndef AIB_TRANSPORT_H
#define AIB_TRANSPORT_H

#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>

typedef enum {
    AIB_XFER_OK = 0,
    AIB_XFER_CONNECT,    /* refused, unreachable, name not resolved */
    AIB_XFER_TIMEOUT,    /* whole-call timeout or idle silence */
    AIB_XFER_BROKEN,     /* reset, truncated or unparseable response */
    AIB_XFER_STOPPED     /* a callback asked to stop (client gone) */
} aib_xfer_result_e;

typedef struct {
    const char *method;
    const char *url;
    const apr_table_t *headers;
    const char *body;
    apr_size_t body_len;
    int64_t connect_timeout_ms;
    int64_t timeout_ms;          /* whole exchange; 0: none */
    int64_t idle_timeout_ms;     /* no byte for this long fails; 0: none */
    const char *proxy;           /* NULL: direct */
    const char *ca_file;         /* NULL: system CAs */
} aib_upstream_request_t;

/* Each callback returns 0 to go on, non-zero to stop the exchange. */
typedef struct {
    void *ctx;
    /* The final (non-1xx) status and headers, before any body byte. */
    int (*on_response)(void *ctx, int status, apr_table_t *headers);
    /* Body bytes as they arrive; valid only during the call. */
    int (*on_data)(void *ctx, const char *data, apr_size_t len);
    /* Called several times a second while waiting. */
    int (*on_tick)(void *ctx);
} aib_upstream_handler_t;

typedef struct aib_transport aib_transport_t;
struct aib_transport {
    aib_xfer_result_e (*perform)(aib_transport_t *self, apr_pool_t *pool,
                                 const aib_upstream_request_t *req,
                                 const aib_upstream_handler_t *handler,
                                 const char **error);
};

/* Once per process, before threads start. */
apr_status_t aib_curl_init(apr_pool_t *process_pool);

/* A libcurl transport that keeps idle handles, and with them their
 * connections, for reuse by later requests of any thread. */
aib_transport_t *aib_curl_transport_create(apr_pool_t *pool);

#endif
