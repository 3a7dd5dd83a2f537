/* mod_aibridge's handler: a request for the bridge is read, routed to its
 * provider and handed to the core (src/bridge.c, src/agent_loop.c), which
 * answers the client through the brigade sink below. */
#include <string.h>
#include <stdlib.h>

#include <http_core.h>
#include <http_protocol.h>
#include <http_request.h>
#include <apr_strings.h>

#include "headers.h"
#include "mcp.h"
#include "request.h"
#include "transport.h"
#include "util.h"

#include "mod_aibridge.h"

#define AIB_DEFAULT_MAX_BODY (32 * 1024 * 1024)
#define AIB_DEFAULT_TOOL_ITERATIONS 10

/* This child's upstream transport. */
static aib_transport_t *child_transport;
/* This child's MCP clients: aib_mcp_server_t * -> aib_mcp_client_t *. */
static apr_hash_t *mcp_clients;

/* One client per MCP server and child: it caches the session and tool list. */
static void create_mcp_clients(apr_pool_t *pchild, server_rec *s)
{
    mcp_clients = apr_hash_make(pchild);
    for (; s; s = s->next) {
        const aib_glue_server_conf_t *sc = aib_glue_server_conf(s);
        apr_hash_index_t *hi;
        for (hi = apr_hash_first(pchild, sc->own_mcp); hi; hi = apr_hash_next(hi)) {
            const aib_mcp_server_t *ms = apr_hash_this_val(hi);
            aib_mcp_client_t *client = aib_mcp_client_create(pchild, ms);
            const aib_mcp_server_t **key = apr_palloc(pchild, sizeof(*key));
            *key = ms;
            if (client)
                apr_hash_set(mcp_clients, key, sizeof(*key), client);
            else
                ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "AIBridgeMCPServer %s: cannot "
                             "create its client", ms->name);
        }
    }
}

apr_status_t aib_glue_handler_child_init(apr_pool_t *pchild, server_rec *s)
{
    apr_status_t rv = aib_curl_init(pchild);

    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "curl_global_init failed");
        return rv;
    }
    child_transport = aib_curl_transport_create(pchild);
    create_mcp_clients(pchild, s);
    return APR_SUCCESS;
}

/* ---- the client side: httpd brigades ---- */

typedef struct {
    request_rec *r;
    apr_bucket_brigade *bb;
    int started;
    apr_table_t *headers_before;      /* r->headers_out before the first start */
    const char *id;                   /* the interception's, for log lines */
} sink_ctx_t;

static void sink_start(void *ctx, int status, const apr_table_t *headers)
{
    sink_ctx_t *sk = ctx;
    request_rec *r = sk->r;
    const apr_array_header_t *arr = apr_table_elts(headers);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
    int i;

    /* Started again before any byte went out (a blocking answer that broke
     * before its body): the earlier start's headers go. */
    if (!sk->started)
        sk->headers_before = apr_table_copy(r->pool, r->headers_out);
    else
        r->headers_out = apr_table_copy(r->pool, sk->headers_before);
    sk->started = 1;
    r->status = status;
    /* httpd sends 500 for a status it has no reason phrase for (418, 529). */
    if (atoi(ap_get_status_line(status)) != status)
        r->status_line = ap_get_status_line_ex(r->pool, status);
    for (i = 0; i < arr->nelts; i++) {
        if (!strcasecmp(e[i].key, "Content-Type"))
            ap_set_content_type(r, apr_pstrdup(r->pool, e[i].val));
        else
            apr_table_add(r->headers_out, e[i].key, e[i].val);
    }
    if (aib_is_event_stream(headers)) {
        /* A stream must reach the client event by event. */
        apr_table_setn(r->subprocess_env, "no-gzip", "1");
        if (!apr_table_get(r->headers_out, "Cache-Control"))
            apr_table_setn(r->headers_out, "Cache-Control", "no-cache");
    }
}

static int sink_write(void *ctx, const char *data, apr_size_t len, int flush)
{
    sink_ctx_t *sk = ctx;
    conn_rec *c = sk->r->connection;
    apr_status_t rv;

    if (c->aborted)
        return 1;
    if (len)
        APR_BRIGADE_INSERT_TAIL(sk->bb, apr_bucket_transient_create(data, len, c->bucket_alloc));
    if (flush)
        APR_BRIGADE_INSERT_TAIL(sk->bb, apr_bucket_flush_create(c->bucket_alloc));
    rv = ap_pass_brigade(sk->r->output_filters, sk->bb);
    apr_brigade_cleanup(sk->bb);
    return rv != APR_SUCCESS || c->aborted;
}

static int sink_client_gone(void *ctx)
{
    sink_ctx_t *sk = ctx;
    conn_rec *c = sk->r->connection;
    apr_socket_t *sock;
    int eof = 0;

    if (c->aborted)
        return 1;
    /* An HTTP/2 stream has no socket of its own to look at. */
    if (c->master)
        return 0;
    sock = ap_get_conn_socket(c);
    if (sock && apr_socket_atreadeof(sock, &eof) == APR_SUCCESS && eof) {
        c->aborted = 1;
        return 1;
    }
    return 0;
}

static void sink_fail(void *ctx)
{
    sink_ctx_t *sk = ctx;
    conn_rec *c = sk->r->connection;

    /* As mod_proxy does for a backend that broke: the chunk filter then
     * omits the last chunk and the connection closes. */
    c->keepalive = AP_CONN_CLOSE;
    APR_BRIGADE_INSERT_TAIL(sk->bb, ap_bucket_error_create(HTTP_BAD_GATEWAY, NULL,
                                                           sk->r->pool, c->bucket_alloc));
    ap_pass_brigade(sk->r->output_filters, sk->bb);
    apr_brigade_cleanup(sk->bb);
}

static void sink_log(void *ctx, aib_log_level_e level, const char *message)
{
    sink_ctx_t *sk = ctx;
    int ap_level = level == AIB_LOG_ERROR ? APLOG_ERR
                   : level == AIB_LOG_WARNING ? APLOG_WARNING : APLOG_INFO;

    ap_log_rerror(APLOG_MARK, ap_level, 0, sk->r, "interception %s: %s", sk->id, message);
}

/* ---- the handler ---- */

/* Reads the request body whole, up to `limit` bytes. */
static int read_body(request_rec *r, apr_off_t limit, char **body, apr_size_t *len)
{
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    apr_off_t declared = 0;
    int seen_eos = 0;

    *body = NULL;
    *len = 0;
    if (cl && apr_strtoff(&declared, cl, NULL, 10) == APR_SUCCESS && declared > limit)
        return HTTP_REQUEST_ENTITY_TOO_LARGE;
    while (!seen_eos) {
        apr_bucket *e;
        apr_status_t rv = ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES,
                                         APR_BLOCK_READ, 64 * 1024);
        if (rv != APR_SUCCESS)
            return ap_map_http_request_error(rv, HTTP_BAD_REQUEST);
        for (e = APR_BRIGADE_FIRST(bb); e != APR_BRIGADE_SENTINEL(bb); e = APR_BUCKET_NEXT(e)) {
            const char *data;
            apr_size_t n;
            if (APR_BUCKET_IS_EOS(e)) {
                seen_eos = 1;
                break;
            }
            if (apr_bucket_read(e, &data, &n, APR_BLOCK_READ) != APR_SUCCESS)
                return HTTP_BAD_REQUEST;
            if ((apr_off_t)(*len + n) > limit)
                return HTTP_REQUEST_ENTITY_TOO_LARGE;
            if (!*body) {
                /* Sized once from Content-Length; chunked bodies grow. */
                *body = apr_palloc(r->pool, declared > 0 ? (apr_size_t)declared + 1 : 16384);
                declared = declared > 0 ? declared + 1 : 16384;
            }
            if ((apr_off_t)(*len + n) >= declared) {
                char *bigger;
                while ((apr_off_t)(*len + n) >= declared)
                    declared *= 2;
                bigger = apr_palloc(r->pool, (apr_size_t)declared);
                memcpy(bigger, *body, *len);
                *body = bigger;
            }
            memcpy(*body + *len, data, n);
            *len += n;
        }
        apr_brigade_cleanup(bb);
    }
    return OK;
}

/* A path that could reach something other than the route it names. */
static int unsafe_path(const char *path)
{
    const char *seg;

    if (ap_strcasestr(path, "%2e%2e") || ap_strcasestr(path, "%2f") || strchr(path, '\\'))
        return 1;
    for (seg = path; seg; seg = strchr(seg + 1, '/'))
        if (!strncmp(seg, "/..", 3) && (seg[3] == '/' || !seg[3]))
            return 1;
    return 0;
}

/* Length of the innermost <Location> path, as a prefix of r->uri. */
static size_t location_length(request_rec *r)
{
    const core_dir_config *core = ap_get_core_module_config(r->per_dir_config);
    size_t len;

    if (!core->d || core->d_is_fnmatch || core->r)
        return 0;
    len = strlen(core->d);
    while (len && core->d[len - 1] == '/')
        len--;
    return strncmp(r->uri, core->d, len) ? 0 : len;
}

/* The provider a request names: the segment after the <Location> path
 * (/ai/<provider>/v1/...), or the Location's own last segment when a nested
 * <Location /ai/<provider>> (for its own access rules) is the innermost one.
 * Sets *name to the segment tried and *path to the upstream path. */
static aib_provider_t *find_provider(request_rec *r, const aib_glue_server_conf_t *sc,
                                     const char **name, const char **path)
{
    size_t prefix = location_length(r);
    const char *rest = r->uri + prefix, *slash, *last;
    aib_provider_t *pv;

    while (*rest == '/')
        rest++;
    slash = strchr(rest, '/');
    *name = slash ? apr_pstrmemdup(r->pool, rest, (apr_size_t)(slash - rest)) : rest;
    *path = slash ? slash : "";
    pv = apr_hash_get(sc->providers, *name, APR_HASH_KEY_STRING);
    if (pv || !prefix)
        return pv;
    for (last = r->uri + prefix; last > r->uri && last[-1] != '/'; last--)
        ;
    pv = apr_hash_get(sc->providers, last, (apr_ssize_t)(r->uri + prefix - last));
    if (pv)
        *path = r->uri + prefix;
    return pv;
}

/* An id for the interception, in logs, variables and the usage record. */
static const char *interception_id(request_rec *r)
{
    const char *hex = aib_random_hex(r->pool, 8);

    if (!hex)
        return r->log_id ? r->log_id : "-";
    return hex;
}

/* The MCP servers whose tools this request is offered: AIBridgeInjectTools
 * where it is set, else the provider's mcp=. */
static apr_array_header_t *tool_sources(request_rec *r, const aib_glue_server_conf_t *sc,
                                        const aib_glue_dir_conf_t *dc, const aib_provider_t *pv)
{
    apr_array_header_t *sources = apr_array_make(r->pool, 2, sizeof(aib_agent_source_t));
    int i, n = dc->inject ? dc->inject->nelts : pv->mcp ? pv->mcp->nelts : 0;

    for (i = 0; i < n; i++) {
        const aib_mcp_server_t *ms = dc->inject
            ? apr_hash_get(sc->mcp, APR_ARRAY_IDX(dc->inject, i, const char *),
                           APR_HASH_KEY_STRING)
            : APR_ARRAY_IDX(pv->mcp, i, const aib_mcp_server_t *);
        aib_mcp_client_t *client = ms && mcp_clients ? apr_hash_get(mcp_clients, &ms,
                                                                    sizeof(ms)) : NULL;
        aib_agent_source_t *src;
        if (!client)
            continue;
        src = apr_array_push(sources);
        src->name = ms->name;
        src->client = client;
    }
    return sources;
}

/* The loop's MCP tool calls, into the counters the metrics show. */
static void count_tool_runs(const aib_agent_t *agent)
{
    int i;

    for (i = 0; agent->tool_runs && i < agent->tool_runs->nelts; i++) {
        const aib_tool_run_t *run = &APR_ARRAY_IDX(agent->tool_runs, i, aib_tool_run_t);
        aib_tool_stats_count(aib_glue_tool_stats, run->server, run->tool, (int)run->outcome,
                             run->duration_ms);
    }
}

/* Why a request is refused before anything goes upstream. */
typedef struct {
    aib_error_kind_e kind;
    const char *message;              /* to the client, in the provider's error shape */
    const char *allow;                /* a 405's Allow header, or NULL */
    const char *log;                  /* the error log's line (info), or NULL: none */
    int close;                        /* the body was not read whole: no keep-alive */
} refusal_t;

/* One request through the bridge: what the handler's steps share. */
typedef struct {
    request_rec *r;
    const aib_glue_server_conf_t *sc;
    const aib_glue_dir_conf_t *dc;
    aib_interception_t ic;
    aib_provider_t *provider;         /* the one the request names, NULL: none */
    apr_size_t body_len;
    refusal_t refusal;                /* when prepare() refused the request */
} exchange_t;

/* No provider to take the error shape from: OpenAI's is the common one. */
static const aib_provider_t unknown_provider = { .ops = &aib_provider_openai };

/* Says why the request is refused; what prepare() returns then. */
static int refuse(exchange_t *ex, aib_error_kind_e kind, const char *message, const char *log)
{
    ex->refusal.kind = kind;
    ex->refusal.message = message;
    ex->refusal.log = log;
    return 0;
}

/* Reads, routes and checks the request into ex->ic, ready to go upstream:
 * 1, or 0 with ex->refusal saying why not. */
static int prepare(exchange_t *ex)
{
    request_rec *r = ex->r;
    aib_interception_t *ic = &ex->ic;
    const char *name, *path, *message;
    aib_provider_t *pv;
    char *body = NULL;
    int status;

    /* /<prefix>/<provider>/<upstream path> */
    pv = find_provider(r, ex->sc, &name, &path);
    if (!pv) {
        ic->provider = &unknown_provider;
        return refuse(ex, AIB_ERROR_NOT_FOUND,
                      apr_psprintf(r->pool, "unknown provider '%s'", name),
                      apr_psprintf(r->pool, "unknown provider in %s", r->uri));
    }
    ex->provider = pv;
    ic->provider = pv;
    aib_stats_begin(pv->stats);
    if (unsafe_path(path))
        return refuse(ex, AIB_ERROR_INVALID_REQUEST, "invalid path",
                      apr_psprintf(r->pool, "refused path %s", r->uri));
    pv->ops->route(r->method, path, &ic->route);
    if (ic->route.kind == AIB_ROUTE_NONE) {
        message = apr_psprintf(r->pool, "route not supported: %s %s", r->method, path);
        return refuse(ex, AIB_ERROR_NOT_FOUND, message, message);
    }
    if (!ic->route.method_allowed) {
        message = apr_psprintf(r->pool, "method %s not allowed on %s", r->method, path);
        ex->refusal.allow = ic->route.allow;
        return refuse(ex, AIB_ERROR_METHOD, message, message);
    }

    status = read_body(r, ex->dc->max_body >= 0 ? ex->dc->max_body : AIB_DEFAULT_MAX_BODY,
                       &body, &ex->body_len);
    if (status != OK) {
        ex->refusal.close = 1;
        if (status == HTTP_REQUEST_ENTITY_TOO_LARGE)
            return refuse(ex, AIB_ERROR_TOO_LARGE, "request body is too large",
                          "request body too large");
        return refuse(ex, AIB_ERROR_INVALID_REQUEST, "cannot read the request body",
                      "cannot read request body");
    }
    if (ic->route.kind == AIB_ROUTE_BRIDGED) {
        const char *err = aib_inspect_request(r->pool, body, ex->body_len, &ic->stream,
                                              &ic->model);
        if (err)
            return refuse(ex, AIB_ERROR_INVALID_REQUEST, err,
                          apr_psprintf(r->pool, "bad request: %s", err));
    }
    ic->body = body;
    ic->body_len = ex->body_len;
    if (ic->stream)
        ic->body = aib_usage_request(r->pool, ic->route.format, body, ex->body_len,
                                     &ic->body_len, &ic->strip_usage);
    ic->headers = aib_upstream_request_headers(r->pool, r->headers_in);
    ic->url = apr_pstrcat(r->pool, pv->base_url, ap_escape_uri(r->pool, path),
                          r->args ? "?" : "", r->args ? r->args : "", NULL);
    if (pv->byok) {
        /* A request httpd authenticated brought its Authorization for httpd. */
        const apr_table_t *offered = r->headers_in;
        if (r->user && ap_auth_type(r)) {
            apr_table_t *copy = apr_table_copy(r->pool, r->headers_in);
            apr_table_unset(copy, "Authorization");
            offered = copy;
        }
        ic->client_key = pv->ops->client_key(offered);
    }
    if (!ic->transport)
        return refuse(ex, AIB_ERROR_UPSTREAM, "upstream transport unavailable", NULL);
    return 1;
}

/* The one way a request is refused: a line in the error log, the error to
 * the client in the provider's shape. */
static void reject(exchange_t *ex)
{
    const refusal_t *no = &ex->refusal;

    if (no->log)
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, ex->r, "%s", no->log);
    aib_bridge_reject(&ex->ic, no->kind, no->message, no->allow, 0);
    if (no->close)
        ex->r->connection->keepalive = AP_CONN_CLOSE;
}

/* Forwards the request: through the agentic loop when MCP tools are
 * offered here, else straight. */
static void forward(exchange_t *ex, aib_agent_t *agent)
{
    aib_interception_t *ic = &ex->ic;

    agent->sources = ic->route.kind == AIB_ROUTE_BRIDGED
        ? tool_sources(ex->r, ex->sc, ex->dc, ex->provider) : NULL;
    if (agent->sources && agent->sources->nelts) {
        agent->transport = child_transport;
        agent->max_iterations = ex->dc->max_tool_iterations ? ex->dc->max_tool_iterations
                                                            : AIB_DEFAULT_TOOL_ITERATIONS;
        aib_agent_run(ic, agent);
        count_tool_runs(agent);
    }
    else
        aib_bridge_run(ic);
}

int aib_glue_handler(request_rec *r)
{
    exchange_t ex;
    sink_ctx_t sk;
    aib_sink_t sink = { NULL, sink_start, sink_write, sink_client_gone, sink_fail, sink_log };
    aib_agent_t agent;
    apr_time_t start = apr_time_now();

    if (!r->handler || strcmp(r->handler, "aibridge"))
        return DECLINED;
    memset(&ex, 0, sizeof(ex));
    ex.r = r;
    ex.dc = ap_get_module_config(r->per_dir_config, &aibridge_module);
    ex.sc = aib_glue_server_conf(r->server);

    memset(&sk, 0, sizeof(sk));
    sk.r = r;
    sk.bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    sink.ctx = &sk;
    memset(&agent, 0, sizeof(agent));
    aib_interception_init(&ex.ic, r->pool);
    sk.id = interception_id(r);
    ex.ic.sink = &sink;
    ex.ic.transport = child_transport;
    ex.ic.now_ms = aib_now_ms;
    ex.ic.method = r->method;

    if (prepare(&ex))
        forward(&ex, &agent);
    else
        reject(&ex);

    if (ex.provider)
        aib_stats_end(ex.provider->stats, aib_stat_route(ex.ic.route.name),
                      ex.ic.client_key != NULL, ex.ic.outcome, apr_time_now() - start,
                      ex.ic.attempts);
    aib_glue_record(r, &ex.ic, &agent, sk.id, start, ex.body_len);
    if (!sk.started) {
        /* The client left before an answer could be given. */
        r->status = ex.ic.status ? ex.ic.status : HTTP_BAD_REQUEST;
        r->connection->aborted = 1;
        return DONE;
    }
    APR_BRIGADE_INSERT_TAIL(sk.bb, apr_bucket_eos_create(r->connection->bucket_alloc));
    ap_pass_brigade(r->output_filters, sk.bb);
    return OK;
}

/* A request for the bridge names no file: like mod_proxy, it skips the
 * walk that maps a URI onto the filesystem (a stat per path segment, an
 * .htaccess lookup per directory). <Location> sections still apply. */
int aib_glue_translate_name(request_rec *r)
{
    const core_dir_config *core = ap_get_core_module_config(r->per_dir_config);
    const char *handler, *err = NULL;

    if (!core->expr_handler)
        return DECLINED;
    handler = ap_expr_str_exec(r, core->expr_handler, &err);
    if (err || !handler || strcmp(handler, "aibridge"))
        return DECLINED;
    r->filename = apr_pstrcat(r->pool, "aibridge:", r->uri, NULL);
    return OK;
}

int aib_glue_map_to_storage(request_rec *r)
{
    return r->filename && !strncmp(r->filename, "aibridge:", 9) ? OK : DECLINED;
}
