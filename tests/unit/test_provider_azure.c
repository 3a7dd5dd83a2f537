/* Unit tests for src/provider_azure.c: the upstream URL of both shapes,
 * the deployment map, the body's model, credentials (api-key, bearer:
 * entries, BYOK), routes and fault classification. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "unit.h"

#include <string.h>
#include <apr_strings.h>
#include <apr_tables.h>

#include "bridge.h"
#include "config.h"
#include "format.h"
#include "hint.h"
#include "provider.h"
#include "provider_openai.h"

#define RESOURCE "https://res.openai.azure.com"
#define V1_BASE RESOURCE "/openai/v1"
#define DEFAULT_VERSION "api-version=2025-04-01-preview"

#define ARGS(...) \
    (int)(sizeof((char *[]){ __VA_ARGS__ }) / sizeof(char *)), (char *[]){ __VA_ARGS__ }

/* An azure provider from AIBridgeProvider's arguments after name and type. */
#define AZURE(...) azure(ARGS("az", "azure", __VA_ARGS__))

static const aib_provider_t *azure(int argc, char *argv[])
{
    aib_provider_t *pv = NULL;

    assert_null(aib_provider_parse(pool, argc, argv, &pv));
    assert_ptr_equal(pv->ops, &aib_provider_azure);
    return pv;
}

typedef struct {
    const char *refusal;       /* what prepare() said, NULL: it went */
    aib_outgoing_t req;        /* the request as it goes upstream */
} prepared_t;

/* `method path_and_query` with `body` through pv's prepare(), as the
 * bridge calls it: the URL is the base URL + the client's path and query. */
static prepared_t prepare(const aib_provider_t *pv, const char *method,
                          const char *path_and_query, const char *body)
{
    aib_interception_t ic;
    prepared_t out;
    char *path = apr_pstrdup(pool, path_and_query), *query = strchr(path, '?');

    memset(&ic, 0, sizeof(ic));
    aib_interception_init(&ic, pool);
    ic.provider = pv;
    ic.method = method;
    ic.url = apr_pstrcat(pool, pv->base_url, path_and_query, NULL);
    ic.headers = apr_table_make(pool, 2);
    ic.body = body;
    ic.body_len = body ? strlen(body) : 0;
    if (query)
        *query = '\0';
    pv->ops->route(method, path, &ic.route);
    assert_int_not_equal(ic.route.kind, AIB_ROUTE_NONE);
    if (ic.route.kind == AIB_ROUTE_BRIDGED) {
        json_object *obj = aib_json_parse_object(body, ic.body_len);
        ic.model = aib_json_strdup(pool, obj, "model");
        json_object_put(obj);
    }
    out.req.method = ic.method;
    out.req.url = ic.url;
    out.req.headers = apr_table_copy(pool, ic.headers);
    out.req.body = ic.body;
    out.req.body_len = ic.body_len;
    out.refusal = pv->ops->prepare(&ic, &out.req);
    return out;
}

static prepared_t post(const aib_provider_t *pv, const char *path, const char *body)
{
    prepared_t out = prepare(pv, "POST", path, body);

    assert_null(out.refusal);
    assert_int_equal(out.req.body_len, strlen(out.req.body));
    return out;
}

/* The model of the body as sent. */
static const char *sent_model(const prepared_t *out)
{
    json_object *obj = aib_json_parse_object(out->req.body, out->req.body_len);
    const char *model = aib_json_strdup(pool, obj, "model");

    json_object_put(obj);
    return model;
}

static const char *const CHAT_BODY = "{\"model\":\"gpt-4o-mini\",\"messages\":[]}";
static const char *const RESPONSES_BODY = "{\"model\":\"gpt-4o-mini\",\"input\":\"Hi\"}";


/* ---- the deployments shape --------------------------------------------- */

/* The model names the deployment, in the path; the body goes as it came. */
static void test_deployments_chat(void **state)
{
    const aib_provider_t *pv = AZURE(RESOURCE, "pool=p");
    prepared_t out = post(pv, "/v1/chat/completions", CHAT_BODY);

    (void)state;
    assert_string_equal(out.req.url, RESOURCE "/openai/deployments/gpt-4o-mini/chat/completions?"
                        DEFAULT_VERSION);
    assert_ptr_equal(out.req.body, CHAT_BODY);
    assert_string_equal(out.req.method, "POST");
}

/* deployment-map= names the deployment of a model, URL-escaped in the path;
 * a model without an entry is its own deployment. */
static void test_deployment_map(void **state)
{
    const aib_provider_t *pv = AZURE(RESOURCE, "pool=p", "deployment-map=gpt-4o-mini=prod mini/2",
                                     "deployment-map=gpt-4.1=gpt41");
    prepared_t out = post(pv, "/v1/chat/completions", CHAT_BODY);

    (void)state;
    assert_string_equal(out.req.url, RESOURCE "/openai/deployments/prod%20mini%2f2"
                        "/chat/completions?" DEFAULT_VERSION);
    assert_ptr_equal(out.req.body, CHAT_BODY);
    out = post(pv, "/v1/chat/completions", "{\"model\":\"o3\",\"messages\":[]}");
    assert_string_equal(out.req.url, RESOURCE "/openai/deployments/o3/chat/completions?"
                        DEFAULT_VERSION);
}

/* Responses: one URL for every deployment, which the body's model names. */
static void test_deployments_responses(void **state)
{
    const aib_provider_t *pv = AZURE(RESOURCE, "pool=p", "deployment-map=gpt-4o-mini=mini-eu");
    prepared_t out = post(pv, "/v1/responses", RESPONSES_BODY);

    (void)state;
    assert_string_equal(out.req.url, RESOURCE "/openai/responses?" DEFAULT_VERSION);
    assert_string_equal(sent_model(&out), "mini-eu");
    assert_non_null(strstr(out.req.body, "\"input\":\"Hi\""));
    /* Unmapped: the body goes as it came. */
    out = post(AZURE(RESOURCE, "pool=p"), "/v1/responses", RESPONSES_BODY);
    assert_ptr_equal(out.req.body, RESPONSES_BODY);
}

static void test_api_version_option(void **state)
{
    const aib_provider_t *pv = AZURE(RESOURCE, "pool=p", "api-version=2024-10-21");
    prepared_t out = post(pv, "/v1/chat/completions", CHAT_BODY);

    (void)state;
    assert_string_equal(out.req.url, RESOURCE "/openai/deployments/gpt-4o-mini/chat/completions"
                        "?api-version=2024-10-21");
}

/* The client's query follows api-version; a client naming its own version
 * keeps it. */
static void test_client_query(void **state)
{
    const aib_provider_t *pv = AZURE(RESOURCE, "pool=p");
    prepared_t out = prepare(pv, "GET", "/v1/models?limit=2", NULL);

    (void)state;
    assert_null(out.refusal);
    assert_string_equal(out.req.url, RESOURCE "/openai/models?" DEFAULT_VERSION "&limit=2");
    out = prepare(pv, "GET", "/v1/models/gpt-4o?api-version=2024-10-21", NULL);
    assert_string_equal(out.req.url, RESOURCE "/openai/models/gpt-4o?api-version=2024-10-21");
    out = prepare(pv, "GET", "/v1/models?x=1&api-version=2024-10-21", NULL);
    assert_string_equal(out.req.url, RESOURCE "/openai/models?x=1&api-version=2024-10-21");
    out = prepare(pv, "GET", "/v1/models?my-api-version=1", NULL);
    assert_string_equal(out.req.url, RESOURCE "/openai/models?" DEFAULT_VERSION
                        "&my-api-version=1");
}

/* Stored responses, at Azure's URL of responses. */
static void test_stored_responses(void **state)
{
    const aib_provider_t *pv = AZURE(RESOURCE, "pool=p");
    prepared_t out = prepare(pv, "GET", "/v1/responses/resp_1/input_items?limit=3", NULL);

    (void)state;
    assert_null(out.refusal);
    assert_string_equal(out.req.url, RESOURCE "/openai/responses/resp_1/input_items?"
                        DEFAULT_VERSION "&limit=3");
    out = prepare(AZURE(V1_BASE, "pool=p"), "DELETE", "/v1/responses/resp_1", NULL);
    assert_string_equal(out.req.url, V1_BASE "/responses/resp_1");
}

static void test_model_required(void **state)
{
    prepared_t out = prepare(AZURE(RESOURCE, "pool=p"), "POST", "/v1/chat/completions",
                             "{\"messages\":[]}");

    (void)state;
    assert_non_null(out.refusal);
    assert_non_null(strstr(out.refusal, "deployment"));
}


/* ---- the v1 shape ------------------------------------------------------- */

/* A base URL ending in /openai/v1: OpenAI's paths below it, no api-version,
 * the deployment as the body's model. */
static void test_v1_shape(void **state)
{
    const aib_provider_t *pv = AZURE(V1_BASE "/", "pool=p", "deployment-map=gpt-4o-mini=mini-v1");
    prepared_t out = post(pv, "/v1/chat/completions", CHAT_BODY);

    (void)state;
    assert_string_equal(out.req.url, V1_BASE "/chat/completions");
    assert_string_equal(sent_model(&out), "mini-v1");
    out = post(pv, "/v1/responses", RESPONSES_BODY);
    assert_string_equal(out.req.url, V1_BASE "/responses");
    assert_string_equal(sent_model(&out), "mini-v1");
    out = post(pv, "/v1/chat/completions", "{\"model\":\"o3\",\"messages\":[]}");
    assert_string_equal(out.req.url, V1_BASE "/chat/completions");
    assert_string_equal(sent_model(&out), "o3");
    out = prepare(pv, "GET", "/v1/models?limit=1", NULL);
    assert_string_equal(out.req.url, V1_BASE "/models?limit=1");
}


/* ---- credentials -------------------------------------------------------- */

static void test_api_key_header(void **state)
{
    apr_table_t *h = apr_table_make(pool, 4);

    (void)state;
    apr_table_setn(h, "api-key", "client-junk");
    aib_provider_azure.set_key(pool, h, "0123456789abcdef0123456789abcdef");
    assert_string_equal(apr_table_get(h, "api-key"), "0123456789abcdef0123456789abcdef");
    assert_null(apr_table_get(h, "Authorization"));
}

/* A pool entry bearer:<token> is an Entra ID token. */
static void test_bearer_entry(void **state)
{
    apr_table_t *h = apr_table_make(pool, 4);
    const char *entry = "bearer:eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.secretpart.sig9";
    const char *hint = aib_key_hint(pool, entry);

    (void)state;
    apr_table_setn(h, "api-key", "client-junk");
    aib_provider_azure.set_key(pool, h, entry);
    assert_string_equal(apr_table_get(h, "Authorization"),
                        "Bearer eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.secretpart.sig9");
    assert_null(apr_table_get(h, "api-key"));
    /* The hint shows no more of the token than of any key. */
    assert_string_equal(hint, "bear...sig9");
}

/* BYOK: the client's api-key, else its Bearer token, each sent its way. */
static void test_client_key(void **state)
{
    apr_table_t *client = apr_table_make(pool, 4), *up;

    (void)state;
    assert_null(aib_provider_azure.client_key(client));
    apr_table_setn(client, "Authorization", "Bearer entra-token-1");
    up = apr_table_make(pool, 4);
    aib_provider_azure.set_key(pool, up, aib_provider_azure.client_key(client));
    assert_string_equal(apr_table_get(up, "Authorization"), "Bearer entra-token-1");
    assert_null(apr_table_get(up, "api-key"));

    apr_table_setn(client, "api-key", "client-azure-key");
    assert_string_equal(aib_provider_azure.client_key(client), "client-azure-key");
    up = apr_table_make(pool, 4);
    aib_provider_azure.set_key(pool, up, aib_provider_azure.client_key(client));
    assert_string_equal(apr_table_get(up, "api-key"), "client-azure-key");
    assert_null(apr_table_get(up, "Authorization"));
}


/* ---- routes, faults, errors --------------------------------------------- */

static void test_routes(void **state)
{
    aib_route_t r;

    (void)state;
    aib_provider_azure.route("POST", "/v1/chat/completions", &r);
    assert_int_equal(r.kind, AIB_ROUTE_BRIDGED);
    assert_ptr_equal(r.format, &aib_format_chat);
    aib_provider_azure.route("POST", "/v1/responses", &r);
    assert_ptr_equal(r.format, &aib_format_responses);
    aib_provider_azure.route("GET", "/v1/models/gpt-4o", &r);
    assert_int_equal(r.kind, AIB_ROUTE_PASSTHROUGH);
    assert_true(r.method_allowed);
    aib_provider_azure.route("DELETE", "/v1/models/gpt-4o", &r);
    assert_false(r.method_allowed);
    assert_string_equal(r.allow, "GET");
    aib_provider_azure.route("POST", "/v1/embeddings", &r);
    assert_int_equal(r.kind, AIB_ROUTE_NONE);
    aib_provider_azure.route("GET", "/v1/conversations", &r);
    assert_int_equal(r.kind, AIB_ROUTE_NONE);
    aib_provider_azure.route("DELETE", "/v1/responses/resp_1", &r);
    assert_int_equal(r.kind, AIB_ROUTE_PASSTHROUGH);
    assert_true(r.method_allowed);
    assert_true(aib_format_spoken_by(&aib_format_chat, &aib_provider_azure));
    assert_true(aib_format_spoken_by(&aib_format_responses, &aib_provider_azure));
}

/* The content filter's 400 is nobody's key's fault, whatever failover= says. */
static void test_classify(void **state)
{
    static const char filtered[] =
        "{\"error\":{\"message\":\"The response was filtered\",\"type\":null,"
        "\"param\":\"prompt\",\"code\":\"content_filter\",\"status\":400}}";
    static const char throttled[] = "{\"error\":{\"code\":\"429\",\"message\":\"retry\"}}";

    (void)state;
    assert_int_equal(aib_provider_azure.classify(400, filtered, sizeof(filtered) - 1),
                     AIB_FAULT_NONE);
    assert_int_equal(aib_provider_azure.classify(429, throttled, sizeof(throttled) - 1),
                     AIB_FAULT_RATE_LIMITED);
    assert_int_equal(aib_provider_azure.classify(401, "{}", 2), AIB_FAULT_UNAUTHORIZED);
    assert_int_equal(aib_provider_azure.classify(403, "{}", 2), AIB_FAULT_FORBIDDEN);
}

/* OpenAI's shapes and reset headers, shared, not copied; read once. */
static void test_openai_shape_shared(void **state)
{
    const aib_reset_headers_t *const *all = aib_provider_reset_headers(pool);
    int n = 0, openai = 0;

    (void)state;
    assert_ptr_equal(aib_provider_azure.error_body, aib_provider_openai.error_body);
    assert_ptr_equal(aib_provider_azure.stream_fault, aib_provider_openai.stream_fault);
    assert_ptr_equal(aib_provider_azure.reset_headers, &aib_openai_resets);
    for (; all[n]; n++)
        openai += all[n] == &aib_openai_resets;
    assert_int_equal(openai, 1);
    assert_string_equal(aib_provider_azure.error_code(AIB_ERROR_RATE_LIMIT),
                        "rate_limit_exceeded");
}

int main(void)
{
#define T(f) cmocka_unit_test_teardown(f, aib_clear_pool)
    const struct CMUnitTest tests[] = {
        T(test_deployments_chat),
        T(test_deployment_map),
        T(test_deployments_responses),
        T(test_api_version_option),
        T(test_client_query),
        T(test_stored_responses),
        T(test_model_required),
        T(test_v1_shape),
        T(test_api_key_header),
        T(test_bearer_entry),
        T(test_client_key),
        T(test_routes),
        T(test_classify),
        T(test_openai_shape_shared),
    };
#undef T
    return AIB_RUN_TESTS(tests);
}
