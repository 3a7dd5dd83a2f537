/* mod_aibridge: the httpd glue's module record and its hooks. Every
 * decision is made by the APR-only core in src/; the glue is split by
 * concern (mod_aibridge.h lists the files and what they share). */
#include <http_core.h>
#include <http_main.h>
#include <http_request.h>
#include <apr_optional_hooks.h>
#include <util_mutex.h>
#include <mod_status.h>

#include "mod_aibridge.h"

static int pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    (void)plog; (void)ptemp;
    return ap_mutex_register(pconf, AIB_GLUE_USAGE_MUTEX, NULL, APR_LOCK_DEFAULT, 0);
}

/* Places the shared memory, creates the usage-log mutex and gives every
 * server a fresh status page nonce. */
static int post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    apr_status_t rv;

    (void)plog;
    /* The first pass only checks the configuration. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG)
        return OK;
    rv = aib_glue_shm_place(s, ptemp);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_EMERG, rv, s, "cannot create shared memory");
        return !OK;
    }
    if (aib_glue_usage_mutex_create(pconf, s) != APR_SUCCESS)
        return !OK;
    return aib_glue_status_nonces(pconf, s);
}

static void child_init(apr_pool_t *pchild, server_rec *s)
{
    aib_glue_usage_mutex_child_init(pchild, s);
    if (aib_glue_handler_child_init(pchild, s) != APR_SUCCESS)
        return;
    if (aib_glue_fleet_shared)
        aib_glue_sync_start(pchild, s);
}

static void register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_pre_config(pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_check_config(aib_glue_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_open_logs(aib_glue_open_logs, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_translate_name(aib_glue_translate_name, NULL, NULL, APR_HOOK_LAST);
    ap_hook_map_to_storage(aib_glue_map_to_storage, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_handler(aib_glue_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(aib_glue_status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(aib_glue_metrics_handler, NULL, NULL, APR_HOOK_MIDDLE);
    APR_OPTIONAL_HOOK(ap, status_hook, aib_glue_status_hook, NULL, NULL, APR_HOOK_MIDDLE);
}

/* The one symbol the module exports; everything else is hidden. */
__attribute__((visibility("default")))
module AP_MODULE_DECLARE_DATA aibridge_module = {
    STANDARD20_MODULE_STUFF,
    aib_glue_create_dir_conf,
    aib_glue_merge_dir_conf,
    aib_glue_create_server_conf,
    aib_glue_merge_server_conf,
    aib_glue_cmds,
    register_hooks,
#if defined(AP_MODULE_FLAG_ALWAYS_MERGE)
    AP_MODULE_FLAG_NONE
#endif
};
