/* mod_aibridge's record of each interception: request variables for
 * LogFormat, and one JSON line per interception in AIBridgeUsageLog. */
#include <string.h>
#include <json.h>

#include <http_core.h>
#include <http_protocol.h>
#include <apr_global_mutex.h>
#include <util_mutex.h>
#include <apr_strings.h>

#include "util.h"

#include "mod_aibridge.h"

/* Serialises the usage-log lines of all children (write_usage_line). */
static apr_global_mutex_t *usage_log_mutex;

apr_status_t aib_glue_usage_mutex_create(apr_pool_t *pconf, server_rec *s)
{
    return ap_global_mutex_create(&usage_log_mutex, NULL, AIB_GLUE_USAGE_MUTEX, NULL, s,
                                  pconf, 0);
}

void aib_glue_usage_mutex_child_init(apr_pool_t *pchild, server_rec *s)
{
    if (usage_log_mutex
        && apr_global_mutex_child_init(&usage_log_mutex,
                                       apr_global_mutex_lockfile(usage_log_mutex),
                                       pchild) != APR_SUCCESS)
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "cannot attach the usage-log mutex");
}

/* The parent opens the usage logs, as mod_log_config does its logs: files
 * are written by every child, pipes (rotatelogs) are started once. A
 * virtual host without its own log shares the main server's. */
int aib_glue_open_logs(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                       server_rec *s)
{
    const aib_glue_server_conf_t *main_sc = aib_glue_server_conf(s);
    server_rec *vs;

    (void)plog; (void)ptemp;
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG)
        return OK;
    for (vs = s; vs; vs = vs->next) {
        aib_glue_server_conf_t *sc = aib_glue_server_conf(vs);
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

static void set_env_number(request_rec *r, const char *name, int64_t value)
{
    apr_table_setn(r->subprocess_env, name, apr_psprintf(r->pool, "%" APR_INT64_T_FMT, value));
}

static json_object *json_string_or_null(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
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

void aib_glue_record(request_rec *r, const aib_interception_t *ic, const aib_agent_t *agent,
                     const char *id, apr_time_t start, apr_size_t bytes_in)
{
    const aib_glue_server_conf_t *sc = aib_glue_server_conf(r->server);
    apr_table_t *env = r->subprocess_env;
    const aib_usage_t *u = &ic->usage;
    int64_t start_ms = apr_time_as_msec(start), end_ms = aib_now_ms();
    int64_t ttfb = ic->first_byte_ms ? ic->first_byte_ms - start_ms : -1;
    const char *credential = ic->client_key ? "byok" : "pool";
    json_object *rec, *tried, *tools;
    const char *line;
    int i;

    apr_table_setn(env, "AIBRIDGE_ID", id);
    if (ic->provider && ic->provider->name)
        apr_table_setn(env, "AIBRIDGE_PROVIDER", ic->provider->name);
    if (ic->route.name)
        apr_table_setn(env, "AIBRIDGE_ROUTE", ic->route.name);
    if (ic->model)
        apr_table_setn(env, "AIBRIDGE_MODEL", ic->model);
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
    json_object_object_add(rec, "start", json_object_new_string(aib_time_rfc3339(r->pool,
                                                                                 start_ms)));
    json_object_object_add(rec, "end", json_object_new_string(aib_time_rfc3339(r->pool, end_ms)));
    /* In whole milliseconds like ttfb_ms and the times shown: end - start. */
    json_object_object_add(rec, "duration_ms", json_object_new_int64(end_ms - start_ms));
    json_object_object_add(rec, "ttfb_ms", ttfb >= 0 ? json_object_new_int64(ttfb) : NULL);
    json_object_object_add(rec, "user", json_string_or_null(r->user));
    json_object_object_add(rec, "client", json_string_or_null(r->useragent_ip));
    json_object_object_add(rec, "provider",
                           json_string_or_null(ic->provider ? ic->provider->name : NULL));
    json_object_object_add(rec, "route", json_string_or_null(ic->route.name));
    json_object_object_add(rec, "model", json_string_or_null(ic->model));
    json_object_object_add(rec, "stream", json_object_new_boolean(ic->stream));
    json_object_object_add(rec, "credential", json_object_new_string(credential));
    json_object_object_add(rec, "key", json_string_or_null(ic->attempts ? ic->key_hint : NULL));
    tried = json_object_new_array();
    for (i = 0; i < ic->tried->nelts; i++)
        json_object_array_add(tried, json_object_new_string(APR_ARRAY_IDX(ic->tried, i,
                                                                          const char *)));
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
        json_object_array_add(tools, json_object_new_string(APR_ARRAY_IDX(u->tools, i,
                                                                          const char *)));
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
