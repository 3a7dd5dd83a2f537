/* Amazon Bedrock: clients speak Anthropic Messages, the module calls
 * InvokeModel / InvokeModelWithResponseStream with the model in the path,
 * signs each attempt with SigV4 (or a Bedrock API key), reads faults from
 * x-amzn-ErrorType and decodes the AWS event stream (eventstream.h). */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <apr_base64.h>
#include <apr_strings.h>

#include "bridge.h"
#include "eventstream.h"
#include "format.h"
#include "provider_anthropic.h"
#include "sigv4.h"

#define BEDROCK_VERSION "bedrock-2023-05-31"
#define BEARER_PREFIX "bearer:"
#define COUNT_TOKENS_PATH "/v1/messages/count_tokens"
/* What CountTokens says of a model it cannot count for. */
#define NO_COUNTING "support counting tokens"
#define VALIDATION "ValidationException"

/* The Messages fields Bedrock rejects as unknown: dropped from the body. */
static const char *const dropped_fields[] = { "metadata", "service_tier", "container", NULL };

/* The credential goes in sign(), which knows the entry's kind and region;
 * here only what the client sent is taken out. */
static void bedrock_set_key(apr_pool_t *p, apr_table_t *headers, const char *key)
{
    (void)p;
    (void)key;
    apr_table_unset(headers, "Authorization");
    apr_table_unset(headers, "x-api-key");
}

/* Bedrock's exceptions: which are a credential's fault, and the Anthropic
 * error type a client is shown for each. */
typedef struct {
    const char *name;
    aib_fault_e fault;
    const char *anthropic_type;
} aws_error_t;

static const aws_error_t aws_errors[] = {
    { "ThrottlingException", AIB_FAULT_RATE_LIMITED, "rate_limit_error" },
    { "ServiceQuotaExceededException", AIB_FAULT_QUOTA, "rate_limit_error" },
    { "AccessDeniedException", AIB_FAULT_FORBIDDEN, "permission_error" },
    { "UnrecognizedClientException", AIB_FAULT_FORBIDDEN, "authentication_error" },
    { "InvalidSignatureException", AIB_FAULT_FORBIDDEN, "authentication_error" },
    { "ExpiredTokenException", AIB_FAULT_FORBIDDEN, "authentication_error" },
    { "ModelNotReadyException", AIB_FAULT_NONE, "overloaded_error" },
    { "ServiceUnavailableException", AIB_FAULT_NONE, "overloaded_error" },
    { "ModelTimeoutException", AIB_FAULT_NONE, "timeout_error" },
    { "ModelErrorException", AIB_FAULT_NONE, "api_error" },
    { "ValidationException", AIB_FAULT_NONE, "invalid_request_error" },
    { "ResourceNotFoundException", AIB_FAULT_NONE, "not_found_error" },
};

/* An exception by name, its case ignored: streams say "throttlingException",
 * headers "ThrottlingException". NULL: unknown. */
static const aws_error_t *aws_error_find(const char *name, apr_size_t len)
{
    size_t i;

    for (i = 0; name && i < sizeof(aws_errors) / sizeof(aws_errors[0]); i++)
        if (strlen(aws_errors[i].name) == len && !strncasecmp(aws_errors[i].name, name, len))
            return &aws_errors[i];
    return NULL;
}

/* The exception's name: x-amzn-ErrorType ("Name:http://..."), else the
 * body's __type ("com.amazon...#Name"). Sets *len; NULL when neither. */
static const char *aws_error_name(const apr_table_t *headers, json_object *body, apr_size_t *len)
{
    const char *name = headers ? apr_table_get(headers, "x-amzn-ErrorType") : NULL;
    const char *hash;

    if (!name || !*name) {
        name = aib_json_string(body, "__type");
        if (name && (hash = strrchr(name, '#')))
            name = hash + 1;
    }
    if (name)
        *len = strcspn(name, ":");
    return name;
}

static aib_fault_e bedrock_classify(apr_pool_t *p, int status, const apr_table_t *headers,
                                   const char *body, apr_size_t len, const char **relay)
{
    json_object *obj = aib_json_parse_object(body, len);
    apr_size_t name_len = 0;
    const char *name = aws_error_name(headers, obj, &name_len);
    const aws_error_t *known = aws_error_find(name, name_len);
    const char *message = aib_json_string(obj, "message");
    const char *type = known ? known->anthropic_type : status >= 500 ? "api_error"
                                                                     : "invalid_request_error";

    if (!message)
        message = aib_json_string(obj, "Message");
    if (!message)
        message = name ? apr_pstrmemdup(p, name, name_len)
                       : apr_psprintf(p, "Bedrock answered %d", status);
    *relay = apr_psprintf(p, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":%s}}",
                          type, aib_json_quote(p, message));
    json_object_put(obj);
    return known ? known->fault : AIB_FAULT_NONE;
}

/* The decoder's error events carry the AWS name (eventstream.h). */
static aib_fault_e bedrock_stream_fault(const char *event, const char *data, apr_size_t len)
{
    json_object *obj, *error;
    const char *name;
    const aws_error_t *known;

    if (!event || strcmp(event, "error"))
        return AIB_FAULT_NONE;
    obj = aib_json_parse_object(data, len);
    error = aib_json_member(obj, "error", json_type_object);
    name = aib_json_string(error, "aws_exception");
    known = aws_error_find(name, name ? strlen(name) : 0);
    json_object_put(obj);
    return known ? known->fault : AIB_FAULT_NONE;
}

/* Options: region=, model-map= (repeatable, or file:), default-model=. */

typedef struct {
    const char *client;   /* the model a client names */
    const char *id;       /* Bedrock model id or inference profile */
} model_entry_t;

typedef struct {
    const char *region;
    int regional;         /* no base URL given: each credential's region picks the host */
    apr_array_header_t *models;   /* model_entry_t, in configured order */
    const char *default_model;    /* for a model the map lacks, NULL: 400 */
} bedrock_conf_t;

static bedrock_conf_t *conf_of(struct aib_provider *pv, apr_pool_t *p)
{
    bedrock_conf_t *conf = pv->type_conf;

    if (!conf) {
        conf = pv->type_conf = apr_pcalloc(p, sizeof(*conf));
        conf->models = apr_array_make(p, 4, sizeof(model_entry_t));
    }
    return conf;
}

/* One "<client>=<id>" entry. */
static const char *add_mapping(apr_pool_t *p, bedrock_conf_t *conf, const char *entry)
{
    const char *eq = strchr(entry, '=');
    model_entry_t *m;

    if (!eq || eq == entry || !eq[1])
        return apr_psprintf(p, "model-map entry '%s' is not <client model>=<bedrock model id>",
                            entry);
    m = apr_array_push(conf->models);
    m->client = apr_pstrmemdup(p, entry, (apr_size_t)(eq - entry));
    m->id = apr_pstrdup(p, eq + 1);
    return NULL;
}

/* A model-map file: one <client>=<id> a line, blank lines and #comments skipped. */
static const char *add_mapping_file(apr_pool_t *p, bedrock_conf_t *conf, const char *path)
{
    char line[1024];
    const char *err = NULL;
    FILE *f = fopen(path, "r");

    if (!f)
        return apr_psprintf(p, "model-map=file:%s: cannot be read", path);
    while (!err && fgets(line, sizeof(line), f)) {
        char *s = line + strspn(line, " \t"), *end = s + strcspn(s, "\r\n");
        while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        *end = '\0';
        if (*s && *s != '#')
            err = add_mapping(p, conf, s);
    }
    fclose(f);
    return err ? apr_psprintf(p, "model-map=file:%s: %s", path, err) : NULL;
}

static const char *bedrock_option(apr_pool_t *p, struct aib_provider *pv, const char *key,
                                  const char *value)
{
    bedrock_conf_t *conf = conf_of(pv, p);

    if (!strcmp(key, "region")) {
        if (!aib_aws_is_region(value))
            return apr_psprintf(p, "region=%s: letters, digits and '-' only", value);
        conf->region = apr_pstrdup(p, value);
        return NULL;
    }
    if (!strcmp(key, "model-map"))
        return strncmp(value, "file:", 5) ? add_mapping(p, conf, value)
                                          : add_mapping_file(p, conf, value + 5);
    if (!strcmp(key, "default-model")) {
        if (!*value)
            return "default-model= is empty";
        conf->default_model = apr_pstrdup(p, value);
        return NULL;
    }
    return aib_option_unknown;
}

static const char *regional_base_url(apr_pool_t *p, const char *region)
{
    return apr_psprintf(p, "https://bedrock-runtime.%s.amazonaws.com", region);
}

static const char *bedrock_options_done(apr_pool_t *p, struct aib_provider *pv)
{
    bedrock_conf_t *conf = conf_of(pv, p);

    if (!conf->region)
        return "a bedrock provider needs region=";
    if (!conf->models->nelts && !conf->default_model)
        return "a bedrock provider needs model-map= or default-model=";
    /* The type's default is a placeholder: with no base URL given, the
     * host follows the region (of each credential, see sign). */
    if (pv->base_url == pv->ops->default_base_url) {
        conf->regional = 1;
        pv->base_url = regional_base_url(p, conf->region);
    }
    return NULL;
}

/* The Bedrock id for the model a client names: the map's, else the default,
 * NULL when neither. */
static const char *model_id(const struct aib_provider *pv, const char *model)
{
    const bedrock_conf_t *conf = pv->type_conf;
    int i;

    for (i = 0; model && i < conf->models->nelts; i++) {
        const model_entry_t *m = &APR_ARRAY_IDX(conf->models, i, model_entry_t);
        if (!strcmp(m->client, model))
            return m->id;
    }
    return conf->default_model;
}

/* The anthropic-beta header ("a,b") as the body's anthropic_beta array. */
static void move_betas(json_object *body, apr_table_t *headers)
{
    const char *betas = apr_table_get(headers, "anthropic-beta");
    json_object *array;
    char *list, *state, *beta;

    if (!betas)
        return;
    array = json_object_new_array();
    list = apr_pstrdup(apr_table_elts(headers)->pool, betas);
    for (beta = apr_strtok(list, ", \t", &state); beta; beta = apr_strtok(NULL, ", \t", &state))
        json_object_array_add(array, json_object_new_string(beta));
    json_object_object_add(body, "anthropic_beta", array);
    apr_table_unset(headers, "anthropic-beta");
}

/* The path below the provider a request was made on, its query left out. */
static const char *client_path(const aib_interception_t *ic)
{
    const char *path = ic->url + strlen(ic->provider->base_url);

    return apr_pstrmemdup(ic->pool, path, strcspn(path, "?"));
}

static int is_count_tokens(const aib_interception_t *ic)
{
    return !strcmp(client_path(ic), COUNT_TOKENS_PATH);
}

/* An InvokeModel body needs max_tokens, which a count_tokens request has
 * not: one more than a thinking budget (which must stay below it), else 1.
 * It does not change the count. */
static void add_max_tokens(json_object *body)
{
    json_object *budget = aib_json_member(aib_json_member(body, "thinking", json_type_object),
                                          "budget_tokens", json_type_int);
    int64_t n = budget ? json_object_get_int64(budget) : 0;

    if (!aib_json_member(body, "max_tokens", json_type_int))
        json_object_object_add(body, "max_tokens",
                               json_object_new_int64(n < INT64_MAX ? n + 1 : n));
}

/* CountTokens takes the InvokeModel body base64-encoded. */
static const char *count_tokens_body(apr_pool_t *p, const char *invoke_body)
{
    int len = (int)strlen(invoke_body);
    char *b64 = apr_palloc(p, (apr_size_t)apr_base64_encode_len(len));

    apr_base64_encode_binary(b64, (const unsigned char *)invoke_body, len);
    return apr_psprintf(p, "{\"input\":{\"invokeModel\":{\"body\":\"%s\"}}}", b64);
}

/* The body rewrite Anthropic's own Bedrock client makes, and the URL:
 * InvokeModel's, or for count_tokens CountTokens', whose answer is then
 * rewritten. */
static const char *bedrock_prepare(const aib_interception_t *ic, aib_outgoing_t *req)
{
    apr_pool_t *p = ic->pool;
    const struct aib_provider *pv = ic->provider;
    int stream = ic->stream, counting = is_count_tokens(ic);
    json_object *body = aib_json_parse_object(req->body, req->body_len);
    const char *model = counting ? aib_json_strdup(p, body, "model") : ic->model;
    const char *id = model_id(pv, model), *action;
    int i;

    if (!id || !body) {
        json_object_put(body);
        return !body ? "the request body is not a JSON object"
               : apr_psprintf(p, "model '%s' is not offered by provider '%s' (no model-map= "
                              "entry and no default-model=)", model ? model : "", pv->name);
    }
    json_object_object_del(body, "model");
    json_object_object_del(body, "stream");
    for (i = 0; dropped_fields[i]; i++)
        json_object_object_del(body, dropped_fields[i]);
    json_object_object_add(body, "anthropic_version", json_object_new_string(BEDROCK_VERSION));
    move_betas(body, req->headers);
    if (counting)
        add_max_tokens(body);
    req->body = aib_json_text(p, body);
    json_object_put(body);
    if (!req->body)
        return "the request body cannot be rewritten";
    if (counting)
        req->body = count_tokens_body(p, req->body);
    req->body_len = strlen(req->body);
    req->rewrite_answer = counting;
    apr_table_unset(req->headers, "anthropic-version");
    apr_table_setn(req->headers, "Content-Type", "application/json");
    apr_table_setn(req->headers, "Accept", stream ? "application/vnd.amazon.eventstream"
                                                  : "application/json");
    action = counting ? "/count-tokens" : stream ? "/invoke-with-response-stream" : "/invoke";
    req->url = apr_pstrcat(p, pv->base_url, "/model/", aib_aws_uri_encode(p, id, 0), action, NULL);
    return NULL;
}

/* CountTokens' answer in Anthropic's shape: {"inputTokens": N} as
 * {"input_tokens": N}, and a model it cannot count for (a
 * ValidationException saying so) as a 404 naming the model; any other
 * answer as it is relayed already. */
static int bedrock_rewrite_answer(const aib_interception_t *ic, apr_pool_t *p, int status,
                                  const apr_table_t *headers, const char **body,
                                  apr_size_t *len)
{
    json_object *obj = aib_json_parse_object(*body, *len);
    json_object *tokens = aib_json_member(obj, "inputTokens", json_type_int);
    /* Relayed by bedrock_classify in Anthropic's shape, or as Bedrock sent it (BYOK). */
    json_object *relayed = aib_json_member(obj, "error", json_type_object);
    const char *message = aib_json_string(relayed ? relayed : obj, "message");
    const char *error = apr_table_get(headers, "x-amzn-ErrorType");
    json_object *request;
    const char *model;

    if (status < 300 && tokens) {
        *body = apr_psprintf(p, "{\"input_tokens\":%" APR_INT64_T_FMT "}",
                             json_object_get_int64(tokens));
        status = 200;
    }
    else if (status == 400 && error && !strncmp(error, VALIDATION, sizeof(VALIDATION) - 1)
             && message && strstr(message, NO_COUNTING)) {
        request = aib_json_parse_object(ic->body, ic->body_len);
        model = aib_json_string(request, "model");
        *body = aib_anthropic_error_body(p, AIB_ERROR_NOT_FOUND,
                                   apr_psprintf(p, "model '%s' does not support token counting "
                                                "on Bedrock", model ? model
                                                : model_id(ic->provider, NULL)));
        json_object_put(request);
        status = 404;
    }
    json_object_put(obj);
    *len = strlen(*body);
    return status;
}

/* Per attempt: the entry's region may move the request to its own host,
 * then the credential is added (a SigV4 signature or a bearer key). */
static const char *bedrock_sign(const aib_interception_t *ic, apr_pool_t *p, const char *key,
                                aib_outgoing_t *req)
{
    const struct aib_provider *pv = ic->provider;
    const bedrock_conf_t *conf = pv->type_conf;
    aib_aws_credentials_t creds;
    const char *region = NULL, *bearer = NULL, *err = NULL;

    if (!strncmp(key, BEARER_PREFIX, sizeof(BEARER_PREFIX) - 1)) {
        const char *at = strrchr(key, '@');
        bearer = key + sizeof(BEARER_PREFIX) - 1;
        if (at && aib_aws_is_region(at + 1)) {
            bearer = apr_pstrmemdup(p, bearer, (apr_size_t)(at - bearer));
            region = at + 1;
        }
    }
    else if ((err = aib_aws_credentials_parse(p, key, &creds, &region)))
        return err;
    if (!region)
        region = conf->region;
    else if (conf->regional && strcmp(region, conf->region))
        req->url = apr_pstrcat(p, regional_base_url(p, region),
                               req->url + strlen(pv->base_url), NULL);
    if (bearer) {
        apr_table_setn(req->headers, "Authorization", apr_pstrcat(p, "Bearer ", bearer, NULL));
        return NULL;
    }
    return aib_sigv4_sign(p, req->method, req->url, req->headers, req->body, req->body_len,
                          &creds, region, "bedrock", ic->now_ms());
}

/* The models of the map in Anthropic's list shape, or the one named
 * `only` (NULL when the map lacks it). */
static const char *models_answer(apr_pool_t *p, const struct aib_provider *pv, const char *only)
{
    const bedrock_conf_t *conf = pv->type_conf;
    json_object *list = json_object_new_array(), *answer;
    const char *text, *first = NULL, *last = NULL;
    int i;

    for (i = 0; i < conf->models->nelts; i++) {
        const model_entry_t *m = &APR_ARRAY_IDX(conf->models, i, model_entry_t);
        json_object *model;
        if (only && strcmp(only, m->client))
            continue;
        model = json_object_new_object();
        aib_json_set_string(model, "type", "model");
        aib_json_set_string(model, "id", m->client);
        aib_json_set_string(model, "display_name", m->client);
        aib_json_set_string(model, "created_at", "1970-01-01T00:00:00Z");
        if (only) {
            json_object_put(list);
            text = aib_json_text(p, model);
            json_object_put(model);
            return text;
        }
        json_object_array_add(list, model);
        first = first ? first : m->client;
        last = m->client;
    }
    if (only) {
        json_object_put(list);
        return NULL;
    }
    answer = json_object_new_object();
    json_object_object_add(answer, "data", list);
    json_object_object_add(answer, "has_more", json_object_new_boolean(0));
    json_object_object_add(answer, "first_id", first ? json_object_new_string(first) : NULL);
    json_object_object_add(answer, "last_id", last ? json_object_new_string(last) : NULL);
    text = aib_json_text(p, answer);
    json_object_put(answer);
    return text;
}

static int bedrock_answer(const aib_interception_t *ic, const char **body)
{
    const char *path = client_path(ic);
    const char *only = !strncmp(path, "/v1/models/", 11) ? path + 11 : NULL;

    if (ic->route.kind != AIB_ROUTE_PASSTHROUGH || !strcmp(path, COUNT_TOKENS_PATH))
        return 0;
    *body = models_answer(ic->pool, ic->provider, only);
    if (*body)
        return 200;
    *body = aib_anthropic_error_body(ic->pool, AIB_ERROR_NOT_FOUND,
                               apr_psprintf(ic->pool, "model '%s' not found", only));
    return 404;
}

/* Bedrock's own token counts: a stream's last event carries them in
 * amazon-bedrock-invocationMetrics, a blocking answer in headers. */
static const struct {
    const char *metric;
    const char *header;
    size_t field;         /* the aib_usage_t count, by its offset */
} bedrock_counts[] = {
    { "inputTokenCount", "X-Amzn-Bedrock-Input-Token-Count", offsetof(aib_usage_t, input) },
    { "outputTokenCount", "X-Amzn-Bedrock-Output-Token-Count", offsetof(aib_usage_t, output) },
    { "cacheReadInputTokenCount", "X-Amzn-Bedrock-Cache-Read-Input-Token-Count",
      offsetof(aib_usage_t, cache_read) },
    { "cacheWriteInputTokenCount", "X-Amzn-Bedrock-Cache-Write-Input-Token-Count",
      offsetof(aib_usage_t, cache_write) },
};
#define BEDROCK_COUNTS (sizeof(bedrock_counts) / sizeof(bedrock_counts[0]))

/* Count i as Bedrock reports it, where the Anthropic usage left it at 0:
 * the usage Anthropic's events or body carry comes first. */
static void fill_count(aib_usage_t *u, size_t i, int64_t n)
{
    int64_t *count = (int64_t *)(void *)((char *)u + bedrock_counts[i].field);

    if (n < 0)
        return;
    u->seen = 1;
    if (!*count)
        *count = n;
}

static void bedrock_usage_from_headers(aib_usage_t *u, const apr_table_t *headers)
{
    size_t i;

    for (i = 0; i < BEDROCK_COUNTS; i++) {
        const char *value = apr_table_get(headers, bedrock_counts[i].header);
        apr_int64_t n;

        if (!value || !*value || strspn(value, "0123456789") != strlen(value))
            continue;
        errno = 0;
        n = apr_strtoi64(value, NULL, 10);
        if (errno != ERANGE)
            fill_count(u, i, n);
    }
}

static void bedrock_usage_from_event(aib_usage_t *u, const char *event, const char *data,
                                     apr_size_t len)
{
    json_object *root, *metrics;
    size_t i;

    if (!event || strcmp(event, "message_stop") || !strstr(data, "invocationMetrics"))
        return;
    root = aib_json_parse_object(data, len);
    metrics = aib_json_member(root, "amazon-bedrock-invocationMetrics", json_type_object);
    for (i = 0; metrics && i < BEDROCK_COUNTS; i++) {
        json_object *n = aib_json_member(metrics, bedrock_counts[i].metric, json_type_int);
        if (n)
            fill_count(u, i, json_object_get_int64(n));
    }
    json_object_put(root);
}

static const aib_format_t *const bedrock_formats[] = { &aib_format_messages, NULL };

const aib_provider_ops_t aib_provider_bedrock = {
    .type = "bedrock",
    .default_base_url = "https://bedrock-runtime.<region>.amazonaws.com",
    /* Anthropic's routes: its models list answered by the module from the
     * map (bedrock_answer), count_tokens sent to CountTokens
     * (bedrock_prepare), whose answer is rewritten (bedrock_rewrite_answer);
     * a client's own entry where Anthropic's clients send their key. */
    .route = aib_anthropic_route,
    .set_key = bedrock_set_key,
    .client_key = aib_anthropic_client_key,
    .error_body = aib_anthropic_error_body,
    .error_code = aib_anthropic_error_code,
    .classify_answer = bedrock_classify,
    .cooldown_grows = 1,
    .stream_fault = bedrock_stream_fault,
    .formats = bedrock_formats,
    .option = bedrock_option,
    .options_done = bedrock_options_done,
    .prepare = bedrock_prepare,
    .sign = bedrock_sign,
    .answer = bedrock_answer,
    .rewrite_answer = bedrock_rewrite_answer,
    .usage_from_headers = bedrock_usage_from_headers,
    .usage_from_event = bedrock_usage_from_event,
    .stream_framing = &aib_eventstream_framing,
};
