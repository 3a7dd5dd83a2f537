/* Unit tests for the agentic loop's stream filter (src/agent_stream.c).
 *
 * Upstream streams are realistic SSE text, fed through the real aib_sse
 * parser into the filter; what the client got is parsed back (SSE, then
 * JSON) and its fields compared, so a frame relayed wrongly, twice or not
 * at all fails. Usage counts differ in every iteration so a sum that
 * misses one fails. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "unit.h"

#include <stdlib.h>
#include <string.h>

#include <json.h>
#include <apr_strings.h>

#include "agent_stream.h"
#include "sse.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

typedef struct {
    apr_array_header_t *frames;  /* char *: each frame emitted */
    int gone_after;              /* frames accepted before "client gone"; -1: never */
} sink_t;

typedef struct {
    const char *event;
    const char *data;
} ev_t;

static int emit(void *ctx, const char *frame, apr_size_t len)
{
    sink_t *k = ctx;

    if (k->gone_after >= 0 && k->frames->nelts >= k->gone_after)
        return 1;
    *(char **)apr_array_push(k->frames) = apr_pstrmemdup(pool, frame, len);
    return 0;
}

static sink_t *new_sink(void)
{
    sink_t *k = apr_pcalloc(pool, sizeof(*k));

    k->frames = apr_array_make(pool, 16, sizeof(char *));
    k->gone_after = -1;
    return k;
}

static aib_agent_stream_t *new_filter(const aib_format_t *kind, int include_usage,
                                      apr_size_t max_held, sink_t *k)
{
    return aib_agent_stream_create(pool, kind, "bmcp_", NULL, include_usage, max_held, emit, k);
}

static const char *output(const sink_t *k)
{
    return apr_array_pstrcat(pool, k->frames, 0);
}

/* One iteration: the upstream's bytes through the SSE parser. */
static aib_agent_turn_t *iterate(aib_agent_stream_t *s, const char *upstream)
{
    aib_sse_parser_t *p = aib_sse_parser_create(pool, 1 << 20, aib_agent_stream_event, s);

    aib_sse_feed(p, upstream, strlen(upstream));
    return aib_agent_stream_end(s, pool);
}

static int record(void *ctx, const char *event, const char *data, apr_size_t len)
{
    ev_t *e = apr_array_push(ctx);

    e->event = event ? apr_pstrdup(pool, event) : NULL;
    e->data = apr_pstrmemdup(pool, data, len);
    return 0;
}

/* What the client got, as events. */
static apr_array_header_t *client_events(const sink_t *k)
{
    apr_array_header_t *evs = apr_array_make(pool, 16, sizeof(ev_t));
    aib_sse_parser_t *p = aib_sse_parser_create(pool, 1 << 20, record, evs);
    const char *out = output(k);

    assert_int_equal(aib_sse_feed(p, out, strlen(out)), AIB_SSE_OK);
    return evs;
}

#define EV(evs, i) (&APR_ARRAY_IDX(evs, i, ev_t))

static apr_status_t put_json(void *obj)
{
    json_object_put(obj);
    return APR_SUCCESS;
}

/* Parsed JSON, released with the pool; the test fails on bad JSON. */
static json_object *J(const char *text)
{
    json_object *o = json_tokener_parse(text);

    assert_non_null(o);
    apr_pool_cleanup_register(pool, o, put_json, apr_pool_cleanup_null);
    return o;
}

/* The value at a dotted path ("choices.0.delta"), or NULL. */
static json_object *at(json_object *o, const char *path)
{
    char *copy = apr_pstrdup(pool, path), *last, *key;

    for (key = apr_strtok(copy, ".", &last); key && o; key = apr_strtok(NULL, ".", &last)) {
        if (json_object_is_type(o, json_type_array))
            o = json_object_array_get_idx(o, (size_t)atoi(key));
        else if (!json_object_object_get_ex(o, key, &o))
            o = NULL;
    }
    return o;
}

static const char *str_at(json_object *o, const char *path)
{
    json_object *v = at(o, path);

    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static int64_t int_at(json_object *o, const char *path)
{
    json_object *v = at(o, path);

    return v && json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : -1;
}

static int count_events(apr_array_header_t *evs, const char *name)
{
    int i, n = 0;

    for (i = 0; i < evs->nelts; i++)
        if (EV(evs, i)->event && !strcmp(EV(evs, i)->event, name))
            n++;
    return n;
}

static int contains(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

static void check_call(const aib_agent_turn_t *t, int i, const char *id, const char *name,
                       const char *arguments)
{
    const aib_agent_stream_call_t *c;

    assert_true(i < t->calls->nelts);
    c = &APR_ARRAY_IDX(t->calls, i, aib_agent_stream_call_t);
    assert_string_equal(c->id, id);
    assert_string_equal(c->name, name);
    assert_string_equal(c->arguments, arguments);
}

/* ------------------------------------------------------------------ */
/* Chat Completions                                                    */

#define CHUNK(id, choice) \
    "data: {\"id\":\"" id "\",\"object\":\"chat.completion.chunk\",\"created\":1741570283," \
    "\"model\":\"gpt-4o-2024-08-06\",\"system_fingerprint\":\"fp_1\",\"choices\":[{\"index\":0," \
    choice ",\"logprobs\":null}],\"usage\":null}\n\n"
#define DELTA(id, delta) CHUNK(id, "\"delta\":" delta ",\"finish_reason\":null")
#define FINISH(id, reason) CHUNK(id, "\"delta\":{},\"finish_reason\":\"" reason "\"")
#define DONE "data: [DONE]\n\n"
#define ROLE "{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}"
#define CALL_START(index, id, name) \
    "{\"tool_calls\":[{\"index\":" #index ",\"id\":\"" id "\",\"type\":\"function\"," \
    "\"function\":{\"name\":\"" name "\",\"arguments\":\"\"}}]}"
#define CALL_ARGS(index, args) \
    "{\"tool_calls\":[{\"index\":" #index ",\"function\":{\"arguments\":\"" args "\"}}]}"

/* The usage-only chunk that ends a stream asked for usage. */
static const char *chat_usage_chunk(const char *id, int in, int out, int cached, int reasoning)
{
    return apr_psprintf(pool,
                        "data: {\"id\":\"%s\",\"object\":\"chat.completion.chunk\","
                        "\"created\":1741570283,\"model\":\"gpt-4o-2024-08-06\","
                        "\"system_fingerprint\":\"fp_1\",\"choices\":[],\"usage\":{"
                        "\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d,"
                        "\"prompt_tokens_details\":{\"cached_tokens\":%d},"
                        "\"completion_tokens_details\":{\"reasoning_tokens\":%d}}}\n\n",
                        id, in, out, in + out, cached, reasoning);
}

/* An iteration that calls bmcp_wx_weather after a sentence, with "X" for
 * its id and "CALL" for the call's (see with_ids). */
static const char *chat_tool_iteration(int in, int out)
{
    return apr_pstrcat(pool,
                       DELTA("X", ROLE), DELTA("X", "{\"content\":\"Let me check.\"}"),
                       DELTA("X", CALL_START(0, "CALL", "bmcp_wx_weather")),
                       DELTA("X", CALL_ARGS(0, "{\\\"city\\\":")),
                       DELTA("X", CALL_ARGS(0, "\\\"Paris\\\"}")),
                       FINISH("X", "tool_calls"),
                       chat_usage_chunk("X", in, out, 10, 0), DONE, NULL);
}

/* Replaces every "X" id and "CALL" in a template. */
static const char *with_ids(const char *tmpl, const char *id, const char *call_id)
{
    const char *s = tmpl;
    char *out = apr_pstrdup(pool, "");
    const char *p;

    while ((p = strpbrk(s, "XC"))) {
        if (*p == 'X' && p[-1] == '"' && p[1] == '"') {
            out = apr_pstrcat(pool, out, apr_pstrmemdup(pool, s, (apr_size_t)(p - s)), id, NULL);
            s = p + 1;
        }
        else if (!strncmp(p, "CALL\"", 5) && p[-1] == '"') {
            out = apr_pstrcat(pool, out, apr_pstrmemdup(pool, s, (apr_size_t)(p - s)), call_id,
                              NULL);
            s = p + 4;
        }
        else {
            out = apr_pstrcat(pool, out, apr_pstrmemdup(pool, s, (apr_size_t)(p - s + 1)), NULL);
            s = p + 1;
        }
    }
    return apr_pstrcat(pool, out, s, NULL);
}

static const char *chat_final_iteration(const char *id, int in, int out)
{
    return with_ids(apr_pstrcat(pool, DELTA("X", ROLE), DELTA("X", "{\"content\":\"It is \"}"),
                                DELTA("X", "{\"content\":\"sunny.\"}"), FINISH("X", "stop"),
                                chat_usage_chunk("X", in, out, 40, 5), DONE, NULL),
                    id, "");
}

static void chat_passthrough(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_chat, 1, 0, k);
    const char *up = chat_final_iteration("chatcmpl-A", 15, 7);
    aib_agent_turn_t *t = iterate(s, up);

    (void)state;
    assert_int_equal(t->outcome, AIB_AGENT_DONE);
    assert_string_equal(output(k), up);
    assert_int_equal(t->calls->nelts, 0);
    assert_int_equal(aib_agent_stream_usage(s)->input, 15);
    assert_int_equal(aib_agent_stream_usage(s)->output, 7);
}

/* Checks a chat client stream: one id, no tool calls, content, one [DONE]
 * last, one finish_reason `finish`; returns the usage chunk or NULL. */
static json_object *check_chat_client(const sink_t *k, const char *content, const char *finish)
{
    apr_array_header_t *evs = client_events(k);
    char *text = apr_pstrdup(pool, "");
    json_object *usage = NULL;
    int i, finishes = 0;

    assert_true(evs->nelts > 1);
    assert_string_equal(EV(evs, evs->nelts - 1)->data, "[DONE]");
    for (i = 0; i < evs->nelts - 1; i++) {
        json_object *c = J(EV(evs, i)->data);
        const char *piece = str_at(c, "choices.0.delta.content");

        assert_string_equal(str_at(c, "id"), "chatcmpl-A");
        assert_null(at(c, "choices.0.delta.tool_calls"));
        if (piece)
            text = apr_pstrcat(pool, text, piece, NULL);
        if (str_at(c, "choices.0.finish_reason")) {
            assert_string_equal(str_at(c, "choices.0.finish_reason"), finish);
            finishes++;
        }
        if (at(c, "usage") && json_object_is_type(at(c, "usage"), json_type_object)) {
            assert_null(usage);
            usage = at(c, "usage");
        }
    }
    assert_string_equal(text, content);
    assert_int_equal(finishes, 1);
    return usage;
}

static void chat_tool_then_text(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_chat, 1, 0, k);
    aib_agent_turn_t *t1, *t2;
    json_object *usage, *msg;

    (void)state;
    t1 = iterate(s, with_ids(chat_tool_iteration(100, 20), "chatcmpl-A", "call_1"));
    assert_int_equal(t1->outcome, AIB_AGENT_TOOLS);
    assert_false(t1->client_tools);
    assert_int_equal(t1->calls->nelts, 1);
    check_call(t1, 0, "call_1", "bmcp_wx_weather", "{\"city\":\"Paris\"}");
    msg = J(t1->assistant);
    assert_string_equal(str_at(msg, "role"), "assistant");
    assert_string_equal(str_at(msg, "content"), "Let me check.");
    assert_string_equal(str_at(msg, "tool_calls.0.id"), "call_1");
    assert_string_equal(str_at(msg, "tool_calls.0.type"), "function");
    assert_string_equal(str_at(msg, "tool_calls.0.function.name"), "bmcp_wx_weather");
    assert_string_equal(str_at(msg, "tool_calls.0.function.arguments"), "{\"city\":\"Paris\"}");
    assert_int_equal(t1->usage.input, 100);
    /* Nothing of the end went out yet. */
    assert_false(contains(output(k), "[DONE]"));
    assert_false(contains(output(k), "tool_calls"));

    t2 = iterate(s, chat_final_iteration("chatcmpl-B", 150, 30));
    assert_int_equal(t2->outcome, AIB_AGENT_DONE);
    assert_int_equal(t2->calls->nelts, 0);
    usage = check_chat_client(k, "Let me check.It is sunny.", "stop");
    assert_non_null(usage);
    assert_int_equal(int_at(usage, "prompt_tokens"), 250);
    assert_int_equal(int_at(usage, "completion_tokens"), 50);
    assert_int_equal(int_at(usage, "total_tokens"), 300);
    assert_int_equal(int_at(usage, "prompt_tokens_details.cached_tokens"), 50);
    assert_int_equal(int_at(usage, "completion_tokens_details.reasoning_tokens"), 5);
    assert_false(contains(output(k), "chatcmpl-B"));
    assert_int_equal(aib_agent_stream_usage(s)->input, 250);
    assert_int_equal(aib_agent_stream_usage(s)->output, 50);
    assert_int_equal(aib_agent_stream_usage(s)->tools->nelts, 1);
}

static void chat_usage_hidden(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_chat, 0, 0, k);

    (void)state;
    iterate(s, with_ids(chat_tool_iteration(100, 20), "chatcmpl-A", "call_1"));
    iterate(s, chat_final_iteration("chatcmpl-B", 150, 30));
    assert_null(check_chat_client(k, "Let me check.It is sunny.", "stop"));
    assert_false(contains(output(k), "usage"));
    assert_int_equal(aib_agent_stream_usage(s)->output, 50);
}

static void chat_two_tool_iterations(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_chat, 1, 0, k);
    aib_agent_turn_t *t;

    (void)state;
    t = iterate(s, with_ids(chat_tool_iteration(100, 20), "chatcmpl-A", "call_1"));
    assert_int_equal(t->outcome, AIB_AGENT_TOOLS);
    t = iterate(s, with_ids(chat_tool_iteration(200, 21), "chatcmpl-B", "call_2"));
    assert_int_equal(t->outcome, AIB_AGENT_TOOLS);
    check_call(t, 0, "call_2", "bmcp_wx_weather", "{\"city\":\"Paris\"}");
    t = iterate(s, chat_final_iteration("chatcmpl-C", 300, 22));
    assert_int_equal(t->outcome, AIB_AGENT_DONE);
    assert_int_equal(int_at(check_chat_client(k, "Let me check.Let me check.It is sunny.",
                                              "stop"), "prompt_tokens"), 600);
    assert_int_equal(aib_agent_stream_usage(s)->output, 63);
}

static void chat_client_tool_passthrough(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_chat, 1, 0, k);
    const char *up = apr_pstrcat(pool, DELTA("chatcmpl-A", ROLE),
                                 DELTA("chatcmpl-A", CALL_START(0, "call_9", "get_time")),
                                 DELTA("chatcmpl-A", CALL_ARGS(0, "{}")),
                                 FINISH("chatcmpl-A", "tool_calls"),
                                 chat_usage_chunk("chatcmpl-A", 5, 6, 0, 0), DONE, NULL);
    aib_agent_turn_t *t = iterate(s, up);

    (void)state;
    assert_int_equal(t->outcome, AIB_AGENT_DONE);
    assert_true(t->client_tools);
    assert_int_equal(t->calls->nelts, 0);
    assert_string_equal(output(k), up);
}

/* An injected call at index 0 and a client call at index 1: the client
 * sees its own call alone, at index 0; the loop ends there. */
static void chat_mixed(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_chat, 1, 0, k);
    const char *up = apr_pstrcat(pool, DELTA("chatcmpl-A", ROLE),
                                 DELTA("chatcmpl-A", CALL_START(0, "call_1", "bmcp_wx_weather")),
                                 DELTA("chatcmpl-A", CALL_ARGS(0, "{}")),
                                 DELTA("chatcmpl-A", CALL_START(1, "call_2", "get_time")),
                                 DELTA("chatcmpl-A", CALL_ARGS(1, "{\\\"tz\\\":1}")),
                                 FINISH("chatcmpl-A", "tool_calls"),
                                 chat_usage_chunk("chatcmpl-A", 5, 6, 0, 0), DONE, NULL);
    aib_agent_turn_t *t = iterate(s, up);
    apr_array_header_t *evs = client_events(k);
    int i, calls = 0;

    (void)state;
    assert_int_equal(t->outcome, AIB_AGENT_DONE);
    assert_true(t->client_tools);
    check_call(t, 0, "call_1", "bmcp_wx_weather", "{}");
    assert_false(contains(output(k), "bmcp_"));
    for (i = 0; i < evs->nelts - 1; i++) {
        json_object *c = J(EV(evs, i)->data);

        if (at(c, "choices.0.delta.tool_calls")) {
            assert_int_equal(int_at(c, "choices.0.delta.tool_calls.0.index"), 0);
            calls++;
        }
    }
    assert_int_equal(calls, 2);
    assert_string_equal(str_at(J(EV(evs, 1)->data), "choices.0.delta.tool_calls.0.id"), "call_2");
    assert_string_equal(str_at(J(EV(evs, 2)->data), "choices.0.delta.tool_calls.0.function."
                               "arguments"), "{\"tz\":1}");
    assert_string_equal(str_at(J(EV(evs, 3)->data), "choices.0.finish_reason"), "tool_calls");
    assert_string_equal(EV(evs, evs->nelts - 1)->data, "[DONE]");
}

static void chat_error(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_chat, 1, 0, k);
    aib_agent_turn_t *t;
    apr_array_header_t *evs;

    (void)state;
    iterate(s, with_ids(chat_tool_iteration(100, 20), "chatcmpl-A", "call_1"));
    t = iterate(s, apr_pstrcat(pool, DELTA("chatcmpl-B", "{\"content\":\"It\"}"),
                               "data: {\"error\":{\"message\":\"overloaded\",\"type\":"
                               "\"server_error\",\"code\":null}}\n\n",
                               DELTA("chatcmpl-B", "{\"content\":\"never\"}"), DONE, NULL));
    assert_int_equal(t->outcome, AIB_AGENT_ERROR);
    assert_string_equal(t->error, "overloaded");
    evs = client_events(k);
    assert_string_equal(str_at(J(EV(evs, evs->nelts - 1)->data), "error.message"), "overloaded");
    assert_false(contains(output(k), "never"));
    assert_false(contains(output(k), "[DONE]"));
    /* Nothing more is taken. */
    assert_int_not_equal(aib_agent_stream_event(s, NULL, "[DONE]", 6), 0);
}

/* ------------------------------------------------------------------ */
/* Anthropic Messages                                                  */

static const char *msg_start(const char *id, int in, int cache_read)
{
    return apr_psprintf(pool,
                        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"
                        "{\"id\":\"%s\",\"type\":\"message\",\"role\":\"assistant\","
                        "\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,"
                        "\"stop_sequence\":null,\"usage\":{\"input_tokens\":%d,"
                        "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":%d,"
                        "\"output_tokens\":1}}}\n\n", id, in, cache_read);
}

static const char *msg_text(int index, const char *const *pieces)
{
    char *s = apr_psprintf(pool, "event: content_block_start\ndata: {\"type\":"
                           "\"content_block_start\",\"index\":%d,\"content_block\":"
                           "{\"type\":\"text\",\"text\":\"\"}}\n\n", index);

    for (; *pieces; pieces++)
        s = apr_pstrcat(pool, s, apr_psprintf(pool, "event: content_block_delta\ndata: "
                                              "{\"type\":\"content_block_delta\",\"index\":%d,"
                                              "\"delta\":{\"type\":\"text_delta\",\"text\":"
                                              "\"%s\"}}\n\n", index, *pieces), NULL);
    return apr_pstrcat(pool, s, apr_psprintf(pool, "event: content_block_stop\ndata: "
                                             "{\"type\":\"content_block_stop\",\"index\":%d}"
                                             "\n\n", index), NULL);
}

static const char *msg_tool(int index, const char *id, const char *name)
{
    return apr_psprintf(pool,
                        "event: content_block_start\ndata: {\"type\":\"content_block_start\","
                        "\"index\":%d,\"content_block\":{\"type\":\"tool_use\",\"id\":\"%s\","
                        "\"name\":\"%s\",\"input\":{}}}\n\n"
                        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                        "\"index\":%d,\"delta\":{\"type\":\"input_json_delta\","
                        "\"partial_json\":\"\"}}\n\n"
                        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                        "\"index\":%d,\"delta\":{\"type\":\"input_json_delta\","
                        "\"partial_json\":\"{\\\"city\\\": \"}}\n\n"
                        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                        "\"index\":%d,\"delta\":{\"type\":\"input_json_delta\","
                        "\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n"
                        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\","
                        "\"index\":%d}\n\n", index, id, name, index, index, index, index);
}

static const char *msg_end(const char *stop, int out)
{
    return apr_psprintf(pool,
                        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":"
                        "{\"stop_reason\":\"%s\",\"stop_sequence\":null},\"usage\":"
                        "{\"output_tokens\":%d}}\n\n"
                        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n", stop, out);
}

/* A thinking block, which the continuation must carry back signed. */
static const char *msg_thinking(int index)
{
    return apr_psprintf(pool,
                        "event: content_block_start\ndata: {\"type\":\"content_block_start\","
                        "\"index\":%d,\"content_block\":{\"type\":\"thinking\",\"thinking\":"
                        "\"\",\"signature\":\"\"}}\n\n"
                        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                        "\"index\":%d,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":"
                        "\"Weather needs \"}}\n\n"
                        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                        "\"index\":%d,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":"
                        "\"a tool.\"}}\n\n"
                        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                        "\"index\":%d,\"delta\":{\"type\":\"signature_delta\",\"signature\":"
                        "\"EqQBCgIYAhIM\"}}\n\n"
                        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\","
                        "\"index\":%d}\n\n", index, index, index, index, index);
}

#define PING "event: ping\ndata: {\"type\": \"ping\"}\n\n"

static const char *const checking[] = { "Checking", " the weather.", NULL };
static const char *const sunny[] = { "Sunny", " in Paris.", NULL };
static const char *const nothing[] = { NULL };

static void messages_passthrough(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_messages, 0, 0, k);
    const char *up = apr_pstrcat(pool, msg_start("msg_1", 50, 5), PING, msg_text(0, sunny),
                                 msg_end("end_turn", 12), NULL);
    aib_agent_turn_t *t = iterate(s, up);

    (void)state;
    assert_int_equal(t->outcome, AIB_AGENT_DONE);
    assert_string_equal(output(k), up);
    assert_int_equal(t->usage.input, 50);
    assert_int_equal(t->usage.output, 12);
}

/* The client stream's blocks: indices 0.. in order, their text, no
 * held tool. Returns the message_delta. */
static json_object *check_messages_client(const sink_t *k, int blocks, const char *text)
{
    apr_array_header_t *evs = client_events(k);
    char *got = apr_pstrdup(pool, "");
    json_object *delta = NULL;
    int i, next = 0, open = -1;

    assert_int_equal(count_events(evs, "message_start"), 1);
    assert_string_equal(EV(evs, 0)->event, "message_start");
    assert_string_equal(str_at(J(EV(evs, 0)->data), "message.id"), "msg_1");
    assert_int_equal(count_events(evs, "message_delta"), 1);
    assert_int_equal(count_events(evs, "message_stop"), 1);
    assert_string_equal(EV(evs, evs->nelts - 1)->event, "message_stop");
    assert_string_equal(EV(evs, evs->nelts - 2)->event, "message_delta");
    for (i = 0; i < evs->nelts; i++) {
        const char *name = EV(evs, i)->event;
        json_object *d = J(EV(evs, i)->data);

        assert_string_equal(str_at(d, "type"), name);
        if (!strcmp(name, "content_block_start")) {
            assert_int_equal(open, -1);
            assert_int_equal(int_at(d, "index"), next);
            assert_string_not_equal(str_at(d, "content_block.type"), "tool_use");
            open = next++;
        }
        else if (!strcmp(name, "content_block_delta")) {
            assert_int_equal(int_at(d, "index"), open);
            got = apr_pstrcat(pool, got, str_at(d, "delta.text"), NULL);
        }
        else if (!strcmp(name, "content_block_stop")) {
            assert_int_equal(int_at(d, "index"), open);
            open = -1;
        }
        else if (!strcmp(name, "message_delta")) {
            delta = d;
        }
    }
    assert_int_equal(next, blocks);
    assert_string_equal(got, text);
    return delta;
}

static void messages_tool_then_text(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_messages, 0, 0, k);
    aib_agent_turn_t *t;
    json_object *msg, *delta;

    (void)state;
    t = iterate(s, apr_pstrcat(pool, msg_start("msg_1", 50, 5), msg_thinking(0),
                               msg_text(1, checking), msg_tool(2, "toolu_1", "bmcp_wx_weather"),
                               msg_end("tool_use", 30), NULL));
    assert_int_equal(t->outcome, AIB_AGENT_TOOLS);
    check_call(t, 0, "toolu_1", "bmcp_wx_weather", "{\"city\": \"Paris\"}");
    msg = J(t->assistant);
    assert_string_equal(str_at(msg, "role"), "assistant");
    assert_int_equal(json_object_array_length(at(msg, "content")), 3);
    assert_string_equal(str_at(msg, "content.0.type"), "thinking");
    assert_string_equal(str_at(msg, "content.0.thinking"), "Weather needs a tool.");
    assert_string_equal(str_at(msg, "content.0.signature"), "EqQBCgIYAhIM");
    assert_string_equal(str_at(msg, "content.1.type"), "text");
    assert_string_equal(str_at(msg, "content.1.text"), "Checking the weather.");
    assert_string_equal(str_at(msg, "content.2.type"), "tool_use");
    assert_string_equal(str_at(msg, "content.2.id"), "toolu_1");
    assert_string_equal(str_at(msg, "content.2.name"), "bmcp_wx_weather");
    assert_string_equal(str_at(msg, "content.2.input.city"), "Paris");
    assert_false(contains(output(k), "message_delta"));
    assert_false(contains(output(k), "message_stop"));

    t = iterate(s, apr_pstrcat(pool, msg_start("msg_2", 90, 7), PING, msg_text(0, sunny),
                               msg_end("end_turn", 12), NULL));
    assert_int_equal(t->outcome, AIB_AGENT_DONE);
    delta = check_messages_client(k, 3, "Checking the weather.Sunny in Paris.");
    assert_string_equal(str_at(delta, "delta.stop_reason"), "end_turn");
    assert_int_equal(int_at(delta, "usage.output_tokens"), 42);
    assert_int_equal(int_at(delta, "usage.input_tokens"), 140);
    assert_int_equal(int_at(delta, "usage.cache_read_input_tokens"), 12);
    assert_int_equal(count_events(client_events(k), "ping"), 1);
    assert_false(contains(output(k), "msg_2"));
    assert_false(contains(output(k), "toolu_1"));
}

static void messages_two_tool_iterations(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_messages, 0, 0, k);
    aib_agent_turn_t *t;
    json_object *msg;

    (void)state;
    t = iterate(s, apr_pstrcat(pool, msg_start("msg_1", 50, 0), msg_text(0, nothing),
                               msg_tool(1, "toolu_1", "bmcp_wx_weather"),
                               msg_end("tool_use", 30), NULL));
    assert_int_equal(t->outcome, AIB_AGENT_TOOLS);
    /* The empty text block goes to the client, not into the turn (the API
     * refuses empty text blocks). */
    msg = J(t->assistant);
    assert_int_equal(json_object_array_length(at(msg, "content")), 1);
    t = iterate(s, apr_pstrcat(pool, msg_start("msg_2", 60, 0), msg_text(0, checking),
                               msg_tool(1, "toolu_2", "bmcp_wx_forecast"),
                               msg_tool(2, "toolu_3", "bmcp_wx_weather"),
                               msg_end("tool_use", 31), NULL));
    assert_int_equal(t->outcome, AIB_AGENT_TOOLS);
    assert_int_equal(t->calls->nelts, 2);
    check_call(t, 0, "toolu_2", "bmcp_wx_forecast", "{\"city\": \"Paris\"}");
    check_call(t, 1, "toolu_3", "bmcp_wx_weather", "{\"city\": \"Paris\"}");
    t = iterate(s, apr_pstrcat(pool, msg_start("msg_3", 70, 0), msg_text(0, sunny),
                               msg_end("end_turn", 12), NULL));
    assert_int_equal(t->outcome, AIB_AGENT_DONE);
    assert_int_equal(int_at(check_messages_client(k, 3, "Checking the weather.Sunny in Paris."),
                            "usage.output_tokens"), 73);
    assert_int_equal(aib_agent_stream_usage(s)->input, 180);
    assert_int_equal(aib_agent_stream_usage(s)->tools->nelts, 3);
}

static void messages_client_tool(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_messages, 0, 0, k);
    aib_agent_turn_t *t;
    apr_array_header_t *evs;
    int i, tools = 0;

    (void)state;
    /* Mixed: the injected call is held, the client's goes out, renumbered. */
    t = iterate(s, apr_pstrcat(pool, msg_start("msg_1", 50, 0), msg_text(0, checking),
                               msg_tool(1, "toolu_1", "bmcp_wx_weather"),
                               msg_tool(2, "toolu_2", "get_location"),
                               msg_end("tool_use", 30), NULL));
    assert_int_equal(t->outcome, AIB_AGENT_DONE);
    assert_true(t->client_tools);
    check_call(t, 0, "toolu_1", "bmcp_wx_weather", "{\"city\": \"Paris\"}");
    evs = client_events(k);
    assert_false(contains(output(k), "bmcp_"));
    assert_string_equal(str_at(J(EV(evs, evs->nelts - 2)->data), "delta.stop_reason"),
                        "tool_use");
    for (i = 0; i < evs->nelts; i++) {
        json_object *d = J(EV(evs, i)->data);

        if (!strcmp(EV(evs, i)->event, "content_block_start")
            && !strcmp(str_at(d, "content_block.type"), "tool_use")) {
            assert_int_equal(int_at(d, "index"), 1);
            assert_string_equal(str_at(d, "content_block.name"), "get_location");
            tools++;
        }
        if (!strcmp(EV(evs, i)->event, "content_block_delta")
            && str_at(d, "delta.partial_json"))
            assert_int_equal(int_at(d, "index"), 1);
    }
    assert_int_equal(tools, 1);
    assert_int_equal(count_events(evs, "message_stop"), 1);
}

static void messages_error(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_messages, 0, 0, k);
    aib_agent_turn_t *t;
    apr_array_header_t *evs;

    (void)state;
    iterate(s, apr_pstrcat(pool, msg_start("msg_1", 50, 0),
                           msg_tool(0, "toolu_1", "bmcp_wx_weather"),
                           msg_end("tool_use", 30), NULL));
    t = iterate(s, apr_pstrcat(pool, msg_start("msg_2", 60, 0),
                               "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":"
                               "\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
                               msg_text(0, sunny), NULL));
    assert_int_equal(t->outcome, AIB_AGENT_ERROR);
    assert_string_equal(t->error, "Overloaded");
    evs = client_events(k);
    assert_int_equal(evs->nelts, 2);
    assert_string_equal(EV(evs, 0)->event, "message_start");
    assert_string_equal(EV(evs, 1)->event, "error");
    assert_string_equal(str_at(J(EV(evs, 1)->data), "error.type"), "overloaded_error");
}

/* What the upstream sends after message_delta of a tool turn, but
 * message_stop, changes nothing and does not go out. */
static void messages_after_tool_turn(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_messages, 0, 0, k);
    aib_agent_turn_t *t;

    (void)state;
    t = iterate(s, apr_pstrcat(pool, msg_start("msg_1", 50, 0),
                               msg_tool(0, "toolu_1", "bmcp_wx_weather"),
                               "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":"
                               "{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":30}}\n\n",
                               msg_tool(1, "toolu_2", "get_location"),
                               "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n", NULL));
    assert_int_equal(t->outcome, AIB_AGENT_TOOLS);
    assert_false(t->client_tools);
    assert_int_equal(t->calls->nelts, 1);
    assert_false(contains(output(k), "get_location"));
    assert_int_equal(client_events(k)->nelts, 1);
}

/* Text deltas go out one by one as they arrive, however many. */
static void messages_text_streams_live(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_messages, 0, 0, k);
    const char *start = msg_start("msg_2", 60, 0), *block;
    aib_sse_parser_t *p;
    char *expect = apr_pstrdup(pool, "");
    int i, before;

    (void)state;
    iterate(s, apr_pstrcat(pool, msg_start("msg_1", 50, 0),
                           msg_tool(0, "toolu_1", "bmcp_wx_weather"),
                           msg_end("tool_use", 30), NULL));
    p = aib_sse_parser_create(pool, 1 << 20, aib_agent_stream_event, s);
    aib_sse_feed(p, start, strlen(start));
    block = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
            "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
    aib_sse_feed(p, block, strlen(block));
    for (i = 0; i < 300; i++) {
        const char *piece = apr_psprintf(pool, "w%d ", i);
        const char *ev = apr_psprintf(pool, "event: content_block_delta\ndata: {\"type\":"
                                      "\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
                                      "\"text_delta\",\"text\":\"%s\"}}\n\n", piece);

        before = k->frames->nelts;
        aib_sse_feed(p, ev, strlen(ev));
        assert_int_equal(k->frames->nelts, before + 1);
        /* Unchanged: same index, so the very bytes. */
        assert_string_equal(APR_ARRAY_IDX(k->frames, before, char *), ev);
        expect = apr_pstrcat(pool, expect, piece, NULL);
    }
    block = apr_pstrcat(pool, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\","
                        "\"index\":0}\n\n", msg_end("end_turn", 400), NULL);
    aib_sse_feed(p, block, strlen(block));
    assert_int_equal(aib_agent_stream_end(s, pool)->outcome, AIB_AGENT_DONE);
    assert_int_equal(int_at(check_messages_client(k, 1, expect), "usage.output_tokens"), 430);
}

/* ------------------------------------------------------------------ */
/* OpenAI Responses                                                    */

/* Builds an iteration's events with sequence numbers from 0. */
typedef struct {
    char *text;
    int seq;
} rs_t;

static void rs_add(rs_t *r, const char *type, const char *rest)
{
    r->text = apr_psprintf(pool, "%sevent: %s\ndata: {\"type\":\"%s\",\"sequence_number\":%d%s%s}"
                           "\n\n", r->text ? r->text : "", type, type, r->seq++,
                           *rest ? "," : "", rest);
}

static const char *rs_response(const char *id, const char *status, const char *output,
                               int in, int out)
{
    return apr_psprintf(pool, "\"response\":{\"id\":\"%s\",\"object\":\"response\","
                        "\"created_at\":1741476542,\"status\":\"%s\",\"model\":\"gpt-4.1\","
                        "\"output\":%s,\"usage\":%s}", id, status, output,
                        in < 0 ? "null" : apr_psprintf(pool, "{\"input_tokens\":%d,"
                                                       "\"input_tokens_details\":"
                                                       "{\"cached_tokens\":0},\"output_tokens\":"
                                                       "%d,\"output_tokens_details\":"
                                                       "{\"reasoning_tokens\":0},"
                                                       "\"total_tokens\":%d}", in, out,
                                                       in + out));
}

#define RS_REASONING "{\"id\":\"rs_1\",\"type\":\"reasoning\",\"summary\":[]}"
#define RS_CALL(id, call, name, args) \
    "{\"id\":\"" id "\",\"type\":\"function_call\",\"status\":\"completed\",\"arguments\":\"" \
    args "\",\"call_id\":\"" call "\",\"name\":\"" name "\"}"
#define RS_MSG(id, text) \
    "{\"id\":\"" id "\",\"type\":\"message\",\"status\":\"completed\",\"role\":\"assistant\"," \
    "\"content\":[{\"type\":\"output_text\",\"annotations\":[],\"text\":\"" text "\"}]}"

static void rs_start(rs_t *r, const char *id)
{
    rs_add(r, "response.created", rs_response(id, "in_progress", "[]", -1, 0));
    rs_add(r, "response.in_progress", rs_response(id, "in_progress", "[]", -1, 0));
}

static void rs_item(rs_t *r, int index, const char *item)
{
    rs_add(r, "response.output_item.added", apr_psprintf(pool, "\"output_index\":%d,\"item\":%s",
                                                         index, item));
}

static void rs_item_done(rs_t *r, int index, const char *item)
{
    rs_add(r, "response.output_item.done", apr_psprintf(pool, "\"output_index\":%d,\"item\":%s",
                                                        index, item));
}

static void rs_call(rs_t *r, int index, const char *fc_id, const char *call_id, const char *name)
{
    rs_item(r, index, apr_psprintf(pool, "{\"id\":\"%s\",\"type\":\"function_call\",\"status\":"
                                   "\"in_progress\",\"arguments\":\"\",\"call_id\":\"%s\","
                                   "\"name\":\"%s\"}", fc_id, call_id, name));
    rs_add(r, "response.function_call_arguments.delta",
           apr_psprintf(pool, "\"item_id\":\"%s\",\"output_index\":%d,\"delta\":"
                        "\"{\\\"city\\\":\"", fc_id, index));
    rs_add(r, "response.function_call_arguments.delta",
           apr_psprintf(pool, "\"item_id\":\"%s\",\"output_index\":%d,\"delta\":"
                        "\"\\\"Paris\\\"}\"", fc_id, index));
    rs_add(r, "response.function_call_arguments.done",
           apr_psprintf(pool, "\"item_id\":\"%s\",\"output_index\":%d,\"arguments\":"
                        "\"{\\\"city\\\":\\\"Paris\\\"}\"", fc_id, index));
    rs_item_done(r, index, apr_psprintf(pool, "{\"id\":\"%s\",\"type\":\"function_call\","
                                        "\"status\":\"completed\",\"arguments\":"
                                        "\"{\\\"city\\\":\\\"Paris\\\"}\",\"call_id\":\"%s\","
                                        "\"name\":\"%s\"}", fc_id, call_id, name));
}

static void rs_message(rs_t *r, int index, const char *msg_id)
{
    const char *part = apr_psprintf(pool, "\"item_id\":\"%s\",\"output_index\":%d,"
                                    "\"content_index\":0", msg_id, index);

    rs_item(r, index, apr_psprintf(pool, "{\"id\":\"%s\",\"type\":\"message\",\"status\":"
                                   "\"in_progress\",\"role\":\"assistant\",\"content\":[]}",
                                   msg_id));
    rs_add(r, "response.content_part.added", apr_psprintf(pool, "%s,\"part\":{\"type\":"
                                                          "\"output_text\",\"annotations\":[],"
                                                          "\"text\":\"\"}", part));
    rs_add(r, "response.output_text.delta", apr_psprintf(pool, "%s,\"delta\":\"Sunny\"", part));
    rs_add(r, "response.output_text.delta", apr_psprintf(pool, "%s,\"delta\":\" today\"", part));
    rs_add(r, "response.output_text.done", apr_psprintf(pool, "%s,\"text\":\"Sunny today\"",
                                                        part));
    rs_add(r, "response.content_part.done", apr_psprintf(pool, "%s,\"part\":{\"type\":"
                                                         "\"output_text\",\"annotations\":[],"
                                                         "\"text\":\"Sunny today\"}", part));
    rs_item_done(r, index, apr_psprintf(pool, "{\"id\":\"%s\",\"type\":\"message\",\"status\":"
                                        "\"completed\",\"role\":\"assistant\",\"content\":[{"
                                        "\"type\":\"output_text\",\"annotations\":[],\"text\":"
                                        "\"Sunny today\"}]}", msg_id));
}

static const char *rs_final(const char *id, int in, int out)
{
    rs_t r = { NULL, 0 };

    rs_start(&r, id);
    rs_message(&r, 0, "msg_2");
    rs_add(&r, "response.completed", rs_response(id, "completed", "[" RS_MSG("msg_2",
                                                 "Sunny today") "]", in, out));
    return r.text;
}

static const char *rs_tools(const char *id, const char *call_id, int in, int out)
{
    rs_t r = { NULL, 0 };

    rs_start(&r, id);
    rs_item(&r, 0, RS_REASONING);
    rs_item_done(&r, 0, RS_REASONING);
    rs_call(&r, 1, apr_pstrcat(pool, "fc_", call_id, NULL), call_id, "bmcp_wx_weather");
    rs_add(&r, "response.completed",
           rs_response(id, "completed", apr_pstrcat(pool, "[" RS_REASONING ",",
                                                    apr_psprintf(pool, RS_CALL("fc_%s", "%s",
                                                                 "bmcp_wx_weather",
                                                                 "{\\\"city\\\":"
                                                                 "\\\"Paris\\\"}"),
                                                                 call_id, call_id),
                                                    "]", NULL), in, out));
    return r.text;
}

static void responses_passthrough(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_responses, 0, 0, k);
    const char *up = rs_final("resp_1", 20, 4);
    aib_agent_turn_t *t = iterate(s, up);

    (void)state;
    assert_int_equal(t->outcome, AIB_AGENT_DONE);
    assert_string_equal(output(k), up);
    assert_int_equal(aib_agent_stream_next_sequence(s), 10);
    assert_int_equal(t->usage.output, 4);
}

/* Sequence numbers run 0, 1, 2... with no gap; created, in_progress and
 * completed come once; nothing of our calls, `deltas` argument deltas of
 * the client's. Returns completed. */
static json_object *check_responses_client(const sink_t *k, int deltas)
{
    apr_array_header_t *evs = client_events(k);
    json_object *completed = NULL;
    int i;

    assert_int_equal(count_events(evs, "response.created"), 1);
    assert_int_equal(count_events(evs, "response.in_progress"), 1);
    assert_int_equal(count_events(evs, "response.completed"), 1);
    assert_int_equal(count_events(evs, "response.function_call_arguments.delta"), deltas);
    assert_string_equal(EV(evs, evs->nelts - 1)->event, "response.completed");
    for (i = 0; i < evs->nelts; i++) {
        json_object *d = J(EV(evs, i)->data);

        assert_int_equal(int_at(d, "sequence_number"), i);
        assert_string_equal(str_at(d, "type"), EV(evs, i)->event);
        if (!strcmp(EV(evs, i)->event, "response.completed"))
            completed = d;
    }
    assert_false(contains(output(k), "bmcp_"));
    return completed;
}

static void responses_tool_then_text(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_responses, 0, 0, k);
    aib_agent_turn_t *t;
    json_object *items, *completed;
    apr_array_header_t *evs;
    int i, seen_msg = 0;

    (void)state;
    t = iterate(s, rs_tools("resp_1", "call_1", 100, 20));
    assert_int_equal(t->outcome, AIB_AGENT_TOOLS);
    check_call(t, 0, "call_1", "bmcp_wx_weather", "{\"city\":\"Paris\"}");
    items = J(t->assistant);
    assert_int_equal(json_object_array_length(items), 2);
    assert_string_equal(str_at(items, "0.type"), "reasoning");
    assert_string_equal(str_at(items, "1.type"), "function_call");
    assert_string_equal(str_at(items, "1.call_id"), "call_1");
    assert_string_equal(str_at(items, "1.arguments"), "{\"city\":\"Paris\"}");
    assert_false(contains(output(k), "response.completed"));

    t = iterate(s, rs_final("resp_2", 200, 30));
    assert_int_equal(t->outcome, AIB_AGENT_DONE);
    completed = check_responses_client(k, 0);
    assert_string_equal(str_at(completed, "response.id"), "resp_1");
    assert_int_equal(int_at(completed, "response.usage.input_tokens"), 300);
    assert_int_equal(int_at(completed, "response.usage.output_tokens"), 50);
    assert_int_equal(int_at(completed, "response.usage.total_tokens"), 350);
    assert_int_equal(json_object_array_length(at(completed, "response.output")), 2);
    assert_string_equal(str_at(completed, "response.output.0.id"), "rs_1");
    assert_string_equal(str_at(completed, "response.output.1.id"), "msg_2");
    /* The message of the second iteration follows the reasoning item. */
    evs = client_events(k);
    for (i = 0; i < evs->nelts; i++) {
        json_object *d = J(EV(evs, i)->data);

        if (str_at(d, "item_id") || (str_at(d, "item.id")
                                     && !strcmp(str_at(d, "item.id"), "msg_2"))) {
            assert_int_equal(int_at(d, "output_index"), 1);
            seen_msg++;
        }
        else if (at(d, "output_index")) {
            assert_int_equal(int_at(d, "output_index"), 0);
        }
    }
    assert_int_equal(seen_msg, 7);
    assert_false(contains(output(k), "resp_2"));
    assert_int_equal(aib_agent_stream_next_sequence(s), evs->nelts);
}

static void responses_two_tool_iterations(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_responses, 0, 0, k);
    json_object *completed;

    (void)state;
    assert_int_equal(iterate(s, rs_tools("resp_1", "call_1", 100, 20))->outcome, AIB_AGENT_TOOLS);
    assert_int_equal(iterate(s, rs_tools("resp_2", "call_2", 200, 21))->outcome, AIB_AGENT_TOOLS);
    assert_int_equal(iterate(s, rs_final("resp_3", 300, 22))->outcome, AIB_AGENT_DONE);
    completed = check_responses_client(k, 0);
    assert_int_equal(int_at(completed, "response.usage.input_tokens"), 600);
    assert_int_equal(int_at(completed, "response.usage.output_tokens"), 63);
    /* Two reasoning items and the message, indices 0..2 in the stream. */
    assert_int_equal(json_object_array_length(at(completed, "response.output")), 3);
    assert_string_equal(str_at(completed, "response.output.2.id"), "msg_2");
}

static void responses_client_tool(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_responses, 0, 0, k);
    rs_t r = { NULL, 0 };
    aib_agent_turn_t *t;
    json_object *completed;

    (void)state;
    rs_start(&r, "resp_1");
    rs_call(&r, 0, "fc_1", "call_1", "bmcp_wx_weather");
    rs_call(&r, 1, "fc_2", "call_2", "get_location");
    rs_add(&r, "response.completed",
           rs_response("resp_1", "completed", "[" RS_CALL("fc_1", "call_1", "bmcp_wx_weather",
                                                          "{}") ","
                       RS_CALL("fc_2", "call_2", "get_location", "{}") "]", 10, 2));
    t = iterate(s, r.text);
    assert_int_equal(t->outcome, AIB_AGENT_DONE);
    assert_true(t->client_tools);
    completed = check_responses_client(k, 2);
    assert_int_equal(json_object_array_length(at(completed, "response.output")), 1);
    assert_string_equal(str_at(completed, "response.output.0.call_id"), "call_2");
    assert_int_equal(count_events(client_events(k), "response.function_call_arguments.done"), 1);
    assert_true(contains(output(k), "\"output_index\":0,\"delta\""));
}

static void responses_error(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_responses, 0, 0, k);
    rs_t r = { NULL, 0 };
    aib_agent_turn_t *t;
    apr_array_header_t *evs;
    json_object *err;

    (void)state;
    iterate(s, rs_tools("resp_1", "call_1", 100, 20));
    rs_start(&r, "resp_2");
    rs_add(&r, "error", "\"code\":\"server_error\",\"message\":\"The server had an error\","
           "\"param\":null");
    t = iterate(s, r.text);
    assert_int_equal(t->outcome, AIB_AGENT_ERROR);
    assert_string_equal(t->error, "The server had an error");
    evs = client_events(k);
    err = J(EV(evs, evs->nelts - 1)->data);
    assert_string_equal(EV(evs, evs->nelts - 1)->event, "error");
    /* created, in_progress, the reasoning item's two events, then this. */
    assert_int_equal(int_at(err, "sequence_number"), 4);
    assert_int_equal(aib_agent_stream_next_sequence(s), 5);
}

/* ------------------------------------------------------------------ */
/* Limits and the rest                                                 */

static void oversized_arguments(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_chat, 1, 4096, k);
    aib_sse_parser_t *p = aib_sse_parser_create(pool, 1 << 20, aib_agent_stream_event, s);
    const char *start = DELTA("chatcmpl-A", CALL_START(0, "call_1", "bmcp_fs_write"));
    const char *piece = DELTA("chatcmpl-A", CALL_ARGS(0, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                                                      "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));
    aib_agent_turn_t *t;
    int i, rc = 0;

    (void)state;
    aib_sse_feed(p, start, strlen(start));
    for (i = 0; i < 100 && !rc; i++)
        rc = aib_sse_feed(p, piece, strlen(piece));
    assert_int_not_equal(rc, 0);
    assert_true(i > 40 && i < 60); /* 80 bytes a piece against 4096 */
    t = aib_agent_stream_end(s, pool);
    assert_int_equal(t->outcome, AIB_AGENT_TOO_LARGE);
    assert_non_null(strstr(t->error, "4096 bytes"));
    assert_null(t->assistant);
    assert_int_equal(k->frames->nelts, 0);
}

static void default_cap_holds(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_messages, 0, 0, k);
    char *big = apr_palloc(pool, 1024 * 1024 + 1);
    const char *start = "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
                        "{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"bmcp_a_b\",\"input\":{}}}";
    const char *ev;
    int i, rc = 0;

    (void)state;
    memset(big, 'a', 1024 * 1024);
    big[1024 * 1024] = '\0';
    ev = apr_psprintf(pool, "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
                      "\"input_json_delta\",\"partial_json\":\"%s\"}}", big);
    assert_int_equal(aib_agent_stream_event(s, "content_block_start", start, strlen(start)), 0);
    for (i = 0; i < 9 && !rc; i++)
        rc = aib_agent_stream_event(s, "content_block_delta", ev, strlen(ev));
    assert_int_not_equal(rc, 0);
    assert_int_equal(i, 8); /* the 8th MiB passes AIB_AGENT_HELD_MAX with the rest */
    assert_int_equal(aib_agent_stream_end(s, pool)->outcome, AIB_AGENT_TOO_LARGE);
}

static void client_gone(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_messages, 0, 0, k);
    aib_agent_turn_t *t;

    (void)state;
    k->gone_after = 2;
    t = iterate(s, apr_pstrcat(pool, msg_start("msg_1", 50, 0), msg_text(0, sunny),
                               msg_end("end_turn", 12), NULL));
    assert_int_equal(t->outcome, AIB_AGENT_CLIENT_GONE);
    assert_int_equal(k->frames->nelts, 2);
}

static void truncated(void **state)
{
    sink_t *k = new_sink();
    aib_agent_stream_t *s = new_filter(&aib_format_responses, 0, 0, k);
    rs_t r = { NULL, 0 };

    (void)state;
    rs_start(&r, "resp_1");
    rs_message(&r, 0, "msg_1");
    assert_int_equal(iterate(s, r.text)->outcome, AIB_AGENT_TRUNCATED);
    assert_string_equal(output(k), r.text);
}

static void keepalive(void **state)
{
    apr_size_t len;
    const char *f;

    (void)state;
    f = aib_agent_stream_keepalive(&aib_format_chat, &len);
    assert_string_equal(f, ": keep-alive\n\n");
    assert_int_equal(len, strlen(f));
    assert_string_equal(aib_agent_stream_keepalive(&aib_format_responses, &len), ": keep-alive\n\n");
    f = aib_agent_stream_keepalive(&aib_format_messages, &len);
    assert_string_equal(f, "event: ping\ndata: {\"type\": \"ping\"}\n\n");
    assert_int_equal(len, strlen(f));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(chat_passthrough, aib_clear_pool),
        cmocka_unit_test_teardown(chat_tool_then_text, aib_clear_pool),
        cmocka_unit_test_teardown(chat_usage_hidden, aib_clear_pool),
        cmocka_unit_test_teardown(chat_two_tool_iterations, aib_clear_pool),
        cmocka_unit_test_teardown(chat_client_tool_passthrough, aib_clear_pool),
        cmocka_unit_test_teardown(chat_mixed, aib_clear_pool),
        cmocka_unit_test_teardown(chat_error, aib_clear_pool),
        cmocka_unit_test_teardown(messages_passthrough, aib_clear_pool),
        cmocka_unit_test_teardown(messages_tool_then_text, aib_clear_pool),
        cmocka_unit_test_teardown(messages_two_tool_iterations, aib_clear_pool),
        cmocka_unit_test_teardown(messages_client_tool, aib_clear_pool),
        cmocka_unit_test_teardown(messages_error, aib_clear_pool),
        cmocka_unit_test_teardown(messages_after_tool_turn, aib_clear_pool),
        cmocka_unit_test_teardown(messages_text_streams_live, aib_clear_pool),
        cmocka_unit_test_teardown(responses_passthrough, aib_clear_pool),
        cmocka_unit_test_teardown(responses_tool_then_text, aib_clear_pool),
        cmocka_unit_test_teardown(responses_two_tool_iterations, aib_clear_pool),
        cmocka_unit_test_teardown(responses_client_tool, aib_clear_pool),
        cmocka_unit_test_teardown(responses_error, aib_clear_pool),
        cmocka_unit_test_teardown(oversized_arguments, aib_clear_pool),
        cmocka_unit_test_teardown(default_cap_holds, aib_clear_pool),
        cmocka_unit_test_teardown(client_gone, aib_clear_pool),
        cmocka_unit_test_teardown(truncated, aib_clear_pool),
        cmocka_unit_test_teardown(keepalive, aib_clear_pool),
    };

    return AIB_RUN_TESTS(tests);
}
