/* Azure OpenAI: the OpenAI wire formats (provider_openai.h) at Azure's URLs,
 * keys in `api-key`, Entra ID tokens as `bearer:<token>` pool entries.
 *
 * Two URL shapes, chosen by the base URL:
 * - deployments (https://<resource>.openai.azure.com): chat completions at
 *   /openai/deployments/<deployment>/chat/completions, responses at
 *   /openai/responses with the deployment as the body's model, models at
 *   /openai/models; each with ?api-version=.
 * - v1 (a base URL ending in /openai/v1): <base>/chat/completions,
 *   <base>/responses, <base>/models, the deployment as the body's model,
 *   no api-version. */
#include <string.h>
#include <apr_escape.h>
#include <apr_strings.h>

#include "bridge.h"
#include "config.h"
#include "format.h"
#include "provider.h"
#include "provider_openai.h"

/* The newest dated version that serves chat completions and responses on
 * the deployments shape alike (responses came with 2025-03-01-preview). */
#define AZURE_DEFAULT_API_VERSION "2025-04-01-preview"

#define V1_SUFFIX "/openai/v1"
#define OPENAI_SUFFIX "/openai"

typedef struct {
    const char *api_version;   /* NULL: the default (deployments shape) */
    apr_table_t *deployments;  /* deployment-map=: client model -> deployment */
    int v1;                    /* the base URL ends in /openai/v1 */
} azure_conf_t;

static azure_conf_t *conf_of(apr_pool_t *p, aib_provider_t *pv)
{
    if (!pv->type_conf) {
        azure_conf_t *conf = apr_pcalloc(p, sizeof(*conf));
        conf->deployments = apr_table_make(p, 4);
        pv->type_conf = conf;
    }
    return pv->type_conf;
}

/* Dated versions ("2024-10-21", "2025-04-01-preview") and "preview"/"latest":
 * letters, digits, '-' and '.', nothing a query would need escaped. */
static int valid_api_version(const char *v)
{
    return *v && !v[strspn(v, "abcdefghijklmnopqrstuvwxyz"
                              "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")];
}

static const char *azure_option(apr_pool_t *p, aib_provider_t *pv, const char *key,
                                const char *value)
{
    azure_conf_t *conf;
    const char *eq, *model;

    if (!strcmp(key, "api-version")) {
        if (!valid_api_version(value))
            return apr_psprintf(p, "api-version=%s: takes a version such as %s", value,
                                AZURE_DEFAULT_API_VERSION);
        conf_of(p, pv)->api_version = value;
        return NULL;
    }
    if (strcmp(key, "deployment-map"))
        return aib_option_unknown;
    eq = strchr(value, '=');
    if (!eq || eq == value || !eq[1])
        return apr_psprintf(p, "deployment-map=%s: takes <model>=<deployment>", value);
    conf = conf_of(p, pv);
    model = apr_pstrmemdup(p, value, (apr_size_t)(eq - value));
    if (apr_table_get(conf->deployments, model))
        return apr_psprintf(p, "deployment-map=%s: model '%s' is mapped twice", value, model);
    apr_table_setn(conf->deployments, model, eq + 1);
    return NULL;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);

    return n >= m && !strcmp(s + n - m, suffix);
}

static const char *azure_options_done(apr_pool_t *p, aib_provider_t *pv)
{
    azure_conf_t *conf;

    if (!pv->base_url)
        return apr_psprintf(p, "provider '%s' of type azure needs its base URL, "
                            "https://<resource>.openai.azure.com", pv->name);
    /* The module adds /openai itself: given twice, every call would 404. */
    if (ends_with(pv->base_url, OPENAI_SUFFIX))
        return apr_psprintf(p, "provider '%s': base URL '%s' ends in %s: give the "
                            "resource's URL without it, or the v1 API's (ending in %s)",
                            pv->name, pv->base_url, OPENAI_SUFFIX, V1_SUFFIX);
    conf = conf_of(p, pv);
    conf->v1 = ends_with(pv->base_url, V1_SUFFIX);
    if (conf->v1 && conf->api_version)
        return apr_psprintf(p, "provider '%s': api-version= does not apply to a base URL "
                            "ending in %s (the v1 API takes none)", pv->name, V1_SUFFIX);
    if (!conf->v1 && !conf->api_version)
        conf->api_version = AZURE_DEFAULT_API_VERSION;
    return NULL;
}

/* OpenAI's routes, less those Azure's URLs have no place for without a
 * deployment (embeddings, moderations) or at all (conversations). Stored
 * responses (/v1/responses/<id>...) are at /openai/responses/<id>...; the
 * models can only be listed and read. */
static void azure_route(const char *method, const char *path, aib_route_t *out)
{
    aib_openai_route(method, path, out);
    if (out->kind != AIB_ROUTE_PASSTHROUGH || !strncmp(path, "/v1/responses/", 14))
        return;
    if (strncmp(path, "/v1/models", 10)) {
        memset(out, 0, sizeof(*out));
        return;
    }
    out->allow = "GET";
    out->method_allowed = !strcmp(method, "GET");
}

/* A pool entry "bearer:<token>", or the client's "Bearer <token>" (BYOK),
 * is an Entra ID token: the token, else NULL for an API key. */
static const char *bearer_token(const char *key)
{
    if (strncasecmp(key, "bearer", 6) || (key[6] != ':' && key[6] != ' '))
        return NULL;
    key += 7;
    while (*key == ' ')
        key++;
    return key;
}

static void azure_set_key(apr_pool_t *p, apr_table_t *headers, const char *key)
{
    const char *token = bearer_token(key);

    /* Whatever credential the client sent is replaced, never sent beside. */
    if (token) {
        apr_table_unset(headers, "api-key");
        apr_table_setn(headers, "Authorization", apr_pstrcat(p, "Bearer ", token, NULL));
    }
    else {
        apr_table_unset(headers, "Authorization");
        apr_table_setn(headers, "api-key", key);
    }
}

/* A BYOK client's api-key, else its whole "Bearer <token>", which
 * azure_set_key() then sends as it came. */
static const char *azure_client_key(const apr_table_t *headers)
{
    const char *key = apr_table_get(headers, "api-key");

    if (key && *key)
        return key;
    return aib_bearer_key(headers) ? apr_table_get(headers, "Authorization") : NULL;
}

/* The content filter refused the prompt: no key would do better. */
static aib_fault_e azure_classify(int status, const char *body, apr_size_t len)
{
    if (aib_json_member_is(body, len, "error", "code", "content_filter"))
        return AIB_FAULT_NONE;
    return aib_openai_classify(status, body, len);
}

/* The body with `model` set to the deployment, or NULL when it is no JSON
 * object (the request checks let only objects through). */
static const char *body_with_model(apr_pool_t *p, aib_outgoing_t *req, const char *model)
{
    json_object *obj = aib_json_parse_object(req->body, req->body_len);
    const char *text;

    if (!obj)
        return NULL;
    aib_json_set_string(obj, "model", model);
    text = aib_json_text(p, obj);
    json_object_put(obj);
    return text;
}

/* The query: api-version first unless the client named its own, then the
 * client's. */
static const char *query_of(apr_pool_t *p, const azure_conf_t *conf, const char *client)
{
    int named = client && (!strncmp(client, "api-version=", 12)
                           || strstr(client, "&api-version="));

    if (conf->v1 || named)
        return client ? apr_pstrcat(p, "?", client, NULL) : "";
    if (!client)
        return apr_pstrcat(p, "?api-version=", conf->api_version, NULL);
    return apr_pstrcat(p, "?api-version=", conf->api_version, "&", client, NULL);
}

static const char *azure_prepare(const aib_interception_t *ic, aib_outgoing_t *req)
{
    const aib_provider_t *pv = ic->provider;
    const azure_conf_t *conf = pv->type_conf;
    apr_pool_t *p = ic->pool;
    const char *path = req->url + strlen(pv->base_url);
    const char *query = strchr(path, '?');
    const char *deployment = NULL, *upstream;

    if (query)
        path = apr_pstrmemdup(p, path, (apr_size_t)(query++ - path));
    if (ic->route.kind == AIB_ROUTE_BRIDGED) {
        if (!ic->model || !*ic->model)
            return "model is required: it names the Azure deployment";
        deployment = apr_table_get(conf->deployments, ic->model);
        if (!deployment)
            deployment = ic->model;
    }
    /* "/v1/chat/completions" -> "/chat/completions" and so on. */
    upstream = path + 3;
    if (!conf->v1) {
        upstream = ic->route.format == &aib_format_chat
                   ? apr_pstrcat(p, "/openai/deployments/",
                                 apr_pescape_path_segment(p, deployment), upstream, NULL)
                   : apr_pstrcat(p, "/openai", upstream, NULL);
    }
    /* Only the deployments shape's chat reads the deployment from the path. */
    if (deployment && (conf->v1 || ic->route.format != &aib_format_chat)
        && strcmp(deployment, ic->model)) {
        const char *body = body_with_model(p, req, deployment);
        if (!body)
            return "the request body is not a JSON object";
        req->body = body;
        req->body_len = strlen(body);
    }
    req->url = apr_pstrcat(p, pv->base_url, upstream, query_of(p, conf, query), NULL);
    return NULL;
}

const aib_provider_ops_t aib_provider_azure = {
    .type = "azure",
    .default_base_url = NULL,   /* each resource has its own: required */
    .route = azure_route,
    .set_key = azure_set_key,
    .client_key = azure_client_key,
    .error_body = aib_openai_error_body,
    .error_code = aib_openai_error_code,
    .classify = azure_classify,
    .reset_headers = &aib_openai_resets,
    .stream_fault = aib_openai_stream_fault,
    .formats = aib_openai_formats,
    .option = azure_option,
    .options_done = azure_options_done,
    .prepare = azure_prepare,
};
