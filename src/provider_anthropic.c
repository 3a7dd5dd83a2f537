/* Anthropic: Messages, x-api-key, {"type":"error","error":{...}}. */
#include <string.h>
#include <apr_strings.h>

#include "format.h"
#include "provider_anthropic.h"

void aib_anthropic_route(const char *method, const char *path, aib_route_t *out)
{
    int is_post = !strcmp(method, "POST");

    memset(out, 0, sizeof(*out));
    if (!strcmp(path, "/v1/messages")) {
        out->kind = AIB_ROUTE_BRIDGED;
        out->format = &aib_format_messages;
        out->name = out->format->name;
        out->allow = "POST";
        out->method_allowed = is_post;
    }
    else if (!strcmp(path, "/v1/messages/count_tokens")) {
        out->kind = AIB_ROUTE_PASSTHROUGH;
        out->name = "passthrough";
        out->allow = "POST";
        out->method_allowed = is_post;
    }
    else if (!strcmp(path, "/v1/models")
             || (!strncmp(path, "/v1/models/", 11) && path[11])) {
        out->kind = AIB_ROUTE_PASSTHROUGH;
        out->name = "passthrough";
        out->allow = "GET";
        out->method_allowed = !strcmp(method, "GET");
    }
}

static void anthropic_set_key(apr_pool_t *p, apr_table_t *headers, const char *key)
{
    (void)p;
    apr_table_unset(headers, "Authorization");
    apr_table_setn(headers, "x-api-key", key);
}

static void anthropic_defaults(apr_table_t *headers)
{
    if (!apr_table_get(headers, "anthropic-version"))
        apr_table_setn(headers, "anthropic-version", "2023-06-01");
}

const char *aib_anthropic_client_key(const apr_table_t *headers)
{
    const char *key = apr_table_get(headers, "x-api-key");
    return key && *key ? key : aib_bearer_key(headers);
}

const char *aib_anthropic_error_code(aib_error_kind_e kind)
{
    switch (kind) {
    case AIB_ERROR_AUTHENTICATION: return "authentication_error";
    case AIB_ERROR_NOT_FOUND:      return "not_found_error";
    case AIB_ERROR_TOO_LARGE:      return "request_too_large";
    case AIB_ERROR_RATE_LIMIT:     return "rate_limit_error";
    case AIB_ERROR_UPSTREAM:       return "api_error";
    case AIB_ERROR_TIMEOUT:        return "timeout_error";
    default:                       return "invalid_request_error";
    }
}

const char *aib_anthropic_error_body(apr_pool_t *p, aib_error_kind_e kind,
                                     const char *message)
{
    return apr_psprintf(p, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":%s}}",
                        aib_anthropic_error_code(kind), aib_json_quote(p, message));
}

static aib_fault_e anthropic_classify(int status, const char *body, apr_size_t len)
{
    (void)body;
    (void)len;
    switch (status) {
    case 429: return AIB_FAULT_RATE_LIMITED;
    case 401: return AIB_FAULT_UNAUTHORIZED;
    case 403: return AIB_FAULT_FORBIDDEN;
    case 529: return AIB_FAULT_NONE;   /* capacity, not the key */
    default:  return AIB_FAULT_RATE_LIMITED;
    }
}

static aib_fault_e anthropic_stream_fault(const char *event, const char *data, apr_size_t len)
{
    if (!event || strcmp(event, "error"))
        return AIB_FAULT_NONE;
    if (aib_json_member_is(data, len, "error", "type", "rate_limit_error"))
        return AIB_FAULT_RATE_LIMITED;
    if (aib_json_member_is(data, len, "error", "type", "authentication_error"))
        return AIB_FAULT_UNAUTHORIZED;
    if (aib_json_member_is(data, len, "error", "type", "permission_error"))
        return AIB_FAULT_FORBIDDEN;
    return AIB_FAULT_NONE;   /* overloaded_error, api_error: not the key */
}

/* Absolute reset times, one per kind of limit. */
static const aib_limit_header_t anthropic_limits[] = {
    { "anthropic-ratelimit-requests-reset", "anthropic-ratelimit-requests-remaining" },
    { "anthropic-ratelimit-tokens-reset", "anthropic-ratelimit-tokens-remaining" },
    { "anthropic-ratelimit-input-tokens-reset", "anthropic-ratelimit-input-tokens-remaining" },
    { "anthropic-ratelimit-output-tokens-reset", "anthropic-ratelimit-output-tokens-remaining" },
};

static const aib_reset_headers_t anthropic_resets = {
    "anthropic-ratelimit-reset", AIB_RESET_RFC3339, anthropic_limits,
    sizeof(anthropic_limits) / sizeof(anthropic_limits[0])
};

static const aib_format_t *const anthropic_formats[] = { &aib_format_messages, NULL };

const aib_provider_ops_t aib_provider_anthropic = {
    .type = "anthropic",
    .default_base_url = "https://api.anthropic.com",
    .route = aib_anthropic_route,
    .set_key = anthropic_set_key,
    .defaults = anthropic_defaults,
    .client_key = aib_anthropic_client_key,
    .error_body = aib_anthropic_error_body,
    .error_code = aib_anthropic_error_code,
    .classify = anthropic_classify,
    .reset_headers = &anthropic_resets,
    .stream_fault = anthropic_stream_fault,
    .formats = anthropic_formats,
};
