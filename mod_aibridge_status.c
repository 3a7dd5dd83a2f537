/* mod_aibridge's pages: the status page and its actions, the Prometheus
 * metrics, and a section in mod_status's server-status. What they show is
 * made by src/status.c; this file picks the servers and handles HTTP. */
#include <string.h>
#include <stdlib.h>

#include <http_main.h>
#include <http_protocol.h>
#include <http_request.h>
#include <mod_status.h>
#include <apr_strings.h>

#include "status.h"
#include "util.h"

#include "mod_aibridge.h"

/* The providers that serve requests of `s`: its own, then those it
 * inherits from the main server, in configured order. */
static apr_array_header_t *serving_providers(apr_pool_t *p, server_rec *s)
{
    const aib_glue_server_conf_t *sc = aib_glue_server_conf(s);
    const aib_glue_server_conf_t *main_sc = aib_glue_server_conf(ap_server_conf);
    apr_array_header_t *pvs = apr_array_copy(p, sc->own_providers);
    int i;

    if (sc != main_sc)
        for (i = 0; i < main_sc->own_providers->nelts; i++) {
            aib_provider_t *pv = APR_ARRAY_IDX(main_sc->own_providers, i, aib_provider_t *);
            if (apr_hash_get(sc->providers, pv->name, APR_HASH_KEY_STRING) == pv)
                APR_ARRAY_PUSH(pvs, aib_provider_t *) = pv;
        }
    return pvs;
}

/* The status page shows the server the request came to. */
static apr_array_header_t *page_servers(request_rec *r)
{
    apr_array_header_t *servers = apr_array_make(r->pool, 1, sizeof(aib_status_server_t));
    aib_status_server_t *srv = apr_array_push(servers);

    srv->name = aib_glue_server_label(r->pool, r->server);
    srv->providers = serving_providers(r->pool, r->server);
    return servers;
}

/* The metrics and server-status show every server, each provider once:
 * under the server that defines it. */
static apr_array_header_t *all_servers(apr_pool_t *p)
{
    apr_array_header_t *servers = apr_array_make(p, 4, sizeof(aib_status_server_t));
    server_rec *s;

    for (s = ap_server_conf; s; s = s->next) {
        const aib_glue_server_conf_t *sc = aib_glue_server_conf(s);
        aib_status_server_t *srv = apr_array_push(servers);
        srv->name = aib_glue_server_label(p, s);
        srv->providers = sc->own_providers;
    }
    return servers;
}

/* The fleet's sync state, or NULL without AIBridgeSharedState. */
static const aib_status_fleet_t *status_fleet(apr_pool_t *p)
{
    const aib_glue_server_conf_t *sc = aib_glue_server_conf(ap_server_conf);
    aib_status_fleet_t *fleet;

    if (!aib_glue_fleet_shared)
        return NULL;
    fleet = apr_pcalloc(p, sizeof(*fleet));
    fleet->cache = sc->shared_state;
    fleet->interval_ms = sc->sync_interval_ms;
    fleet->shared = aib_glue_fleet_shared;
    return fleet;
}

/* A fresh nonce per server and configuration: the status page's forms carry
 * it, and an action without it is refused. */
int aib_glue_status_nonces(apr_pool_t *pconf, server_rec *s)
{
    for (; s; s = s->next) {
        aib_glue_server_conf_t *sc = aib_glue_server_conf(s);

        sc->status_nonce = aib_random_hex(pconf, 16);
        if (!sc->status_nonce) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, 0, s,
                         "cannot make the status page's nonce");
            return !OK;
        }
    }
    return OK;
}

static void private_page_headers(request_rec *r)
{
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    apr_table_setn(r->headers_out, "X-Content-Type-Options", "nosniff");
    apr_table_setn(r->headers_out, "X-Frame-Options", "DENY");
    apr_table_setn(r->headers_out, "Content-Security-Policy",
                   "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                   "frame-ancestors 'none'; base-uri 'none'");
    apr_table_setn(r->headers_out, "Referrer-Policy", "same-origin");
}

/* Whether the query string holds format=json. */
static int wants_json(const request_rec *r)
{
    const char *q = r->args;

    while (q && *q) {
        size_t len = strcspn(q, "&;");
        if (len == 11 && !strncmp(q, "format=json", 11))
            return 1;
        q += len;
        if (*q)
            q++;
    }
    return 0;
}

/* Why a POST is not from the status page's own origin, or NULL. The nonce
 * stops a forged form; these stop a browser from being used across sites. */
static const char *cross_site(request_rec *r)
{
    const char *scheme = ap_http_scheme(r);
    const char *host = apr_table_get(r->headers_in, "Host");
    const char *site = apr_table_get(r->headers_in, "Sec-Fetch-Site");
    const char *origin = apr_table_get(r->headers_in, "Origin");
    const char *referer = apr_table_get(r->headers_in, "Referer");

    if (site && strcasecmp(site, "same-origin") && strcasecmp(site, "none"))
        return apr_psprintf(r->pool, "Sec-Fetch-Site: %s", site);
    if (origin && !aib_status_same_origin(origin, scheme, host))
        return "Origin of another site";
    if (referer && !aib_status_same_origin(referer, scheme, host))
        return "Referer of another site";
    return NULL;
}

/* The value of form field `name` (the first one), or NULL. */
static const char *form_field(request_rec *r, apr_array_header_t *pairs, const char *name)
{
    int i;

    for (i = 0; pairs && i < pairs->nelts; i++) {
        ap_form_pair_t *pair = &APR_ARRAY_IDX(pairs, i, ap_form_pair_t);
        apr_off_t len;
        apr_size_t size;
        char *value;

        if (strcmp(pair->name, name))
            continue;
        if (apr_brigade_length(pair->value, 1, &len) != APR_SUCCESS || len > 1024)
            return NULL;
        size = (apr_size_t)len;
        value = apr_palloc(r->pool, size + 1);
        if (apr_brigade_flatten(pair->value, value, &size) != APR_SUCCESS)
            return NULL;
        value[size] = '\0';
        return value;
    }
    return NULL;
}

/* POST: enable a disabled key or clear a cooldown, then back to the page. */
static int status_action(request_rec *r)
{
    const aib_glue_server_conf_t *sc = aib_glue_server_conf(r->server);
    apr_array_header_t *pairs = NULL;
    const char *why = cross_site(r), *nonce, *action, *provider, *key, *hint, *err;
    int rc;

    if (why) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, "status page: action refused, "
                      "cross-site request (%s)", why);
        return HTTP_FORBIDDEN;
    }
    rc = ap_parse_form_data(r, NULL, &pairs, 16, 8192);
    if (rc != OK)
        return rc;
    nonce = form_field(r, pairs, "nonce");
    if (!nonce || !aib_status_nonce_equal(sc->status_nonce, nonce)) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, "status page: action refused, %s nonce "
                      "(reload the page after a restart)", nonce ? "wrong" : "no");
        return HTTP_FORBIDDEN;
    }
    action = form_field(r, pairs, "action");
    provider = form_field(r, pairs, "provider");
    key = form_field(r, pairs, "key");
    err = aib_status_apply(r->pool, serving_providers(r->pool, r->server), action, provider,
                           key, &hint);
    if (err) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "status page: bad action: %s", err);
        return HTTP_BAD_REQUEST;
    }
    ap_log_rerror(APLOG_MARK, APLOG_NOTICE, 0, r, "status page: %s key #%d (%s) of provider "
                  "'%s' by %s%s%s", !strcmp(action, "enable") ? "re-enabled" : "cleared the "
                  "cooldown of", atoi(key) + 1, hint, provider, r->useragent_ip,
                  r->user ? " user " : "", r->user ? r->user : "");
    apr_table_setn(r->headers_out, "Location", ap_escape_uri(r->pool, r->uri));
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    return HTTP_SEE_OTHER;
}

int aib_glue_status_handler(request_rec *r)
{
    const aib_glue_server_conf_t *sc;
    const char *body;
    int rc;

    if (!r->handler || strcmp(r->handler, "aibridge-status"))
        return DECLINED;
    r->allowed |= (AP_METHOD_BIT << M_GET) | (AP_METHOD_BIT << M_POST);
    ap_allow_methods(r, MERGE_ALLOW, "GET", "POST", NULL);   /* the 405's Allow */
    if (r->method_number == M_POST)
        return status_action(r);
    if (r->method_number != M_GET)
        return HTTP_METHOD_NOT_ALLOWED;
    if ((rc = ap_discard_request_body(r)) != OK)
        return rc;
    sc = aib_glue_server_conf(r->server);
    private_page_headers(r);
    if (wants_json(r)) {
        ap_set_content_type(r, "application/json");
        body = apr_pstrcat(r->pool, aib_status_json(r->pool, page_servers(r), status_fleet(r->pool),
                                           aib_now_ms()), "\n",
                           NULL);
    }
    else {
        ap_set_content_type(r, "text/html; charset=utf-8");
        body = aib_status_html(r->pool, page_servers(r), status_fleet(r->pool), aib_now_ms(),
                               ap_escape_uri(r->pool, r->uri), sc->status_nonce);
    }
    if (!r->header_only)
        ap_rputs(body, r);
    return OK;
}

int aib_glue_metrics_handler(request_rec *r)
{
    const char *body;
    int rc;

    if (!r->handler || strcmp(r->handler, "aibridge-metrics"))
        return DECLINED;
    r->allowed |= AP_METHOD_BIT << M_GET;
    ap_allow_methods(r, MERGE_ALLOW, "GET", NULL);
    if (r->method_number != M_GET)
        return HTTP_METHOD_NOT_ALLOWED;
    if ((rc = ap_discard_request_body(r)) != OK)
        return rc;
    ap_set_content_type(r, "text/plain; version=0.0.4; charset=utf-8");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    body = apr_pstrcat(r->pool, aib_status_metrics(r->pool, all_servers(r->pool),
                                                   status_fleet(r->pool), aib_now_ms()),
                       aib_status_tool_metrics(r->pool, aib_glue_tool_stats), NULL);
    if (!r->header_only)
        ap_rputs(body, r);
    return OK;
}

/* mod_status's server-status: a section of our own, when it is loaded. */
int aib_glue_status_hook(request_rec *r, int flags)
{
    apr_array_header_t *servers = all_servers(r->pool);

    if (flags & AP_STATUS_SHORT)
        ap_rputs(aib_status_text_summary(r->pool, servers, aib_now_ms()), r);
    else
        ap_rputs(aib_status_html_summary(r->pool, servers, aib_now_ms(),
                                         !(flags & AP_STATUS_NOTABLE)), r);
    return OK;
}
