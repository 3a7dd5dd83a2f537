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
#include <apr_global_mutex.h>
#include <apr_shm.h>
#include <util_mutex.h>
#include <apr_optional_hooks.h>
#include <mod_status.h>
#include <apr_strings.h>
#include <apr_atomic.h>
#include <apr_thread_proc.h>
#include <ap_provider.h>
#include <ap_socache.h>
#include <unistd.h>

#include "agent_loop.h"
#include "bridge.h"
#include "config.h"
#include "fleet.h"
#include "headers.h"
#include "hint.h"
#include "keypool.h"
#include "mcp.h"
#include "request.h"
#include "status.h"
#include "transport.h"

#define AIB_DEFAULT_MAX_BODY (32 * 1024 * 1024)

module AP_MODULE_DECLARE_DATA aibridge_module;
APLOG_USE_MODULE(aibridge);

typedef struct {
    apr_hash_t *pools;                /* name -> aib_keypool_t *, inherited too */
    apr_hash_t *providers;            /* name -> aib_provider_t *, inherited too */
    apr_hash_t *own_pools;            /* defined in this server's scope */
    apr_array_header_t *own_providers;
    apr_hash_t *mcp;                  /* name -> aib_mcp_server_t *, inherited too */
    apr_hash_t *own_mcp;
    const char *usage_log;            /* AIBridgeUsageLog: path or "|command" */
    apr_file_t *usage_file;           /* opened by the parent in open_logs */
    const char *status_nonce;         /* the status page's actions carry it */
    /* AIBridgeSharedState, main server only. */
    const char *shared_state;         /* "provider[:args]", NULL: none */
    int64_t sync_interval_ms;
    const ap_socache_provider_t *socache;
    ap_socache_instance_t *socache_instance;
} server_conf_t;

typedef struct {
    apr_off_t max_body;               /* -1: unset */
    /* AIBridgeInjectTools: MCP server names (none: an empty array); NULL:
     * unset, the provider's mcp= applies. */
    apr_array_header_t *inject;
    int max_tool_iterations;          /* 0: unset */
} dir_conf_t;

/* A shared-memory segment of fixed-size records. */
typedef struct {
    apr_shm_t *shm;
    void *base;
    uint32_t capacity;
} segment_t;

/* Survives graceful restarts in the parent: the key store, the provider
 * counters, and their segments. */
typedef struct {
    segment_t keys;
    aib_keystore_t store;
    segment_t stats;
    aib_statstore_t statstore;
    segment_t fleet;                  /* one aib_fleet_shared_t */
    segment_t tools;                  /* aib_tool_stats_t */
    aib_toolstore_t toolstore;
} retained_t;

static aib_transport_t *child_transport;

/* This generation's fleet sync state (shared memory), NULL without
 * AIBridgeSharedState. */
static aib_fleet_shared_t *fleet_shared;
/* This generation's MCP tool-call counters (shared memory). */
static aib_toolstore_t *tool_stats;
#define AIB_TOOL_STATS_RECORDS 256
/* This child's MCP clients: aib_mcp_server_t * -> aib_mcp_client_t *. */
static apr_hash_t *mcp_clients;
#define AIB_DEFAULT_SYNC_INTERVAL_MS 250

/* Serialises usage-log lines too long for one atomic pipe write. */
#define AIB_USAGE_MUTEX "aibridge-usage"
static apr_global_mutex_t *usage_log_mutex;

static void *create_server_conf(apr_pool_t *p, server_rec *s)
{
    server_conf_t *sc = apr_pcalloc(p, sizeof(*sc));

    (void)s;
    sc->own_pools = apr_hash_make(p);
    sc->pools = sc->own_pools;
    sc->providers = apr_hash_make(p);
    sc->own_providers = apr_array_make(p, 4, sizeof(aib_provider_t *));
    sc->own_mcp = apr_hash_make(p);
    sc->mcp = sc->own_mcp;
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
    sc->own_mcp = add->own_mcp;
    sc->mcp = apr_hash_overlay(p, add->own_mcp, base->mcp);
    sc->usage_log = add->usage_log ? add->usage_log : base->usage_log;
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
    dc->inject = add->inject ? add->inject : base->inject;
    dc->max_tool_iterations = add->max_tool_iterations ? add->max_tool_iterations
                                                       : base->max_tool_iterations;
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
    apr_int64_t n = apr_strtoi64(value, &end, 10), unit = 1;

    if (end == value || n < 0)
        return directive_error(cmd, apr_psprintf(cmd->pool, "'%s' is not a size", value));
    switch (*end) {
    case 'k': case 'K': unit = 1024; end++; break;
    case 'm': case 'M': unit = 1024 * 1024; end++; break;
    case 'g': case 'G': unit = 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (*end || n == 0 || n > APR_INT64_MAX / unit)
        return directive_error(cmd, apr_psprintf(cmd->pool, "'%s' is not a size (bytes, "
                                                 "or with K, M or G)", value));
    dc->max_body = n * unit;
    return NULL;
}

static const char *cmd_usage_log(cmd_parms *cmd, void *dconf, const char *value)
{
    server_conf_t *sc = ap_get_module_config(cmd->server->module_config, &aibridge_module);

    (void)dconf;
    if (!*value || !strcmp(value, "|"))
        return directive_error(cmd, "takes a file or a \"|piped command\"");
    sc->usage_log = value;
    return NULL;
}

static const char *cmd_shared_state(cmd_parms *cmd, void *dconf, int argc,
                                    char *const argv[])
{
    server_conf_t *sc = ap_get_module_config(cmd->server->module_config, &aibridge_module);
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    int i;

    (void)dconf;
    if (err)
        return err;
    if (argc < 1 || !*argv[0] || *argv[0] == ':')
        return directive_error(cmd, "takes a socache provider, e.g. redis:host:port");
    sc->shared_state = argv[0];
    sc->sync_interval_ms = AIB_DEFAULT_SYNC_INTERVAL_MS;
    for (i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "interval=", 9)) {
            err = aib_parse_seconds(argv[i] + 9, &sc->sync_interval_ms);
            if (!err && (sc->sync_interval_ms < 50 || sc->sync_interval_ms > 60000))
                err = "interval= must be between 0.05 and 60 seconds";
            if (err)
                return directive_error(cmd, err);
        }
        else
            return directive_error(cmd, apr_psprintf(cmd->pool, "unknown option '%s'",
                                                     argv[i]));
    }
    return NULL;
}

static const char *cmd_mcp_server(cmd_parms *cmd, void *dconf, int argc, char *const argv[])
{
    server_conf_t *sc = ap_get_module_config(cmd->server->module_config, &aibridge_module);
    aib_mcp_server_t *ms;
    const char *err = aib_mcp_server_parse(cmd->pool, argc, argv, &ms);

    (void)dconf;
    if (err)
        return directive_error(cmd, err);
    if (apr_hash_get(sc->own_mcp, ms->name, APR_HASH_KEY_STRING))
        return directive_error(cmd, apr_psprintf(cmd->pool, "MCP server '%s' is defined twice "
                                                 "in this server", ms->name));
    apr_hash_set(sc->own_mcp, ms->name, APR_HASH_KEY_STRING, ms);
    return NULL;
}

static const char *cmd_inject_tools(cmd_parms *cmd, void *dconf, int argc, char *const argv[])
{
    dir_conf_t *dc = dconf;
    int i;

    if (argc < 1)
        return directive_error(cmd, "takes MCP server names, or none");
    dc->inject = apr_array_make(cmd->pool, argc, sizeof(const char *));
    if (argc == 1 && !strcasecmp(argv[0], "none"))
        return NULL;
    for (i = 0; i < argc; i++) {
        if (!aib_valid_name(argv[i]))
            return directive_error(cmd, apr_psprintf(cmd->pool, "'%s' is no MCP server name "
                                                     "(nor none)", argv[i]));
        APR_ARRAY_PUSH(dc->inject, const char *) = argv[i];
    }
    return NULL;
}

static const char *cmd_max_tool_iterations(cmd_parms *cmd, void *dconf, const char *value)
{
    dir_conf_t *dc = dconf;
    char *end;
    apr_int64_t n = apr_strtoi64(value, &end, 10);

    if (end == value || *end || n < 1 || n > 100)
        return directive_error(cmd, apr_psprintf(cmd->pool, "'%s' is not a number from 1 to "
                                                 "100", value));
    dc->max_tool_iterations = (int)n;
    return NULL;
}

static const command_rec aibridge_cmds[] = {
    AP_INIT_TAKE1("AIBridgeUsageLog", cmd_usage_log, NULL, RSRC_CONF,
                  "AIBridgeUsageLog <file | \"|piped command\">: one JSON line per interception"),
    AP_INIT_TAKE_ARGV("AIBridgeKeyPool", cmd_key_pool, NULL, RSRC_CONF,
                      "AIBridgeKeyPool <pool> <key | file:/path | env:VAR> ..."),
    AP_INIT_TAKE_ARGV("AIBridgeProvider", cmd_provider, NULL, RSRC_CONF,
                      "AIBridgeProvider <name> <openai|anthropic> [<base-url>] [option=value ...]"),
    AP_INIT_TAKE1("AIBridgeMaxBodySize", cmd_max_body, NULL, RSRC_CONF | ACCESS_CONF,
                  "largest request body accepted (bytes, K, M or G); default 32M"),
    AP_INIT_TAKE_ARGV("AIBridgeMCPServer", cmd_mcp_server, NULL, RSRC_CONF,
                      "AIBridgeMCPServer <name> <url> [header=<Name>:<value> ...] "
                      "[allow=<regex>] [deny=<regex>] [tools-ttl=<s>]"),
    AP_INIT_TAKE_ARGV("AIBridgeInjectTools", cmd_inject_tools, NULL, RSRC_CONF | ACCESS_CONF,
                      "AIBridgeInjectTools <mcp-server> ... | none: the MCP servers whose tools "
                      "are offered here, instead of the provider's mcp="),
    AP_INIT_TAKE1("AIBridgeMaxToolIterations", cmd_max_tool_iterations, NULL,
                  RSRC_CONF | ACCESS_CONF, "upstream calls one request may make while the "
                  "model calls MCP tools; default 10"),
    AP_INIT_TAKE_ARGV("AIBridgeSharedState", cmd_shared_state, NULL, RSRC_CONF,
                      "AIBridgeSharedState <socache-provider>[:<args>] [interval=<s>]: key "
                      "state shared by a fleet of servers"),
    { NULL }
};

/* Checks that need the whole configuration: `httpd -t` runs these too. */
/* The socache provider AIBridgeSharedState names, created (which only
 * parses its arguments: no connection is made before the children run). */
static int check_shared_state(apr_pool_t *pconf, apr_pool_t *ptemp, server_rec *s)
{
    server_conf_t *sc = ap_get_module_config(s->module_config, &aibridge_module);
    const char *sep, *name, *args, *err;

    if (!sc->shared_state)
        return OK;
    sep = strchr(sc->shared_state, ':');
    name = sep ? apr_pstrmemdup(ptemp, sc->shared_state, (apr_size_t)(sep - sc->shared_state))
               : sc->shared_state;
    args = sep ? sep + 1 : NULL;
    sc->socache = ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, name,
                                     AP_SOCACHE_PROVIDER_VERSION);
    if (!sc->socache) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, s,
                     "AIBridgeSharedState: no socache provider '%s' (load it, e.g. "
                     "LoadModule socache_%s_module)", name, name);
        return !OK;
    }
    if (sc->socache->flags & AP_SOCACHE_FLAG_NOTMPSAFE) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, s,
                     "AIBridgeSharedState: socache provider '%s' is local to one server; a "
                     "fleet shares state through redis or memcache", name);
        return !OK;
    }
    err = sc->socache->create(&sc->socache_instance, args, ptemp, pconf);
    if (err) {
        ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, s,
                     "AIBridgeSharedState: %s: %s", sc->shared_state, err);
        return !OK;
    }
    return OK;
}

/* The MCP servers `names` name in server `sc`, or NULL after logging
 * which one is unknown, in the words of `where`. */
static apr_array_header_t *resolve_mcp(apr_pool_t *p, const server_conf_t *sc,
                                       const apr_array_header_t *names, server_rec *s,
                                       const char *where)
{
    apr_array_header_t *servers = apr_array_make(p, names->nelts, sizeof(aib_mcp_server_t *));
    int i;

    for (i = 0; i < names->nelts; i++) {
        const char *name = APR_ARRAY_IDX(names, i, const char *);
        aib_mcp_server_t *ms = apr_hash_get(sc->mcp, name, APR_HASH_KEY_STRING);
        if (!ms) {
            ap_log_error(APLOG_MARK, APLOG_STARTUP | APLOG_EMERG, 0, s, "%s: unknown MCP "
                         "server '%s' (define it with AIBridgeMCPServer)", where, name);
            return NULL;
        }
        APR_ARRAY_PUSH(servers, aib_mcp_server_t *) = ms;
    }
    return servers;
}

/* AIBridgeInjectTools names servers that must exist where it is used. */
static int check_inject_tools(apr_pool_t *ptemp, const server_conf_t *sc, server_rec *s)
{
    core_server_config *core = ap_get_core_module_config(s->module_config);
    ap_conf_vector_t **sections = (ap_conf_vector_t **)core->sec_url->elts;
    int i;

    for (i = -1; i < core->sec_url->nelts; i++) {
        const dir_conf_t *dc = ap_get_module_config(i < 0 ? s->lookup_defaults : sections[i],
                                                    &aibridge_module);
        if (dc && dc->inject && !resolve_mcp(ptemp, sc, dc->inject, s, "AIBridgeInjectTools"))
            return !OK;
    }
    return OK;
}

static int check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    (void)plog;
    if (check_shared_state(pconf, ptemp, s) != OK)
        return !OK;
    for (; s; s = s->next) {
        server_conf_t *sc = ap_get_module_config(s->module_config, &aibridge_module);
        int i;
        if (check_inject_tools(ptemp, sc, s) != OK)
            return !OK;
        for (i = 0; i < sc->own_providers->nelts; i++) {
            aib_provider_t *pv = APR_ARRAY_IDX(sc->own_providers, i, aib_provider_t *);
            if (pv->mcp_names
                && !(pv->mcp = resolve_mcp(pconf, sc, pv->mcp_names, s,
                                           apr_psprintf(ptemp, "AIBridgeProvider %s: mcp=",
                                                        pv->name))))
                return !OK;
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

static int pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    (void)plog; (void)ptemp;
    return ap_mutex_register(pconf, AIB_USAGE_MUTEX, NULL, APR_LOCK_DEFAULT, 0);
}

/* The parent opens the usage logs, as mod_log_config does its logs: files
 * are written by every child, pipes (rotatelogs) are started once. A
 * virtual host without its own log shares the main server's. */
static int open_logs(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    const server_conf_t *main_sc = ap_get_module_config(s->module_config, &aibridge_module);
    server_rec *vs;

    (void)plog; (void)ptemp;
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG)
        return OK;
    for (vs = s; vs; vs = vs->next) {
        server_conf_t *sc = ap_get_module_config(vs->module_config, &aibridge_module);
        apr_status_t rv;

        /* A virtual host without a directive of ours has the main server's
         * very configuration (httpd merges nothing then): opened already. */
        if (vs != s && sc == main_sc)
            continue;
        sc->usage_file = NULL;
        if (!sc->usage_log)
            continue;
        if (vs != s && sc->usage_log == main_sc->usage_log) {
            sc->usage_file = main_sc->usage_file;
            continue;
        }
        if (sc->usage_log[0] == '|') {
            piped_log *pl = ap_open_piped_log(pconf, sc->usage_log + 1);
            if (!pl) {
                ap_log_error(APLOG_MARK, APLOG_EMERG, 0, vs,
                             "AIBridgeUsageLog: cannot start %s", sc->usage_log + 1);
                return !OK;
            }
            sc->usage_file = ap_piped_log_write_fd(pl);
            continue;
        }
        rv = apr_file_open(&sc->usage_file, ap_server_root_relative(pconf, sc->usage_log),
                           APR_FOPEN_WRITE | APR_FOPEN_APPEND | APR_FOPEN_CREATE,
                           APR_FPROT_OS_DEFAULT, pconf);
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, rv, vs,
                         "AIBridgeUsageLog: cannot open %s", sc->usage_log);
            return !OK;
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

/* Makes room for `needed` records of `size` bytes: the segment stays when
 * it has room (*grown = 0); else a new zeroed one, with headroom so a few
 * more keys later need none, replaces it and the old one is returned in
 * *old for copying, then destroyed by the caller. */
static apr_status_t segment_fit(segment_t *seg, apr_size_t size, uint32_t needed,
                                segment_t *old, int *grown)
{
    uint32_t capacity = needed + needed / 2 + 16;
    apr_shm_t *shm;
    apr_status_t rv;

    *old = *seg;
    *grown = !seg->shm || seg->capacity < needed;
    if (!*grown)
        return APR_SUCCESS;
    rv = apr_shm_create(&shm, (apr_size_t)capacity * size, NULL, ap_pglobal);
    if (rv != APR_SUCCESS)
        return rv;
    seg->shm = shm;
    seg->base = apr_shm_baseaddr_get(shm);
    seg->capacity = capacity;
    memset(seg->base, 0, (apr_size_t)capacity * size);
    return APR_SUCCESS;
}

/* Children of the previous generation keep their own mapping. */
static void segment_retire(segment_t *old, int grown)
{
    if (grown && old->shm)
        apr_shm_destroy(old->shm);
}

/* Key slots for every pool. Keys that stay keep their state and their slot,
 * so marks that the previous generation's children still write land on
 * the right key. */
/* Every pool of every server. */
static apr_array_header_t *all_pools(apr_pool_t *p, server_rec *s)
{
    apr_array_header_t *pools = apr_array_make(p, 8, sizeof(aib_keypool_t *));

    for (; s; s = s->next) {
        server_conf_t *sc = ap_get_module_config(s->module_config, &aibridge_module);
        apr_hash_index_t *hi;
        for (hi = apr_hash_first(p, sc->own_pools); hi; hi = apr_hash_next(hi))
            APR_ARRAY_PUSH(pools, aib_keypool_t *) = apr_hash_this_val(hi);
    }
    return pools;
}

static apr_status_t place_keys(retained_t *rd, server_rec *s, apr_pool_t *ptemp)
{
    apr_array_header_t *pools = all_pools(ptemp, s);
    aib_keystore_t old_store = rd->store;
    segment_t old;
    uint32_t needed;
    apr_status_t rv;
    int grown;

    needed = aib_keystore_slots_needed(pools, ptemp);
    rv = segment_fit(&rd->keys, sizeof(aib_slot_t), needed, &old, &grown);
    if (rv != APR_SUCCESS)
        return rv;
    rd->store.slots = rd->keys.base;
    rd->store.capacity = rd->keys.capacity;
    aib_keystore_assign(&rd->store, !grown ? &rd->store : old.shm ? &old_store : NULL,
                        pools, ptemp);
    segment_retire(&old, grown);
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "key store: %u keys in %u slots%s", needed,
                 rd->store.capacity, grown ? " (new segment)" : "");
    return APR_SUCCESS;
}

/* "host:port": how pages, metrics and counter records name a server. The
 * port is ServerName's, else the <VirtualHost> address's (an http and an
 * https host often share a name); none when neither has one. */
static const char *server_label(apr_pool_t *p, const server_rec *s)
{
    const char *host = s->server_hostname ? s->server_hostname : "";
    unsigned port = s->port ? s->port : s->addrs ? s->addrs->host_port : 0;

    return port ? apr_psprintf(p, "%s:%u", host, port) : host;
}

/* A counter record for every provider, kept across restarts likewise. */
static apr_status_t place_stats(retained_t *rd, server_rec *s, apr_pool_t *ptemp)
{
    apr_array_header_t *fps = apr_array_make(ptemp, 8, sizeof(uint64_t));
    apr_array_header_t *providers = apr_array_make(ptemp, 8, sizeof(aib_provider_t *));
    aib_statstore_t old_store = rd->statstore;
    aib_provider_stats_t **records;
    segment_t old;
    apr_status_t rv;
    int grown, i;

    for (; s; s = s->next) {
        server_conf_t *sc = ap_get_module_config(s->module_config, &aibridge_module);
        const char *server = server_label(ptemp, s);
        for (i = 0; i < sc->own_providers->nelts; i++) {
            aib_provider_t *pv = APR_ARRAY_IDX(sc->own_providers, i, aib_provider_t *);
            APR_ARRAY_PUSH(providers, aib_provider_t *) = pv;
            APR_ARRAY_PUSH(fps, uint64_t) = aib_provider_fingerprint(server, pv->name);
        }
    }
    rv = segment_fit(&rd->stats, sizeof(aib_provider_stats_t), (uint32_t)fps->nelts, &old, &grown);
    if (rv != APR_SUCCESS)
        return rv;
    rd->statstore.records = rd->stats.base;
    rd->statstore.capacity = rd->stats.capacity;
    records = apr_pcalloc(ptemp, sizeof(*records) * (apr_size_t)(fps->nelts + 1));
    aib_statstore_assign(&rd->statstore, !grown ? &rd->statstore : old.shm ? &old_store : NULL,
                         fps, records, ptemp);
    for (i = 0; i < providers->nelts; i++)
        APR_ARRAY_IDX(providers, i, aib_provider_t *)->stats = records[i];
    segment_retire(&old, grown);
    return APR_SUCCESS;
}

/* MCP tool-call counters: a fixed table, kept across restarts. */
static apr_status_t place_tools(retained_t *rd)
{
    segment_t old;
    int grown;
    apr_status_t rv = segment_fit(&rd->tools, sizeof(aib_tool_stats_t), AIB_TOOL_STATS_RECORDS,
                                  &old, &grown);

    if (rv != APR_SUCCESS)
        return rv;
    rd->toolstore.records = rd->tools.base;
    rd->toolstore.capacity = rd->tools.capacity;
    tool_stats = &rd->toolstore;
    return APR_SUCCESS;
}

/* The fleet sync state, kept across restarts like the key slots. */
static apr_status_t place_fleet(retained_t *rd, server_rec *s)
{
    const server_conf_t *sc = ap_get_module_config(s->module_config, &aibridge_module);
    segment_t old;
    int grown;
    apr_status_t rv;

    fleet_shared = NULL;
    if (!sc->shared_state)
        return APR_SUCCESS;
    rv = segment_fit(&rd->fleet, sizeof(aib_fleet_shared_t), 1, &old, &grown);
    if (rv != APR_SUCCESS)
        return rv;
    fleet_shared = rd->fleet.base;
    /* A new generation's sync process takes the lease at once. */
    fleet_shared->lease_until_ms = 0;
    return APR_SUCCESS;
}

static int post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    retained_t *rd;
    apr_status_t rv;

    (void)plog;
    /* The first pass only checks the configuration. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG)
        return OK;
    rd = get_retained();
    if ((rv = place_keys(rd, s, ptemp)) != APR_SUCCESS
        || (rv = place_stats(rd, s, ptemp)) != APR_SUCCESS
        || (rv = place_fleet(rd, s)) != APR_SUCCESS
        || (rv = place_tools(rd)) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s, "cannot create shared memory");
        return !OK;
    }
    rv = ap_global_mutex_create(&usage_log_mutex, NULL, AIB_USAGE_MUTEX, NULL, s, pconf, 0);
    if (rv != APR_SUCCESS)
        return !OK;
    return OK;
}

/* ---- fleet sync: one thread per child; the lease picks the one that works ---- */

typedef struct {
    server_rec *s;
    const server_conf_t *sc;
    aib_fleet_t *fleet;
    aib_fleet_cache_t cache;
    apr_thread_t *thread;
    volatile apr_uint32_t stop;
} sync_t;

static int64_t now_ms(void)
{
    return apr_time_as_msec(apr_time_now());
}

static apr_status_t socache_get(void *ctx, const unsigned char *id, unsigned id_len, char *buf,
                                unsigned *len, apr_pool_t *tmp)
{
    const sync_t *sy = ctx;

    return sy->sc->socache->retrieve(sy->sc->socache_instance, sy->s, id, id_len,
                                     (unsigned char *)buf, len, tmp);
}

static apr_status_t socache_put(void *ctx, const unsigned char *id, unsigned id_len,
                                int64_t expiry_ms, const char *data, unsigned len,
                                apr_pool_t *tmp)
{
    const sync_t *sy = ctx;

    return sy->sc->socache->store(sy->sc->socache_instance, sy->s, id, id_len,
                                  apr_time_from_msec(expiry_ms), (unsigned char *)data, len,
                                  tmp);
}

/* Long enough to cover a slow round; a process that exits gives it up. */
#define AIB_SYNC_LEASE_MS 1000
#define AIB_SYNC_TICK_MS 50

static void sync_round(sync_t *sy, int64_t now, apr_pool_t *tmp)
{
    aib_fleet_round_t r;

    aib_fleet_round(sy->fleet, &sy->cache, now, tmp, &r);
    if (r.outage_begins)
        ap_log_error(APLOG_MARK, APLOG_WARNING, r.error, sy->s,
                     "AIBridgeSharedState: %s unreachable: this server goes on with its "
                     "own key state and resynchronises when the cache returns",
                     sy->sc->shared_state);
    else if (r.recovered)
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, sy->s, "AIBridgeSharedState: %s "
                     "reachable again, key state resynchronised", sy->sc->shared_state);
    if (r.written || r.taken)
        ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, sy->s, "shared state: wrote %u and took "
                     "over %u key records", r.written, r.taken);
    apr_pool_clear(tmp);
}

static void *APR_THREAD_FUNC sync_thread(apr_thread_t *thread, void *data)
{
    sync_t *sy = data;
    uint32_t me = (uint32_t)getpid();
    int64_t last_round = 0, now;
    apr_pool_t *tmp;

    apr_pool_create(&tmp, apr_thread_pool_get(thread));
    while (!apr_atomic_read32(&sy->stop)) {
        apr_sleep(apr_time_from_msec(AIB_SYNC_TICK_MS));
        now = now_ms();
        if (now - last_round < sy->sc->sync_interval_ms
            || !aib_fleet_lease(fleet_shared, me, now, AIB_SYNC_LEASE_MS))
            continue;
        last_round = now;
        sync_round(sy, now, tmp);
    }
    /* Marks not written yet get a last round before the process goes, even
     * when no other process is left to write them (a child that ends after
     * MaxConnectionsPerChild); a cache known to be down is not waited for.
     * Then the lease is handed on at once rather than when it runs out. */
    now = now_ms();
    if (aib_fleet_lease(fleet_shared, me, now, AIB_SYNC_LEASE_MS)) {
        if (aib_fleet_pending(sy->fleet) && AIB_LOAD(&fleet_shared->connected))
            sync_round(sy, now, tmp);
        AIB_STORE(&fleet_shared->lease_until_ms, 0);
    }
    apr_thread_exit(thread, APR_SUCCESS);
    return NULL;
}

/* Runs before the child's pools go: the thread uses them. */
static apr_status_t stop_sync(void *data)
{
    sync_t *sy = data;
    apr_status_t rv;

    apr_atomic_set32(&sy->stop, 1);
    apr_thread_join(&rv, sy->thread);
    return APR_SUCCESS;
}

static void start_sync(apr_pool_t *pchild, server_rec *s)
{
    sync_t *sy = apr_pcalloc(pchild, sizeof(*sy));
    struct ap_socache_hints hints = { 32, 64, apr_time_from_sec(60) };
    apr_status_t rv;

    sy->s = s;
    sy->sc = ap_get_module_config(s->module_config, &aibridge_module);
    /* Each child opens its own connections: none is inherited from the parent. */
    rv = sy->sc->socache->init(sy->sc->socache_instance, "aibridge", &hints, s, pchild);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, "AIBridgeSharedState: cannot set up %s: "
                     "this server keeps its key state to itself", sy->sc->shared_state);
        return;
    }
    sy->fleet = aib_fleet_create(pchild, fleet_shared, all_pools(pchild, s));
    sy->cache.ctx = sy;
    sy->cache.get = socache_get;
    sy->cache.put = socache_put;
    rv = apr_thread_create(&sy->thread, NULL, sync_thread, sy, pchild);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s, "AIBridgeSharedState: cannot start the "
                     "sync thread");
        return;
    }
    apr_pool_pre_cleanup_register(pchild, sy, stop_sync);
}

/* One client per MCP server and child: it caches the session and tool list. */
static void create_mcp_clients(apr_pool_t *pchild, server_rec *s)
{
    mcp_clients = apr_hash_make(pchild);
    for (; s; s = s->next) {
        const server_conf_t *sc = ap_get_module_config(s->module_config, &aibridge_module);
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

static void child_init(apr_pool_t *pchild, server_rec *s)
{
    if (usage_log_mutex
        && apr_global_mutex_child_init(&usage_log_mutex,
                                       apr_global_mutex_lockfile(usage_log_mutex),
                                       pchild) != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "cannot attach the usage-log mutex");
    if (aib_curl_init(pchild) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "curl_global_init failed");
        return;
    }
    child_transport = aib_curl_transport_create(pchild);
    create_mcp_clients(pchild, s);
    if (fleet_shared)
        start_sync(pchild, s);
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

/* An id for the interception, in logs, variables and the usage record. */
static const char *interception_id(request_rec *r)
{
    unsigned char bytes[8];
    char *hex = apr_palloc(r->pool, 2 * sizeof(bytes) + 1);

    if (apr_generate_random_bytes(bytes, sizeof(bytes)) != APR_SUCCESS)
        return r->log_id ? r->log_id : "-";
    ap_bin2hex(bytes, sizeof(bytes), hex);
    return hex;
}

static void set_env_number(request_rec *r, const char *name, int64_t value)
{
    apr_table_setn(r->subprocess_env, name, apr_psprintf(r->pool, "%" APR_INT64_T_FMT, value));
}

static json_object *json_string_or_null(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
}

/* RFC 3339 in UTC with milliseconds: 2025-01-31T12:34:56.789Z. (ap_ht_time
 * knows no sub-second conversion: strftime would get "%{ms}" as it is.) */
static const char *utc_time(apr_pool_t *p, apr_time_t t)
{
    apr_time_exp_t tm;

    apr_time_exp_gmt(&tm, t);
    return apr_psprintf(p, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                        tm.tm_usec / 1000);
}

/* Writes one line to the usage log whole. A pipe write longer than PIPE_BUF
 * is not atomic: while it waits for room in a full pipe, any other write,
 * however short, can land inside it. So every line, short ones too, is
 * written under the mutex. */
static void write_usage_line(request_rec *r, apr_file_t *file, const char *line, apr_size_t len)
{
    int locked = usage_log_mutex && apr_global_mutex_lock(usage_log_mutex) == APR_SUCCESS;
    apr_status_t rv = apr_file_write_full(file, line, len, NULL);

    if (locked)
        apr_global_mutex_unlock(usage_log_mutex);
    if (rv != APR_SUCCESS)
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, rv, r, "cannot write the usage log");
}

/* What the interception did: request variables for LogFormat, and a line in
 * the usage log. */
/* The tool calls of the agentic loop, for the usage record. */
static json_object *tool_runs_json(const aib_agent_t *agent)
{
    json_object *list = json_object_new_array();
    int i;

    for (i = 0; agent->tool_runs && i < agent->tool_runs->nelts; i++) {
        const aib_tool_run_t *run = &APR_ARRAY_IDX(agent->tool_runs, i, aib_tool_run_t);
        json_object *o = json_object_new_object();
        json_object_object_add(o, "server", json_object_new_string(run->server));
        json_object_object_add(o, "tool", json_object_new_string(run->tool));
        json_object_object_add(o, "duration_ms", json_object_new_int64(run->duration_ms));
        json_object_object_add(o, "outcome",
                               json_object_new_string(aib_tool_outcome_name(run->outcome)));
        json_object_object_add(o, "error", json_string_or_null(run->error));
        json_object_array_add(list, o);
    }
    return list;
}

static void record(request_rec *r, const server_conf_t *sc, const aib_interception_t *ic,
                   const aib_agent_t *agent, const char *id, const char *model,
                   apr_time_t start, apr_size_t bytes_in)
{
    apr_table_t *env = r->subprocess_env;
    const aib_usage_t *u = &ic->usage;
    apr_time_t end = apr_time_now();
    int64_t ttfb = ic->first_byte_ms ? ic->first_byte_ms - apr_time_as_msec(start) : -1;
    const char *credential = ic->client_key ? "byok" : "pool";
    json_object *rec, *tried, *tools;
    const char *line;
    int i;

    apr_table_setn(env, "AIBRIDGE_ID", id);
    if (ic->provider && ic->provider->name)
        apr_table_setn(env, "AIBRIDGE_PROVIDER", ic->provider->name);
    if (ic->route.name)
        apr_table_setn(env, "AIBRIDGE_ROUTE", ic->route.name);
    if (model)
        apr_table_setn(env, "AIBRIDGE_MODEL", model);
    apr_table_setn(env, "AIBRIDGE_STREAM", ic->stream ? "true" : "false");
    apr_table_setn(env, "AIBRIDGE_CREDENTIAL", credential);
    if (ic->attempts)
        apr_table_setn(env, "AIBRIDGE_KEY", ic->key_hint);
    set_env_number(r, "AIBRIDGE_ATTEMPTS", ic->attempts);
    apr_table_setn(env, "AIBRIDGE_OUTCOME", aib_outcome_name(ic->outcome));
    set_env_number(r, "AIBRIDGE_INPUT_TOKENS", u->input);
    set_env_number(r, "AIBRIDGE_OUTPUT_TOKENS", u->output);
    set_env_number(r, "AIBRIDGE_CACHE_READ_TOKENS", u->cache_read);
    set_env_number(r, "AIBRIDGE_CACHE_WRITE_TOKENS", u->cache_write);
    set_env_number(r, "AIBRIDGE_REASONING_TOKENS", u->reasoning);
    if (ttfb >= 0)
        set_env_number(r, "AIBRIDGE_TTFB_MS", ttfb);
    if (agent->iterations) {
        set_env_number(r, "AIBRIDGE_ITERATIONS", agent->iterations);
        set_env_number(r, "AIBRIDGE_TOOL_CALLS", agent->tool_runs->nelts);
    }
    if (!sc->usage_file)
        return;

    rec = json_object_new_object();
    json_object_object_add(rec, "id", json_object_new_string(id));
    json_object_object_add(rec, "start", json_object_new_string(utc_time(r->pool, start)));
    json_object_object_add(rec, "end", json_object_new_string(utc_time(r->pool, end)));
    /* In whole milliseconds like ttfb_ms and the times shown: end - start. */
    json_object_object_add(rec, "duration_ms", json_object_new_int64(apr_time_as_msec(end)
                                                                     - apr_time_as_msec(start)));
    json_object_object_add(rec, "ttfb_ms", ttfb >= 0 ? json_object_new_int64(ttfb) : NULL);
    json_object_object_add(rec, "user", json_string_or_null(r->user));
    json_object_object_add(rec, "client", json_string_or_null(r->useragent_ip));
    json_object_object_add(rec, "provider", json_string_or_null(ic->provider ? ic->provider->name : NULL));
    json_object_object_add(rec, "route", json_string_or_null(ic->route.name));
    json_object_object_add(rec, "model", json_string_or_null(model));
    json_object_object_add(rec, "stream", json_object_new_boolean(ic->stream));
    json_object_object_add(rec, "credential", json_object_new_string(credential));
    json_object_object_add(rec, "key", json_string_or_null(ic->attempts ? ic->key_hint : NULL));
    tried = json_object_new_array();
    for (i = 0; i < ic->tried->nelts; i++)
        json_object_array_add(tried, json_object_new_string(APR_ARRAY_IDX(ic->tried, i, const char *)));
    json_object_object_add(rec, "keys_tried", tried);
    json_object_object_add(rec, "attempts", json_object_new_int(ic->attempts));
    json_object_object_add(rec, "outcome", json_object_new_string(aib_outcome_name(ic->outcome)));
    json_object_object_add(rec, "status", json_object_new_int(ic->status ? ic->status : r->status));
    json_object_object_add(rec, "upstream_status",
                           ic->upstream_status ? json_object_new_int(ic->upstream_status) : NULL);
    json_object_object_add(rec, "input_tokens", json_object_new_int64(u->input));
    json_object_object_add(rec, "output_tokens", json_object_new_int64(u->output));
    json_object_object_add(rec, "cache_read_tokens", json_object_new_int64(u->cache_read));
    json_object_object_add(rec, "cache_write_tokens", json_object_new_int64(u->cache_write));
    json_object_object_add(rec, "reasoning_tokens", json_object_new_int64(u->reasoning));
    json_object_object_add(rec, "bytes_in", json_object_new_int64((int64_t)bytes_in));
    json_object_object_add(rec, "bytes_out", json_object_new_int64((int64_t)r->bytes_sent));
    tools = json_object_new_array();
    for (i = 0; u->tools && i < u->tools->nelts; i++)
        json_object_array_add(tools, json_object_new_string(APR_ARRAY_IDX(u->tools, i, const char *)));
    json_object_object_add(rec, "tools", tools);
    json_object_object_add(rec, "iterations", agent->iterations
                           ? json_object_new_int(agent->iterations) : NULL);
    json_object_object_add(rec, "tool_calls", tool_runs_json(agent));
    line = apr_pstrcat(r->pool, json_object_to_json_string_ext(rec, JSON_C_TO_STRING_PLAIN
                                                               | JSON_C_TO_STRING_NOSLASHESCAPE),
                       "\n", NULL);
    json_object_put(rec);
    write_usage_line(r, sc->usage_file, line, strlen(line));
}

#define AIB_DEFAULT_TOOL_ITERATIONS 10

/* The MCP servers whose tools this request is offered: AIBridgeInjectTools
 * where it is set, else the provider's mcp=. */
static apr_array_header_t *tool_sources(request_rec *r, const server_conf_t *sc,
                                        const dir_conf_t *dc, const aib_provider_t *pv)
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

static void count_tool_runs(const aib_agent_t *agent)
{
    int i;

    for (i = 0; agent->tool_runs && i < agent->tool_runs->nelts; i++) {
        const aib_tool_run_t *run = &APR_ARRAY_IDX(agent->tool_runs, i, aib_tool_run_t);
        aib_tool_stats_count(tool_stats, run->server, run->tool, (int)run->outcome,
                             run->duration_ms);
    }
}

static int aibridge_handler(request_rec *r)
{
    const dir_conf_t *dc;
    const server_conf_t *sc;
    const char *name, *path;
    sink_ctx_t sk;
    aib_sink_t sink = { NULL, sink_start, sink_write, sink_client_gone, sink_fail, sink_log };
    aib_interception_t ic;
    aib_agent_t agent;
    aib_provider_t *pv;
    aib_provider_t fallback;
    char *body = NULL;
    apr_size_t body_len = 0;
    const char *model = NULL;
    apr_time_t start = apr_time_now();
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
    memset(&agent, 0, sizeof(agent));
    aib_interception_init(&ic, r->pool);
    sk.id = interception_id(r);
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
    aib_stats_begin(pv->stats);
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
        const char *err = aib_inspect_request(r->pool, body, body_len, &ic.stream,
                                              &model);
        if (err) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "bad request: %s", err);
            aib_bridge_reject(&ic, AIB_ERROR_INVALID_REQUEST, err, NULL, 0);
            goto done;
        }
    }
    ic.body = body;
    ic.body_len = body_len;
    if (ic.stream && !strcmp(ic.route.name, "chat"))
        ic.body = aib_usage_inject(r->pool, body, body_len, &ic.body_len, &ic.strip_usage);
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
    agent.sources = ic.route.kind == AIB_ROUTE_BRIDGED ? tool_sources(r, sc, dc, pv) : NULL;
    if (agent.sources && agent.sources->nelts) {
        agent.transport = child_transport;
        agent.max_iterations = dc->max_tool_iterations ? dc->max_tool_iterations
                                                       : AIB_DEFAULT_TOOL_ITERATIONS;
        aib_agent_run(&ic, &agent);
        count_tool_runs(&agent);
    }
    else
        aib_bridge_run(&ic);

done:
    if (pv)
        aib_stats_end(pv->stats, aib_stat_route(ic.route.name), ic.client_key != NULL,
                      ic.outcome, apr_time_now() - start, ic.attempts);
    record(r, sc, &ic, &agent, sk.id, model, start, body_len);
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

/* ---- the status page, the metrics, mod_status's section ---- */

/* The providers that serve requests of `s`: its own, then those it
 * inherits from the main server, in configured order. */
static apr_array_header_t *serving_providers(apr_pool_t *p, server_rec *s)
{
    const server_conf_t *sc = ap_get_module_config(s->module_config, &aibridge_module);
    const server_conf_t *main_sc = ap_get_module_config(ap_server_conf->module_config,
                                                        &aibridge_module);
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

    srv->name = server_label(r->pool, r->server);
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
        const server_conf_t *sc = ap_get_module_config(s->module_config, &aibridge_module);
        aib_status_server_t *srv = apr_array_push(servers);
        srv->name = server_label(p, s);
        srv->providers = sc->own_providers;
    }
    return servers;
}

/* The fleet's sync state, or NULL without AIBridgeSharedState. */
static const aib_status_fleet_t *status_fleet(apr_pool_t *p)
{
    const server_conf_t *sc = ap_get_module_config(ap_server_conf->module_config,
                                                   &aibridge_module);
    aib_status_fleet_t *fleet;

    if (!fleet_shared)
        return NULL;
    fleet = apr_pcalloc(p, sizeof(*fleet));
    fleet->cache = sc->shared_state;
    fleet->interval_ms = sc->sync_interval_ms;
    fleet->shared = fleet_shared;
    return fleet;
}

/* A fresh nonce per server and configuration: the status page's forms carry
 * it, and an action without it is refused. */
static int status_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                              server_rec *s)
{
    (void)plog; (void)ptemp;
    for (; s; s = s->next) {
        server_conf_t *sc = ap_get_module_config(s->module_config, &aibridge_module);
        unsigned char bytes[16];
        char *hex = apr_palloc(pconf, 2 * sizeof(bytes) + 1);
        apr_status_t rv = apr_generate_random_bytes(bytes, sizeof(bytes));

        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s, "cannot make the status page's nonce");
            return !OK;
        }
        ap_bin2hex(bytes, sizeof(bytes), hex);
        sc->status_nonce = hex;
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
    const server_conf_t *sc = ap_get_module_config(r->server->module_config, &aibridge_module);
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

static int status_handler(request_rec *r)
{
    const server_conf_t *sc;
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
    sc = ap_get_module_config(r->server->module_config, &aibridge_module);
    private_page_headers(r);
    if (wants_json(r)) {
        ap_set_content_type(r, "application/json");
        body = apr_pstrcat(r->pool, aib_status_json(r->pool, page_servers(r), status_fleet(r->pool),
                                           now_ms()), "\n",
                           NULL);
    }
    else {
        ap_set_content_type(r, "text/html; charset=utf-8");
        body = aib_status_html(r->pool, page_servers(r), status_fleet(r->pool), now_ms(),
                               ap_escape_uri(r->pool, r->uri), sc->status_nonce);
    }
    if (!r->header_only)
        ap_rputs(body, r);
    return OK;
}

static int metrics_handler(request_rec *r)
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
                                                   status_fleet(r->pool), now_ms()),
                       aib_status_tool_metrics(r->pool, tool_stats), NULL);
    if (!r->header_only)
        ap_rputs(body, r);
    return OK;
}

/* mod_status's server-status: a section of our own, when it is loaded. */
static int status_hook(request_rec *r, int flags)
{
    apr_array_header_t *servers = all_servers(r->pool);

    if (flags & AP_STATUS_SHORT)
        ap_rputs(aib_status_text_summary(r->pool, servers, now_ms()), r);
    else
        ap_rputs(aib_status_html_summary(r->pool, servers, now_ms(),
                                         !(flags & AP_STATUS_NOTABLE)), r);
    return OK;
}

/* A request for the bridge names no file: like mod_proxy, it skips the
 * walk that maps a URI onto the filesystem (a stat per path segment, an
 * .htaccess lookup per directory). <Location> sections still apply. */
static int translate_name(request_rec *r)
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

static int map_to_storage(request_rec *r)
{
    return r->filename && !strncmp(r->filename, "aibridge:", 9) ? OK : DECLINED;
}

static void register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_pre_config(pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_check_config(check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_open_logs(open_logs, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_translate_name(translate_name, NULL, NULL, APR_HOOK_LAST);
    ap_hook_map_to_storage(map_to_storage, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_handler(aibridge_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(status_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(metrics_handler, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ap, status_hook, status_hook, NULL, NULL, APR_HOOK_MIDDLE);
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
