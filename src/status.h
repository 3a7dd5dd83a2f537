/* What the status page, mod_status's server-status and the Prometheus
 * metrics show: rendered from the key slots and provider counters in
 * shared memory, so every child process gives the same numbers. Pure APR
 * and json-c; the httpd glue hands in the servers and the clock.
 *
 * Nothing here ever prints a key: keys are named by their position and
 * masked hint. Every string that reaches HTML is HTML-escaped, every label
 * value escaped as the exposition format wants. */
#ifndef AIB_STATUS_H
#define AIB_STATUS_H

#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>

#include "config.h"
#include "fleet.h"

/* One server (virtual host) and the providers to show for it. */
typedef struct {
    const char *name;                      /* "host:port": shown, and the metrics' server label */
    const apr_array_header_t *providers;   /* of aib_provider_t *, in display order */
} aib_status_server_t;

/* Key state shared by a fleet (AIBridgeSharedState). */
typedef struct {
    const char *cache;                     /* "provider:args" as configured */
    int64_t interval_ms;
    const aib_fleet_shared_t *shared;
} aib_status_fleet_t;

/* `servers` below is an array of aib_status_server_t; `fleet` is NULL
 * when no shared state is configured. */

/* The status page as JSON. */
const char *aib_status_json(apr_pool_t *p, const apr_array_header_t *servers,
                           const aib_status_fleet_t *fleet, int64_t now_ms);

/* The status page as a whole HTML document. With an `action` URL and a
 * `nonce`, each disabled or cooling key gets a form that POSTs there. */
const char *aib_status_html(apr_pool_t *p, const apr_array_header_t *servers,
                            const aib_status_fleet_t *fleet, int64_t now_ms,
                            const char *action, const char *nonce);

/* mod_status's section: one compact table (a list with `tables` 0). */
const char *aib_status_html_summary(apr_pool_t *p, const apr_array_header_t *servers,
                                    int64_t now_ms, int tables);

/* mod_status's ?auto form: "Name: value" lines. */
const char *aib_status_text_summary(apr_pool_t *p, const apr_array_header_t *servers,
                                    int64_t now_ms);

/* Prometheus text exposition format 0.0.4. A provider that appears twice
 * (the same object, or the same server and provider name) is reported once. */
const char *aib_status_metrics(apr_pool_t *p, const apr_array_header_t *servers,
                               const aib_status_fleet_t *fleet, int64_t now_ms);

/* The MCP tool calls the module ran (aibridge_tool_calls_total and their
 * time), to append to aib_status_metrics' text. */
const char *aib_status_tool_metrics(apr_pool_t *p, const aib_toolstore_t *tools);

/* The operator's actions. */
typedef enum {
    AIB_ACTION_ENABLE,     /* clears a disabled key's disabled deadline */
    AIB_ACTION_CLEAR       /* clears a key's cooldown */
} aib_action_e;

/* Applies `action` ("enable" or "clear") to key `key` (0-based index, in
 * decimal) of the provider named `provider` among `providers` (of
 * aib_provider_t *). Returns NULL, or what was wrong with the request. On
 * success *hint (may be NULL) gets the key's hint, for the log. */
const char *aib_status_apply(apr_pool_t *p, const apr_array_header_t *providers,
                             const char *action, const char *provider, const char *key,
                             const char **hint);

/* Whether `url` (an Origin or a Referer) is of the origin scheme://host:
 * scheme and host (host[:port], the Host header) compared case-insensitively,
 * an absent port taken as the scheme's default. "null" and anything
 * unparsable are another origin. */
int aib_status_same_origin(const char *url, const char *scheme, const char *host);

/* Nonces compared in constant time (for their length). */
int aib_status_nonce_equal(const char *expected, const char *given);

const char *aib_html_escape(apr_pool_t *p, const char *s);
/* A label value as the exposition format wants it: \\, \" and \n. */
const char *aib_metrics_label_escape(apr_pool_t *p, const char *s);

#endif
