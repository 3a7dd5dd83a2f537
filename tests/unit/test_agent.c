/* Unit tests for the agentic loop's JSON transforms (src/agent_body.c).
 *
 * Every body produced is compared whole with the expected JSON (parsed on
 * both sides, json_object_equal: members in any order, arrays in order),
 * so a missing, extra or misplaced member fails. JSON in this file is
 * written with ' for " (see J) to keep it readable. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "unit.h"

#include <string.h>

#include <json.h>
#include <apr_strings.h>
#include <apr_tables.h>

#include "agent_body.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

/* s with every ' turned into ", in the pool. */
static const char *J(const char *s)
{
    char *c = apr_pstrdup(pool, s), *q;

    for (q = c; *q; q++)
        if (*q == '\'')
            *q = '"';
    return c;
}

static void check_json(const char *actual, const char *expected_q)
{
    const char *expected = J(expected_q);
    json_object *e = json_tokener_parse(expected), *a;
    int equal;

    assert_non_null(e); /* the test's own JSON */
    assert_non_null(actual);
    a = json_tokener_parse(actual);
    if (!a)
        fail_msg("not JSON: %s", actual);
    equal = json_object_equal(a, e);
    json_object_put(a);
    json_object_put(e);
    if (!equal)
        fail_msg("got      %s\nexpected %s", actual, expected);
}

static apr_array_header_t *new_tools(void)
{
    return apr_array_make(pool, 4, sizeof(aib_agent_tool_t));
}

static void add_tool(apr_array_header_t *tools, const char *server, const char *tool,
                     const char *description, const char *schema_q)
{
    aib_agent_tool_t *t = &APR_ARRAY_PUSH(tools, aib_agent_tool_t);

    memset(t, 0, sizeof(*t));
    t->server = server;
    t->tool = tool;
    t->description = description;
    t->input_schema = schema_q ? J(schema_q) : NULL;
}

/* fs/read (schema with a path) and web/search (no schema). */
static apr_array_header_t *two_tools(void)
{
    apr_array_header_t *tools = new_tools();

    add_tool(tools, "fs", "read", "Reads a file",
             "{'type':'object','properties':{'path':{'type':'string'}},'required':['path']}");
    add_tool(tools, "web", "search", NULL, NULL);
    return tools;
}

static const char *inject_ok(const aib_format_t *kind, const char *body_q,
                             const apr_array_header_t *tools, apr_array_header_t **injected)
{
    const char *body = J(body_q), *out = NULL, *err;
    apr_size_t out_len = 0;

    err = aib_agent_inject(pool, kind, body, strlen(body), tools, &out, &out_len, injected);
    if (err)
        fail_msg("inject failed: %s", err);
    assert_non_null(out);
    assert_int_equal(out_len, strlen(out));
    return out;
}

/* Injection leaves the body as it is: the very same pointer. */
static void inject_unchanged(const aib_format_t *kind, const char *body_q,
                             const apr_array_header_t *tools)
{
    const char *body = J(body_q), *out = NULL;
    apr_size_t out_len = 0;
    apr_array_header_t *injected = NULL;

    assert_null(aib_agent_inject(pool, kind, body, strlen(body), tools, &out, &out_len,
                                 &injected));
    assert_ptr_equal(out, body);
    assert_int_equal(out_len, strlen(body));
    assert_non_null(injected);
    assert_int_equal(injected->nelts, 0);
}

static void inject_fails(const aib_format_t *kind, const char *body, apr_size_t len,
                         const apr_array_header_t *tools, const char *message)
{
    const char *out = NULL, *err;
    apr_size_t out_len = 0;
    apr_array_header_t *injected = NULL;

    err = aib_agent_inject(pool, kind, body, len, tools, &out, &out_len, &injected);
    assert_non_null(err);
    if (message)
        assert_string_equal(err, message);
    assert_null(out);
    assert_null(injected);
}

static const aib_agent_tool_t *injected_at(const apr_array_header_t *injected, int i)
{
    return &APR_ARRAY_IDX(injected, i, aib_agent_tool_t);
}

#define CHAT_FS_READ \
    "{'type':'function','function':{'name':'bmcp_fs_read','description':'Reads a file'," \
    "'parameters':{'type':'object','properties':{'path':{'type':'string'}}," \
    "'required':['path']}}}"
#define CHAT_WEB_SEARCH \
    "{'type':'function','function':{'name':'bmcp_web_search'," \
    "'parameters':{'type':'object','properties':{}}}}"
#define CHAT_CLIENT_TOOL \
    "{'type':'function','function':{'name':'get_time','parameters':{'type':'object'}}}"

/* ------------------------------------------------------------------ */
/* Injection                                                           */

static void test_inject_chat_no_client_tools(void **state)
{
    apr_array_header_t *injected = NULL;
    const char *out;

    (void)state;
    out = inject_ok(&aib_format_chat, "{'model':'m','messages':[{'role':'user','content':'hi'}]}",
                    two_tools(), &injected);
    check_json(out, "{'model':'m','messages':[{'role':'user','content':'hi'}],"
                    "'tools':[" CHAT_FS_READ "," CHAT_WEB_SEARCH "],"
                    "'parallel_tool_calls':false}");
    assert_int_equal(injected->nelts, 2);
    assert_string_equal(injected_at(injected, 0)->name, "bmcp_fs_read");
    assert_string_equal(injected_at(injected, 0)->server, "fs");
    assert_string_equal(injected_at(injected, 0)->tool, "read");
    assert_string_equal(injected_at(injected, 1)->name, "bmcp_web_search");
}

static void test_inject_chat_client_tools(void **state)
{
    apr_array_header_t *injected = NULL;
    const char *out;

    (void)state;
    /* After the client's own; the client's parallel_tool_calls true is
     * overridden, its tool_choice kept. */
    out = inject_ok(&aib_format_chat,
                    "{'messages':[],'tools':[" CHAT_CLIENT_TOOL "],"
                    "'parallel_tool_calls':true,'tool_choice':'required'}",
                    two_tools(), &injected);
    check_json(out, "{'messages':[],'tools':[" CHAT_CLIENT_TOOL "," CHAT_FS_READ ","
                    CHAT_WEB_SEARCH "],'parallel_tool_calls':false,'tool_choice':'required'}");
    assert_int_equal(injected->nelts, 2);

    out = inject_ok(&aib_format_chat,
                    "{'messages':[],'tools':[" CHAT_CLIENT_TOOL "],"
                    "'tool_choice':{'type':'function','function':{'name':'get_time'}}}",
                    two_tools(), &injected);
    check_json(out, "{'messages':[],'tools':[" CHAT_CLIENT_TOOL "," CHAT_FS_READ ","
                    CHAT_WEB_SEARCH "],'parallel_tool_calls':false,"
                    "'tool_choice':{'type':'function','function':{'name':'get_time'}}}");
}

static void test_inject_chat_name_clash(void **state)
{
    apr_array_header_t *injected = NULL;
    const char *out;

    (void)state;
    out = inject_ok(&aib_format_chat,
                    "{'messages':[],'tools':[{'type':'function','function':"
                    "{'name':'bmcp_fs_read','parameters':{}}}]}",
                    two_tools(), &injected);
    check_json(out, "{'messages':[],'tools':[{'type':'function','function':"
                    "{'name':'bmcp_fs_read','parameters':{}}}," CHAT_WEB_SEARCH "],"
                    "'parallel_tool_calls':false}");
    assert_int_equal(injected->nelts, 1);
    assert_string_equal(injected_at(injected, 0)->name, "bmcp_web_search");
    assert_null(aib_agent_tool_find(injected, "bmcp_fs_read"));

    /* A custom tool's name clashes as well. */
    out = inject_ok(&aib_format_chat,
                    "{'messages':[],'tools':[{'type':'custom','custom':{'name':'bmcp_web_search'}}]}",
                    two_tools(), &injected);
    assert_int_equal(injected->nelts, 1);
    assert_string_equal(injected_at(injected, 0)->name, "bmcp_fs_read");
    check_json(out, "{'messages':[],'tools':[{'type':'custom','custom':"
                    "{'name':'bmcp_web_search'}}," CHAT_FS_READ "],'parallel_tool_calls':false}");

    /* Every one clashes: nothing injected, parallel calls left alone. */
    inject_unchanged(&aib_format_chat,
                     "{'messages':[],'tools':["
                     "{'type':'function','function':{'name':'bmcp_fs_read'}},"
                     "{'type':'function','function':{'name':'bmcp_web_search'}}]}",
                     two_tools());
}

static void test_inject_tool_choice_none(void **state)
{
    (void)state;
    inject_unchanged(&aib_format_chat, "{'messages':[],'tool_choice':'none'}", two_tools());
    inject_unchanged(&aib_format_responses, "{'input':'x','tool_choice':'none'}", two_tools());
    inject_unchanged(&aib_format_messages, "{'messages':[],'tool_choice':{'type':'none'}}",
                     two_tools());
}

static void test_inject_nothing_to_inject(void **state)
{
    (void)state;
    inject_unchanged(&aib_format_chat, "{'messages':[]}", new_tools());
    inject_unchanged(&aib_format_messages, "{'messages':[]}", NULL);
}

static void test_inject_responses(void **state)
{
    apr_array_header_t *injected = NULL;
    const char *out;

    (void)state;
    /* A hosted tool has no name; a client function tool keeps its place. */
    out = inject_ok(&aib_format_responses,
                    "{'model':'m','input':'hi','tools':[{'type':'web_search'},"
                    "{'type':'function','name':'bmcp_web_search','parameters':{}}],"
                    "'tool_choice':'auto'}",
                    two_tools(), &injected);
    check_json(out, "{'model':'m','input':'hi','tools':[{'type':'web_search'},"
                    "{'type':'function','name':'bmcp_web_search','parameters':{}},"
                    "{'type':'function','name':'bmcp_fs_read','description':'Reads a file',"
                    "'parameters':{'type':'object','properties':{'path':{'type':'string'}},"
                    "'required':['path']}}],"
                    "'tool_choice':'auto','parallel_tool_calls':false}");
    assert_int_equal(injected->nelts, 1);
    assert_string_equal(injected_at(injected, 0)->name, "bmcp_fs_read");

    out = inject_ok(&aib_format_responses, "{'input':[]}", two_tools(), &injected);
    check_json(out, "{'input':[],'tools':["
                    "{'type':'function','name':'bmcp_fs_read','description':'Reads a file',"
                    "'parameters':{'type':'object','properties':{'path':{'type':'string'}},"
                    "'required':['path']}},"
                    "{'type':'function','name':'bmcp_web_search',"
                    "'parameters':{'type':'object','properties':{}}}],"
                    "'parallel_tool_calls':false}");
}

#define MSG_FS_READ \
    "{'name':'bmcp_fs_read','description':'Reads a file','input_schema':{'type':'object'," \
    "'properties':{'path':{'type':'string'}},'required':['path']}}"
#define MSG_WEB_SEARCH "{'name':'bmcp_web_search','input_schema':{'type':'object','properties':{}}}"

static void test_inject_messages(void **state)
{
    apr_array_header_t *injected = NULL;
    const char *out;

    (void)state;
    out = inject_ok(&aib_format_messages, "{'model':'c','max_tokens':10,'messages':[]}",
                    two_tools(), &injected);
    check_json(out, "{'model':'c','max_tokens':10,'messages':[],'tools':[" MSG_FS_READ ","
                    MSG_WEB_SEARCH "],"
                    "'tool_choice':{'type':'auto','disable_parallel_tool_use':true}}");
    assert_int_equal(injected->nelts, 2);

    out = inject_ok(&aib_format_messages,
                    "{'messages':[],'tools':[{'name':'bmcp_web_search','input_schema':{}},"
                    "{'type':'web_search_20250305','name':'web_search'}],"
                    "'tool_choice':{'type':'any'}}",
                    two_tools(), &injected);
    check_json(out, "{'messages':[],'tools':[{'name':'bmcp_web_search','input_schema':{}},"
                    "{'type':'web_search_20250305','name':'web_search'}," MSG_FS_READ "],"
                    "'tool_choice':{'type':'any','disable_parallel_tool_use':true}}");
    assert_int_equal(injected->nelts, 1);

    out = inject_ok(&aib_format_messages,
                    "{'messages':[],'tools':[{'name':'x','input_schema':{}}],"
                    "'tool_choice':{'type':'tool','name':'x','disable_parallel_tool_use':false}}",
                    two_tools(), &injected);
    check_json(out, "{'messages':[],'tools':[{'name':'x','input_schema':{}}," MSG_FS_READ ","
                    MSG_WEB_SEARCH "],"
                    "'tool_choice':{'type':'tool','name':'x','disable_parallel_tool_use':true}}");
}

static void test_inject_schemas(void **state)
{
    apr_array_header_t *tools = new_tools(), *injected = NULL;
    const char *out;

    (void)state;
    add_tool(tools, "s", "null", NULL, NULL);
    add_tool(tools, "s", "blank", NULL, "");
    add_tool(tools, "s", "empty", NULL, "{}");
    add_tool(tools, "s", "spaced", NULL, " { } ");
    add_tool(tools, "s", "deep", "d", "{'type':'object','properties':{'a':{'type':'array',"
                                      "'items':{'type':'object','properties':{'b':{'type':'number',"
                                      "'minimum':0.5}}}}}}");
    out = inject_ok(&aib_format_messages, "{'messages':[]}", tools, &injected);
    check_json(out, "{'messages':[],'tools':["
                    "{'name':'bmcp_s_null','input_schema':{'type':'object','properties':{}}},"
                    "{'name':'bmcp_s_blank','input_schema':{'type':'object','properties':{}}},"
                    "{'name':'bmcp_s_empty','input_schema':{'type':'object','properties':{}}},"
                    "{'name':'bmcp_s_spaced','input_schema':{'type':'object','properties':{}}},"
                    "{'name':'bmcp_s_deep','description':'d','input_schema':{'type':'object',"
                    "'properties':{'a':{'type':'array','items':{'type':'object','properties':"
                    "{'b':{'type':'number','minimum':0.5}}}}}}}],"
                    "'tool_choice':{'type':'auto','disable_parallel_tool_use':true}}");
    assert_int_equal(injected->nelts, 5);

    tools = new_tools();
    add_tool(tools, "s", "array", NULL, "[1]");
    inject_fails(&aib_format_chat, "{}", 2, tools,
                 "inputSchema of tool 'bmcp_s_array' is not a JSON object");
    tools = new_tools();
    add_tool(tools, "s", "ok", NULL, NULL);
    add_tool(tools, "s", "garbage", NULL, "{'type':");
    inject_fails(&aib_format_responses, "{}", 2, tools,
                 "inputSchema of tool 'bmcp_s_garbage' is not a JSON object");
}

static void test_inject_same_prefixed_name(void **state)
{
    apr_array_header_t *tools = new_tools(), *injected = NULL;
    const aib_agent_tool_t *t;
    const char *out;

    (void)state;
    add_tool(tools, "a_b", "c", "first", NULL);
    add_tool(tools, "a", "b_c", "second", NULL);
    add_tool(tools, "a", "b", "third", NULL);
    out = inject_ok(&aib_format_responses, "{'input':'x'}", tools, &injected);
    check_json(out, "{'input':'x','tools':["
                    "{'type':'function','name':'bmcp_a_b_c','description':'first',"
                    "'parameters':{'type':'object','properties':{}}},"
                    "{'type':'function','name':'bmcp_a_b','description':'third',"
                    "'parameters':{'type':'object','properties':{}}}],"
                    "'parallel_tool_calls':false}");
    assert_int_equal(injected->nelts, 2);
    t = aib_agent_tool_find(injected, "bmcp_a_b_c");
    assert_non_null(t);
    assert_string_equal(t->server, "a_b");
    assert_string_equal(t->tool, "c");
    t = aib_agent_tool_find(injected, "bmcp_a_b");
    assert_non_null(t);
    assert_string_equal(t->server, "a");
    assert_string_equal(t->tool, "b");
    assert_null(aib_agent_tool_find(injected, "bmcp_a"));
    assert_null(aib_agent_tool_find(injected, "get_time"));
    assert_null(aib_agent_tool_find(injected, NULL));
    assert_null(aib_agent_tool_find(NULL, "bmcp_a_b"));
}

static void test_inject_malformed(void **state)
{
    apr_array_header_t *tools = two_tools();

    (void)state;
    inject_fails(&aib_format_chat, "nope", 4, tools, "request body is not a JSON object");
    inject_fails(&aib_format_chat, "[]", 2, tools, "request body is not a JSON object");
    inject_fails(&aib_format_chat, "{\"a\":1", 6, tools, "request body is not a JSON object");
    inject_fails(&aib_format_chat, "{}x", 3, tools, "request body is not a JSON object");
    inject_fails(&aib_format_chat, "{}\0{}", 5, tools, "request body is not a JSON object");
    inject_fails(&aib_format_chat, NULL, 0, tools, "request body is not a JSON object");
    inject_fails(&aib_format_chat, "{\"tools\":{}}", 12, tools, "'tools' must be an array");
    inject_fails(&aib_format_messages, "{\"tool_choice\":\"auto\"}", 22, tools,
                 "'tool_choice' must be an object");
    inject_fails(NULL, "{}", 2, tools, "route has no tools");
    tools = new_tools();
    add_tool(tools, NULL, "x", NULL, NULL);
    inject_fails(&aib_format_chat, "{}", 2, tools, "an injected tool has no server or tool name");
}

/* ------------------------------------------------------------------ */
/* Reading the calls                                                   */

/* fs/read and web/search injected, for reading calls back. */
static apr_array_header_t *injected_two(void)
{
    apr_array_header_t *injected = NULL;

    inject_ok(&aib_format_chat, "{}", two_tools(), &injected);
    assert_int_equal(injected->nelts, 2);
    return injected;
}

static aib_agent_calls_t calls_ok(const aib_format_t *kind, const char *body_q,
                                  const apr_array_header_t *injected)
{
    const char *body = J(body_q), *err;
    aib_agent_calls_t calls;

    memset(&calls, 0, sizeof(calls));
    err = aib_agent_calls(pool, kind, body, strlen(body), injected, NULL, &calls);
    if (err)
        fail_msg("calls failed: %s", err);
    assert_int_equal(calls.none + calls.only_injected + calls.any_client, 1);
    return calls;
}

static void check_call(const aib_agent_calls_t *calls, int i, const char *id,
                       const char *name, const char *arguments_q, const char *server)
{
    const aib_agent_call_t *c;

    assert_true(i < calls->calls->nelts);
    c = &APR_ARRAY_IDX(calls->calls, i, aib_agent_call_t);
    if (id)
        assert_string_equal(c->id, id);
    else
        assert_null(c->id);
    if (name)
        assert_string_equal(c->name, name);
    else
        assert_null(c->name);
    if (arguments_q)
        check_json(c->arguments, arguments_q);
    else
        assert_null(c->arguments);
    if (server) {
        assert_non_null(c->tool);
        assert_string_equal(c->tool->server, server);
    }
    else
        assert_null(c->tool);
}

static void calls_fail(const aib_format_t *kind, const char *body_q, const char *message)
{
    const char *body = J(body_q);
    aib_agent_calls_t calls;
    const char *err;

    memset(&calls, 0, sizeof(calls));
    err = aib_agent_calls(pool, kind, body, strlen(body), injected_two(), NULL, &calls);
    assert_non_null(err);
    assert_string_equal(err, message);
    assert_null(calls.calls);
}

#define CHAT_RESPONSE(tool_calls) \
    "{'id':'c1','object':'chat.completion','choices':[{'index':0,'message':" \
    "{'role':'assistant','content':null,'tool_calls':" tool_calls "}," \
    "'finish_reason':'tool_calls'}],'usage':{'prompt_tokens':5,'completion_tokens':2}}"
#define CALL_READ \
    "{'id':'call_1','type':'function','function':{'name':'bmcp_fs_read'," \
    "'arguments':'{\\'path\\':\\'/etc\\'}'}}"
#define CALL_SEARCH \
    "{'id':'call_2','type':'function','function':{'name':'bmcp_web_search','arguments':'{}'}}"
#define CALL_CLIENT \
    "{'id':'call_3','type':'function','function':{'name':'get_time','arguments':'{}'}}"

static void test_calls_chat(void **state)
{
    apr_array_header_t *injected = injected_two();
    aib_agent_calls_t c;

    (void)state;
    c = calls_ok(&aib_format_chat, CHAT_RESPONSE("[" CALL_READ "," CALL_SEARCH "]"), injected);
    assert_true(c.only_injected);
    assert_int_equal(c.calls->nelts, 2);
    check_call(&c, 0, "call_1", "bmcp_fs_read", "{'path':'/etc'}", "fs");
    check_call(&c, 1, "call_2", "bmcp_web_search", "{}", "web");

    c = calls_ok(&aib_format_chat, CHAT_RESPONSE("[" CALL_READ "," CALL_CLIENT "]"), injected);
    assert_true(c.any_client);
    assert_int_equal(c.calls->nelts, 2);
    check_call(&c, 1, "call_3", "get_time", "{}", NULL);

    /* A custom tool call is the client's. */
    c = calls_ok(&aib_format_chat, CHAT_RESPONSE("[{'id':'call_9','type':'custom','custom':"
                                               "{'name':'bmcp_fs_read','input':'x'}}]"),
                 injected);
    assert_true(c.any_client);
    check_call(&c, 0, "call_9", "bmcp_fs_read", NULL, NULL);

    /* A name of ours that was not offered (the model made it up) is still
     * ours, without a tool: it gets an error result... */
    c = calls_ok(&aib_format_chat, CHAT_RESPONSE("[" CALL_READ "]"), NULL);
    assert_true(c.only_injected);
    assert_true(APR_ARRAY_IDX(c.calls, 0, aib_agent_call_t).ours);
    assert_null(APR_ARRAY_IDX(c.calls, 0, aib_agent_call_t).tool);
    /* ...unless the client has a tool of that name. */
    {
        const char *request = "{\"tools\":[{\"type\":\"function\",\"function\":"
                              "{\"name\":\"bmcp_fs_read\"}}]}";
        apr_array_header_t *mine = aib_agent_client_tools(pool, &aib_format_chat, request,
                                                          strlen(request));
        const char *body = J(CHAT_RESPONSE("[" CALL_READ "]"));
        assert_non_null(mine);
        assert_int_equal(mine->nelts, 1);
        assert_null(aib_agent_calls(pool, &aib_format_chat, body, strlen(body), NULL, mine, &c));
        assert_true(c.any_client);
        assert_false(APR_ARRAY_IDX(c.calls, 0, aib_agent_call_t).ours);
    }

    c = calls_ok(&aib_format_chat, CHAT_RESPONSE("null"), injected);
    assert_true(c.none);
    assert_int_equal(c.calls->nelts, 0);
    c = calls_ok(&aib_format_chat, CHAT_RESPONSE("[]"), injected);
    assert_true(c.none);
    c = calls_ok(&aib_format_chat, "{'choices':[{'message':{'role':'assistant','content':'hi'},"
                                 "'finish_reason':'stop'}]}", injected);
    assert_true(c.none);
}

static void test_calls_chat_malformed(void **state)
{
    (void)state;
    calls_fail(&aib_format_chat, "{'choices':[]}", "response has no choices[0].message object");
    calls_fail(&aib_format_chat, "{'choices':[{'message':'x'}]}",
               "response has no choices[0].message object");
    calls_fail(&aib_format_chat, "{'error':{'message':'x'}}",
               "response has no choices[0].message object");
    calls_fail(&aib_format_chat, CHAT_RESPONSE("{}"), "'tool_calls' must be an array");
    calls_fail(&aib_format_chat, CHAT_RESPONSE("[1]"),
               "a tool call or output item is not an object");
    calls_fail(&aib_format_chat,
               CHAT_RESPONSE("[{'type':'function','function':{'name':'a','arguments':'{}'}}]"),
               "a tool call has no string 'id'");
    calls_fail(&aib_format_chat,
               CHAT_RESPONSE("[{'id':'x','type':'function','function':{'name':'a','arguments':{}}}]"),
               "a tool call has no string function.name or function.arguments");
    calls_fail(&aib_format_chat, CHAT_RESPONSE("[{'id':'x','function':{'arguments':'{}'}}]"),
               "a tool call has no string function.name or function.arguments");
    calls_fail(&aib_format_chat, "not json", "response body is not a JSON object");
}

#define RESP_REASONING "{'type':'reasoning','id':'rs_1','summary':[]}"
#define RESP_CALL_READ \
    "{'type':'function_call','id':'fc_1','call_id':'call_1','name':'bmcp_fs_read'," \
    "'arguments':'{\\'path\\':\\'/\\'}','status':'completed'}"
#define RESP_CALL_CLIENT \
    "{'type':'function_call','id':'fc_2','call_id':'call_2','name':'get_time'," \
    "'arguments':'{}','status':'completed'}"
#define RESP_MESSAGE \
    "{'type':'message','id':'msg_1','role':'assistant','content':[{'type':'output_text'," \
    "'text':'ok','annotations':[]}]}"
#define RESPONSES_RESPONSE(output) \
    "{'id':'resp_1','object':'response','status':'completed','output':" output "," \
    "'usage':{'input_tokens':5,'output_tokens':2,'total_tokens':7}}"

static void test_calls_responses(void **state)
{
    apr_array_header_t *injected = injected_two();
    aib_agent_calls_t c;

    (void)state;
    c = calls_ok(&aib_format_responses,
                 RESPONSES_RESPONSE("[" RESP_REASONING "," RESP_CALL_READ "]"), injected);
    assert_true(c.only_injected);
    assert_int_equal(c.calls->nelts, 1);
    check_call(&c, 0, "call_1", "bmcp_fs_read", "{'path':'/'}", "fs");

    c = calls_ok(&aib_format_responses,
                 RESPONSES_RESPONSE("[" RESP_CALL_READ "," RESP_CALL_CLIENT "]"), injected);
    assert_true(c.any_client);
    assert_int_equal(c.calls->nelts, 2);
    check_call(&c, 1, "call_2", "get_time", "{}", NULL);

    c = calls_ok(&aib_format_responses,
                 RESPONSES_RESPONSE("[" RESP_CALL_READ ",{'type':'computer_call','id':'cu_1',"
                                    "'call_id':'call_7','action':{'type':'click'}}]"),
                 injected);
    assert_true(c.any_client);
    check_call(&c, 1, "call_7", NULL, NULL, NULL);
    c = calls_ok(&aib_format_responses,
                 RESPONSES_RESPONSE("[{'type':'mcp_approval_request','id':'mcpr_1',"
                                    "'name':'x','server_label':'s'}]"),
                 injected);
    assert_true(c.any_client);
    check_call(&c, 0, "mcpr_1", "x", NULL, NULL);

    /* Hosted tools run upstream: not calls. */
    c = calls_ok(&aib_format_responses,
                 RESPONSES_RESPONSE("[" RESP_REASONING ",{'type':'web_search_call','id':'ws_1'},"
                                    RESP_MESSAGE "]"),
                 injected);
    assert_true(c.none);
    assert_int_equal(c.calls->nelts, 0);
}

static void test_calls_responses_malformed(void **state)
{
    (void)state;
    calls_fail(&aib_format_responses, "{'output':{}}", "response has no 'output' array");
    calls_fail(&aib_format_responses, "{'id':'x'}", "response has no 'output' array");
    calls_fail(&aib_format_responses, "{'output':[{'id':'x'}]}",
               "an output item has no string 'type'");
    calls_fail(&aib_format_responses, "{'output':['x']}",
               "a tool call or output item is not an object");
    calls_fail(&aib_format_responses,
               "{'output':[{'type':'function_call','name':'a','arguments':'{}'}]}",
               "a function_call item has no string call_id, name or arguments");
}

#define MSG_TEXT "{'type':'text','text':'Let me look.'}"
#define MSG_USE_READ \
    "{'type':'tool_use','id':'toolu_1','name':'bmcp_fs_read','input':{'path':'/a','n':[1,2]}}"
#define MSG_USE_CLIENT "{'type':'tool_use','id':'toolu_2','name':'get_time','input':{}}"
#define MESSAGES_RESPONSE(content) \
    "{'id':'msg_1','type':'message','role':'assistant','content':" content "," \
    "'stop_reason':'tool_use','usage':{'input_tokens':5,'output_tokens':2}}"

static void test_calls_messages(void **state)
{
    apr_array_header_t *injected = injected_two();
    aib_agent_calls_t c;

    (void)state;
    c = calls_ok(&aib_format_messages, MESSAGES_RESPONSE("[" MSG_TEXT "," MSG_USE_READ "]"),
                 injected);
    assert_true(c.only_injected);
    assert_int_equal(c.calls->nelts, 1);
    check_call(&c, 0, "toolu_1", "bmcp_fs_read", "{'path':'/a','n':[1,2]}", "fs");

    c = calls_ok(&aib_format_messages,
                 MESSAGES_RESPONSE("[" MSG_USE_CLIENT "," MSG_USE_READ "]"), injected);
    assert_true(c.any_client);
    check_call(&c, 0, "toolu_2", "get_time", "{}", NULL);
    check_call(&c, 1, "toolu_1", "bmcp_fs_read", "{'path':'/a','n':[1,2]}", "fs");

    c = calls_ok(&aib_format_messages,
                 "{'content':[" MSG_TEXT ",{'type':'server_tool_use','id':'srvtoolu_1',"
                 "'name':'web_search','input':{}}],'stop_reason':'end_turn'}",
                 injected);
    assert_true(c.none);

    calls_fail(&aib_format_messages, "{'content':'hi'}", "response has no 'content' array");
    calls_fail(&aib_format_messages,
               "{'content':[{'type':'tool_use','id':'a','name':'b','input':'{}'}]}",
               "a tool_use block has no string id, string name or object input");
    calls_fail(&aib_format_messages, "{'content':[{'type':'tool_use','name':'b','input':{}}]}",
               "a tool_use block has no string id, string name or object input");
    assert_non_null(aib_agent_calls(pool, NULL, "{}", 2, NULL, NULL,
                                    &(aib_agent_calls_t){0}));
}

/* ------------------------------------------------------------------ */
/* Continuation                                                        */

static apr_array_header_t *new_results(void)
{
    return apr_array_make(pool, 4, sizeof(aib_agent_result_t));
}

static void add_result(apr_array_header_t *results, const char *id, const char *output,
                       int is_error)
{
    aib_agent_result_t *r = &APR_ARRAY_PUSH(results, aib_agent_result_t);

    r->id = id;
    r->output = output;
    r->is_error = is_error;
}

static const char *continue_ok(const aib_format_t *kind, const char *request_q,
                               const char *response_q, const apr_array_header_t *results)
{
    const char *request = J(request_q), *response = J(response_q), *out = NULL, *err;
    apr_size_t out_len = 0;

    err = aib_agent_continue(pool, kind, request, strlen(request), response, strlen(response),
                             results, &out, &out_len);
    if (err)
        fail_msg("continue failed: %s", err);
    assert_int_equal(out_len, strlen(out));
    return out;
}

static void continue_fails(const aib_format_t *kind, const char *request_q,
                           const char *response_q, const apr_array_header_t *results,
                           const char *message)
{
    const char *request = J(request_q), *response = J(response_q), *out = NULL, *err;
    apr_size_t out_len = 0;

    err = aib_agent_continue(pool, kind, request, strlen(request), response, strlen(response),
                             results, &out, &out_len);
    assert_non_null(err);
    assert_string_equal(err, message);
    assert_null(out);
}

static void test_error_output(void **state)
{
    (void)state;
    check_json(aib_agent_error_output(pool, "no such file: \"/x\""),
               "{'error':true,'message':'no such file: \\'/x\\''}");
    check_json(aib_agent_error_output(pool, NULL), "{'error':true,'message':''}");
}

static void test_continue_chat(void **state)
{
    apr_array_header_t *results = new_results();
    const char *out;

    (void)state;
    /* Results in another order than the calls: written in the calls'. */
    add_result(results, "call_2", "connection refused", 1);
    add_result(results, "call_1", "file text", 0);
    out = continue_ok(&aib_format_chat,
                      "{'model':'m','messages':[{'role':'user','content':'hi'}],"
                      "'tools':[" CHAT_FS_READ "],'parallel_tool_calls':false}",
                      CHAT_RESPONSE("[" CALL_READ "," CALL_SEARCH "]"), results);
    check_json(out, "{'model':'m','messages':[{'role':'user','content':'hi'},"
                    "{'role':'assistant','content':null,'tool_calls':[" CALL_READ ","
                    CALL_SEARCH "]},"
                    "{'role':'tool','tool_call_id':'call_1','content':'file text'},"
                    "{'role':'tool','tool_call_id':'call_2','content':"
                    "'{\\'error\\':true,\\'message\\':\\'connection refused\\'}'}],"
                    "'tools':[" CHAT_FS_READ "],'parallel_tool_calls':false}");
}

static void test_continue_responses(void **state)
{
    apr_array_header_t *results = new_results();
    const char *out;

    (void)state;
    add_result(results, "call_1", "file text", 0);
    /* A string input becomes a user message first. */
    out = continue_ok(&aib_format_responses,
                      "{'model':'m','input':'read /','store':false}",
                      RESPONSES_RESPONSE("[" RESP_REASONING "," RESP_CALL_READ "]"), results);
    check_json(out, "{'model':'m','store':false,'input':[{'role':'user','content':'read /'},"
                    RESP_REASONING "," RESP_CALL_READ ","
                    "{'type':'function_call_output','call_id':'call_1','output':'file text'}]}");

    /* An array input is appended to; previous_response_id stays. Error
     * output as JSON text. */
    results = new_results();
    add_result(results, "call_1", "denied", 1);
    out = continue_ok(&aib_format_responses,
                      "{'previous_response_id':'resp_0','input':[{'role':'user',"
                      "'content':[{'type':'input_text','text':'go'}]}]}",
                      RESPONSES_RESPONSE("[" RESP_CALL_READ "]"), results);
    check_json(out, "{'previous_response_id':'resp_0','input':[{'role':'user',"
                    "'content':[{'type':'input_text','text':'go'}]}," RESP_CALL_READ ","
                    "{'type':'function_call_output','call_id':'call_1',"
                    "'output':'{\\'error\\':true,\\'message\\':\\'denied\\'}'}]}");

    /* No input at all (previous_response_id only). */
    results = new_results();
    add_result(results, "call_1", "", 0);
    out = continue_ok(&aib_format_responses, "{'previous_response_id':'resp_0'}",
                      RESPONSES_RESPONSE("[" RESP_CALL_READ "]"), results);
    check_json(out, "{'previous_response_id':'resp_0','input':[" RESP_CALL_READ ","
                    "{'type':'function_call_output','call_id':'call_1','output':''}]}");
}

static void test_continue_messages(void **state)
{
    apr_array_header_t *results = new_results();
    const char *out;

    (void)state;
    add_result(results, "toolu_1", "file text", 0);
    add_result(results, "toolu_2", "timeout", 1);
    out = continue_ok(&aib_format_messages,
                      "{'model':'c','max_tokens':99,'messages':[{'role':'user','content':'hi'}]}",
                      MESSAGES_RESPONSE("[" MSG_TEXT "," MSG_USE_READ ",{'type':'tool_use',"
                                        "'id':'toolu_2','name':'bmcp_web_search','input':{}}]"),
                      results);
    check_json(out, "{'model':'c','max_tokens':99,'messages':[{'role':'user','content':'hi'},"
                    "{'role':'assistant','content':[" MSG_TEXT "," MSG_USE_READ ","
                    "{'type':'tool_use','id':'toolu_2','name':'bmcp_web_search','input':{}}]},"
                    "{'role':'user','content':["
                    "{'type':'tool_result','tool_use_id':'toolu_1','content':'file text'},"
                    "{'type':'tool_result','tool_use_id':'toolu_2','content':'timeout',"
                    "'is_error':true}]}]}");
}

static void test_continue_malformed(void **state)
{
    apr_array_header_t *one = new_results(), *two = new_results(), *dup = new_results(),
                       *other = new_results();
    const char *chat_resp = CHAT_RESPONSE("[" CALL_READ "]");

    (void)state;
    add_result(one, "call_1", "x", 0);
    add_result(two, "call_1", "x", 0);
    add_result(two, "call_9", "x", 0);
    add_result(dup, "call_1", "x", 0);
    add_result(dup, "call_1", "y", 0);
    add_result(other, "call_9", "x", 0);

    continue_fails(&aib_format_chat, "{'messages':[]}", chat_resp, NULL,
                   "0 results for 1 tool calls");
    continue_fails(&aib_format_chat, "{'messages':[]}", chat_resp, two,
                   "2 results for 1 tool calls");
    continue_fails(&aib_format_chat, "{'messages':[]}", chat_resp, other,
                   "no result for tool call 'call_1'");
    continue_fails(&aib_format_chat, "{'messages':[]}",
                   CHAT_RESPONSE("[" CALL_READ "," CALL_READ "]"),
                   dup, "two tool calls have the id 'call_1'");
    continue_fails(&aib_format_chat, "{'messages':[]}",
                   CHAT_RESPONSE("[" CALL_READ "," CALL_SEARCH "]"),
                   dup, "two results for tool call 'call_1'");
    continue_fails(&aib_format_chat, "{'messages':[]}", CHAT_RESPONSE("null"), one,
                   "the response calls no tool");
    continue_fails(&aib_format_chat, "{'model':'m'}", chat_resp, one,
                   "request has no 'messages' array");
    continue_fails(&aib_format_chat, "{'messages':{}}", chat_resp, one,
                   "request has no 'messages' array");
    continue_fails(&aib_format_chat, "[]", chat_resp, one, "request body is not a JSON object");
    continue_fails(&aib_format_chat, "{'messages':[]}", "{", one,
                   "response body is not a JSON object");
    continue_fails(&aib_format_chat, "{'messages':[]}", "{'choices':7}", one,
                   "response has no choices[0].message object");
    continue_fails(&aib_format_responses, "{'input':7}", RESPONSES_RESPONSE("[" RESP_CALL_READ "]"),
                   one, "'input' must be a string or an array");
    continue_fails(&aib_format_responses, "{'input':'x'}",
                   RESPONSES_RESPONSE("[{'type':'computer_call','call_id':'call_1'}]"), one,
                   "the response calls a tool that is not a function");
    continue_fails(&aib_format_messages, "{}", MESSAGES_RESPONSE("[" MSG_USE_READ "]"), one,
                   "request has no 'messages' array");
    continue_fails(NULL, "{}", "{}", one, "route has no tools");
}

/* ------------------------------------------------------------------ */
/* Mixed turns                                                         */

static const char *strip_ok(const aib_format_t *kind, const char *response_q)
{
    const char *response = J(response_q), *out = NULL, *err;
    apr_size_t out_len = 0;

    err = aib_agent_strip_injected(pool, kind, response, strlen(response), injected_two(), NULL,
                                   &out, &out_len);
    if (err)
        fail_msg("strip failed: %s", err);
    assert_int_equal(out_len, strlen(out));
    return out;
}

static void test_strip_chat(void **state)
{
    (void)state;
    check_json(strip_ok(&aib_format_chat,
                        CHAT_RESPONSE("[" CALL_READ "," CALL_CLIENT "," CALL_SEARCH "]")),
               CHAT_RESPONSE("[" CALL_CLIENT "]"));
    /* No call left: a plain answer. */
    check_json(strip_ok(&aib_format_chat, CHAT_RESPONSE("[" CALL_READ "]")),
               "{'id':'c1','object':'chat.completion','choices':[{'index':0,'message':"
               "{'role':'assistant','content':null},'finish_reason':'stop'}],"
               "'usage':{'prompt_tokens':5,'completion_tokens':2}}");
}

static void test_strip_responses(void **state)
{
    (void)state;
    check_json(strip_ok(&aib_format_responses,
                        RESPONSES_RESPONSE("[" RESP_REASONING "," RESP_CALL_READ ","
                                           RESP_CALL_CLIENT "]")),
               RESPONSES_RESPONSE("[" RESP_REASONING "," RESP_CALL_CLIENT "]"));
}

static void test_strip_messages(void **state)
{
    (void)state;
    check_json(strip_ok(&aib_format_messages,
                        MESSAGES_RESPONSE("[" MSG_TEXT "," MSG_USE_READ "," MSG_USE_CLIENT "]")),
               MESSAGES_RESPONSE("[" MSG_TEXT "," MSG_USE_CLIENT "]"));
    check_json(strip_ok(&aib_format_messages, MESSAGES_RESPONSE("[" MSG_TEXT "," MSG_USE_READ "]")),
               "{'id':'msg_1','type':'message','role':'assistant','content':[" MSG_TEXT "],"
               "'stop_reason':'end_turn','usage':{'input_tokens':5,'output_tokens':2}}");
}

static void test_strip_unchanged_and_malformed(void **state)
{
    const char *response = J(CHAT_RESPONSE("[" CALL_CLIENT "]")), *out = NULL;
    apr_size_t out_len = 0;

    (void)state;
    assert_null(aib_agent_strip_injected(pool, &aib_format_chat, response, strlen(response),
                                         injected_two(), NULL, &out, &out_len));
    assert_ptr_equal(out, response);
    assert_int_equal(out_len, strlen(response));

    out = NULL;
    response = J(CHAT_RESPONSE("[" CALL_READ ",7]"));
    assert_string_equal(aib_agent_strip_injected(pool, &aib_format_chat, response,
                                                 strlen(response), injected_two(), NULL, &out,
                                                 &out_len),
                        "a tool call or output item is not an object");
    assert_null(out);
    assert_string_equal(aib_agent_strip_injected(pool, &aib_format_messages, "[]", 2,
                                                 injected_two(), NULL, &out, &out_len),
                        "response body is not a JSON object");
    assert_string_equal(aib_agent_strip_injected(pool, &aib_format_responses, "{}", 2,
                                                 injected_two(), NULL, &out, &out_len),
                        "response has no 'output' array");
    assert_null(out);
}

/* ------------------------------------------------------------------ */
/* Usage                                                               */

static void test_usage_add(void **state)
{
    aib_usage_t sum, u;

    (void)state;
    aib_usage_init(&sum, pool);
    aib_usage_init(&u, pool);
    u.input = 1;
    u.output = 2;
    u.cache_read = 3;
    u.cache_write = 4;
    u.reasoning = 5;
    aib_agent_usage_add(&sum, &u);
    assert_int_equal(sum.seen, 0);
    u.seen = 1;
    u.input = INT64_MAX - 1;
    aib_agent_usage_add(&sum, &u);
    assert_int_equal(sum.seen, 1);
    assert_true(sum.input == INT64_MAX);
    assert_int_equal(sum.output, 4);
    assert_int_equal(sum.cache_read, 6);
    assert_int_equal(sum.cache_write, 8);
    assert_int_equal(sum.reasoning, 10);
}

static aib_usage_t previous_usage(void)
{
    aib_usage_t u;

    aib_usage_init(&u, pool);
    u.seen = 1;
    u.input = 100;
    u.output = 20;
    u.cache_read = 30;
    u.cache_write = 40;
    u.reasoning = 5;
    return u;
}

static const char *rewrite_ok(const aib_format_t *kind, const char *response_q,
                              const aib_usage_t *previous)
{
    const char *response = J(response_q), *out = NULL, *err;
    apr_size_t out_len = 0;

    err = aib_agent_usage_rewrite(pool, kind, response, strlen(response), previous, &out,
                                  &out_len);
    if (err)
        fail_msg("usage rewrite failed: %s", err);
    assert_int_equal(out_len, strlen(out));
    return out;
}

static void test_usage_rewrite_chat(void **state)
{
    aib_usage_t prev = previous_usage();

    (void)state;
    check_json(rewrite_ok(&aib_format_chat,
                          "{'id':'c','choices':[],'usage':{'prompt_tokens':50,"
                          "'completion_tokens':10,'total_tokens':60,"
                          "'prompt_tokens_details':{'cached_tokens':7,'audio_tokens':0},"
                          "'completion_tokens_details':{'reasoning_tokens':3}}}",
                          &prev),
               "{'id':'c','choices':[],'usage':{'prompt_tokens':150,'completion_tokens':30,"
               "'total_tokens':180,'prompt_tokens_details':{'cached_tokens':37,'audio_tokens':0},"
               "'completion_tokens_details':{'reasoning_tokens':8}}}");
    /* No usage in the final body: created from the sum. */
    check_json(rewrite_ok(&aib_format_chat, "{'choices':[],'usage':null}", &prev),
               "{'choices':[],'usage':{'prompt_tokens':100,'completion_tokens':20,"
               "'total_tokens':120,'prompt_tokens_details':{'cached_tokens':30},"
               "'completion_tokens_details':{'reasoning_tokens':5}}}");
    /* Detail objects only when there is something to say. */
    prev.cache_read = 0;
    prev.reasoning = 0;
    check_json(rewrite_ok(&aib_format_chat, "{'usage':{'prompt_tokens':1,'completion_tokens':1}}",
                          &prev),
               "{'usage':{'prompt_tokens':101,'completion_tokens':21,'total_tokens':122}}");
}

static void test_usage_rewrite_responses(void **state)
{
    aib_usage_t prev = previous_usage();

    (void)state;
    check_json(rewrite_ok(&aib_format_responses,
                          "{'output':[],'usage':{'input_tokens':50,'output_tokens':10,"
                          "'total_tokens':60,'input_tokens_details':{'cached_tokens':7},"
                          "'output_tokens_details':{'reasoning_tokens':3}}}",
                          &prev),
               "{'output':[],'usage':{'input_tokens':150,'output_tokens':30,'total_tokens':180,"
               "'input_tokens_details':{'cached_tokens':37},"
               "'output_tokens_details':{'reasoning_tokens':8}}}");
}

static void test_usage_rewrite_messages(void **state)
{
    aib_usage_t prev = previous_usage();

    (void)state;
    check_json(rewrite_ok(&aib_format_messages,
                          "{'content':[],'usage':{'input_tokens':50,'output_tokens':10,"
                          "'cache_read_input_tokens':7,'cache_creation_input_tokens':9,"
                          "'service_tier':'standard'}}",
                          &prev),
               "{'content':[],'usage':{'input_tokens':150,'output_tokens':30,"
               "'cache_read_input_tokens':37,'cache_creation_input_tokens':49,"
               "'service_tier':'standard'}}");
}

static void test_usage_rewrite_unchanged_and_malformed(void **state)
{
    aib_usage_t none, prev = previous_usage();
    const char *body = "{\"usage\":{\"prompt_tokens\":1}}", *out = NULL;
    apr_size_t out_len = 0;

    (void)state;
    aib_usage_init(&none, pool);
    assert_null(aib_agent_usage_rewrite(pool, &aib_format_chat, body, strlen(body), &none,
                                        &out, &out_len));
    assert_ptr_equal(out, body);
    assert_int_equal(out_len, strlen(body));

    out = NULL;
    assert_string_equal(aib_agent_usage_rewrite(pool, &aib_format_chat, "{\"usage\":3}", 11,
                                                &prev, &out, &out_len),
                        "'usage' must be an object");
    assert_string_equal(aib_agent_usage_rewrite(pool, &aib_format_messages, "{", 1, &prev,
                                                &out, &out_len),
                        "response body is not a JSON object");
    assert_string_equal(aib_agent_usage_rewrite(pool, NULL, "{}", 2, &prev,
                                                &out, &out_len),
                        "route has no usage");
    assert_null(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_inject_chat_no_client_tools, aib_clear_pool),
        cmocka_unit_test_teardown(test_inject_chat_client_tools, aib_clear_pool),
        cmocka_unit_test_teardown(test_inject_chat_name_clash, aib_clear_pool),
        cmocka_unit_test_teardown(test_inject_tool_choice_none, aib_clear_pool),
        cmocka_unit_test_teardown(test_inject_nothing_to_inject, aib_clear_pool),
        cmocka_unit_test_teardown(test_inject_responses, aib_clear_pool),
        cmocka_unit_test_teardown(test_inject_messages, aib_clear_pool),
        cmocka_unit_test_teardown(test_inject_schemas, aib_clear_pool),
        cmocka_unit_test_teardown(test_inject_same_prefixed_name, aib_clear_pool),
        cmocka_unit_test_teardown(test_inject_malformed, aib_clear_pool),
        cmocka_unit_test_teardown(test_calls_chat, aib_clear_pool),
        cmocka_unit_test_teardown(test_calls_chat_malformed, aib_clear_pool),
        cmocka_unit_test_teardown(test_calls_responses, aib_clear_pool),
        cmocka_unit_test_teardown(test_calls_responses_malformed, aib_clear_pool),
        cmocka_unit_test_teardown(test_calls_messages, aib_clear_pool),
        cmocka_unit_test_teardown(test_error_output, aib_clear_pool),
        cmocka_unit_test_teardown(test_continue_chat, aib_clear_pool),
        cmocka_unit_test_teardown(test_continue_responses, aib_clear_pool),
        cmocka_unit_test_teardown(test_continue_messages, aib_clear_pool),
        cmocka_unit_test_teardown(test_continue_malformed, aib_clear_pool),
        cmocka_unit_test_teardown(test_strip_chat, aib_clear_pool),
        cmocka_unit_test_teardown(test_strip_responses, aib_clear_pool),
        cmocka_unit_test_teardown(test_strip_messages, aib_clear_pool),
        cmocka_unit_test_teardown(test_strip_unchanged_and_malformed, aib_clear_pool),
        cmocka_unit_test_teardown(test_usage_add, aib_clear_pool),
        cmocka_unit_test_teardown(test_usage_rewrite_chat, aib_clear_pool),
        cmocka_unit_test_teardown(test_usage_rewrite_responses, aib_clear_pool),
        cmocka_unit_test_teardown(test_usage_rewrite_messages, aib_clear_pool),
        cmocka_unit_test_teardown(test_usage_rewrite_unchanged_and_malformed, aib_clear_pool),
    };

    return AIB_RUN_TESTS(tests);
}
