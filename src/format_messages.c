/* Anthropic Messages as a wire format (see format.h).
 *
 * Design notes:
 * - Usage: message_start carries message.usage, message_delta the
 *   cumulative output_tokens (a later usage object overwrites the counts
 *   it carries).
 * - Agentic streams: the first message_start goes out as it came (the
 *   only one the client sees); the final message_delta carries the summed
 *   output_tokens and, once there was more than one iteration, the summed
 *   input_tokens and cache counts, which the SDKs take over
 *   message_start's. Only values that differ are written, so one iteration
 *   stays unchanged. Content block indices of relayed blocks run on across
 *   iterations; withheld tool_use blocks take none. */
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
    { AIB_COUNT_CACHE_READ, NULL, "cache_read_input_tokens" },
    { AIB_COUNT_CACHE_WRITE, NULL, "cache_creation_input_tokens" },
    { AIB_COUNT_INPUT, NULL, NULL }
};

/* ------------------------------------------------------------------ */
/* Usage and tool names                                                */

static int messages_usage_event_wanted(const char *event, const char *data, apr_size_t len)
{
    (void)data;
    (void)len;
    /* Without an event name, the data's "type" says (after parsing). */
    return !event || !*event || !strcmp(event, "message_start")
           || !strcmp(event, "message_delta") || !strcmp(event, "content_block_start");
}

static void messages_usage_from_event(aib_usage_t *u, apr_pool_t *pool, const char *type,
                                      json_object *root)
{
    if (aib_str_is(type, "message_start")) {
        aib_usage_read(u, &aib_format_messages,
                       aib_json_member(aib_json_member(root, "message", json_type_object),
                                       "usage", json_type_object));
    }
    else if (aib_str_is(type, "message_delta")) {
        aib_usage_read(u, &aib_format_messages,
                       aib_json_member(root, "usage", json_type_object));
    }
    else if (aib_str_is(type, "content_block_start")) {
        aib_usage_add_typed_tool(u, pool,
                                 aib_json_member(root, "content_block", json_type_object),
                                 "tool_use");
    }
}

static void messages_tools_from_body(aib_usage_t *u, apr_pool_t *pool, json_object *root)
{
    aib_usage_add_typed_tools(u, pool, aib_json_member(root, "content", json_type_array),
                              "tool_use");
}

/* ------------------------------------------------------------------ */
/* The end of a stream                                                 */

static int messages_stream_complete(const char *event, const char *data)
{
    (void)data;
    return event && (!strcmp(event, "message_stop") || !strcmp(event, "error"));
}

/* An error event holding the provider's error body. */
static const char *messages_stream_error(apr_pool_t *p, const aib_provider_ops_t *provider,
                                         aib_error_kind_e kind, const char *message,
                                         int64_t sequence)
{
    (void)sequence;
    return apr_psprintf(p, "event: error\ndata: %s\n\n", provider->error_body(p, kind, message));
}

/* ------------------------------------------------------------------ */
/* Tools of a blocking exchange                                        */

static const char *messages_tool_choice_none(json_object *choice, int *none)
{
    if (!json_object_is_type(choice, json_type_object))
        return "'tool_choice' must be an object";
    *none = aib_json_string_is(aib_json_member(choice, "type", json_type_string), "none");
    return NULL;
}

static json_object *messages_tool_entry(const aib_agent_tool_t *t, json_object *schema)
{
    json_object *entry = json_object_new_object();

    aib_json_set_string(entry, "name", t->name);
    if (t->description)
        aib_json_set_string(entry, "description", t->description);
    json_object_object_add(entry, "input_schema", schema);
    return entry;
}

static const char *messages_client_tool_name(json_object *item)
{
    return aib_json_string(item, "name");
}

/* tool_choice.disable_parallel_tool_use, with {"type":"auto"} created. */
static void messages_serial_tool_calls(json_object *root, json_object *choice)
{
    if (!choice) {
        choice = json_object_new_object();
        aib_json_set_string(choice, "type", "auto");
        json_object_object_add(root, "tool_choice", choice);
    }
    json_object_object_add(choice, "disable_parallel_tool_use", json_object_new_boolean(1));
}

static const char *messages_call_array(json_object *root, json_object **arr)
{
    *arr = aib_json_member(root, "content", json_type_array);
    return *arr ? NULL : "response has no 'content' array";
}

/* tool_use blocks; their input serialised as the arguments. */
static int messages_read_call(apr_pool_t *p, json_object *item, aib_agent_call_t *c,
                              const char **err)
{
    json_object *input;

    memset(c, 0, sizeof(*c));
    if (!json_object_is_type(item, json_type_object)) {
        *err = "a tool call or output item is not an object";
        return 0;
    }
    if (!aib_str_is(aib_json_string(item, "type"), "tool_use"))
        return 0;
    c->id = aib_json_strdup(p, item, "id");
    c->name = aib_json_strdup(p, item, "name");
    input = aib_json_member(item, "input", json_type_object);
    if (!c->id || !c->name || !input) {
        *err = "a tool_use block has no string id, string name or object input";
        return 0;
    }
    c->arguments = aib_json_text(p, input);
    return 1;
}

static json_object *messages_history(json_object *request, const char **err)
{
    json_object *v = aib_json_member(request, "messages", json_type_array);

    if (!v)
        *err = "request has no 'messages' array";
    return v;
}

/* The assistant turn (the response's content), then one user message whose
 * content the tool_result blocks go to. */
static json_object *messages_append_turn(json_object *history, json_object *response)
{
    json_object *msg = json_object_new_object(), *blocks = json_object_new_array();

    aib_json_set_string(msg, "role", "assistant");
    json_object_object_add(msg, "content", json_object_get(aib_json_member(
                                               response, "content", json_type_array)));
    json_object_array_add(history, msg);
    msg = json_object_new_object();
    aib_json_set_string(msg, "role", "user");
    json_object_object_add(msg, "content", blocks);
    json_object_array_add(history, msg);
    return blocks;
}

/* A tool_result block; is_error only when true. */
static void messages_append_result(apr_pool_t *p, json_object *to, const aib_agent_call_t *c,
                                   const aib_agent_result_t *r)
{
    json_object *block = json_object_new_object();

    (void)p;
    aib_json_set_string(block, "type", "tool_result");
    aib_json_set_string(block, "tool_use_id", c->id);
    aib_json_set_string(block, "content", r->output ? r->output : "");
    if (r->is_error)
        json_object_object_add(block, "is_error", json_object_new_boolean(1));
    json_object_array_add(to, block);
}

static void messages_no_calls_left(json_object *response)
{
    if (aib_json_string_is(aib_json_member(response, "stop_reason", json_type_string),
                           "tool_use"))
        aib_json_set_string(response, "stop_reason", "end_turn");
}

/* The assistant turn is already the shape of a response's content holder. */
static const char *messages_turn_as_response(apr_pool_t *p, const char *assistant)
{
    (void)p;
    return assistant;
}

/* ------------------------------------------------------------------ */
/* The agentic stream filter                                           */

/* message_delta's usage, as it ends the client's stream: the sums. */
static int messages_usage(const aib_agent_stream_t *s, json_object *root)
{
    json_object *usage = aib_json_member(root, "usage", json_type_object);
    /* message_start's counts are no longer the whole after an iteration. */
    unsigned add = AIB_COUNT_BIT(AIB_COUNT_OUTPUT) | (s->iteration > 0 ? AIB_COUNT_ALL : 0);
    aib_usage_t u;

    if (!usage)
        return 0;
    aib_stream_sum_usage(s, &u);
    return aib_format_usage_write(&aib_format_messages, usage, &u, add);
}

static int messages_block(aib_agent_stream_t *s, const char *type, json_object *root,
                          int *changed, int *drop)
{
    int64_t up = aib_stream_index_of(root, "index");
    aib_stream_part_t *p = aib_stream_find_part(s, up);
    json_object *delta;

    if (aib_str_is(type, "content_block_start") && !p) {
        json_object *block = aib_json_member(root, "content_block", json_type_object);
        const char *btype = aib_json_string(block, "type");

        p = aib_stream_new_part(s, up);
        if (aib_str_is(btype, "tool_use")
            && aib_stream_injected_name(s, aib_json_string(block, "name"))) {
            p->withheld = 1;
            s->injected++;
            p->id = aib_stream_take_string(s, aib_json_member(block, "id", json_type_string));
            p->name = aib_stream_take_string(s, aib_json_member(block, "name", json_type_string));
        }
        else {
            if (aib_str_is(btype, "tool_use"))
                s->client_tools = 1;
            p->client = s->next_index++;
        }
        p->json = aib_stream_take_json(s, block);
        if (!p->json)
            return 1;
    }
    if (!p)
        return 0;   /* a block we never saw start: relayed as it is */
    delta = aib_json_member(root, "delta", json_type_object);
    if (aib_str_is(type, "content_block_delta")) {
        /* Which member of which delta type grows which text of the block. */
        static const struct {
            const char *type, *member;
            int signature;
        } grows[] = {
            { "text_delta", "text", 0 },
            { "thinking_delta", "thinking", 0 },
            { "input_json_delta", "partial_json", 0 },
            { "signature_delta", "signature", 1 },
        };
        const char *dtype = aib_json_string(delta, "type");
        size_t i;

        for (i = 0; i < sizeof(grows) / sizeof(grows[0]); i++)
            if (aib_str_is(dtype, grows[i].type)
                && aib_stream_append_string(s, grows[i].signature ? &p->signature : &p->text,
                                            aib_json_member(delta, grows[i].member,
                                                            json_type_string)))
                return 1;
    }
    *drop = p->withheld;
    if (!p->withheld)
        *changed |= aib_json_set_int(root, "index", p->client, 0);
    return 0;
}

static int messages_filter_event(aib_agent_stream_t *s, const char *event, const char *type,
                                 json_object *root, const char *data, apr_size_t len)
{
    int changed = 0, drop = 0;

    if (!root)
        return aib_stream_send(s, event, data, len);
    if (aib_str_is(type, "error")) {
        if (aib_stream_send(s, event, data, len))
            return 1;
        return aib_stream_fail(s, AIB_AGENT_ERROR, aib_stream_error_message(root));
    }
    /* After message_delta of a tool turn only message_stop is taken: a
     * block the upstream still sent could neither go out (its message
     * ended) nor change what the turn was. */
    if (s->tool_turn && !aib_str_is(type, "message_stop"))
        return 0;
    if (aib_str_is(type, "message_start"))
        return s->iteration ? 0 : aib_stream_send(s, event, data, len);
    if (aib_str_is(type, "content_block_start") || aib_str_is(type, "content_block_delta")
        || aib_str_is(type, "content_block_stop")) {
        if (messages_block(s, type, root, &changed, &drop))
            return 1;
        return drop ? 0 : aib_stream_send_json(s, event, root, changed, data, len);
    }
    if (aib_str_is(type, "message_delta")) {
        const char *stop = aib_json_string(aib_json_member(root, "delta", json_type_object),
                                           "stop_reason");

        if (aib_str_is(stop, "tool_use") && s->injected && !s->client_tools)
            s->tool_turn = 1;
        return s->tool_turn ? 0 : aib_stream_send_json(s, event, root, messages_usage(s, root),
                                                       data, len);
    }
    if (aib_str_is(type, "message_stop")) {
        s->ended = 1;
        return s->tool_turn ? 0 : aib_stream_send(s, event, data, len);
    }
    return aib_stream_send(s, event, data, len);   /* ping and what is yet unknown */
}

/* Sets a block's string member to what its deltas brought, if anything. */
static void set_text(json_object *block, const char *key, const aib_buffer_t *b)
{
    if (b->len)
        json_object_object_add(block, key, json_object_new_string_len(b->data, (int)b->len));
}

static const char *messages_filter_assistant(aib_agent_stream_t *s, apr_pool_t *p)
{
    json_object *msg = json_object_new_object(), *content = json_object_new_array();
    const char *out;
    int i;

    for (i = 0; i < s->parts->nelts; i++) {
        const aib_stream_part_t *pt = &APR_ARRAY_IDX(s->parts, i, aib_stream_part_t);
        json_object *block = pt->json ? aib_json_parse_object(pt->json, strlen(pt->json))
                                      : NULL;
        const char *type = aib_json_string(block, "type");

        if (!block)
            continue;
        if (aib_str_is(type, "text") && !pt->text.len) {
            /* The API refuses empty text blocks in a request. */
            json_object_put(block);
            continue;
        }
        if (aib_str_is(type, "text"))
            set_text(block, "text", &pt->text);
        else if (aib_str_is(type, "thinking")) {
            set_text(block, "thinking", &pt->text);
            set_text(block, "signature", &pt->signature);
        }
        else if (aib_str_is(type, "tool_use") || aib_str_is(type, "server_tool_use")) {
            json_object *input = pt->text.len ? aib_json_parse_object(pt->text.data, pt->text.len)
                                              : NULL;
            json_object_object_add(block, "input", input ? input : json_object_new_object());
        }
        json_object_array_add(content, block);
    }
    json_object_object_add(msg, "role", json_object_new_string("assistant"));
    json_object_object_add(msg, "content", content);
    out = aib_json_text(p, msg);
    json_object_put(msg);
    return out;
}

const aib_format_t aib_format_messages = {
    .name = "messages",
    .usage_fields = usage_fields,
    .usage_event_wanted = messages_usage_event_wanted,
    .usage_from_event = messages_usage_from_event,
    .tools_from_body = messages_tools_from_body,
    .stream_usage_ask = NULL,
    .stream_usage_strip = NULL,
    .stream_complete = messages_stream_complete,
    .stream_error = messages_stream_error,
    .keepalive = "event: ping\ndata: {\"type\": \"ping\"}\n\n",
    .tool_choice_none = messages_tool_choice_none,
    .tool_entry = messages_tool_entry,
    .client_tool_name = messages_client_tool_name,
    .serial_tool_calls = messages_serial_tool_calls,
    .call_array = messages_call_array,
    .read_call = messages_read_call,
    .history = messages_history,
    .append_turn = messages_append_turn,
    .append_result = messages_append_result,
    .no_calls_left = messages_no_calls_left,
    .turn_as_response = messages_turn_as_response,
    .filter_event = messages_filter_event,
    .filter_assistant = messages_filter_assistant,
    .filter_tool_turn_end = NULL,
};
