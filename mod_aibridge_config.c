/* mod_aibridge's configuration: the server and directory records, the
 * directives, and the checks that need the whole configuration. */
#include <string.h>

#include <http_core.h>
#include <ap_provider.h>
#include <apr_strings.h>

#include "config.h"
#include "hint.h"
#include "keypool.h"
#include "mcp.h"
#include "provider.h"

#include "mod_aibridge.h"

#define AIB_DEFAULT_SYNC_INTERVAL_MS 250

void *aib_glue_create_server_conf(apr_pool_t *p, server_rec *s)
{
    aib_glue_server_conf_t *sc = apr_pcalloc(p, sizeof(*sc));

    (void)s;
    sc->own_pools = apr_hash_make(p);
    sc->pools = sc->own_pools;
    sc->providers = apr_hash_make(p);
    sc->own_providers = apr_array_make(p, 4, sizeof(aib_provider_t *));
    sc->own_mcp = apr_hash_make(p);
    sc->mcp = sc->own_mcp;
    return sc;
}

void *aib_glue_merge_server_conf(apr_pool_t *p, void *basev, void *addv)
{
    const aib_glue_server_conf_t *base = basev, *add = addv;
    aib_glue_server_conf_t *sc = apr_pcalloc(p, sizeof(*sc));

    sc->own_pools = add->own_pools;
    sc->own_providers = add->own_providers;
    sc->pools = apr_hash_overlay(p, add->own_pools, base->pools);
    sc->providers = apr_hash_overlay(p, add->providers, base->providers);
    sc->own_mcp = add->own_mcp;
    sc->mcp = apr_hash_overlay(p, add->own_mcp, base->mcp);
    sc->usage_log = add->usage_log ? add->usage_log : base->usage_log;
    return sc;
}

void *aib_glue_create_dir_conf(apr_pool_t *p, char *dir)
{
    aib_glue_dir_conf_t *dc = apr_pcalloc(p, sizeof(*dc));

    (void)dir;
    dc->max_body = -1;
    return dc;
}

void *aib_glue_merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    const aib_glue_dir_conf_t *base = basev, *add = addv;
    aib_glue_dir_conf_t *dc = apr_pcalloc(p, sizeof(*dc));

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
    aib_glue_server_conf_t *sc = aib_glue_server_conf(cmd->server);
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
    aib_glue_server_conf_t *sc = aib_glue_server_conf(cmd->server);
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
    aib_glue_dir_conf_t *dc = dconf;
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
    aib_glue_server_conf_t *sc = aib_glue_server_conf(cmd->server);

    (void)dconf;
    if (!*value || !strcmp(value, "|"))
        return directive_error(cmd, "takes a file or a \"|piped command\"");
    sc->usage_log = value;
    return NULL;
}

static const char *cmd_shared_state(cmd_parms *cmd, void *dconf, int argc,
                                    char *const argv[])
{
    aib_glue_server_conf_t *sc = aib_glue_server_conf(cmd->server);
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
    aib_glue_server_conf_t *sc = aib_glue_server_conf(cmd->server);
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
    aib_glue_dir_conf_t *dc = dconf;
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
    aib_glue_dir_conf_t *dc = dconf;
    char *end;
    apr_int64_t n = apr_strtoi64(value, &end, 10);

    if (end == value || *end || n < 1 || n > 100)
        return directive_error(cmd, apr_psprintf(cmd->pool, "'%s' is not a number from 1 to "
                                                 "100", value));
    dc->max_tool_iterations = (int)n;
    return NULL;
}

const command_rec aib_glue_cmds[] = {
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
    aib_glue_server_conf_t *sc = aib_glue_server_conf(s);
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
static apr_array_header_t *resolve_mcp(apr_pool_t *p, const aib_glue_server_conf_t *sc,
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
static int check_inject_tools(apr_pool_t *ptemp, const aib_glue_server_conf_t *sc,
                              server_rec *s)
{
    core_server_config *core = ap_get_core_module_config(s->module_config);
    ap_conf_vector_t **sections = (ap_conf_vector_t **)core->sec_url->elts;
    int i;

    for (i = -1; i < core->sec_url->nelts; i++) {
        const aib_glue_dir_conf_t *dc =
            ap_get_module_config(i < 0 ? s->lookup_defaults : sections[i], &aibridge_module);
        if (dc && dc->inject && !resolve_mcp(ptemp, sc, dc->inject, s, "AIBridgeInjectTools"))
            return !OK;
    }
    return OK;
}

int aib_glue_check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                          server_rec *s)
{
    (void)plog;
    if (check_shared_state(pconf, ptemp, s) != OK)
        return !OK;
    for (; s; s = s->next) {
        aib_glue_server_conf_t *sc = aib_glue_server_conf(s);
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

/* "host:port": how pages, metrics and counter records name a server. The
 * port is ServerName's, else the <VirtualHost> address's (an http and an
 * https host often share a name); none when neither has one. */
const char *aib_glue_server_label(apr_pool_t *p, const server_rec *s)
{
    const char *host = s->server_hostname ? s->server_hostname : "";
    unsigned port = s->port ? s->port : s->addrs ? s->addrs->host_port : 0;

    return port ? apr_psprintf(p, "%s:%u", host, port) : host;
}
