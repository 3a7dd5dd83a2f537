/* mod_aibridge: the httpd glue. Directives, hooks and the handler; every
 * decision is made by the APR-only core in src/. */
#include <string.h>
#include <stdlib.h>
#include <json.h>

#include <httpd.h>
#include <http_config.h>
#include <http_core.h>
#include <http_log.h>
#include <http_main.h>
#include <http_protocol.h>
#include <http_request.h>
#include <ap_mpm.h>
#include <apr_shm.h>
#include <apr_strings.h>

#include "bridge.h"
#include "config.h"
#include "headers.h"
#include "hint.h"
#include "keypool.h"
#include "transport.h"

/* Tool schemas nest deeply; json-c's default of 32 is far too shallow. */
#define AIB_JSON_MAX_DEPTH 512
#define AIB_DEFAULT_MAX_BODY (32 * 1024 * 1024)

module AP_MODULE_DECLARE_DATA aibridge_module;
APLOG_USE_MODULE(aibridge);

typedef struct {
    apr_hash_t *pools;                /* name -> aib_keypool_t *, inherited too */
    apr_hash_t *providers;            /* name -> aib_provider_t *, inherited too */
    apr_hash_t *own_pools;            /* defined in this server's scope */
    apr_array_header_t *own_providers;
} server_conf_t;

typedef struct {
    apr_off_t max_body;               /* -1: unset */
} dir_conf_t;

/* Survives graceful restarts in the parent: the key store and its segment. */
typedef struct {
    apr_shm_t *shm;
    aib_keystore_t store;
} retained_t;

static aib_transport_t *child_transport;

static void *create_server_conf(apr_pool_t *p, server_rec *s)
{
    server_conf_t *sc = apr_pcalloc(p, sizeof(*sc));

    (void)s;
    sc->own_pools = apr_hash_make(p);
    sc->pools = sc->own_pools;
    sc->providers = apr_hash_make(p);
    sc->own_providers = apr_array_make(p, 4, sizeof(aib_provider_t *));
    return sc;
}

static void *merge_server_conf(apr_pool_t *p, void *basev, void *addv)
{
    const server_conf_t *base = basev, *add = addv;
    server_conf_t *sc = apr_pcalloc(p, sizeof(*sc));

    sc->own_pools = add->own_pools;
    sc->own_providers = add->own_providers;
    sc->pools = apr_hash_overlay(p, add->own_pools, base->pools);
    sc->providers = apr_hash_overlay(p, add->providers, base->providers);
    return sc;
}

static void *create_dir_conf(apr_pool_t *p, char *dir)
{
    dir_conf_t *dc = apr_pcalloc(p, sizeof(*dc));

    (void)dir;
    dc->max_body = -1;
    return dc;
}

static void *merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    const dir_conf_t *base = basev, *add = addv;
    dir_conf_t *dc = apr_pcalloc(p, sizeof(*dc));

    dc->max_body = add->max_body >= 0 ? add->max_body : base->max_body;
    return dc;
}

static const char *directive_error(cmd_parms *cmd, const char *err)
{
    return err ? apr_pstrcat(cmd->pool, cmd->cmd->name, ": ", err, NULL) : NULL;
}

/* httpd hands a TAKE_ARGV directive at most this many arguments (MAX_ARGV
 * in server/config.c) and silently drops the rest. */
#define AIB_HTTPD_MAX_ARGV 64

/* Whether httpd dropped arguments of the directive: count them again. */
static int arguments_dropped(cmd_parms *cmd, int argc)
{
    const char *args;
    int n = 0;

    if (argc < AIB_HTTPD_MAX_ARGV || !cmd->directive || !cmd->directive->args)
        return 0;
    args = ap_resolve_env(cmd->temp_pool, cmd->directive->args);
    while (*args) {
        const char *w = ap_getword_conf(cmd->temp_pool, &args);
        if (!*w && !*args)
            break;
        n++;
    }
    return n > argc;
}

static const char *cmd_key_pool(cmd_parms *cmd, void *dconf, int argc, char *const argv[])
{
    server_conf_t *sc = ap_get_module_config(cmd->server->module_config, &aibridge_module);
    aib_keypool_t *kp;
    int i;

    (void)dconf;
    if (argc < 2)
        return directive_error(cmd, "takes a pool name and at least one key source");
    if (arguments_dropped(cmd, argc))
        return directive_error(cmd, apr_psprintf(cmd->pool, "more than %d arguments on one "
                                                 "line, httpd would drop the rest: spread the "
                                                 "keys over several AIBridgeKeyPool lines or use "
                                                 "file:", AIB_HTTPD_MAX_ARGV));
    /* Shown masked when long: a forgotten pool name makes the first key one. */
    if (!aib_valid_name(argv[0]))
        return directive_error(cmd, apr_psprintf(cmd->pool, "pool name '%s' must match "
                                                 "[a-z0-9]+(-[a-z0-9]+)*",
                                                 aib_arg_hint(cmd->pool, argv[0])));
    kp = apr_hash_get(sc->own_pools, argv[0], APR_HASH_KEY_STRING);
    if (!kp) {
        kp = aib_keypool_create(cmd->pool, argv[0]);
        apr_hash_set(sc->own_pools, kp->name, APR_HASH_KEY_STRING, kp);
    }
    for (i = 1; i < argc; i++) {
        const char *err = aib_keypool_add_source(kp, cmd->pool, argv[i]);
        if (err)
            return directive_error(cmd, apr_psprintf(cmd->pool, "pool '%s': %s", kp->name, err));
    }
    return NULL;
}

static const char *cmd_provider(cmd_parms *cmd, void *dconf, int argc, char *const argv[])
{
    server_conf_t *sc = ap_get_module_config(cmd->server->module_config, &aibridge_module);
    aib_provider_t *pv;
    const char *err = aib_provider_parse(cmd->pool, argc, argv, &pv);
    int i;

    (void)dconf;
    if (err)
        return directive_error(cmd, err);
    for (i = 0; i < sc->own_providers->nelts; i++)
        if (!strcmp(APR_ARRAY_IDX(sc->own_providers, i, aib_provider_t *)->name, pv->name))
            return directive_error(cmd, apr_psprintf(cmd->pool, "provider '%s' is defined "
                                                     "twice in this server", pv->name));
    APR_ARRAY_PUSH(sc->own_providers, aib_provider_t *) = pv;
    apr_hash_set(sc->providers, pv->name, APR_HASH_KEY_STRING, pv);
    return NULL;
}

static const char *cmd_max_body(cmd_parms *cmd, void *dconf, const char *value)
{
    dir_conf_t *dc = dconf;
    char *end;
    apr_int64_t n = apr_strtoi64(value, &end, 10);

    if (end == value || n < 0)
        return directive_error(cmd, apr_psprintf(cmd->pool, "'%s' is not a size", value));
    switch (*end) {
    case 'k': case 'K': n *= 1024; end++; break;
    case 'm': case 'M': n *= 1024 * 1024; end++; break;
    case 'g': case 'G': n *= 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (*end || n == 0)
        return directive_error(cmd, apr_psprintf(cmd->pool, "'%s' is not a size (bytes, "
                                                 "or with K, M or G)", value));
    dc->max_body = n;
    return NULL;
}

static const command_rec aibridge_cmds[] = {
    AP_INIT_TAKE_ARGV("AIBridgeKeyPool", cmd_key_pool, NULL, RSRC_CONF,
                      "AIBridgeKeyPool <pool> <key | file:/path | env:VAR> ..."),
    AP_INIT_TAKE_ARGV("AIBridgeProvider", cmd_provider, NULL, RSRC_CONF,
                      "AIBridgeProvider <name> <openai|anthropic> [<base-url>] [option=value ...]"),
    AP_INIT_TAKE1("AIBridgeMaxBodySize", cmd_max_body, NULL, RSRC_CONF | ACCESS_CONF,
                  "largest request body accepted (bytes, K, M or G); default 32M"),
    { NULL }
};

/* Checks that need the whole configuration: `httpd -t` runs these too. */
static int check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    (void)pconf; (void)plog; (void)ptemp;
    for (; s; s = s->next) {
        server_conf_t *sc = ap_get_module_config(s->module_config, &aibridge_module);
        int i;
        for (i = 0; i < sc->own_providers->nelts; i++) {
            aib_provider_t *pv = APR_ARRAY_IDX(sc->own_providers, i, aib_provider_t *);
            if (!pv->pool_name)
                continue;
            pv->pool = apr_hash_get(sc->pools, pv->pool_name, APR_HASH_KEY_STRING);
            if (!pv->pool) {
                ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, s,
                             "AIBridgeProvider %s: unknown pool '%s' (define it with "
                             "AIBridgeKeyPool)", pv->name, pv->pool_name);
                return !OK;
            }
        }
    }
    return OK;
}

static retained_t *get_retained(void)
{
    static const char *const key = "mod_aibridge_retained";
    retained_t *rd = ap_retained_data_get(key);

    if (!rd) {
        rd = ap_retained_data_create(key, sizeof(*rd));
        memset(rd, 0, sizeof(*rd));
    }
    return rd;
}

/* Creates or reuses the key store. It lives in the parent across graceful
 * restarts: kept keys keep their state and their slot, so marks that the
 * previous generation's children still write land on the right key. */
static int post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    retained_t *rd;
    apr_array_header_t *pools = apr_array_make(ptemp, 8, sizeof(aib_keypool_t *));
    uint32_t needed;
    server_rec *vs;

    (void)pconf; (void)plog;
    /* The first pass only checks the configuration. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG)
        return OK;
    for (vs = s; vs; vs = vs->next) {
        server_conf_t *sc = ap_get_module_config(vs->module_config, &aibridge_module);
        apr_hash_index_t *hi;
        for (hi = apr_hash_first(ptemp, sc->own_pools); hi; hi = apr_hash_next(hi))
            APR_ARRAY_PUSH(pools, aib_keypool_t *) = apr_hash_this_val(hi);
    }
    rd = get_retained();
    needed = aib_keystore_slots_needed(pools, ptemp);
    if (rd->shm && rd->store.capacity >= needed) {
        aib_keystore_assign(&rd->store, &rd->store, pools, ptemp);
    }
    else if (needed) {
        /* Headroom, so adding a few keys later needs no new segment. */
        uint32_t capacity = needed + needed / 2 + 16;
        apr_shm_t *shm, *old_shm = rd->shm;
        aib_keystore_t old_store = rd->store;
        apr_status_t rv = apr_shm_create(&shm, (apr_size_t)capacity * sizeof(aib_slot_t),
                                         NULL, ap_pglobal);
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s,
                         "cannot create shared memory for %u keys", capacity);
            return !OK;
        }
        rd->shm = shm;
        rd->store.slots = apr_shm_baseaddr_get(shm);
        rd->store.capacity = capacity;
        memset(rd->store.slots, 0, (apr_size_t)capacity * sizeof(aib_slot_t));
        /* Pools point at rd->store, which outlives this configuration. */
        aib_keystore_assign(&rd->store, old_shm ? &old_store : NULL, pools, ptemp);
        /* Children of the previous generation keep their own mapping. */
        if (old_shm)
            apr_shm_destroy(old_shm);
    }
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s,
                 "key store: %u keys in %u slots", needed, rd->store.capacity);
    return OK;
}

static void child_init(apr_pool_t *pchild, server_rec *s)
{
    if (aib_curl_init(pchild) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "curl_global_init failed");
        return;
    }
    child_transport = aib_curl_transport_create(pchild);
}

/* ---- the client side: httpd brigades ---- */

typedef struct {
    request_rec *r;
    apr_bucket_brigade *bb;
    int started;
} sink_ctx_t;

static void sink_start(void *ctx, int status, const apr_table_t *headers)
{
    sink_ctx_t *sk = ctx;
    request_rec *r = sk->r;
    const apr_array_header_t *arr = apr_table_elts(headers);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
    int i;

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
    if (r->content_type && !strncasecmp(r->content_type, "text/event-stream", 17)) {
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

    ap_log_rerror(APLOG_MARK, ap_level, 0, sk->r, "%s", message);
}

static int64_t now_ms(void)
{
    return apr_time_as_msec(apr_time_now());
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
    /* Terminated (there is always a spare byte): the JSON checks use string
     * functions past the parsed value. */
    if (*body)
        (*body)[*len] = '\0';
    return OK;
}

/* The client's JSON, as much as the bridge needs to know: an object whose
 * `stream` is absent or boolean. Returns an error message or NULL. */
static const char *inspect_json(request_rec *r, const char *body, apr_size_t len, int *stream)
{
    json_tokener *tok = json_tokener_new_ex(AIB_JSON_MAX_DEPTH);
    json_object *root, *field;
    enum json_tokener_error jerr;
    const char *err = NULL;

    *stream = 0;
    if (!tok)
        return "out of memory";
    root = json_tokener_parse_ex(tok, body ? body : "", (int)len);
    jerr = json_tokener_get_error(tok);
    if (!len)
        err = "request body is empty: a JSON object is required";
    else if (jerr == json_tokener_error_depth)
        err = apr_psprintf(r->pool, "request body nests deeper than %d levels",
                           AIB_JSON_MAX_DEPTH);
    else if (jerr == json_tokener_continue)
        err = "request body is not valid JSON: unexpected end of input";
    else if (jerr != json_tokener_success)
        err = apr_psprintf(r->pool, "request body is not valid JSON: %s",
                           json_tokener_error_desc(jerr));
    else if (strspn(body + json_tokener_get_parse_end(tok), " \t\r\n")
             != len - json_tokener_get_parse_end(tok))
        err = "request body is not valid JSON: data after the JSON value";
    else if (!json_object_is_type(root, json_type_object))
        err = "request body must be a JSON object";
    else if (json_object_object_get_ex(root, "stream", &field)) {
        if (!json_object_is_type(field, json_type_boolean))
            err = "'stream' must be a boolean";
        else
            *stream = json_object_get_boolean(field);
    }
    json_object_put(root);
    json_tokener_free(tok);
    return err;
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
static aib_provider_t *find_provider(request_rec *r, const server_conf_t *sc,
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

static int aibridge_handler(request_rec *r)
{
    const dir_conf_t *dc;
    const server_conf_t *sc;
    const char *name, *path;
    sink_ctx_t sk;
    aib_sink_t sink = { NULL, sink_start, sink_write, sink_client_gone, sink_fail, sink_log };
    aib_interception_t ic;
    aib_provider_t *pv;
    aib_provider_t fallback;
    char *body;
    apr_size_t body_len;
    int status;

    if (!r->handler || strcmp(r->handler, "aibridge"))
        return DECLINED;
    dc = ap_get_module_config(r->per_dir_config, &aibridge_module);
    sc = ap_get_module_config(r->server->module_config, &aibridge_module);

    memset(&sk, 0, sizeof(sk));
    sk.r = r;
    sk.bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    sink.ctx = &sk;
    memset(&ic, 0, sizeof(ic));
    ic.pool = r->pool;
    ic.sink = &sink;
    ic.transport = child_transport;
    ic.now_ms = now_ms;
    ic.method = r->method;

    /* /<prefix>/<provider>/<upstream path> */
    pv = find_provider(r, sc, &name, &path);
    if (!pv) {
        /* No provider to take the error shape from: OpenAI's is the common one. */
        memset(&fallback, 0, sizeof(fallback));
        fallback.ops = &aib_provider_openai;
        ic.provider = &fallback;
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "unknown provider in %s", r->uri);
        aib_bridge_reject(&ic, AIB_ERROR_NOT_FOUND,
                          apr_psprintf(r->pool, "unknown provider '%s'", name), NULL, 0);
        goto done;
    }
    ic.provider = pv;
    apr_table_setn(r->subprocess_env, "AIBRIDGE_PROVIDER", pv->name);
    if (unsafe_path(path)) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "refused path %s", r->uri);
        aib_bridge_reject(&ic, AIB_ERROR_INVALID_REQUEST, "invalid path", NULL, 0);
        goto done;
    }
    pv->ops->route(r->method, path, &ic.route);
    if (ic.route.kind == AIB_ROUTE_NONE) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "route not supported: %s %s",
                      r->method, path);
        aib_bridge_reject(&ic, AIB_ERROR_NOT_FOUND,
                          apr_psprintf(r->pool, "route not supported: %s %s", r->method, path),
                          NULL, 0);
        goto done;
    }
    if (!ic.route.method_allowed) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "method %s not allowed on %s",
                      r->method, path);
        aib_bridge_reject(&ic, AIB_ERROR_METHOD,
                          apr_psprintf(r->pool, "method %s not allowed on %s", r->method, path),
                          ic.route.allow, 0);
        goto done;
    }
    apr_table_setn(r->subprocess_env, "AIBRIDGE_ROUTE", ic.route.name);

    status = read_body(r, dc->max_body >= 0 ? dc->max_body : AIB_DEFAULT_MAX_BODY, &body, &body_len);
    if (status == HTTP_REQUEST_ENTITY_TOO_LARGE) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "request body too large");
        aib_bridge_reject(&ic, AIB_ERROR_TOO_LARGE, "request body is too large", NULL, 0);
        r->connection->keepalive = AP_CONN_CLOSE;
        goto done;
    }
    if (status != OK) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "cannot read request body");
        aib_bridge_reject(&ic, AIB_ERROR_INVALID_REQUEST, "cannot read the request body", NULL, 0);
        r->connection->keepalive = AP_CONN_CLOSE;
        goto done;
    }
    if (ic.route.kind == AIB_ROUTE_BRIDGED) {
        const char *err = inspect_json(r, body, body_len, &ic.stream);
        if (err) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "bad request: %s", err);
            aib_bridge_reject(&ic, AIB_ERROR_INVALID_REQUEST, err, NULL, 0);
            goto done;
        }
    }
    ic.body = body;
    ic.body_len = body_len;
    ic.headers = aib_upstream_request_headers(r->pool, r->headers_in);
    ic.url = apr_pstrcat(r->pool, pv->base_url, ap_escape_uri(r->pool, path),
                         r->args ? "?" : "", r->args ? r->args : "", NULL);
    if (pv->byok) {
        /* A request httpd authenticated brought its Authorization for httpd. */
        const apr_table_t *offered = r->headers_in;
        if (r->user && ap_auth_type(r)) {
            apr_table_t *copy = apr_table_copy(r->pool, r->headers_in);
            apr_table_unset(copy, "Authorization");
            offered = copy;
        }
        ic.client_key = pv->ops->client_key(offered);
    }
    if (!ic.transport) {
        aib_bridge_reject(&ic, AIB_ERROR_UPSTREAM, "upstream transport unavailable", NULL, 0);
        goto done;
    }
    aib_bridge_run(&ic);

done:
    apr_table_setn(r->subprocess_env, "AIBRIDGE_OUTCOME", aib_outcome_name(ic.outcome));
    if (!sk.started) {
        /* The client left before an answer could be given. */
        r->status = ic.status ? ic.status : HTTP_BAD_REQUEST;
        r->connection->aborted = 1;
        return DONE;
    }
    APR_BRIGADE_INSERT_TAIL(sk.bb, apr_bucket_eos_create(r->connection->bucket_alloc));
    ap_pass_brigade(r->output_filters, sk.bb);
    return OK;
}

static void register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_check_config(check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(aibridge_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

/* The one symbol the module exports; everything else is hidden. */
__attribute__((visibility("default")))
module AP_MODULE_DECLARE_DATA aibridge_module = {
    STANDARD20_MODULE_STUFF,
    create_dir_conf,
    merge_dir_conf,
    create_server_conf,
    merge_server_conf,
    aibridge_cmds,
    register_hooks,
#if defined(AP_MODULE_FLAG_ALWAYS_MERGE)
    AP_MODULE_FLAG_NONE
#endif
};
