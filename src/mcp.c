/* MCP client over Streamable HTTP (see mcp.h).
 *
 * Design notes:
 * - The mutex guards only the session and the cached list; every exchange
 *   runs without it, so a slow server delays only the thread that asked it,
 *   and each server has its own client and mutex.
 * - A tool list lives in its own unmanaged pool (its own allocator, so
 *   creating and freeing it needs no lock on a shared parent) with a
 *   reference count: the client holds one reference while the list is
 *   current, and each request pool that was handed it holds one until that
 *   pool is cleared. A refetch thus never frees a list in use.
 * - The session id changes over the client's life, so it is malloc'd and
 *   freed rather than left to accumulate in the long-lived pool. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <json.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <apr_uri.h>

#include "buffer.h"
#include "config.h"
#include "headers.h"
#include "hint.h"
#include "mcp.h"
#include "provider.h"
#include "sse.h"

#define MCP_CONNECT_TIMEOUT_MS INT64_C(10000)
#define MCP_LIST_TIMEOUT_MS INT64_C(30000)
/* A server whose cursors never end must not keep a thread forever. */
#define MCP_MAX_PAGES 100

/* ---- AIBridgeMCPServer ------------------------------------------------- */

static apr_status_t free_regex(void *re)
{
    regfree(re);
    return APR_SUCCESS;
}

static const char *parse_regex(apr_pool_t *p, const char *option, const char *pattern,
                               regex_t **out)
{
    regex_t *re = apr_pcalloc(p, sizeof(*re));
    int rc = regcomp(re, pattern, REG_EXTENDED | REG_NOSUB);
    char msg[160];

    if (rc) {
        regerror(rc, re, msg, sizeof(msg));
        return apr_psprintf(p, "%s=%s: %s", option, pattern, msg);
    }
    apr_pool_cleanup_register(p, re, free_regex, apr_pool_cleanup_null);
    *out = re;
    return NULL;
}

/* RFC 9110 token characters. */
static int valid_header_name(const char *name, apr_size_t len)
{
    apr_size_t i;

    for (i = 0; i < len; i++)
        if (!isalnum((unsigned char)name[i]) && !strchr("!#$%&'*+-.^_`|~", name[i]))
            return 0;
    return len > 0;
}

/* Error messages name the header at most: its value may be a secret. */
static const char *parse_header(apr_pool_t *p, aib_mcp_server_t *s, const char *arg)
{
    static const char *const reserved[] = {
        "Accept", "Content-Type", "Content-Length", "Mcp-Session-Id", "MCP-Protocol-Version"
    };
    const char *colon = strchr(arg, ':'), *value;
    const char *name;
    size_t i;

    if (!colon || !valid_header_name(arg, (apr_size_t)(colon - arg)))
        return "header= takes <Name>:<value> with a header name of token characters";
    name = apr_pstrmemdup(p, arg, (apr_size_t)(colon - arg));
    for (i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        if (!strcasecmp(name, reserved[i]))
            return apr_psprintf(p, "header=%s: set by the module itself", name);
    value = colon + 1;
    while (*value == ' ' || *value == '\t')
        value++;
    if (!strncmp(value, "env:", 4)) {
        const char *var = value + 4;
        if (!*var)
            return apr_psprintf(p, "header=%s: env: needs a variable name", name);
        value = getenv(var);
        if (!value)
            return apr_psprintf(p, "header=%s: environment variable %s is not set", name, var);
    }
    if (!*value)
        return apr_psprintf(p, "header=%s: empty value", name);
    if (strpbrk(value, "\r\n"))
        return apr_psprintf(p, "header=%s: the value holds a line break", name);
    apr_table_add(s->headers, name, value);
    return NULL;
}

/* Unlike a provider's base URL the endpoint is taken as written: a trailing
 * slash or a query may be what the server expects. */
static const char *parse_endpoint(apr_pool_t *p, const char *value, const char **out)
{
    apr_uri_t uri;

    if (apr_uri_parse(p, value, &uri) != APR_SUCCESS || !uri.scheme || !uri.hostname
        || !*uri.hostname || (strcasecmp(uri.scheme, "http") && strcasecmp(uri.scheme, "https"))
        || uri.fragment)
        return apr_psprintf(p, "URL '%s' is not an http:// or https:// URL",
                            aib_arg_hint(p, value));
    *out = apr_pstrdup(p, value);
    return NULL;
}

const char *aib_mcp_server_parse(apr_pool_t *p, int argc, char *const argv[],
                                 aib_mcp_server_t **out)
{
    aib_mcp_server_t *s;
    const char *err;
    int i;

    if (argc < 2)
        return "takes a name, a URL and options";
    s = apr_pcalloc(p, sizeof(*s));
    if (!aib_valid_name(argv[0]))
        return apr_psprintf(p, "MCP server name '%s' must match [a-z0-9]+(-[a-z0-9]+)*",
                            aib_arg_hint(p, argv[0]));
    s->name = apr_pstrdup(p, argv[0]);
    err = parse_endpoint(p, argv[1], &s->url);
    if (err)
        return err;
    s->headers = apr_table_make(p, 4);
    s->tools_ttl_ms = AIB_MCP_TOOLS_TTL_MS;
    s->max_answer = AIB_MCP_MAX_ANSWER;
    for (i = 2; i < argc; i++) {
        const char *eq = strchr(argv[i], '='), *value;
        char *option;

        if (!eq || eq == argv[i])
            return apr_psprintf(p, "'%s' is not option=value", aib_arg_hint(p, argv[i]));
        option = apr_pstrmemdup(p, argv[i], (apr_size_t)(eq - argv[i]));
        value = eq + 1;
        if (!strcmp(option, "header"))
            err = parse_header(p, s, value);
        else if (!strcmp(option, "allow"))
            err = parse_regex(p, option, value, &s->allow);
        else if (!strcmp(option, "deny"))
            err = parse_regex(p, option, value, &s->deny);
        else if (!strcmp(option, "tools-ttl")) {
            err = aib_parse_seconds(value, &s->tools_ttl_ms);
            if (err)
                err = apr_psprintf(p, "tools-ttl=%s: %s", value, err);
        }
        else
            err = apr_psprintf(p, "unknown option '%s'", option);
        if (err)
            return err;
    }
    *out = s;
    return NULL;
}

/* ---- client state ------------------------------------------------------ */

typedef struct {
    apr_pool_t *pool;              /* unmanaged; holds this struct too */
    apr_array_header_t *tools;     /* of aib_mcp_tool_t */
    int refs;
} tool_list_t;

struct aib_mcp_client {
    const aib_mcp_server_t *server;
    apr_thread_mutex_t *lock;
    /* Guarded by lock: */
    int initialized;
    char *session_id;              /* malloc'd; NULL: the server gave none */
    char *protocol_version;        /* malloc'd; the negotiated one */
    int64_t next_id;
    tool_list_t *current;          /* NULL: none */
    int64_t refetch_ms;            /* when the list is to be fetched again */
    int fetching;
    int failing;                   /* the current outage was reported */
};

/* Called with the lock held. */
static void list_release(tool_list_t *list)
{
    if (list && --list->refs == 0)
        apr_pool_destroy(list->pool);
}

static apr_status_t client_cleanup(void *data)
{
    aib_mcp_client_t *c = data;

    list_release(c->current);
    c->current = NULL;
    free(c->session_id);
    free(c->protocol_version);
    c->session_id = c->protocol_version = NULL;
    return APR_SUCCESS;
}

aib_mcp_client_t *aib_mcp_client_create(apr_pool_t *pool, const aib_mcp_server_t *server)
{
    aib_mcp_client_t *c = apr_pcalloc(pool, sizeof(*c));

    c->server = server;
    if (apr_thread_mutex_create(&c->lock, APR_THREAD_MUTEX_DEFAULT, pool) != APR_SUCCESS)
        return NULL;
    apr_pool_cleanup_register(pool, c, client_cleanup, apr_pool_cleanup_null);
    return c;
}

/* ---- one JSON-RPC exchange --------------------------------------------- */

typedef struct {
    const aib_mcp_server_t *server;
    apr_pool_t *p;
    int64_t id;                    /* of the request; 0 for a notification */
    int status;
    const char *session_id;        /* Mcp-Session-Id of the answer */
    aib_sse_parser_t *sse;         /* NULL: a JSON answer */
    aib_buffer_t json;             /* JSON answer so far */
    apr_size_t total;              /* bytes read, SSE included */
    int too_large;
    json_object *response;         /* the response to `id`, once seen */
    const aib_mcp_wait_t *wait;
} answer_t;

static apr_status_t put_json(void *obj)
{
    json_object_put(obj);
    return APR_SUCCESS;
}

/* Parses one JSON value, nothing but space after it; `text` is
 * NUL-terminated at len. The object is freed with pool p. */
static json_object *parse_json(apr_pool_t *p, const char *text, apr_size_t len)
{
    json_tokener *tok = json_tokener_new();
    json_object *obj;
    const char *rest;

    if (!tok)
        return NULL;
    obj = json_tokener_parse_ex(tok, text, (int)len);
    rest = text + json_tokener_get_parse_end(tok);
    if (obj && (json_tokener_get_error(tok) != json_tokener_success
                || rest[strspn(rest, " \t\r\n")])) {
        json_object_put(obj);
        obj = NULL;
    }
    json_tokener_free(tok);
    if (obj)
        apr_pool_cleanup_register(p, obj, put_json, apr_pool_cleanup_null);
    return obj;
}

/* Whether a JSON-RPC message is the response to request `id`. */
static int is_response_to(json_object *msg, int64_t id)
{
    json_object *jid;

    return json_object_is_type(msg, json_type_object)
        && json_object_object_get_ex(msg, "id", &jid) && json_object_is_type(jid, json_type_int)
        && json_object_get_int64(jid) == id
        && (json_object_object_get_ex(msg, "result", NULL)
            || json_object_object_get_ex(msg, "error", NULL));
}

/* Server notifications and requests on the stream are not answered: this
 * client offers no capabilities that would need it. */
static int on_event(void *ctx, const char *event, const char *data, apr_size_t len)
{
    answer_t *a = ctx;
    json_object *msg;

    if (event && strcmp(event, "message"))
        return 0;
    msg = parse_json(a->p, data, len);
    if (msg && is_response_to(msg, a->id)) {
        a->response = msg;
        return 1;                   /* the rest of the stream is not needed */
    }
    return 0;
}

static int on_response(void *ctx, int status, apr_table_t *headers)
{
    answer_t *a = ctx;

    a->status = status;
    a->session_id = apr_table_get(headers, "Mcp-Session-Id");
    if (aib_is_event_stream(headers))
        a->sse = aib_sse_parser_create(a->p, a->server->max_answer, on_event, a);
    return 0;
}

static int on_data(void *ctx, const char *data, apr_size_t len)
{
    answer_t *a = ctx;

    if (len > a->server->max_answer - a->total) {
        a->too_large = 1;
        return 1;
    }
    a->total += len;
    if (a->sse)
        return aib_sse_feed(a->sse, data, len) != AIB_SSE_OK;
    aib_buffer_append(&a->json, a->p, data, len);
    return 0;
}

static int on_tick(void *ctx)
{
    const answer_t *a = ctx;

    return a->wait->tick(a->wait->ctx);
}

/* POSTs one JSON-RPC message. NULL on success (a->response set when `id`
 * is non-zero), else an error message. */
static const char *post(const aib_mcp_server_t *s, aib_transport_t *t, apr_pool_t *p,
                        const char *what, const char *body, int64_t id,
                        const char *session_id, const char *version, int64_t timeout_ms,
                        const aib_mcp_wait_t *wait, answer_t *a)
{
    aib_upstream_request_t req;
    aib_upstream_handler_t handler = { a, on_response, on_data, wait ? on_tick : NULL };
    apr_table_t *headers = apr_table_copy(p, s->headers);
    const char *error = NULL;
    aib_xfer_result_e rc;

    memset(a, 0, sizeof(*a));
    a->wait = wait;
    a->server = s;
    a->p = p;
    a->id = id;
    apr_table_setn(headers, "Accept", "application/json, text/event-stream");
    apr_table_setn(headers, "Content-Type", "application/json");
    if (session_id)
        apr_table_setn(headers, "Mcp-Session-Id", session_id);
    if (version)
        apr_table_setn(headers, "MCP-Protocol-Version", version);
    memset(&req, 0, sizeof(req));
    req.method = "POST";
    req.url = s->url;
    req.headers = headers;
    req.body = body;
    req.body_len = strlen(body);
    req.connect_timeout_ms = timeout_ms && timeout_ms < MCP_CONNECT_TIMEOUT_MS
                             ? timeout_ms : MCP_CONNECT_TIMEOUT_MS;
    req.timeout_ms = timeout_ms;

    rc = t->perform(t, p, &req, &handler, &error);
    if (a->too_large)
        return apr_psprintf(p, "%s: answer larger than %" APR_SIZE_T_FMT " bytes", what,
                            s->max_answer);
    if (a->response)
        return NULL;
    if (rc == AIB_XFER_TIMEOUT)
        return apr_psprintf(p, "%s: timed out (%s)", what, error ? error : "no answer");
    if (rc != AIB_XFER_OK)
        return apr_psprintf(p, "%s: %s", what, error ? error : "transfer failed");
    if (a->status < 200 || a->status > 299)
        return apr_psprintf(p, "%s: HTTP %d", what, a->status);
    if (!id)
        return NULL;
    if (!a->sse) {
        json_object *msg = a->json.data ? parse_json(p, a->json.data, a->json.len) : NULL;
        if (msg && is_response_to(msg, id)) {
            a->response = msg;
            return NULL;
        }
    }
    return apr_psprintf(p, "%s: no JSON-RPC response in the answer", what);
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* initialize, then notifications/initialized; the session is then shared
 * by every thread. */
static const char *handshake(aib_mcp_client_t *c, aib_transport_t *t, apr_pool_t *p,
                             int64_t timeout_ms)
{
    const aib_mcp_server_t *s = c->server;
    json_object *result, *version;
    const char *err, *session, *negotiated;
    int64_t id;
    answer_t a;

    apr_thread_mutex_lock(c->lock);
    id = ++c->next_id;
    apr_thread_mutex_unlock(c->lock);
    err = post(s, t, p, "initialize",
               apr_psprintf(p, "{\"jsonrpc\":\"2.0\",\"id\":%" APR_INT64_T_FMT ",\"method\":"
                            "\"initialize\",\"params\":{\"protocolVersion\":\""
                            AIB_MCP_PROTOCOL_VERSION "\",\"capabilities\":{},\"clientInfo\":"
                            "{\"name\":\"mod_aibridge\",\"version\":\"1\"}}}", (apr_int64_t)id),
               id, NULL, NULL, timeout_ms, NULL, &a);
    if (err)
        return err;
    if (!json_object_object_get_ex(a.response, "result", &result)
        || !json_object_object_get_ex(result, "protocolVersion", &version)
        || !json_object_is_type(version, json_type_string)
        || !*json_object_get_string(version))
        return "initialize: the server refused or gave no protocolVersion";
    session = a.session_id ? apr_pstrdup(p, a.session_id) : NULL;
    negotiated = apr_pstrdup(p, json_object_get_string(version));
    err = post(s, t, p, "notifications/initialized",
               "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}",
               0, session, negotiated, timeout_ms, NULL, &a);
    if (err)
        return err;
    apr_thread_mutex_lock(c->lock);
    free(c->session_id);
    free(c->protocol_version);
    c->session_id = dup_or_null(session);
    c->protocol_version = strdup(negotiated);
    c->initialized = 1;
    apr_thread_mutex_unlock(c->lock);
    return NULL;
}

/* Sends a request in the shared session, initializing one first when there
 * is none and once more when the server says (404) that it has expired.
 * NULL and *response set, or an error message. */
static const char *request(aib_mcp_client_t *c, aib_transport_t *t, apr_pool_t *p,
                           const char *method, const char *params_json, int64_t timeout_ms,
                           const aib_mcp_wait_t *wait, json_object **response)
{
    const char *err, *session, *version;
    int attempt, initialized;
    int64_t id;
    answer_t a;

    /* Every path returns by the second attempt. */
    for (attempt = 0;; attempt++) {
        apr_thread_mutex_lock(c->lock);
        initialized = c->initialized;
        apr_thread_mutex_unlock(c->lock);
        if (!initialized) {
            err = handshake(c, t, p, timeout_ms);
            if (err)
                return err;
            attempt++;               /* a fresh session gets no second one */
        }
        apr_thread_mutex_lock(c->lock);
        id = ++c->next_id;
        session = c->session_id ? apr_pstrdup(p, c->session_id) : NULL;
        version = apr_pstrdup(p, c->protocol_version);
        apr_thread_mutex_unlock(c->lock);
        err = post(c->server, t, p, method,
                   apr_psprintf(p, "{\"jsonrpc\":\"2.0\",\"id\":%" APR_INT64_T_FMT
                                ",\"method\":\"%s\",\"params\":%s}", (apr_int64_t)id,
                                method, params_json), id, session, version, timeout_ms,
                   wait, &a);
        if (!err) {
            *response = a.response;
            return NULL;
        }
        /* The spec says 404; the SDK's example servers (server-everything)
         * say 400 for a session they no longer know. */
        if ((a.status != 404 && a.status != 400) || !session || attempt)
            return err;
        /* Unless another thread has already replaced it. */
        apr_thread_mutex_lock(c->lock);
        if (c->session_id && !strcmp(c->session_id, session))
            c->initialized = 0;
        apr_thread_mutex_unlock(c->lock);
    }
}

/* The JSON-RPC error of a response as a message, or NULL. */
static const char *rpc_error(apr_pool_t *p, const char *method, json_object *response)
{
    json_object *error, *message, *code;

    if (!json_object_object_get_ex(response, "error", &error))
        return NULL;
    json_object_object_get_ex(error, "message", &message);
    json_object_object_get_ex(error, "code", &code);
    return apr_psprintf(p, "%s: error %d: %s", method, code ? json_object_get_int(code) : 0,
                        message ? json_object_get_string(message) : "(no message)");
}

/* ---- tools/list -------------------------------------------------------- */

static int tool_wanted(const aib_mcp_server_t *s, const char *name)
{
    if (s->deny && !regexec(s->deny, name, 0, NULL, 0))
        return 0;
    return !s->allow || !regexec(s->allow, name, 0, NULL, 0);
}

static const char *json_text(json_object *obj)
{
    return json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN
                                               | JSON_C_TO_STRING_NOSLASHESCAPE);
}

/* Adds the wanted tools of one tools/list result to `list`; sets *cursor
 * to the next page's cursor or NULL. */
static const char *add_page(const aib_mcp_server_t *s, tool_list_t *list, json_object *result,
                            const char **cursor, apr_pool_t *p)
{
    json_object *tools, *next;
    size_t i, n;

    if (!json_object_object_get_ex(result, "tools", &tools)
        || !json_object_is_type(tools, json_type_array))
        return "tools/list: the result has no tools array";
    n = json_object_array_length(tools);
    for (i = 0; i < n; i++) {
        json_object *tool = json_object_array_get_idx(tools, i), *name, *desc, *schema;
        aib_mcp_tool_t *out;

        if (!json_object_object_get_ex(tool, "name", &name)
            || !json_object_is_type(name, json_type_string)
            || !tool_wanted(s, json_object_get_string(name)))
            continue;
        out = apr_array_push(list->tools);
        out->name = apr_pstrdup(list->pool, json_object_get_string(name));
        out->description = json_object_object_get_ex(tool, "description", &desc)
                           && json_object_is_type(desc, json_type_string)
                           ? apr_pstrdup(list->pool, json_object_get_string(desc)) : "";
        out->input_schema = json_object_object_get_ex(tool, "inputSchema", &schema)
                            && json_object_is_type(schema, json_type_object)
                            ? apr_pstrdup(list->pool, json_text(schema))
                            : "{\"type\":\"object\"}";
    }
    *cursor = json_object_object_get_ex(result, "nextCursor", &next)
              && json_object_is_type(next, json_type_string) && *json_object_get_string(next)
              ? apr_pstrdup(p, json_object_get_string(next)) : NULL;
    return NULL;
}

/* Out of memory, like APR's own pools without an abort function. */
static int abort_fn(int status)
{
    (void)status;
    abort();
}

/* The full filtered list, or NULL and *error. Work objects go to `p`. */
static tool_list_t *fetch_tools(aib_mcp_client_t *c, aib_transport_t *t, apr_pool_t *p,
                                const char **error)
{
    const char *cursor = NULL, *err = NULL;
    apr_pool_t *lp;
    tool_list_t *list;
    json_object *response, *result;
    int page;

    apr_pool_create_unmanaged_ex(&lp, abort_fn, NULL);
    list = apr_pcalloc(lp, sizeof(*list));
    list->pool = lp;
    list->tools = apr_array_make(lp, 16, sizeof(aib_mcp_tool_t));
    list->refs = 1;
    for (page = 0; !err && page < MCP_MAX_PAGES; page++) {
        err = request(c, t, p, "tools/list",
                      cursor ? apr_pstrcat(p, "{\"cursor\":", aib_json_quote(p, cursor), "}",
                                           NULL) : "{}",
                      MCP_LIST_TIMEOUT_MS, NULL, &response);
        if (!err)
            err = rpc_error(p, "tools/list", response);
        if (!err && (!json_object_object_get_ex(response, "result", &result)
                     || !json_object_is_type(result, json_type_object)))
            err = "tools/list: no result object";
        if (!err)
            err = add_page(c->server, list, result, &cursor, p);
        if (!err && !cursor)
            return list;
    }
    apr_pool_destroy(lp);
    *error = apr_psprintf(p, "MCP server '%s': %s", c->server->name,
                          err ? err : apr_psprintf(p, "tools/list: more than %d pages",
                                                   MCP_MAX_PAGES));
    return NULL;
}

typedef struct {
    aib_mcp_client_t *client;
    tool_list_t *list;
} list_ref_t;

static apr_status_t release_ref(void *data)
{
    list_ref_t *ref = data;

    apr_thread_mutex_lock(ref->client->lock);
    list_release(ref->list);
    apr_thread_mutex_unlock(ref->client->lock);
    return APR_SUCCESS;
}

/* Called with the lock held: the current list, referenced until p is
 * cleared. */
static const apr_array_header_t *hand_out(aib_mcp_client_t *c, apr_pool_t *p)
{
    list_ref_t *ref;

    if (!c->current)
        return apr_array_make(p, 1, sizeof(aib_mcp_tool_t));
    ref = apr_palloc(p, sizeof(*ref));
    ref->client = c;
    ref->list = c->current;
    c->current->refs++;
    apr_pool_cleanup_register(p, ref, release_ref, apr_pool_cleanup_null);
    return c->current->tools;
}

const apr_array_header_t *aib_mcp_tools(aib_mcp_client_t *c, aib_transport_t *t,
                                        apr_pool_t *p, int64_t now_ms, const char **failure)
{
    const apr_array_header_t *tools;
    const char *err = NULL;
    tool_list_t *list;

    *failure = NULL;
    apr_thread_mutex_lock(c->lock);
    if (c->fetching || now_ms < c->refetch_ms) {
        tools = hand_out(c, p);
        apr_thread_mutex_unlock(c->lock);
        return tools;
    }
    c->fetching = 1;
    apr_thread_mutex_unlock(c->lock);

    list = fetch_tools(c, t, p, &err);

    apr_thread_mutex_lock(c->lock);
    c->fetching = 0;
    list_release(c->current);
    c->current = list;
    if (list) {
        c->refetch_ms = now_ms + c->server->tools_ttl_ms;
        c->failing = 0;
    }
    else {
        /* A server that failed may have restarted: the retry starts afresh. */
        c->initialized = 0;
        c->refetch_ms = now_ms + AIB_MCP_RETRY_MS;
        if (!c->failing)
            *failure = err;
        c->failing = 1;
    }
    tools = hand_out(c, p);
    apr_thread_mutex_unlock(c->lock);
    return tools;
}

/* ---- tools/call -------------------------------------------------------- */

static void call_failed(apr_pool_t *p, const aib_mcp_server_t *s, const char *tool,
                        const char *err, aib_mcp_result_t *out)
{
    out->failure = apr_psprintf(p, "MCP server '%s': tool %s: %s", s->name, tool, err);
    out->text = out->failure;
    out->is_error = 1;
}

void aib_mcp_call(aib_mcp_client_t *c, aib_transport_t *t, apr_pool_t *p, const char *tool,
                  const char *arguments_json, int64_t timeout_ms, const aib_mcp_wait_t *wait,
                  aib_mcp_result_t *out)
{
    json_object *args = NULL, *response, *result, *content, *is_error;
    const char *err;
    size_t i, n;

    memset(out, 0, sizeof(*out));
    if (arguments_json && *arguments_json) {
        args = parse_json(p, arguments_json, strlen(arguments_json));
        if (!json_object_is_type(args, json_type_object)) {
            call_failed(p, c->server, tool, "the arguments are not a JSON object", out);
            return;
        }
    }
    err = request(c, t, p, "tools/call",
                  apr_pstrcat(p, "{\"name\":", aib_json_quote(p, tool), ",\"arguments\":",
                              args ? json_text(args) : "{}", "}", NULL),
                  timeout_ms, wait, &response);
    if (!err)
        err = rpc_error(p, "tools/call", response);
    if (!err && (!json_object_object_get_ex(response, "result", &result)
                 || !json_object_object_get_ex(result, "content", &content)
                 || !json_object_is_type(content, json_type_array)))
        err = "tools/call: the result has no content array";
    if (err) {
        call_failed(p, c->server, tool, err, out);
        return;
    }
    out->text = "";
    n = json_object_array_length(content);
    for (i = 0; i < n; i++) {
        json_object *item = json_object_array_get_idx(content, i), *type, *text;
        const char *piece =
            json_object_object_get_ex(item, "type", &type)
            && !strcmp(json_object_get_string(type), "text")
            && json_object_object_get_ex(item, "text", &text)
            ? json_object_get_string(text) : json_text(item);
        out->text = i ? apr_pstrcat(p, out->text, "\n", piece, NULL) : apr_pstrdup(p, piece);
    }
    out->is_error = json_object_object_get_ex(result, "isError", &is_error)
                    && json_object_get_boolean(is_error);
}
