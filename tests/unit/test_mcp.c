/* Unit tests for src/mcp.c: AIBridgeMCPServer parsing, and the client
 * against a scripted fake MCP server.
 *
 * The fake transport replays, per request, a status, headers, body chunks
 * and a final result, and records what it was sent. "%ID%" in a scripted
 * chunk becomes the JSON-RPC id of the request it answers, so scripts do not
 * depend on how the client numbers its requests. */
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
#include <apr_tables.h>

#include "mcp.h"

#define NOW INT64_C(1795608000000)
#define SECRET "Bearer s3cr3t-t0ken-value"

/* ---- fake transport ---------------------------------------------------- */

#define MAX_ITEMS 8
#define MAX_CALLS 24

typedef struct {
    int status;                        /* 0: no response at all */
    const char *headers[2 * MAX_ITEMS];/* name, value, ..., NULL */
    const char *chunks[MAX_ITEMS];     /* NULL-terminated */
    aib_xfer_result_e result;
    const char *error;                 /* for a result other than OK */
    int reenter;                       /* ask for the tools during this exchange */
} step_t;

typedef struct {
    const char *url;
    apr_table_t *headers;              /* deep copy */
    json_object *body;                 /* freed with the pool */
    const char *method;                /* the JSON-RPC method */
    int64_t timeout_ms;
    int stopped;                       /* the client stopped reading */
} call_t;

typedef struct {
    aib_transport_t base;
    const step_t *steps;
    int nsteps;
    int ncalls;
    call_t calls[MAX_CALLS];
} fake_transport_t;

static fake_transport_t transport;
static aib_mcp_server_t *server;
static aib_mcp_client_t *client;
static int reentered_ntools = -1;
static int reentered_calls = -1;

static apr_status_t put_json(void *obj)
{
    json_object_put(obj);
    return APR_SUCCESS;
}

static const char *with_id(apr_pool_t *p, const char *chunk, json_object *body)
{
    json_object *id;
    const char *at = strstr(chunk, "%ID%");

    if (!at)
        return apr_pstrdup(p, chunk);
    assert_true(json_object_object_get_ex(body, "id", &id));
    return apr_pstrcat(p, apr_pstrmemdup(p, chunk, (apr_size_t)(at - chunk)),
                       json_object_get_string(id), with_id(p, at + 4, body), NULL);
}

static aib_xfer_result_e fake_perform(aib_transport_t *self, apr_pool_t *p,
                                      const aib_upstream_request_t *req,
                                      const aib_upstream_handler_t *handler,
                                      const char **error)
{
    fake_transport_t *ft = (fake_transport_t *)self;
    const step_t *step;
    call_t *call;
    json_object *method;
    int i;

    if (ft->ncalls >= ft->nsteps || ft->ncalls >= MAX_CALLS) {
        print_error("unexpected MCP request #%d: %.*s\n", ft->ncalls + 1,
                    (int)req->body_len, req->body);
        fail();
    }
    step = &ft->steps[ft->ncalls];
    call = &ft->calls[ft->ncalls++];
    memset(call, 0, sizeof(*call));
    assert_string_equal(req->method, "POST");
    call->url = apr_pstrdup(pool, req->url);
    call->headers = aib_table_copy_deep(req->headers);
    call->timeout_ms = req->timeout_ms;
    call->body = json_tokener_parse(apr_pstrmemdup(pool, req->body, req->body_len));
    assert_non_null(call->body);
    apr_pool_cleanup_register(pool, call->body, put_json, apr_pool_cleanup_null);
    assert_true(json_object_object_get_ex(call->body, "method", &method));
    call->method = json_object_get_string(method);

    /* Waiting for the server. */
    if (handler->on_tick && handler->on_tick(handler->ctx)) {
        call->stopped = 1;
        return AIB_XFER_STOPPED;
    }
    if (step->reenter) {
        const char *failure;
        reentered_calls = ft->ncalls;
        reentered_ntools = aib_mcp_tools(client, self, pool, NOW, &failure)->nelts;
        /* No exchange of its own: the fetch in progress is the only one. */
        assert_int_equal(ft->ncalls, reentered_calls);
    }
    if (step->status) {
        apr_table_t *h = apr_table_make(p, 8);
        for (i = 0; step->headers[i]; i += 2)
            apr_table_addn(h, step->headers[i], step->headers[i + 1]);
        if (handler->on_response(handler->ctx, step->status, h)) {
            call->stopped = 1;
            return AIB_XFER_STOPPED;
        }
        for (i = 0; step->chunks[i]; i++) {
            /* A private copy, scribbled over after: the client may keep
             * nothing of it past the callback. */
            char *data = (char *)with_id(p, step->chunks[i], call->body);
            if (handler->on_data(handler->ctx, data, strlen(data))) {
                call->stopped = 1;
                return AIB_XFER_STOPPED;
            }
            memset(data, '#', strlen(data));
        }
    }
    if (step->result != AIB_XFER_OK)
        *error = step->error ? step->error : "fake failure";
    return step->result;
}

static void script(const step_t *steps, int n)
{
    memset(&transport, 0, sizeof(transport));
    transport.base.perform = fake_perform;
    transport.steps = steps;
    transport.nsteps = n;
}

#define SCRIPT(arr) script((arr), (int)(sizeof(arr) / sizeof((arr)[0])))

/* Steps appended after a script has run (a later phase of a test). */
static void rescript(const step_t *steps, int n)
{
    transport.steps = steps;
    transport.nsteps = n;
    transport.ncalls = 0;
}

#define RESCRIPT(arr) rescript((arr), (int)(sizeof(arr) / sizeof((arr)[0])))

/* ---- scripted answers -------------------------------------------------- */

#define JSON_HEADERS { "Content-Type", "application/json", NULL }
#define SSE_HEADERS { "Content-Type", "text/event-stream", NULL }

#define INIT_RESULT(version) \
    "{\"jsonrpc\":\"2.0\",\"id\":%ID%,\"result\":{\"protocolVersion\":\"" version "\"," \
    "\"capabilities\":{\"tools\":{}},\"serverInfo\":{\"name\":\"fake\",\"version\":\"1\"}}}"

#define INIT_STEP(session) \
    { 200, { "Content-Type", "application/json", "Mcp-Session-Id", session, NULL }, \
      { INIT_RESULT("2025-03-26"), NULL }, AIB_XFER_OK, NULL, 0 }
#define INITIALIZED_STEP { 202, { NULL }, { NULL }, AIB_XFER_OK, NULL, 0 }

#define TOOLS_RESULT(tools) "{\"jsonrpc\":\"2.0\",\"id\":%ID%,\"result\":{\"tools\":[" tools "]}}"
#define TOOL(name) "{\"name\":\"" name "\",\"description\":\"d\",\"inputSchema\":{\"type\":\"object\"}}"
#define LIST_STEP(tools) { 200, JSON_HEADERS, { TOOLS_RESULT(tools), NULL }, AIB_XFER_OK, NULL, 0 }

#define CALL_RESULT(result) "{\"jsonrpc\":\"2.0\",\"id\":%ID%,\"result\":" result "}"
#define CALL_STEP(result) { 200, JSON_HEADERS, { CALL_RESULT(result), NULL }, AIB_XFER_OK, NULL, 0 }

static void make_client(int argc, const char *const *argv)
{
    const char *err = aib_mcp_server_parse(pool, argc, (char *const *)argv, &server);

    if (err)
        fail_msg("%s", err);
    client = aib_mcp_client_create(pool, server);
    assert_non_null(client);
}

#define CLIENT(...) do { \
        static const char *const argv_[] = { __VA_ARGS__ }; \
        make_client((int)(sizeof(argv_) / sizeof(argv_[0])), argv_); \
    } while (0)

static const apr_array_header_t *tools_at(int64_t now, const char **failure)
{
    return aib_mcp_tools(client, &transport.base, pool, now, failure);
}

static const aib_mcp_tool_t *tool_at(const apr_array_header_t *tools, int i)
{
    assert_true(i < tools->nelts);
    return &((const aib_mcp_tool_t *)tools->elts)[i];
}

static const char *names(const apr_array_header_t *tools)
{
    const char *out = "";
    int i;

    for (i = 0; i < tools->nelts; i++)
        out = apr_pstrcat(pool, out, i ? "," : "", tool_at(tools, i)->name, NULL);
    return out;
}

static const char *header(int call, const char *name)
{
    assert_true(call < transport.ncalls);
    return apr_table_get(transport.calls[call].headers, name);
}

/* A member of the request's params, as JSON text, or NULL. */
static const char *param(int call, const char *name)
{
    json_object *params, *member;

    assert_true(call < transport.ncalls);
    if (!json_object_object_get_ex(transport.calls[call].body, "params", &params)
        || !json_object_object_get_ex(params, name, &member))
        return NULL;
    return apr_pstrdup(pool, json_object_to_json_string_ext(member, JSON_C_TO_STRING_PLAIN));
}

static void assert_methods(const char *expected)
{
    const char *got = "";
    int i;

    for (i = 0; i < transport.ncalls; i++)
        got = apr_pstrcat(pool, got, i ? "," : "", transport.calls[i].method, NULL);
    assert_string_equal(got, expected);
}

static void assert_no_secret(const char *message)
{
    assert_non_null(message);
    assert_null(strstr(message, "s3cr3t"));
}

/* ---- AIBridgeMCPServer ------------------------------------------------- */

static const char *parse(aib_mcp_server_t **out, int argc, const char *const *argv)
{
    return aib_mcp_server_parse(pool, argc, (char *const *)argv, out);
}

#define PARSE(out, ...) ({ \
        static const char *const argv_[] = { __VA_ARGS__ }; \
        parse((out), (int)(sizeof(argv_) / sizeof(argv_[0])), argv_); \
    })

static void test_parse_defaults(void **state)
{
    aib_mcp_server_t *s = NULL;

    (void)state;
    assert_null(PARSE(&s, "tools", "http://127.0.0.1:3001/mcp/"));
    assert_string_equal(s->name, "tools");
    /* Taken as written: the trailing slash may matter to the server. */
    assert_string_equal(s->url, "http://127.0.0.1:3001/mcp/");
    assert_int_equal(apr_table_elts(s->headers)->nelts, 0);
    assert_null(s->allow);
    assert_null(s->deny);
    assert_int_equal(s->tools_ttl_ms, 300000);
    assert_int_equal(s->max_answer, 8 * 1024 * 1024);
}

static void test_parse_every_option(void **state)
{
    aib_mcp_server_t *s = NULL;

    (void)state;
    setenv("AIB_TEST_MCP_KEY", "from-env", 1);
    assert_null(PARSE(&s, "my-tools", "https://mcp.example.com/v1/mcp?team=a",
                      "header=Authorization:" SECRET, "header=X-Key: env:AIB_TEST_MCP_KEY",
                      "allow=^(echo|get-.*)$", "deny=^get-env$", "tools-ttl=2.5"));
    assert_string_equal(s->url, "https://mcp.example.com/v1/mcp?team=a");
    assert_string_equal(apr_table_get(s->headers, "Authorization"), SECRET);
    assert_string_equal(apr_table_get(s->headers, "X-Key"), "from-env");
    assert_non_null(s->allow);
    assert_non_null(s->deny);
    assert_int_equal(regexec(s->allow, "get-sum", 0, NULL, 0), 0);
    assert_int_not_equal(regexec(s->allow, "other", 0, NULL, 0), 0);
    assert_int_equal(regexec(s->deny, "get-env", 0, NULL, 0), 0);
    assert_int_equal(s->tools_ttl_ms, 2500);
    unsetenv("AIB_TEST_MCP_KEY");
}

static void test_parse_errors(void **state)
{
    static const struct {
        int argc;
        const char *argv[4];
        const char *error;           /* a part of the message */
    } cases[] = {
        { 1, { "tools" }, "takes a name, a URL" },
        { 2, { "Tools", "http://h/mcp" }, "MCP server name 'Tools'" },
        { 2, { "to--ols", "http://h/mcp" }, "must match" },
        { 2, { "tools", "ftp://h/mcp" }, "not an http:// or https:// URL" },
        { 2, { "tools", "h/mcp" }, "not an http:// or https:// URL" },
        { 2, { "tools", "http://h/mcp#frag" }, "not an http:// or https:// URL" },
        { 3, { "tools", "http://h/mcp", "header=" SECRET }, "header= takes <Name>:<value>" },
        { 3, { "tools", "http://h/mcp", "header=Bad Name:" SECRET }, "header= takes" },
        { 3, { "tools", "http://h/mcp", "header=:" SECRET }, "header= takes" },
        { 3, { "tools", "http://h/mcp", "header=X-Key:" }, "header=X-Key: empty value" },
        { 3, { "tools", "http://h/mcp", "header=X-Key:a\r\nX-Evil: " SECRET },
          "header=X-Key: the value holds a line break" },
        { 3, { "tools", "http://h/mcp", "header=mcp-session-id:" SECRET },
          "header=mcp-session-id: set by the module itself" },
        { 3, { "tools", "http://h/mcp", "header=Accept:" SECRET }, "set by the module" },
        { 3, { "tools", "http://h/mcp", "header=X-Key:env:" }, "env: needs a variable name" },
        { 3, { "tools", "http://h/mcp", "header=X-Key:env:AIB_TEST_MCP_UNSET" },
          "header=X-Key: environment variable AIB_TEST_MCP_UNSET is not set" },
        { 3, { "tools", "http://h/mcp", "allow=(" }, "allow=(: " },
        { 3, { "tools", "http://h/mcp", "deny=a{2" }, "deny=a{2: " },
        { 3, { "tools", "http://h/mcp", "tools-ttl=-1" }, "tools-ttl=-1: must be a non-negative" },
        { 3, { "tools", "http://h/mcp", "tools-ttl=" }, "tools-ttl=: must be" },
        { 3, { "tools", "http://h/mcp", "timeout=5" }, "unknown option 'timeout'" },
        { 3, { "tools", "http://h/mcp", "allow" }, "'allow' is not option=value" },
        { 4, { "tools", "http://h/mcp", "tools-ttl=1", "=x" }, "is not option=value" },
    };
    size_t i;

    (void)state;
    unsetenv("AIB_TEST_MCP_UNSET");
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        aib_mcp_server_t *s = NULL;
        const char *err = parse(&s, cases[i].argc, cases[i].argv);
        if (!err || !strstr(err, cases[i].error))
            fail_msg("case %zu: '%s', wanted '%s'", i, err ? err : "(no error)", cases[i].error);
        assert_null(s);
        assert_no_secret(err);
    }
}

/* ---- tools/list -------------------------------------------------------- */

static void test_handshake_and_session(void **state)
{
    static const step_t steps[] = {
        INIT_STEP("sess-1"),
        INITIALIZED_STEP,
        { 200, JSON_HEADERS,
          { TOOLS_RESULT("{\"name\":\"echo\",\"description\":\"Echoes\",\"inputSchema\":"
                         "{\"type\":\"object\",\"properties\":{\"message\":{\"type\":\"string\"}}}},"
                         "{\"name\":\"bare\"},{\"description\":\"no name\"}"), NULL },
          AIB_XFER_OK, NULL, 0 },
        CALL_STEP("{\"content\":[{\"type\":\"text\",\"text\":\"Echo: hi\"}]}"),
    };
    const apr_array_header_t *tools;
    const char *failure = "unset";
    aib_mcp_result_t r;
    int i;

    (void)state;
    CLIENT("tools", "http://127.0.0.1:3001/mcp", "header=Authorization:" SECRET);
    SCRIPT(steps);
    tools = tools_at(NOW, &failure);
    assert_null(failure);
    assert_methods("initialize,notifications/initialized,tools/list");
    assert_string_equal(param(0, "protocolVersion"), "\"" AIB_MCP_PROTOCOL_VERSION "\"");
    assert_string_equal(param(0, "capabilities"), "{}");
    assert_string_equal(param(0, "clientInfo"), "{\"name\":\"mod_aibridge\",\"version\":\"1\"}");
    assert_false(json_object_object_get_ex(transport.calls[1].body, "id", NULL));
    /* The first request has no session yet; every later one has it, and the
     * version the server chose. */
    assert_null(header(0, "Mcp-Session-Id"));
    assert_null(header(0, "MCP-Protocol-Version"));
    for (i = 0; i < 3; i++) {
        assert_string_equal(transport.calls[i].url, "http://127.0.0.1:3001/mcp");
        assert_string_equal(header(i, "Accept"), "application/json, text/event-stream");
        assert_string_equal(header(i, "Content-Type"), "application/json");
        assert_string_equal(header(i, "Authorization"), SECRET);
    }
    for (i = 1; i < 3; i++) {
        assert_string_equal(header(i, "Mcp-Session-Id"), "sess-1");
        assert_string_equal(header(i, "MCP-Protocol-Version"), "2025-03-26");
    }
    assert_int_equal(tools->nelts, 2);
    assert_string_equal(tool_at(tools, 0)->name, "echo");
    assert_string_equal(tool_at(tools, 0)->description, "Echoes");
    assert_string_equal(tool_at(tools, 0)->input_schema,
                        "{\"type\":\"object\",\"properties\":{\"message\":{\"type\":\"string\"}}}");
    assert_string_equal(tool_at(tools, 1)->name, "bare");
    assert_string_equal(tool_at(tools, 1)->description, "");
    assert_string_equal(tool_at(tools, 1)->input_schema, "{\"type\":\"object\"}");

    /* Cached: no request; a call goes straight into the session. */
    tools = tools_at(NOW + 1000, &failure);
    assert_int_equal(tools->nelts, 2);
    assert_int_equal(transport.ncalls, 3);
    aib_mcp_call(client, &transport.base, pool, "echo", "{\"message\":\"hi\"}", 7000, NULL, &r);
    assert_methods("initialize,notifications/initialized,tools/list,tools/call");
    assert_string_equal(header(3, "Mcp-Session-Id"), "sess-1");
    assert_string_equal(header(3, "MCP-Protocol-Version"), "2025-03-26");
    assert_string_equal(param(3, "name"), "\"echo\"");
    assert_string_equal(param(3, "arguments"), "{\"message\":\"hi\"}");
    assert_int_equal(transport.calls[3].timeout_ms, 7000);
    assert_string_equal(r.text, "Echo: hi");
    assert_false(r.is_error);
    assert_null(r.failure);
}

static int ticks;

static int count_tick(void *ctx)
{
    ticks++;
    return *(int *)ctx;
}

/* A call's waiting is ticked for its caller, who may stop it (client gone). */
static void test_call_wait(void **state)
{
    int stop = 0;
    aib_mcp_wait_t wait = { count_tick, &stop };
    aib_mcp_result_t r;

    static const step_t steps[] = {
        INIT_STEP("s"),
        INITIALIZED_STEP,
        CALL_STEP("{\"content\":[{\"type\":\"text\",\"text\":\"ok\"}]}"),
        CALL_STEP("{\"content\":[]}"),
    };

    (void)state;
    CLIENT("tools", "http://h/mcp");
    SCRIPT(steps);
    ticks = 0;
    aib_mcp_call(client, &transport.base, pool, "echo", "{}", 1000, &wait, &r);
    /* Only the call's own exchange is ticked, not the handshake's. */
    assert_int_equal(ticks, 1);
    assert_null(r.failure);
    assert_string_equal(r.text, "ok");
    stop = 1;
    aib_mcp_call(client, &transport.base, pool, "echo", "{}", 1000, &wait, &r);
    assert_int_equal(ticks, 2);
    assert_int_equal(transport.calls[3].stopped, 1);
    assert_true(r.is_error);
    assert_non_null(r.failure);
}

/* A server without sessions: no Mcp-Session-Id, and none sent back. */
static void test_no_session(void **state)
{
    static const step_t steps[] = {
        { 200, JSON_HEADERS, { INIT_RESULT("2025-06-18"), NULL }, AIB_XFER_OK, NULL, 0 },
        INITIALIZED_STEP,
        LIST_STEP(TOOL("a")),
    };
    const char *failure;

    (void)state;
    CLIENT("tools", "http://h/mcp");
    SCRIPT(steps);
    assert_int_equal(tools_at(NOW, &failure)->nelts, 1);
    assert_null(header(2, "Mcp-Session-Id"));
    assert_string_equal(header(2, "MCP-Protocol-Version"), "2025-06-18");
}

static void test_sse_answers(void **state)
{
    static const step_t steps[] = {
        { 200, { "Content-Type", "text/event-stream; charset=utf-8", "Mcp-Session-Id", "s", NULL },
          { "event: message\nid: 1\ndata: " INIT_RESULT("2025-03-26") "\n\n", NULL },
          AIB_XFER_OK, NULL, 0 },
        INITIALIZED_STEP,
        /* Before the response: a notification, a request from the server,
         * a response to another id, an event of another type; the response
         * itself is split mid-JSON and mid-line. Nothing after it is read. */
        { 200, SSE_HEADERS,
          { "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\","
            "\"params\":{\"level\":\"info\",\"data\":\"x\"}}\n\n"
            "data: {\"jsonrpc\":\"2.0\",\"id\":99,\"method\":\"roots/list\"}\n\n"
            "data: {\"jsonrpc\":\"2.0\",\"id\":98,\"result\":{\"tools\":[" TOOL("wrong") "]}}\n\n"
            "event: other\ndata: " TOOLS_RESULT(TOOL("other")) "\n\n"
            "event: mess",
            "age\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":%ID%,\"result\":{\"tools\":[" TOOL("sse-a"),
            "," TOOL("sse-b") "]}}\r",
            "\n\r\n",
            "data: not even JSON\n\n",
            NULL },
          AIB_XFER_OK, NULL, 0 },
    };
    const apr_array_header_t *tools;
    const char *failure;

    (void)state;
    CLIENT("tools", "http://h/mcp");
    SCRIPT(steps);
    tools = tools_at(NOW, &failure);
    assert_null(failure);
    assert_string_equal(names(tools), "sse-a,sse-b");
    assert_string_equal(header(2, "Mcp-Session-Id"), "s");
    /* It stopped reading once it had its answer. */
    assert_true(transport.calls[2].stopped);
}

static void test_pagination(void **state)
{
    static const step_t steps[] = {
        INIT_STEP("s"),
        INITIALIZED_STEP,
        { 200, JSON_HEADERS,
          { "{\"jsonrpc\":\"2.0\",\"id\":%ID%,\"result\":{\"tools\":[" TOOL("p1") "],"
            "\"nextCursor\":\"page \\\"2\\\"\"}}", NULL }, AIB_XFER_OK, NULL, 0 },
        { 200, JSON_HEADERS,
          { "{\"jsonrpc\":\"2.0\",\"id\":%ID%,\"result\":{\"tools\":[" TOOL("p2") "," TOOL("p3") "],"
            "\"nextCursor\":\"3\"}}", NULL }, AIB_XFER_OK, NULL, 0 },
        { 200, JSON_HEADERS,
          { "{\"jsonrpc\":\"2.0\",\"id\":%ID%,\"result\":{\"tools\":[" TOOL("p4") "],"
            "\"nextCursor\":\"\"}}", NULL }, AIB_XFER_OK, NULL, 0 },
    };
    const char *failure;

    (void)state;
    CLIENT("tools", "http://h/mcp");
    SCRIPT(steps);
    assert_string_equal(names(tools_at(NOW, &failure)), "p1,p2,p3,p4");
    assert_methods("initialize,notifications/initialized,tools/list,tools/list,tools/list");
    assert_null(param(2, "cursor"));
    assert_string_equal(param(3, "cursor"), "\"page \\\"2\\\"\"");
    assert_string_equal(param(4, "cursor"), "\"3\"");
}

static void test_allow_deny(void **state)
{
    static const step_t steps[] = {
        INIT_STEP("s"),
        INITIALIZED_STEP,
        LIST_STEP(TOOL("echo") "," TOOL("get-sum") "," TOOL("get-env") "," TOOL("other") ","
                  TOOL("echo2")),
    };
    const char *failure;

    (void)state;
    /* get-env matches both: deny wins. */
    CLIENT("tools", "http://h/mcp", "deny=^get-env$", "allow=^(echo|get-.*)$");
    SCRIPT(steps);
    assert_string_equal(names(tools_at(NOW, &failure)), "echo,get-sum");
}

static void test_deny_only(void **state)
{
    static const step_t steps[] = {
        INIT_STEP("s"),
        INITIALIZED_STEP,
        LIST_STEP(TOOL("echo") "," TOOL("rm-rf") "," TOOL("get-sum")),
    };
    const char *failure;

    (void)state;
    CLIENT("tools", "http://h/mcp", "deny=^rm");
    SCRIPT(steps);
    assert_string_equal(names(tools_at(NOW, &failure)), "echo,get-sum");
}

static void test_ttl_refetch(void **state)
{
    static const step_t steps[] = {
        INIT_STEP("s"),
        INITIALIZED_STEP,
        LIST_STEP(TOOL("old")),
        LIST_STEP(TOOL("new") "," TOOL("newer")),
    };
    const apr_array_header_t *old_tools, *tools;
    const char *failure;
    apr_pool_t *request;

    (void)state;
    CLIENT("tools", "http://h/mcp", "tools-ttl=10");
    SCRIPT(steps);
    apr_pool_create(&request, pool);
    old_tools = aib_mcp_tools(client, &transport.base, request, NOW, &failure);
    assert_string_equal(names(old_tools), "old");
    assert_string_equal(names(tools_at(NOW + 9999, &failure)), "old");
    assert_int_equal(transport.ncalls, 3);
    /* Expired: listed again in the same session, without a new handshake. */
    tools = tools_at(NOW + 10000, &failure);
    assert_null(failure);
    assert_string_equal(names(tools), "new,newer");
    assert_methods("initialize,notifications/initialized,tools/list,tools/list");
    /* A request still holding the old list can still read it. */
    assert_string_equal(names(old_tools), "old");
    apr_pool_destroy(request);
    assert_string_equal(names(tools_at(NOW + 19999, &failure)), "new,newer");
    assert_int_equal(transport.ncalls, 4);
}

static void test_other_threads_get_previous_list(void **state)
{
    static const step_t steps[] = {
        INIT_STEP("s"),
        INITIALIZED_STEP,
        LIST_STEP(TOOL("old")),
        { 200, JSON_HEADERS, { TOOLS_RESULT(TOOL("new")), NULL }, AIB_XFER_OK, NULL, 1 },
    };
    const char *failure;

    (void)state;
    CLIENT("tools", "http://h/mcp", "tools-ttl=0");
    SCRIPT(steps);
    assert_string_equal(names(tools_at(NOW, &failure)), "old");
    reentered_ntools = -1;
    /* While this fetch is in progress, another caller gets "old" at once. */
    assert_string_equal(names(tools_at(NOW, &failure)), "new");
    assert_int_equal(reentered_ntools, 1);
    assert_int_equal(transport.ncalls, 4);
}

static void test_failure_reported_once_and_retried(void **state)
{
    static const step_t down[] = {
        { 0, { NULL }, { NULL }, AIB_XFER_CONNECT, "Failed to connect to h port 80", 0 },
    };
    static const step_t still_down[] = {
        { 503, JSON_HEADERS, { "{}", NULL }, AIB_XFER_OK, NULL, 0 },
    };
    static const step_t up[] = {
        INIT_STEP("s"),
        INITIALIZED_STEP,
        LIST_STEP(TOOL("back")),
    };
    static const step_t down_again[] = {
        { 200, JSON_HEADERS, { "{\"jsonrpc\":\"2.0\",\"id\":%ID%,\"error\":{\"code\":-32603,"
                               "\"message\":\"internal\"}}", NULL }, AIB_XFER_OK, NULL, 0 },
    };
    const apr_array_header_t *tools;
    const char *failure;

    (void)state;
    CLIENT("tools", "http://h/mcp", "header=Authorization:" SECRET);
    SCRIPT(down);
    tools = tools_at(NOW, &failure);
    assert_int_equal(tools->nelts, 0);
    assert_non_null(failure);
    assert_non_null(strstr(failure, "MCP server 'tools'"));
    assert_non_null(strstr(failure, "Failed to connect"));
    assert_no_secret(failure);

    /* Within the retry delay: not asked, not reported again. */
    tools = tools_at(NOW + AIB_MCP_RETRY_MS - 1, &failure);
    assert_int_equal(tools->nelts, 0);
    assert_null(failure);
    assert_int_equal(transport.ncalls, 1);

    /* Asked again after the delay, long before the TTL; the same outage. */
    RESCRIPT(still_down);
    tools = tools_at(NOW + AIB_MCP_RETRY_MS, &failure);
    assert_int_equal(tools->nelts, 0);
    assert_null(failure);
    assert_int_equal(transport.ncalls, 1);

    RESCRIPT(up);
    tools = tools_at(NOW + 2 * AIB_MCP_RETRY_MS, &failure);
    assert_null(failure);
    assert_string_equal(names(tools), "back");
    assert_methods("initialize,notifications/initialized,tools/list");

    /* Once expired and failing again, a new outage: reported, tools gone. */
    RESCRIPT(down_again);
    tools = tools_at(NOW + 2 * AIB_MCP_RETRY_MS + AIB_MCP_TOOLS_TTL_MS, &failure);
    assert_int_equal(tools->nelts, 0);
    assert_non_null(failure);
    assert_non_null(strstr(failure, "tools/list: error -32603: internal"));
    assert_no_secret(failure);

    /* The server may have restarted: the retry starts with a new session. */
    RESCRIPT(up);
    tools = tools_at(NOW + 3 * AIB_MCP_RETRY_MS + AIB_MCP_TOOLS_TTL_MS, &failure);
    assert_string_equal(names(tools), "back");
    assert_methods("initialize,notifications/initialized,tools/list");
}

static void test_initialize_refused(void **state)
{
    static const step_t steps[] = {
        { 200, JSON_HEADERS, { "{\"jsonrpc\":\"2.0\",\"id\":%ID%,\"error\":{\"code\":-32602,"
                               "\"message\":\"Unsupported protocol version\"}}", NULL },
          AIB_XFER_OK, NULL, 0 },
    };
    const char *failure;

    (void)state;
    CLIENT("tools", "http://h/mcp");
    SCRIPT(steps);
    assert_int_equal(tools_at(NOW, &failure)->nelts, 0);
    assert_non_null(failure);
    assert_non_null(strstr(failure, "initialize: the server refused"));
}

/* ---- tools/call -------------------------------------------------------- */

static void test_session_expiry_reinitializes_once(void **state)
{
    static const step_t steps[] = {
        INIT_STEP("sess-1"),
        INITIALIZED_STEP,
        CALL_STEP("{\"content\":[{\"type\":\"text\",\"text\":\"one\"}]}"),
        { 404, JSON_HEADERS, { "{}", NULL }, AIB_XFER_OK, NULL, 0 },
        INIT_STEP("sess-2"),
        INITIALIZED_STEP,
        CALL_STEP("{\"content\":[{\"type\":\"text\",\"text\":\"two\"}]}"),
        /* server-everything's way of saying the same. */
        { 400, JSON_HEADERS, { "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32000,\"message\":"
                               "\"Bad Request: No valid session ID provided\"}}", NULL },
          AIB_XFER_OK, NULL, 0 },
        INIT_STEP("sess-3"),
        INITIALIZED_STEP,
        CALL_STEP("{\"content\":[{\"type\":\"text\",\"text\":\"three\"}]}"),
        /* And when the new session is refused at once too, no third. */
        { 404, JSON_HEADERS, { "{}", NULL }, AIB_XFER_OK, NULL, 0 },
        INIT_STEP("sess-4"),
        INITIALIZED_STEP,
        { 404, JSON_HEADERS, { "{}", NULL }, AIB_XFER_OK, NULL, 0 },
    };
    aib_mcp_result_t r;

    (void)state;
    CLIENT("tools", "http://h/mcp");
    SCRIPT(steps);
    aib_mcp_call(client, &transport.base, pool, "t", NULL, 1000, NULL, &r);
    assert_string_equal(r.text, "one");
    aib_mcp_call(client, &transport.base, pool, "t", "", 1000, NULL, &r);
    assert_string_equal(r.text, "two");
    assert_false(r.is_error);
    assert_null(header(4, "Mcp-Session-Id"));
    assert_string_equal(header(6, "Mcp-Session-Id"), "sess-2");
    assert_string_equal(param(6, "arguments"), "{}");

    aib_mcp_call(client, &transport.base, pool, "t", "{}", 1000, NULL, &r);
    assert_string_equal(r.text, "three");
    assert_string_equal(header(7, "Mcp-Session-Id"), "sess-2");
    assert_string_equal(header(10, "Mcp-Session-Id"), "sess-3");

    aib_mcp_call(client, &transport.base, pool, "t", "{}", 1000, NULL, &r);
    assert_true(r.is_error);
    assert_non_null(r.failure);
    assert_non_null(strstr(r.failure, "HTTP 404"));
    assert_int_equal(transport.ncalls, 15);
    assert_methods("initialize,notifications/initialized,tools/call,tools/call,initialize,"
                   "notifications/initialized,tools/call,tools/call,initialize,"
                   "notifications/initialized,tools/call,tools/call,initialize,"
                   "notifications/initialized,tools/call");
}

/* A 404 on a session just made is no expiry: no second handshake. */
static void test_fresh_session_404_not_retried(void **state)
{
    static const step_t steps[] = {
        INIT_STEP("sess-1"),
        INITIALIZED_STEP,
        { 404, JSON_HEADERS, { "{}", NULL }, AIB_XFER_OK, NULL, 0 },
    };
    aib_mcp_result_t r;

    (void)state;
    CLIENT("tools", "http://h/mcp");
    SCRIPT(steps);
    aib_mcp_call(client, &transport.base, pool, "t", "{}", 1000, NULL, &r);
    assert_true(r.is_error);
    assert_string_equal(r.failure, "MCP server 'tools': tool t: tools/call: HTTP 404");
    assert_int_equal(transport.ncalls, 3);
}

static void test_tool_error_and_content(void **state)
{
    static const step_t steps[] = {
        INIT_STEP("s"),
        INITIALIZED_STEP,
        CALL_STEP("{\"content\":[{\"type\":\"text\",\"text\":\"Invalid input\"}],\"isError\":true}"),
        CALL_STEP("{\"content\":[{\"type\":\"text\",\"text\":\"a/b\"},"
                  "{\"type\":\"image\",\"data\":\"AAA=\",\"mimeType\":\"image/png\"},"
                  "{\"type\":\"text\",\"text\":\"c\"}],\"isError\":false}"),
        CALL_STEP("{\"content\":[]}"),
    };
    aib_mcp_result_t r;

    (void)state;
    CLIENT("tools", "http://h/mcp");
    SCRIPT(steps);
    aib_mcp_call(client, &transport.base, pool, "get-sum", "{\"a\":\"x\"}", 1000, NULL, &r);
    assert_true(r.is_error);
    assert_null(r.failure);
    assert_string_equal(r.text, "Invalid input");

    aib_mcp_call(client, &transport.base, pool, "get-sum", "{\"a\":1}", 1000, NULL, &r);
    assert_false(r.is_error);
    assert_string_equal(r.text,
                        "a/b\n{\"type\":\"image\",\"data\":\"AAA=\",\"mimeType\":\"image/png\"}\nc");

    aib_mcp_call(client, &transport.base, pool, "get-sum", "{}", 1000, NULL, &r);
    assert_false(r.is_error);
    assert_string_equal(r.text, "");
}

static void test_call_failures(void **state)
{
    static const step_t steps[] = {
        INIT_STEP("s"),
        INITIALIZED_STEP,
        { 200, SSE_HEADERS, { "data: {\"jsonrpc\":\"2.0\",\"id\":%ID%,\"error\":{\"code\":-32602,"
                              "\"message\":\"Unknown tool: nope\"}}\n\n", NULL },
          AIB_XFER_OK, NULL, 0 },
        { 500, JSON_HEADERS, { "oops", NULL }, AIB_XFER_OK, NULL, 0 },
        { 200, JSON_HEADERS, { "{\"jsonrpc\":\"2.0\",", NULL }, AIB_XFER_BROKEN, "connection reset", 0 },
        { 0, { NULL }, { NULL }, AIB_XFER_TIMEOUT, "Operation timed out", 0 },
        CALL_STEP("{\"structuredContent\":{}}"),
        /* The stream ends without the response. */
        { 200, SSE_HEADERS, { "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n",
                              NULL }, AIB_XFER_OK, NULL, 0 },
    };
    static const char *const expected[] = {
        "tool nope: tools/call: error -32602: Unknown tool: nope",
        "tool nope: tools/call: HTTP 500",
        "tool nope: tools/call: connection reset",
        "tool nope: tools/call: timed out (Operation timed out)",
        "tool nope: tools/call: the result has no content array",
        "tool nope: tools/call: no JSON-RPC response in the answer",
    };
    aib_mcp_result_t r;
    size_t i;

    (void)state;
    CLIENT("tools", "http://h/mcp", "header=X-Api-Key:" SECRET);
    SCRIPT(steps);
    for (i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
        aib_mcp_call(client, &transport.base, pool, "nope", "{}", 1000, NULL, &r);
        assert_true(r.is_error);
        assert_non_null(r.failure);
        if (strcmp(r.failure, apr_pstrcat(pool, "MCP server 'tools': ", expected[i], NULL)))
            fail_msg("call %zu: '%s', wanted '%s'", i, r.failure, expected[i]);
        assert_string_equal(r.text, r.failure);
        assert_no_secret(r.failure);
    }
}

static void test_bad_arguments(void **state)
{
    aib_mcp_result_t r;
    static const char *const bad[] = { "[1]", "{\"a\":", "{} x", "\"s\"" };
    size_t i;

    (void)state;
    CLIENT("tools", "http://h/mcp");
    script(NULL, 0);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        aib_mcp_call(client, &transport.base, pool, "echo", bad[i], 1000, NULL, &r);
        assert_true(r.is_error);
        assert_non_null(strstr(r.failure, "the arguments are not a JSON object"));
    }
    assert_int_equal(transport.ncalls, 0);
}

/* ---- bounded answers --------------------------------------------------- */

static void test_oversized_answers(void **state)
{
    static const step_t steps[] = {
        INIT_STEP("s"),
        INITIALIZED_STEP,
        CALL_STEP("{\"content\":[{\"type\":\"text\",\"text\":\"session up\"}]}"),
        /* Over 150 bytes in small chunks. */
        { 200, JSON_HEADERS,
          { "{\"jsonrpc\":\"2.0\",\"id\":%ID%,\"result\":{\"content\":[{\"type\":\"text\",",
            "\"text\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}]}}",
            NULL }, AIB_XFER_OK, NULL, 0 },
        /* An SSE stream of small notifications, over 150 bytes before the
         * response. */
        { 200, SSE_HEADERS,
          { "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n",
            "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n",
            "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n",
            "data: " CALL_RESULT("{\"content\":[]}") "\n\n", NULL }, AIB_XFER_OK, NULL, 0 },
        CALL_STEP("{\"content\":[{\"type\":\"text\",\"text\":\"fits\"}]}"),
    };
    aib_mcp_result_t r;

    (void)state;
    CLIENT("tools", "http://h/mcp");
    SCRIPT(steps);
    aib_mcp_call(client, &transport.base, pool, "t", "{}", 1000, NULL, &r);
    assert_string_equal(r.text, "session up");

    server->max_answer = 150;
    aib_mcp_call(client, &transport.base, pool, "t", "{}", 1000, NULL, &r);
    assert_true(r.is_error);
    assert_string_equal(r.failure,
                        "MCP server 'tools': tool t: tools/call: answer larger than 150 bytes");
    assert_true(transport.calls[3].stopped);
    aib_mcp_call(client, &transport.base, pool, "t", "{}", 1000, NULL, &r);
    assert_true(r.is_error);
    assert_string_equal(r.failure,
                        "MCP server 'tools': tool t: tools/call: answer larger than 150 bytes");
    assert_true(transport.calls[4].stopped);
    aib_mcp_call(client, &transport.base, pool, "t", "{}", 1000, NULL, &r);
    assert_null(r.failure);
    assert_string_equal(r.text, "fits");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_parse_defaults, aib_clear_pool),
        cmocka_unit_test_teardown(test_parse_every_option, aib_clear_pool),
        cmocka_unit_test_teardown(test_parse_errors, aib_clear_pool),
        cmocka_unit_test_teardown(test_handshake_and_session, aib_clear_pool),
        cmocka_unit_test_teardown(test_no_session, aib_clear_pool),
        cmocka_unit_test_teardown(test_sse_answers, aib_clear_pool),
        cmocka_unit_test_teardown(test_pagination, aib_clear_pool),
        cmocka_unit_test_teardown(test_allow_deny, aib_clear_pool),
        cmocka_unit_test_teardown(test_deny_only, aib_clear_pool),
        cmocka_unit_test_teardown(test_ttl_refetch, aib_clear_pool),
        cmocka_unit_test_teardown(test_other_threads_get_previous_list, aib_clear_pool),
        cmocka_unit_test_teardown(test_failure_reported_once_and_retried, aib_clear_pool),
        cmocka_unit_test_teardown(test_initialize_refused, aib_clear_pool),
        cmocka_unit_test_teardown(test_session_expiry_reinitializes_once, aib_clear_pool),
        cmocka_unit_test_teardown(test_fresh_session_404_not_retried, aib_clear_pool),
        cmocka_unit_test_teardown(test_tool_error_and_content, aib_clear_pool),
        cmocka_unit_test_teardown(test_call_wait, aib_clear_pool),
        cmocka_unit_test_teardown(test_call_failures, aib_clear_pool),
        cmocka_unit_test_teardown(test_bad_arguments, aib_clear_pool),
        cmocka_unit_test_teardown(test_oversized_answers, aib_clear_pool),
    };

    return AIB_RUN_TESTS(tests);
}
