/* Which headers cross the bridge, in each direction. */
#ifndef AIB_HEADERS_H
#define AIB_HEADERS_H

#include <apr_pools.h>
#include <apr_tables.h>

/* The client's request headers fit to forward: without hop-by-hop headers
 * (and those the Connection header names), Host, Content-Length,
 * Accept-Encoding, Cookie, credentials (Authorization, X-Api-Key) and the
 * client's forwarding claims (Forwarded, X-Forwarded-*). */
apr_table_t *aib_upstream_request_headers(apr_pool_t *p, const apr_table_t *client);

/* The upstream's response headers fit to relay: without hop-by-hop
 * headers, Content-Length (httpd frames the body itself) and Set-Cookie. */
apr_table_t *aib_client_response_headers(apr_pool_t *p, const apr_table_t *upstream);

/* Whether `headers` say the body is an SSE stream (Content-Type). */
int aib_is_event_stream(const apr_table_t *headers);

#endif
