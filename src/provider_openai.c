/* OpenAI: Chat Completions and Responses, Bearer keys, {"error":{...}}.
 * The pieces of the OpenAI shape are exported (provider_openai.h) for the
 * providers that speak it under other URLs and credentials (Azure). */
#include <string.h>
#include <apr_strings.h>

#include "format.h"
#include "provider.h"
#include "provider_openai.h"

static int has_subpath(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    return !strncmp(path, prefix, n) && path[n] == '/' && path[n + 1];
}

void aib_openai_route(const char *method, const char *path, aib_route_t *out)
{
    int is_post = !strcmp(method, "POST");
    int is_get = !strcmp(method, "GET");
    int is_delete = !strcmp(method, "DELETE");

    memset(out, 0, sizeof(*out));
    if (!strcmp(path, "/v1/chat/completions") || !strcmp(path, "/v1/responses")) {
        out->kind = AIB_ROUTE_BRIDGED;
        out->format = path[4] == 'c' ? &aib_format_chat : &aib_format_responses;
        out->name = out->format->name;
        out->allow = "POST";
        out->method_allowed = is_post;
    }
    else if (!strcmp(path, "/v1/embeddings") || !strcmp(path, "/v1/moderations")) {
        out->kind = AIB_ROUTE_PASSTHROUGH;
        out->name = "passthrough";
        out->allow = "POST";
        out->method_allowed = is_post;
    }
    else if (!strcmp(path, "/v1/models") || has_subpath(path, "/v1/models")) {
        out->kind = AIB_ROUTE_PASSTHROUGH;
        out->name = "passthrough";
        out->allow = "GET, DELETE";
        out->method_allowed = is_get || is_delete;
    }
    else if (has_subpath(path, "/v1/responses") || !strcmp(path, "/v1/conversations")
             || has_subpath(path, "/v1/conversations")) {
        out->kind = AIB_ROUTE_PASSTHROUGH;
        out->name = "passthrough";
        out->allow = "GET, POST, DELETE";
        out->method_allowed = is_get || is_post || is_delete;
    }
}

static void openai_set_key(apr_pool_t *p, apr_table_t *headers, const char *key)
{
    apr_table_setn(headers, "Authorization", apr_pstrcat(p, "Bearer ", key, NULL));
}

static const char *openai_client_key(const apr_table_t *headers)
{
    return aib_bearer_key(headers);
}

static void openai_type_code(aib_error_kind_e kind, const char **type, const char **code)
{
    *type = "invalid_request_error";
    switch (kind) {
    case AIB_ERROR_AUTHENTICATION: *code = "invalid_api_key"; break;
    case AIB_ERROR_NOT_FOUND:      *code = "unknown_url"; break;
    case AIB_ERROR_METHOD:         *code = "method_not_allowed"; break;
    case AIB_ERROR_TOO_LARGE:      *code = "request_too_large"; break;
    case AIB_ERROR_RATE_LIMIT:
        *type = "rate_limit_error";
        *code = "rate_limit_exceeded";
        break;
    case AIB_ERROR_UPSTREAM:
        *type = "api_error";
        *code = "server_error";
        break;
    case AIB_ERROR_TIMEOUT:
        *type = "api_error";
        *code = "timeout";
        break;
    default:
        *code = "invalid_request";
        break;
    }
}

const char *aib_openai_error_body(apr_pool_t *p, aib_error_kind_e kind, const char *message)
{
    const char *type, *code;

    openai_type_code(kind, &type, &code);
    return apr_psprintf(p, "{\"error\":{\"message\":%s,\"type\":\"%s\",\"param\":null,"
                        "\"code\":\"%s\"}}", aib_json_quote(p, message), type, code);
}

const char *aib_openai_error_code(aib_error_kind_e kind)
{
    const char *type, *code;

    openai_type_code(kind, &type, &code);
    return code;
}

aib_fault_e aib_openai_classify(int status, const char *body, apr_size_t len)
{
    switch (status) {
    case 429:
        /* Billing, not a rate: it will not recover in seconds. */
        if (aib_json_member_is(body, len, "error", "code", "insufficient_quota")
            || aib_json_member_is(body, len, "error", "type", "insufficient_quota"))
            return AIB_FAULT_QUOTA;
        return AIB_FAULT_RATE_LIMITED;
    case 401:
        return AIB_FAULT_UNAUTHORIZED;
    case 403:
        /* The caller's region is refused, whichever key asks. */
        if (aib_json_member_is(body, len, "error", "code",
                               "unsupported_country_region_territory"))
            return AIB_FAULT_NONE;
        return AIB_FAULT_FORBIDDEN;
    default:
        return AIB_FAULT_RATE_LIMITED;
    }
}

/* Chat streams report errors as {"error":{...}} chunks, Responses streams
 * as `error` events with the code at the top level. */
aib_fault_e aib_openai_stream_fault(const char *event, const char *data, apr_size_t len)
{
    static const struct {
        const char *code;
        aib_fault_e fault;
    } codes[] = {
        { "rate_limit_exceeded", AIB_FAULT_RATE_LIMITED },
        { "insufficient_quota", AIB_FAULT_QUOTA },
        { "invalid_api_key", AIB_FAULT_UNAUTHORIZED },
    };
    const char *object;
    size_t i;

    if (event && !strcmp(event, "error"))
        object = NULL;
    else if (!event && !strncmp(data, "{\"error\"", 8))
        object = "error";
    else
        return AIB_FAULT_NONE;
    for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (aib_json_member_is(data, len, object, "code", codes[i].code))
            return codes[i].fault;
    return AIB_FAULT_NONE;
}

/* Durations from now; the exhausted limit is the one that decides. */
static const aib_limit_header_t openai_limits[] = {
    { "x-ratelimit-reset-requests", "x-ratelimit-remaining-requests" },
    { "x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens" },
};

const aib_reset_headers_t aib_openai_resets = {
    "x-ratelimit-reset", AIB_RESET_DURATION, openai_limits,
    sizeof(openai_limits) / sizeof(openai_limits[0])
};

const aib_format_t *const aib_openai_formats[] = {
    &aib_format_chat, &aib_format_responses, NULL
};

const aib_provider_ops_t aib_provider_openai = {
    .type = "openai",
    .default_base_url = "https://api.openai.com",
    .route = aib_openai_route,
    .set_key = openai_set_key,
    .client_key = openai_client_key,
    .error_body = aib_openai_error_body,
    .error_code = aib_openai_error_code,
    .classify = aib_openai_classify,
    .reset_headers = &aib_openai_resets,
    .stream_fault = aib_openai_stream_fault,
    .formats = aib_openai_formats,
};
