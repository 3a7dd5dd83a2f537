/* OpenAI Responses as a wire format (see format.h).
 *
 * Design notes:
 * - Usage in streams: function_call names are taken only from
 *   response.output_item.added (they arrive as the calls start, and a
 *   stream cut short still reports them); response.completed, .failed and
 *   .incomplete give the usage only, so no name is counted twice.
 * - Agentic streams: output_index of relayed items and sequence_number of
 *   every event are renumbered to run on across iterations; the final
 *   response.completed carries the first response's id and, in `output`,
 *   the relayed items of every iteration. */
#include <stdlib.h>
#include <string.h>

#include <json.h>
#include <apr_strings.h>

#include "agent_body.h"
#include "agent_stream_int.h"
#include "format.h"
#include "json_helpers.h"

static const aib_usage_field_t usage_fields[] = {
    { AIB_COUNT_INPUT, NULL, "input_tokens" },
    { AIB_COUNT_OUTPUT, NULL, "output_tokens" },
    { AIB_COUNT_TOTAL, NULL, "total_tokens" },
    { AIB_COUNT_CACHE_READ, "input_tokens_details", "cached_tokens" },
    { AIB_COUNT_REASONING, "output_tokens_details", "reasoning_tokens" },
    { AIB_COUNT_INPUT, NULL, NULL }
};

/* The events that end a response. */
static int is_responses_end(const char *type)
{
    return aib_str_is(type, "response.completed") || aib_str_is(type, "response.incomplete")
           || aib_str_is(type, "response.failed");
}

/* ------------------------------------------------------------------ */
/* Usage and tool names                                                */

static int responses_usage_event_wanted(const char *event, const char *data, apr_size_t len)
{
    (void)data;
    (void)len;
    /* Without an event name, the data's "type" says (after parsing). */
    return !event || !*event || is_responses_end(event)
           || !strcmp(event, "response.output_item.added");
}

static void responses_usage_from_event(aib_usage_t *u, apr_pool_t *pool, const char *type,
                                       json_object *root)
{
    if (is_responses_end(type)) {
        aib_usage_read(u, &aib_format_responses,
                       aib_json_member(aib_json_member(root, "response", json_type_object),
                                       "usage", json_type_object));
    }
    else if (aib_str_is(type, "response.output_item.added")) {
        aib_usage_add_typed_tool(u, pool, aib_json_member(root, "item", json_type_object),
                                 "function_call");
    }
}

static void responses_tools_from_body(aib_usage_t *u, apr_pool_t *pool, json_object *root)
{
    aib_usage_add_typed_tools(u, pool, aib_json_member(root, "output", json_type_array),
                              "function_call");
}

/* ------------------------------------------------------------------ */
/* The end of a stream                                                 */

static int responses_stream_complete(const char *event, const char *data)
{
    (void)data;
    return event && (is_responses_end(event) || !strcmp(event, "error"));
}

/* An error event, the code at the top level as Responses streams have it. */
static const char *responses_stream_error(apr_pool_t *p, const aib_provider_ops_t *provider,
                                          aib_error_kind_e kind, const char *message,
                                          int64_t sequence)
{
    return apr_psprintf(p, "event: error\ndata: {\"type\":\"error\",\"code\":\"%s\","
                        "\"message\":%s,\"param\":null,\"sequence_number\":%"
                        APR_INT64_T_FMT "}\n\n", provider->error_code(kind),
                        aib_json_quote(p, message), sequence);
}

/* ------------------------------------------------------------------ */
/* Tools of a blocking exchange                                        */

static const char *responses_tool_choice_none(json_object *choice, int *none)
{
    *none = aib_json_string_is(choice, "none");
    return NULL;
}

static json_object *responses_tool_entry(const aib_agent_tool_t *t, json_object *schema)
{
    json_object *entry = json_object_new_object();

    aib_json_set_string(entry, "type", "function");
    aib_json_set_string(entry, "name", t->name);
    if (t->description)
        aib_json_set_string(entry, "description", t->description);
    json_object_object_add(entry, "parameters", schema);
    return entry;
}

static const char *responses_client_tool_name(json_object *item)
{
    return aib_json_string(item, "name");
}

static void responses_serial_tool_calls(json_object *root, json_object *choice)
{
    (void)choice;
    json_object_object_add(root, "parallel_tool_calls", json_object_new_boolean(0));
}

static const char *responses_call_array(json_object *root, json_object **arr)
{
    *arr = aib_json_member(root, "output", json_type_array);
    return *arr ? NULL : "response has no 'output' array";
}

/* Responses output items the client must act on, besides function_call. */
static const char *const client_item_types[] = {
    "custom_tool_call", "computer_call", "local_shell_call", "shell_call",
    "apply_patch_call", "mcp_approval_request", NULL
};

static int is_client_item(const char *type)
{
    int i;

    for (i = 0; client_item_types[i]; i++)
        if (!strcmp(type, client_item_types[i]))
            return 1;
    return 0;
}

/* Function calls, and the items only the client can act on (no arguments). */
static int responses_read_call(apr_pool_t *p, json_object *item, aib_agent_call_t *c,
                               const char **err)
{
    const char *t = aib_json_string(item, "type");

    memset(c, 0, sizeof(*c));
    if (!json_object_is_type(item, json_type_object)) {
        *err = "a tool call or output item is not an object";
        return 0;
    }
    if (!t) {
        *err = "an output item has no string 'type'";
        return 0;
    }
    if (!strcmp(t, "function_call")) {
        c->id = aib_json_strdup(p, item, "call_id");
        c->name = aib_json_strdup(p, item, "name");
        c->arguments = aib_json_strdup(p, item, "arguments");
        if (!c->id || !c->name || !c->arguments) {
            *err = "a function_call item has no string call_id, name or arguments";
            return 0;
        }
        return 1;
    }
    if (!is_client_item(t))
        return 0;
    c->id = aib_json_strdup(p, item, "call_id");
    if (!c->id)
        c->id = aib_json_strdup(p, item, "id");
    c->name = aib_json_strdup(p, item, "name");
    return 1;
}

/* `input`, created when absent; a string input becomes one user message. */
static json_object *responses_history(json_object *request, const char **err)
{
    json_object *v, *msg;

    if (!json_object_object_get_ex(request, "input", &v)) {
        v = json_object_new_array();
        json_object_object_add(request, "input", v);
        return v;
    }
    if (json_object_is_type(v, json_type_array))
        return v;
    if (!json_object_is_type(v, json_type_string)) {
        *err = "'input' must be a string or an array";
        return NULL;
    }
    msg = json_object_new_object();
    aib_json_set_string(msg, "role", "user");
    json_object_object_add(msg, "content", json_object_get(v));
    v = json_object_new_array();
    json_object_array_add(v, msg);
    json_object_object_add(request, "input", v);  /* puts the string once */
    return v;
}

/* Every output item as returned. */
static json_object *responses_append_turn(json_object *history, json_object *response)
{
    json_object *items = aib_json_member(response, "output", json_type_array);
    size_t k, n = json_object_array_length(items);

    for (k = 0; k < n; k++)
        json_object_array_add(history, json_object_get(json_object_array_get_idx(items, k)));
    return history;
}

static void responses_append_result(apr_pool_t *p, json_object *to, const aib_agent_call_t *c,
                                    const aib_agent_result_t *r)
{
    json_object *msg = json_object_new_object();
    const char *text = r->output ? r->output : "";

    aib_json_set_string(msg, "type", "function_call_output");
    aib_json_set_string(msg, "call_id", c->id);
    aib_json_set_string(msg, "output", r->is_error ? aib_agent_error_output(p, text) : text);
    json_object_array_add(to, msg);
}

/* A response without calls has no reason to change: output says it all. */
static void responses_no_calls_left(json_object *response)
{
    (void)response;
}

static const char *responses_turn_as_response(apr_pool_t *p, const char *assistant)
{
    return apr_pstrcat(p, "{\"output\":", assistant, "}", NULL);
}

/* ------------------------------------------------------------------ */
/* The agentic stream filter                                           */

/* Responses: every relayed event takes the next sequence number; the
 * first keeps its own, so the numbers start where the upstream's did. */
static int send_numbered(aib_agent_stream_t *s, const char *event, json_object *root,
                         int changed, const char *data, apr_size_t len)
{
    json_object *seq = aib_json_member(root, "sequence_number", json_type_int);

    if (seq) {
        if (!s->seq_started) {
            int64_t first = json_object_get_int64(seq);
            /* A start no real stream has (negative, beyond JSON's exact
             * integers) would overflow as it counts on: 0 then. */
            s->next_seq = first >= 0 && first < (INT64_C(1) << 53) ? first : 0;
            s->seq_started = 1;
        }
        changed |= aib_json_set_int(root, "sequence_number", s->next_seq++, 0);
    }
    return aib_stream_send_json(s, event, root, changed, data, len);
}

/* The relayed output items of every iteration, in the client's order. */
static json_object *responses_output(const aib_agent_stream_t *s)
{
    json_object *out = json_object_new_array();
    int i, j;

    for (i = 0; i < s->items->nelts; i++) {
        json_object *item = aib_json_parse_object(APR_ARRAY_IDX(s->items, i, const char *),
                                                  strlen(APR_ARRAY_IDX(s->items, i,
                                                                       const char *)));
        if (item)
            json_object_array_add(out, item);
    }
    if (s->fresh)
        return out;
    /* Parts were numbered in order of arrival: client order. */
    for (j = 0; j < s->parts->nelts; j++) {
        const aib_stream_part_t *p = &APR_ARRAY_IDX(s->parts, j, aib_stream_part_t);
        json_object *item;

        if (p->withheld || !p->json)
            continue;
        item = aib_json_parse_object(p->json, strlen(p->json));
        if (item)
            json_object_array_add(out, item);
    }
    return out;
}

static int responses_end(const aib_agent_stream_t *s, json_object *root)
{
    json_object *resp = aib_json_member(root, "response", json_type_object);
    json_object *usage = aib_json_member(resp, "usage", json_type_object);
    const char *id = aib_json_string(resp, "id");
    aib_usage_t u;
    int changed = 0;

    if (!resp)
        return 0;
    if (s->first_id && id && strcmp(id, s->first_id)) {
        json_object_object_add(resp, "id", json_object_new_string(s->first_id));
        changed = 1;
    }
    if (usage) {
        aib_stream_sum_usage(s, &u);
        changed |= aib_format_usage_write(&aib_format_responses, usage, &u, 0);
    }
    /* Its output differs from the upstream's once something was held or
     * an earlier iteration relayed items. */
    if (s->iteration > 0 || s->injected) {
        json_object_object_add(resp, "output", responses_output(s));
        changed = 1;
    }
    return changed;
}

static int responses_item(aib_agent_stream_t *s, const char *type, json_object *root,
                          int *changed, int *drop)
{
    int64_t up = aib_stream_index_of(root, "output_index");
    aib_stream_part_t *p = aib_stream_find_part(s, up);
    json_object *item = aib_json_member(root, "item", json_type_object);

    if (aib_str_is(type, "response.output_item.added") && !p) {
        int call = aib_str_is(aib_json_string(item, "type"), "function_call");

        p = aib_stream_new_part(s, up);
        if (call && aib_stream_injected_name(s, aib_json_string(item, "name"))) {
            p->withheld = 1;
            s->injected++;
        }
        else {
            if (call)
                s->client_tools = 1;
            p->client = s->next_index++;
        }
    }
    if (!p)
        return 0;
    if (aib_str_is(type, "response.output_item.done") && item) {
        p->json = aib_stream_take_json(s, item);
        if (!p->json)
            return 1;
        if (p->withheld) {
            p->id = aib_stream_take_string(s, aib_json_member(item, "call_id", json_type_string));
            p->name = aib_stream_take_string(s, aib_json_member(item, "name", json_type_string));
            if (aib_stream_append_string(s, &p->text,
                                         aib_json_member(item, "arguments", json_type_string)))
                return 1;
        }
    }
    *drop = p->withheld;
    if (!p->withheld)
        *changed |= aib_json_set_int(root, "output_index", p->client, 0);
    return 0;
}

static int responses_filter_event(aib_agent_stream_t *s, const char *event, const char *type,
                                  json_object *root, const char *data, apr_size_t len)
{
    int changed = 0, drop = 0;

    if (!root)
        return aib_stream_send(s, event, data, len);
    if (s->tool_turn)
        return 0;   /* nothing is meant to follow response.completed */
    if (aib_str_is(type, "error")) {
        if (send_numbered(s, event, root, 0, data, len))
            return 1;
        return aib_stream_fail(s, AIB_AGENT_ERROR, aib_stream_error_message(root));
    }
    if (aib_str_is(type, "response.created") || aib_str_is(type, "response.in_progress")
        || aib_str_is(type, "response.queued")) {
        if (s->iteration)
            return 0;
        if (!s->first_id)
            s->first_id = apr_pstrdup(s->pool, aib_json_string(
                aib_json_member(root, "response", json_type_object), "id"));
        return send_numbered(s, event, root, 0, data, len);
    }
    if (is_responses_end(type)) {
        s->ended = 1;
        if (aib_str_is(type, "response.completed") && s->injected && !s->client_tools) {
            s->tool_turn = 1;
            return 0;
        }
        if (send_numbered(s, event, root, responses_end(s, root), data, len))
            return 1;
        if (aib_str_is(type, "response.failed"))
            return aib_stream_fail(s, AIB_AGENT_ERROR, aib_stream_error_message(root));
        return 0;
    }
    if (aib_json_member(root, "output_index", json_type_int)) {
        if (responses_item(s, type, root, &changed, &drop))
            return 1;
        if (drop)
            return 0;
    }
    return send_numbered(s, event, root, changed, data, len);
}

static const char *responses_filter_assistant(aib_agent_stream_t *s, apr_pool_t *p)
{
    apr_array_header_t *items = apr_array_make(p, s->parts->nelts + 1, sizeof(const char *));
    int i;

    for (i = 0; i < s->parts->nelts; i++) {
        const aib_stream_part_t *pt = &APR_ARRAY_IDX(s->parts, i, aib_stream_part_t);

        if (pt->json) {
            if (items->nelts)
                *(const char **)apr_array_push(items) = ",";
            *(const char **)apr_array_push(items) = pt->json;
        }
    }
    return apr_pstrcat(p, "[", apr_array_pstrcat(p, items, 0), "]", NULL);
}

/* The final response.completed lists the items relayed in every iteration. */
static void responses_filter_tool_turn_end(aib_agent_stream_t *s)
{
    int i;

    for (i = 0; i < s->parts->nelts; i++) {
        const aib_stream_part_t *pt = &APR_ARRAY_IDX(s->parts, i, aib_stream_part_t);

        if (pt->withheld || !pt->json)
            continue;
        s->kept += strlen(pt->json);
        *(const char **)apr_array_push(s->items) = apr_pstrdup(s->pool, pt->json);
    }
}

/* A scan, not a parse: it runs on every event of a stream. */
static int responses_event_sequence(const char *data, int64_t *sequence)
{
    const char *seq = strstr(data, "\"sequence_number\":");

    if (!seq)
        return 0;
    *sequence = strtoll(seq + 18, NULL, 10);
    return 1;
}

const aib_format_t aib_format_responses = {
    .name = "responses",
    .usage_fields = usage_fields,
    .usage_event_wanted = responses_usage_event_wanted,
    .usage_from_event = responses_usage_from_event,
    .tools_from_body = responses_tools_from_body,
    .stream_usage_ask = NULL,
    .stream_usage_strip = NULL,
    .stream_complete = responses_stream_complete,
    .stream_error = responses_stream_error,
    .keepalive = ": keep-alive\n\n",
    .event_sequence = responses_event_sequence,
    .tool_choice_none = responses_tool_choice_none,
    .tool_entry = responses_tool_entry,
    .client_tool_name = responses_client_tool_name,
    .serial_tool_calls = responses_serial_tool_calls,
    .call_array = responses_call_array,
    .read_call = responses_read_call,
    .history = responses_history,
    .append_turn = responses_append_turn,
    .append_result = responses_append_result,
    .no_calls_left = responses_no_calls_left,
    .turn_as_response = responses_turn_as_response,
    .filter_event = responses_filter_event,
    .filter_assistant = responses_filter_assistant,
    .filter_tool_turn_end = responses_filter_tool_turn_end,
};
