/* Unit tests for src/provider_bedrock.c, through its ops: options, the
 * model map, the body and URL rewrite, signing per credential and region,
 * fault classification and the models list. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "unit.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <apr_base64.h>
#include <apr_strings.h>

#include "bridge.h"
#include "config.h"
#include "format.h"
#include "json_helpers.h"
#include "provider.h"

#define HAIKU "anthropic.claude-3-haiku-20240307-v1:0"
#define PROFILE "us.anthropic.claude-3-5-haiku-20241022-v1:0"
#define AKID "AKIDEXAMPLE0123456789"
#define SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define TOKEN "FwoGZXIvYXdzEXAMPLESESSIONTOKEN"

static const aib_provider_ops_t *ops = &aib_provider_bedrock;

/* 2026-12-04T12:00:00Z */
static int64_t fixed_now(void)
{
    return INT64_C(1796385600000);
}

/* Parses AIBridgeProvider br bedrock <args...>; NULL-terminated. */
static const char *parse(aib_provider_t **pv, ...)
{
    char *argv[16] = { "br", "bedrock" };
    int argc = 2;
    va_list ap;
    char *arg;

    va_start(ap, pv);
    while ((arg = va_arg(ap, char *)) && argc < 16)
        argv[argc++] = arg;
    va_end(ap);
    return aib_provider_parse(pool, argc, argv, pv);
}

static aib_provider_t *provider(const char *base_url)
{
    aib_provider_t *pv = NULL;
    const char *err = base_url
        ? parse(&pv, base_url, "region=us-east-1", "pool=p", "model-map=haiku=" HAIKU,
                "model-map=fast=" PROFILE, NULL)
        : parse(&pv, "region=us-east-1", "pool=p", "model-map=haiku=" HAIKU,
                "model-map=fast=" PROFILE, NULL);

    if (err)
        fail_msg("%s", err);
    return pv;
}

static aib_interception_t *interception(const aib_provider_t *pv, const char *path,
                                        const char *model, int stream)
{
    aib_interception_t *ic = apr_pcalloc(pool, sizeof(*ic));

    aib_interception_init(ic, pool);
    ic->provider = pv;
    ic->model = model;
    ic->stream = stream;
    ic->now_ms = fixed_now;
    ic->method = "POST";
    ic->url = apr_pstrcat(pool, pv->base_url, path, NULL);
    ops->route(strncmp(path, "/v1/models", 10) ? "POST" : "GET", path, &ic->route);
    return ic;
}

static aib_outgoing_t outgoing(const char *body)
{
    aib_outgoing_t req;

    req.method = "POST";
    req.url = "";
    req.headers = apr_table_make(pool, 4);
    req.body = body;
    req.body_len = strlen(body);
    return req;
}

/* ---- options ------------------------------------------------------------ */

static void test_options_default_host_from_region(void **state)
{
    aib_provider_t *pv = provider(NULL);

    (void)state;
    assert_string_equal(pv->base_url, "https://bedrock-runtime.us-east-1.amazonaws.com");
    assert_string_equal(provider("http://127.0.0.1:9/vpc")->base_url, "http://127.0.0.1:9/vpc");
}

static void test_options_errors_name_the_option(void **state)
{
    aib_provider_t *pv;

    (void)state;
    assert_string_equal(parse(&pv, "pool=p", "default-model=" HAIKU, NULL),
                        "a bedrock provider needs region=");
    assert_string_equal(parse(&pv, "region=us-east-1", "pool=p", NULL),
                        "a bedrock provider needs model-map= or default-model=");
    assert_string_equal(parse(&pv, "region=US_EAST", "pool=p", NULL),
                        "region=US_EAST: letters, digits and '-' only");
    assert_string_equal(parse(&pv, "region=us-east-1", "pool=p", "model-map=haiku", NULL),
                        "model-map entry 'haiku' is not <client model>=<bedrock model id>");
    assert_string_equal(parse(&pv, "region=us-east-1", "pool=p", "default-model=", NULL),
                        "default-model= is empty");
    assert_string_equal(parse(&pv, "region=us-east-1", "pool=p", "api-version=1", NULL),
                        "unknown option 'api-version'");
    assert_string_equal(parse(&pv, "region=us-east-1", "pool=p",
                              "model-map=file:/nonexistent/map", NULL),
                        "model-map=file:/nonexistent/map: cannot be read");
}

static void test_options_model_map_file(void **state)
{
    char path[] = "/tmp/aib-bedrock-map-XXXXXX";
    const char *text = "# client=bedrock id\n\n  haiku=" HAIKU "  \r\nfast=" PROFILE "\n";
    int fd = mkstemp(path);
    aib_provider_t *pv;
    const char *err;
    aib_outgoing_t req = outgoing("{\"model\":\"fast\"}");

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    err = parse(&pv, "region=us-east-1", "pool=p", apr_pstrcat(pool, "model-map=file:", path,
                                                               NULL), NULL);
    unlink(path);
    assert_null(err);
    assert_null(ops->prepare(interception(pv, "/v1/messages", "fast", 0), &req));
    assert_string_equal(req.url, "https://bedrock-runtime.us-east-1.amazonaws.com/model/"
                        "us.anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke");
}

/* ---- prepare: model map, URL, body -------------------------------------- */

static void test_prepare_url_escapes_the_id(void **state)
{
    aib_provider_t *pv = provider(NULL);
    aib_outgoing_t req = outgoing("{\"model\":\"haiku\",\"max_tokens\":5,\"messages\":[]}");
    aib_outgoing_t streamed = req;

    (void)state;
    assert_null(ops->prepare(interception(pv, "/v1/messages", "haiku", 0), &req));
    assert_string_equal(req.url, "https://bedrock-runtime.us-east-1.amazonaws.com/model/"
                        "anthropic.claude-3-haiku-20240307-v1%3A0/invoke");
    assert_string_equal(apr_table_get(req.headers, "Accept"), "application/json");
    streamed.headers = apr_table_make(pool, 2);
    assert_null(ops->prepare(interception(pv, "/v1/messages", "haiku", 1), &streamed));
    assert_string_equal(streamed.url, "https://bedrock-runtime.us-east-1.amazonaws.com/model/"
                        "anthropic.claude-3-haiku-20240307-v1%3A0/invoke-with-response-stream");
    assert_string_equal(apr_table_get(streamed.headers, "Accept"),
                        "application/vnd.amazon.eventstream");
}

static void test_prepare_rewrites_the_body(void **state)
{
    aib_provider_t *pv = provider(NULL);
    aib_outgoing_t req = outgoing("{\"model\":\"haiku\",\"stream\":true,\"max_tokens\":5,"
                                  "\"metadata\":{\"user_id\":\"u\"},\"service_tier\":\"auto\","
                                  "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    json_object *body, *betas;

    (void)state;
    apr_table_setn(req.headers, "anthropic-beta", "a-2025, b-2025");
    apr_table_setn(req.headers, "anthropic-version", "2023-06-01");
    assert_null(ops->prepare(interception(pv, "/v1/messages", "haiku", 1), &req));
    assert_int_equal(req.body_len, strlen(req.body));
    body = aib_json_parse_object(req.body, req.body_len);
    assert_non_null(body);
    assert_null(aib_json_member(body, "model", json_type_string));
    assert_null(aib_json_member(body, "stream", json_type_boolean));
    assert_null(aib_json_member(body, "metadata", json_type_object));
    assert_null(aib_json_member(body, "service_tier", json_type_string));
    assert_string_equal(aib_json_string(body, "anthropic_version"), "bedrock-2023-05-31");
    assert_non_null(aib_json_member(body, "messages", json_type_array));
    betas = aib_json_member(body, "anthropic_beta", json_type_array);
    assert_int_equal(json_object_array_length(betas), 2);
    assert_string_equal(json_object_get_string(json_object_array_get_idx(betas, 1)), "b-2025");
    json_object_put(body);
    assert_null(apr_table_get(req.headers, "anthropic-beta"));
    assert_null(apr_table_get(req.headers, "anthropic-version"));
}

static void test_prepare_unmapped_model(void **state)
{
    aib_provider_t *pv = provider(NULL), *with_default;
    aib_outgoing_t req = outgoing("{\"model\":\"gpt-4o\"}");

    (void)state;
    assert_string_equal(ops->prepare(interception(pv, "/v1/messages", "gpt-4o", 0), &req),
                        "model 'gpt-4o' is not offered by provider 'br' (no model-map= entry "
                        "and no default-model=)");
    assert_null(parse(&with_default, "region=eu-west-1", "pool=p",
                      "default-model=eu.anthropic.claude-sonnet-4-20250514-v1:0", NULL));
    assert_null(ops->prepare(interception(with_default, "/v1/messages", "gpt-4o", 0), &req));
    assert_string_equal(req.url, "https://bedrock-runtime.eu-west-1.amazonaws.com/model/"
                        "eu.anthropic.claude-sonnet-4-20250514-v1%3A0/invoke");
}

/* ---- sign --------------------------------------------------------------- */

/* Prepared for haiku, then signed with `key`. */
static aib_outgoing_t signed_with(const aib_provider_t *pv, const char *key, const char **err)
{
    aib_interception_t *ic = interception(pv, "/v1/messages", "haiku", 0);
    aib_outgoing_t req = outgoing("{\"model\":\"haiku\",\"max_tokens\":5}");

    assert_null(ops->prepare(ic, &req));
    *err = ops->sign(ic, pool, key, &req);
    return req;
}

static void test_sign_sigv4_with_session_token(void **state)
{
    const char *err;
    aib_outgoing_t req = signed_with(provider(NULL), AKID ":" SECRET ":" TOKEN, &err);
    const char *auth = apr_table_get(req.headers, "Authorization");

    (void)state;
    assert_null(err);
    assert_non_null(strstr(auth, "AWS4-HMAC-SHA256 Credential=" AKID
                           "/20261204/us-east-1/bedrock/aws4_request"));
    assert_string_equal(apr_table_get(req.headers, "X-Amz-Security-Token"), TOKEN);
    assert_string_equal(apr_table_get(req.headers, "X-Amz-Date"), "20261204T120000Z");
    assert_null(strstr(auth, SECRET));
}

static void test_sign_region_of_the_entry_moves_the_host(void **state)
{
    const char *err;
    aib_outgoing_t req = signed_with(provider(NULL), AKID ":" SECRET "@us-west-2", &err);

    (void)state;
    assert_null(err);
    assert_string_equal(req.url, "https://bedrock-runtime.us-west-2.amazonaws.com/model/"
                        "anthropic.claude-3-haiku-20240307-v1%3A0/invoke");
    assert_non_null(strstr(apr_table_get(req.headers, "Authorization"),
                           "/20261204/us-west-2/bedrock/aws4_request"));
    assert_null(apr_table_get(req.headers, "X-Amz-Security-Token"));

    /* With a base URL, the region only enters the signature. */
    req = signed_with(provider("http://127.0.0.1:9"), AKID ":" SECRET "@us-west-2", &err);
    assert_null(err);
    assert_string_equal(req.url, "http://127.0.0.1:9/model/"
                        "anthropic.claude-3-haiku-20240307-v1%3A0/invoke");
    assert_non_null(strstr(apr_table_get(req.headers, "Authorization"),
                           "/20261204/us-west-2/bedrock/aws4_request"));
}

static void test_sign_bearer_key(void **state)
{
    const char *err;
    aib_outgoing_t req = signed_with(provider(NULL), "bearer:ABSKQmVkcm9ja0FQSUtleQ==@eu-central-1",
                                     &err);

    (void)state;
    assert_null(err);
    assert_string_equal(apr_table_get(req.headers, "Authorization"),
                        "Bearer ABSKQmVkcm9ja0FQSUtleQ==");
    assert_null(apr_table_get(req.headers, "X-Amz-Date"));
    assert_string_equal(req.url, "https://bedrock-runtime.eu-central-1.amazonaws.com/model/"
                        "anthropic.claude-3-haiku-20240307-v1%3A0/invoke");
}

static void test_sign_malformed_entry_keeps_the_secret(void **state)
{
    const char *err;

    (void)state;
    signed_with(provider(NULL), "just-one-secret-string-without-colon", &err);
    assert_non_null(err);
    assert_null(strstr(err, "just-one-secret"));
}

/* ---- faults ------------------------------------------------------------- */

static aib_fault_e classify(int status, const char *error_type, const char *body,
                            const char **relay)
{
    apr_table_t *headers = apr_table_make(pool, 1);

    if (error_type)
        apr_table_setn(headers, "x-amzn-ErrorType", error_type);
    return ops->classify_answer(pool, status, headers, body, strlen(body), relay);
}

static void test_classify_by_error_type(void **state)
{
    const char *relay;

    (void)state;
    assert_int_equal(classify(429, "ThrottlingException:http://internal.amazon.com/coral/",
                              "{\"message\":\"Too many requests\"}", &relay),
                     AIB_FAULT_RATE_LIMITED);
    assert_int_equal(classify(400, "ServiceQuotaExceededException", "{}", &relay),
                     AIB_FAULT_QUOTA);
    assert_int_equal(classify(403, "AccessDeniedException", "{}", &relay), AIB_FAULT_FORBIDDEN);
    assert_int_equal(classify(403, "UnrecognizedClientException", "{}", &relay),
                     AIB_FAULT_FORBIDDEN);
    assert_int_equal(classify(403, "InvalidSignatureException", "{}", &relay),
                     AIB_FAULT_FORBIDDEN);
    assert_int_equal(classify(403, "ExpiredTokenException", "{}", &relay), AIB_FAULT_FORBIDDEN);
    /* 429 but not throttling: not the key. */
    assert_int_equal(classify(429, "ModelNotReadyException", "{}", &relay), AIB_FAULT_NONE);
    assert_int_equal(classify(503, "ServiceUnavailableException", "{}", &relay), AIB_FAULT_NONE);
    /* Without the header, the body's __type. */
    assert_int_equal(classify(429, NULL, "{\"__type\":\"com.amazon.coral.availability#"
                              "ThrottlingException\",\"message\":\"slow down\"}", &relay),
                     AIB_FAULT_RATE_LIMITED);
    /* Neither: never by status alone. */
    assert_int_equal(classify(429, NULL, "{\"message\":\"?\"}", &relay), AIB_FAULT_NONE);
}

static void test_classify_relays_in_anthropic_shape(void **state)
{
    const char *relay;

    (void)state;
    assert_int_equal(classify(400, "ValidationException:http://internal.amazon.com/",
                              "{\"message\":\"max_tokens: field required\"}", &relay),
                     AIB_FAULT_NONE);
    assert_string_equal(relay, "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
                        "\"message\":\"max_tokens: field required\"}}");
    classify(500, NULL, "not json", &relay);
    assert_string_equal(relay, "{\"type\":\"error\",\"error\":{\"type\":\"api_error\","
                        "\"message\":\"Bedrock answered 500\"}}");
    classify(408, "ModelTimeoutException", "{\"Message\":\"slow model\"}", &relay);
    assert_string_equal(relay, "{\"type\":\"error\",\"error\":{\"type\":\"timeout_error\","
                        "\"message\":\"slow model\"}}");
}

static void test_stream_fault_reads_the_aws_name(void **state)
{
    const char *throttled = "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\","
                            "\"message\":\"x\",\"aws_exception\":\"throttlingException\"}}";
    const char *invalid = "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
                          "\"message\":\"x\",\"aws_exception\":\"validationException\"}}";

    (void)state;
    assert_int_equal(ops->stream_fault("error", throttled, strlen(throttled)),
                     AIB_FAULT_RATE_LIMITED);
    assert_int_equal(ops->stream_fault("error", invalid, strlen(invalid)), AIB_FAULT_NONE);
    assert_int_equal(ops->stream_fault("message_start", "{}", 2), AIB_FAULT_NONE);
}

/* ---- routes and the models list ----------------------------------------- */

static void test_routes(void **state)
{
    aib_route_t route;

    (void)state;
    ops->route("POST", "/v1/messages", &route);
    assert_int_equal(route.kind, AIB_ROUTE_BRIDGED);
    assert_ptr_equal(route.format, &aib_format_messages);
    ops->route("POST", "/v1/messages/count_tokens", &route);
    assert_int_equal(route.kind, AIB_ROUTE_PASSTHROUGH);
    assert_true(route.method_allowed);
    ops->route("POST", "/v1/chat/completions", &route);
    assert_int_equal(route.kind, AIB_ROUTE_NONE);
    ops->route("POST", "/v1/models", &route);
    assert_int_equal(route.kind, AIB_ROUTE_PASSTHROUGH);
    assert_false(route.method_allowed);
}

static void test_models_from_the_map(void **state)
{
    aib_provider_t *pv = provider(NULL);
    const char *body;

    (void)state;
    assert_int_equal(ops->answer(interception(pv, "/v1/models", NULL, 0), &body), 200);
    assert_string_equal(body, "{\"data\":[{\"type\":\"model\",\"id\":\"haiku\",\"display_name\":"
                        "\"haiku\",\"created_at\":\"1970-01-01T00:00:00Z\"},{\"type\":\"model\","
                        "\"id\":\"fast\",\"display_name\":\"fast\",\"created_at\":"
                        "\"1970-01-01T00:00:00Z\"}],\"has_more\":false,\"first_id\":\"haiku\","
                        "\"last_id\":\"fast\"}");
    assert_int_equal(ops->answer(interception(pv, "/v1/models/fast", NULL, 0), &body), 200);
    assert_non_null(strstr(body, "\"id\":\"fast\""));
    assert_int_equal(ops->answer(interception(pv, "/v1/models/gpt-4o", NULL, 0), &body), 404);
    assert_non_null(strstr(body, "not_found_error"));
    assert_int_equal(ops->answer(interception(pv, "/v1/messages", "haiku", 0), &body), 0);
    assert_int_equal(ops->answer(interception(pv, "/v1/messages/count_tokens", NULL, 0), &body),
                     0);
}

/* ---- count_tokens: CountTokens, its answer in Anthropic's shape --------- */

/* The InvokeModel body inside a CountTokens request, parsed. */
static json_object *invoke_body_of(const aib_outgoing_t *req)
{
    json_object *outer = aib_json_parse_object(req->body, req->body_len), *inner;
    const char *b64 = aib_json_string(aib_json_member(aib_json_member(outer, "input",
                                                                      json_type_object),
                                                      "invokeModel", json_type_object),
                                      "body");
    char *text;
    int len;

    assert_non_null(b64);
    text = apr_palloc(pool, (apr_size_t)apr_base64_decode_len(b64) + 1);
    len = apr_base64_decode(text, b64);
    text[len] = '\0';
    inner = aib_json_parse_object(text, (apr_size_t)len);
    json_object_put(outer);
    assert_non_null(inner);
    return inner;
}

static void test_prepare_count_tokens(void **state)
{
    aib_provider_t *pv = provider(NULL);
    /* A passthrough route: the model is read from the body here. */
    aib_interception_t *ic = interception(pv, "/v1/messages/count_tokens", NULL, 0);
    aib_outgoing_t req = outgoing("{\"model\":\"fast\",\"metadata\":{\"user_id\":\"u\"},"
                                  "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    aib_outgoing_t thinking = outgoing("{\"model\":\"haiku\",\"thinking\":{\"type\":"
                                       "\"enabled\",\"budget_tokens\":2048},\"messages\":[]}");
    aib_outgoing_t own = outgoing("{\"model\":\"haiku\",\"max_tokens\":77,\"messages\":[]}");
    json_object *body;

    (void)state;
    apr_table_setn(req.headers, "anthropic-beta", "token-counting-2024-11-01");
    assert_null(ops->prepare(ic, &req));
    assert_string_equal(req.url, "https://bedrock-runtime.us-east-1.amazonaws.com/model/"
                        "us.anthropic.claude-3-5-haiku-20241022-v1%3A0/count-tokens");
    assert_true(req.rewrite_answer);
    assert_int_equal(req.body_len, strlen(req.body));
    assert_string_equal(apr_table_get(req.headers, "Accept"), "application/json");
    /* The InvokeModel body, rewritten as for invoke; max_tokens, which
     * InvokeModel requires, added. */
    body = invoke_body_of(&req);
    assert_null(aib_json_member(body, "model", json_type_string));
    assert_null(aib_json_member(body, "metadata", json_type_object));
    assert_string_equal(aib_json_string(body, "anthropic_version"), "bedrock-2023-05-31");
    assert_int_equal(json_object_get_int(aib_json_member(body, "max_tokens", json_type_int)), 1);
    assert_string_equal(json_object_get_string(json_object_array_get_idx(
        aib_json_member(body, "anthropic_beta", json_type_array), 0)),
        "token-counting-2024-11-01");
    assert_non_null(aib_json_member(body, "messages", json_type_array));
    json_object_put(body);

    /* A thinking budget must stay below max_tokens; the client's own is kept. */
    assert_null(ops->prepare(ic, &thinking));
    body = invoke_body_of(&thinking);
    assert_int_equal(json_object_get_int(aib_json_member(body, "max_tokens", json_type_int)),
                     2049);
    json_object_put(body);
    thinking = outgoing("{\"model\":\"haiku\",\"thinking\":{\"budget_tokens\":"
                        "9223372036854775807},\"messages\":[]}");
    assert_null(ops->prepare(ic, &thinking));   /* no overflow */
    body = invoke_body_of(&thinking);
    assert_true(json_object_get_int64(aib_json_member(body, "max_tokens", json_type_int))
                == INT64_MAX);
    json_object_put(body);
    assert_null(ops->prepare(ic, &own));
    body = invoke_body_of(&own);
    assert_int_equal(json_object_get_int(aib_json_member(body, "max_tokens", json_type_int)), 77);
    json_object_put(body);

    /* Messages are not flagged for a rewritten answer. */
    req = outgoing("{\"model\":\"haiku\",\"max_tokens\":5}");
    assert_null(ops->prepare(interception(pv, "/v1/messages", "haiku", 0), &req));
    assert_false(req.rewrite_answer);
}

static void test_prepare_count_tokens_refusals(void **state)
{
    aib_provider_t *pv = provider(NULL);
    aib_interception_t *ic = interception(pv, "/v1/messages/count_tokens", NULL, 0);
    aib_outgoing_t unmapped = outgoing("{\"model\":\"gpt-4o\",\"messages\":[]}");
    aib_outgoing_t not_json = outgoing("[1]");

    (void)state;
    assert_string_equal(ops->prepare(ic, &unmapped),
                        "model 'gpt-4o' is not offered by provider 'br' (no model-map= entry "
                        "and no default-model=)");
    assert_string_equal(ops->prepare(ic, &not_json), "the request body is not a JSON object");
}

/* rewrite_answer on `body` answered with `status` (and x-amzn-ErrorType
 * `error_type` when not NULL) to a count_tokens call for model "fast". */
static int rewritten(int status, const char *error_type, const char **body)
{
    aib_interception_t *ic = interception(provider(NULL), "/v1/messages/count_tokens", NULL, 0);
    apr_table_t *headers = apr_table_make(pool, 1);
    apr_size_t len = strlen(*body);
    int out;

    ic->body = "{\"model\":\"fast\",\"messages\":[]}";
    ic->body_len = strlen(ic->body);
    if (error_type)
        apr_table_setn(headers, "x-amzn-ErrorType", error_type);
    out = ops->rewrite_answer(ic, pool, status, headers, body, &len);
    assert_int_equal(len, strlen(*body));
    return out;
}

static void test_rewrite_answer_count_tokens(void **state)
{
    const char *body = "{\"inputTokens\":42}";
    const char *unsupported = "{\"type\":\"error\",\"error\":{\"type\":"
                              "\"invalid_request_error\",\"message\":\"The provided model "
                              "doesn't support counting tokens.\"}}";
    const char *byok = "{\"message\":\"The provided model doesn't support counting tokens.\"}";
    const char *other = "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
                        "\"message\":\"messages: Field required\"}}";
    const char *kept = other;

    (void)state;
    assert_int_equal(rewritten(200, NULL, &body), 200);
    assert_string_equal(body, "{\"input_tokens\":42}");

    /* A model CountTokens cannot count for: a 404 naming the client's model,
     * whether bedrock_classify relayed the answer or it came as Bedrock sent it. */
    assert_int_equal(rewritten(400, "ValidationException:http://internal.amazon.com/", &unsupported),
                     404);
    assert_string_equal(unsupported, "{\"type\":\"error\",\"error\":{\"type\":"
                        "\"not_found_error\",\"message\":\"model 'fast' does not support token "
                        "counting on Bedrock\"}}");
    assert_int_equal(rewritten(400, "ValidationException", &byok), 404);

    /* Any other answer goes as it is. */
    assert_int_equal(rewritten(400, "ValidationException", &kept), 400);
    assert_ptr_equal(kept, other);
    kept = other;
    assert_int_equal(rewritten(429, "ThrottlingException", &kept), 429);
    assert_ptr_equal(kept, other);
}

/* ---- usage: Bedrock's own counts where Anthropic's usage lacks them ----- */

static void assert_counts(const aib_usage_t *u, int64_t input, int64_t output,
                          int64_t cache_read, int64_t cache_write)
{
    assert_true(u->seen);
    assert_int_equal(u->input, input);
    assert_int_equal(u->output, output);
    assert_int_equal(u->cache_read, cache_read);
    assert_int_equal(u->cache_write, cache_write);
}

static void test_usage_from_headers(void **state)
{
    apr_table_t *headers = apr_table_make(pool, 4);
    aib_usage_t u;

    (void)state;
    aib_usage_init(&u, pool);
    apr_table_setn(headers, "X-Amzn-Bedrock-Input-Token-Count", "21");
    apr_table_setn(headers, "X-Amzn-Bedrock-Output-Token-Count", "9");
    apr_table_setn(headers, "X-Amzn-Bedrock-Cache-Read-Input-Token-Count", "5");
    apr_table_setn(headers, "X-Amzn-Bedrock-Cache-Write-Input-Token-Count", "-7");
    ops->usage_from_headers(&u, headers);
    assert_counts(&u, 21, 9, 5, 0);

    /* The body's usage comes first: nothing counted twice. */
    aib_usage_init(&u, pool);
    u.seen = 1;
    u.input = 30;
    ops->usage_from_headers(&u, headers);
    assert_counts(&u, 30, 9, 5, 0);

    /* None of them: usage stays unseen. */
    aib_usage_init(&u, pool);
    ops->usage_from_headers(&u, apr_table_make(pool, 1));
    assert_false(u.seen);
    apr_table_setn(headers, "X-Amzn-Bedrock-Input-Token-Count", "99999999999999999999");
    aib_usage_init(&u, pool);
    ops->usage_from_headers(&u, headers);
    assert_int_equal(u.input, 0);
}

static void test_usage_from_invocation_metrics(void **state)
{
    const char *stop = "{\"type\":\"message_stop\",\"amazon-bedrock-invocationMetrics\":"
                       "{\"inputTokenCount\":21,\"outputTokenCount\":9,\"invocationLatency\":12,"
                       "\"firstByteLatency\":3,\"cacheReadInputTokenCount\":5,"
                       "\"cacheWriteInputTokenCount\":7}}";
    const char *bare = "{\"type\":\"message_stop\"}";
    aib_usage_t u;

    (void)state;
    aib_usage_init(&u, pool);
    ops->usage_from_event(&u, "message_delta", stop, strlen(stop));
    assert_false(u.seen);
    ops->usage_from_event(&u, "message_stop", bare, strlen(bare));
    assert_false(u.seen);
    ops->usage_from_event(&u, "message_stop", stop, strlen(stop));
    assert_counts(&u, 21, 9, 5, 7);

    /* message_start and message_delta's usage comes first. */
    aib_usage_init(&u, pool);
    u.seen = 1;
    u.input = 20;
    u.output = 8;
    ops->usage_from_event(&u, "message_stop", stop, strlen(stop));
    assert_counts(&u, 20, 8, 5, 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_options_default_host_from_region, aib_clear_pool),
        cmocka_unit_test_teardown(test_options_errors_name_the_option, aib_clear_pool),
        cmocka_unit_test_teardown(test_options_model_map_file, aib_clear_pool),
        cmocka_unit_test_teardown(test_prepare_url_escapes_the_id, aib_clear_pool),
        cmocka_unit_test_teardown(test_prepare_rewrites_the_body, aib_clear_pool),
        cmocka_unit_test_teardown(test_prepare_unmapped_model, aib_clear_pool),
        cmocka_unit_test_teardown(test_sign_sigv4_with_session_token, aib_clear_pool),
        cmocka_unit_test_teardown(test_sign_region_of_the_entry_moves_the_host, aib_clear_pool),
        cmocka_unit_test_teardown(test_sign_bearer_key, aib_clear_pool),
        cmocka_unit_test_teardown(test_sign_malformed_entry_keeps_the_secret, aib_clear_pool),
        cmocka_unit_test_teardown(test_classify_by_error_type, aib_clear_pool),
        cmocka_unit_test_teardown(test_classify_relays_in_anthropic_shape, aib_clear_pool),
        cmocka_unit_test_teardown(test_stream_fault_reads_the_aws_name, aib_clear_pool),
        cmocka_unit_test_teardown(test_routes, aib_clear_pool),
        cmocka_unit_test_teardown(test_models_from_the_map, aib_clear_pool),
        cmocka_unit_test_teardown(test_prepare_count_tokens, aib_clear_pool),
        cmocka_unit_test_teardown(test_prepare_count_tokens_refusals, aib_clear_pool),
        cmocka_unit_test_teardown(test_rewrite_answer_count_tokens, aib_clear_pool),
        cmocka_unit_test_teardown(test_usage_from_headers, aib_clear_pool),
        cmocka_unit_test_teardown(test_usage_from_invocation_metrics, aib_clear_pool),
    };

    return AIB_RUN_TESTS(tests);
}
