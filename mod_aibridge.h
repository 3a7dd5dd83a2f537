/* The httpd glue's private header: the configuration every glue file reads
 * and the few functions one glue file calls in another, a section per
 * file. The APR-only core in src/ never sees it; the module exports only
 * aibridge_module. */
#ifndef MOD_AIBRIDGE_H
#define MOD_AIBRIDGE_H

#include <httpd.h>
#include <http_config.h>
#include <http_log.h>
#include <ap_socache.h>
#include <apr_hash.h>

#include "agent_loop.h"
#include "bridge.h"
#include "fleet.h"
#include "stats.h"

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
} aib_glue_server_conf_t;

typedef struct {
    apr_off_t max_body;               /* -1: unset */
    /* AIBridgeInjectTools: MCP server names (none: an empty array); NULL:
     * unset, the provider's mcp= applies. */
    apr_array_header_t *inject;
    int max_tool_iterations;          /* 0: unset */
} aib_glue_dir_conf_t;

static inline aib_glue_server_conf_t *aib_glue_server_conf(const server_rec *s)
{
    return ap_get_module_config(s->module_config, &aibridge_module);
}

/* ---- mod_aibridge_config.c: directives, merging, whole-configuration checks ---- */

extern const command_rec aib_glue_cmds[];
void *aib_glue_create_server_conf(apr_pool_t *p, server_rec *s);
void *aib_glue_merge_server_conf(apr_pool_t *p, void *basev, void *addv);
void *aib_glue_create_dir_conf(apr_pool_t *p, char *dir);
void *aib_glue_merge_dir_conf(apr_pool_t *p, void *basev, void *addv);
int aib_glue_check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                          server_rec *s);
/* "host:port": how pages, metrics and counter records name a server. */
const char *aib_glue_server_label(apr_pool_t *p, const server_rec *s);

/* ---- mod_aibridge_shm.c: the shared-memory segments, kept across restarts ---- */

/* This generation's fleet sync state, NULL without AIBridgeSharedState. */
extern aib_fleet_shared_t *aib_glue_fleet_shared;
/* This generation's MCP tool-call counters. */
extern aib_toolstore_t *aib_glue_tool_stats;
/* Places keys, provider counters, fleet state and tool counters. */
apr_status_t aib_glue_shm_place(server_rec *s, apr_pool_t *ptemp);
/* Every pool of every server. */
apr_array_header_t *aib_glue_all_pools(apr_pool_t *p, server_rec *s);

/* ---- mod_aibridge_sync.c: the fleet sync thread ---- */

void aib_glue_sync_start(apr_pool_t *pchild, server_rec *s);

/* ---- mod_aibridge_log.c: request variables and the usage log ---- */

/* The usage-log mutex, by the name the Mutex directive knows it. */
#define AIB_GLUE_USAGE_MUTEX "aibridge-usage"
int aib_glue_open_logs(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s);
apr_status_t aib_glue_usage_mutex_create(apr_pool_t *pconf, server_rec *s);
void aib_glue_usage_mutex_child_init(apr_pool_t *pchild, server_rec *s);
/* What the interception did: request variables for LogFormat, and a line
 * in the usage log. */
void aib_glue_record(request_rec *r, const aib_interception_t *ic, const aib_agent_t *agent,
                     const char *id, apr_time_t start, apr_size_t bytes_in);

/* ---- mod_aibridge_handler.c: requests through the bridge ---- */

int aib_glue_translate_name(request_rec *r);
int aib_glue_map_to_storage(request_rec *r);
int aib_glue_handler(request_rec *r);
/* The child's upstream transport and MCP clients. */
apr_status_t aib_glue_handler_child_init(apr_pool_t *pchild, server_rec *s);

/* ---- mod_aibridge_status.c: status page, metrics, mod_status's section ---- */

/* A fresh status page nonce per server and configuration. */
int aib_glue_status_nonces(apr_pool_t *pconf, server_rec *s);
int aib_glue_status_handler(request_rec *r);
int aib_glue_metrics_handler(request_rec *r);
int aib_glue_status_hook(request_rec *r, int flags);

#endif
