/* libFuzzer target: the agentic loop's JSON transforms (src/agent_body.c).
 *
 * The input is read as a request body, a response body and an injected
 * tool's inputSchema, for each route (and none). Nothing may crash, and
 * every body produced must be a JSON object; a response stripped of its
 * injected calls must have none left; calls answered one by one must make
 * a continuation whenever the request has somewhere to put them. */
#include <json.h>

#include "fuzz.h"
#include "agent_body.h"
#include "request.h"

/* A body produced is NUL-terminated; one returned as it was is the input. */
static void check_object(const char *text, apr_size_t len, const char *input)
{
    json_object *o;

    FUZZ_CHECK(text != NULL);
    if (text != input)
        FUZZ_CHECK(strlen(text) == len);
    o = aib_json_parse_object(text, len);
    FUZZ_CHECK(o != NULL);
    json_object_put(o);
}

static void one_kind(apr_pool_t *pool, const aib_format_t *kind, const char *body, size_t size,
                     const char *schema)
{
    apr_array_header_t *tools = apr_array_make(pool, 3, sizeof(aib_agent_tool_t));
    apr_array_header_t *injected = NULL, *results;
    aib_agent_tool_t *t;
    aib_agent_calls_t calls, left;
    aib_usage_t prev;
    const char *out;
    apr_size_t out_len;
    int i;

    t = &APR_ARRAY_PUSH(tools, aib_agent_tool_t);
    memset(t, 0, sizeof(*t));
    t->server = "fs";
    t->tool = "read";
    t->input_schema = schema;
    t = &APR_ARRAY_PUSH(tools, aib_agent_tool_t);
    memset(t, 0, sizeof(*t));
    t->server = "web";
    t->tool = "search";
    t->description = "d";

    if (!aib_agent_inject(pool, kind, body, size, tools, &out, &out_len, &injected)) {
        check_object(out, out_len, body);
        FUZZ_CHECK(injected->nelts <= 2);
    }
    else {
        /* The schema or the body failed: the second tool alone; if the
         * body failed, names stay unset and every call is the client's. */
        tools->nelts = 1;
        APR_ARRAY_IDX(tools, 0, aib_agent_tool_t) = *t;
        if (aib_agent_inject(pool, kind, body, size, tools, &out, &out_len, &injected))
            injected = tools;
    }

    memset(&calls, 0, sizeof(calls));
    if (aib_agent_calls(pool, kind, body, size, injected, NULL, &calls))
        return;
    FUZZ_CHECK(calls.none + calls.only_injected + calls.any_client == 1);

    if (!aib_agent_strip_injected(pool, kind, body, size, injected, NULL, &out, &out_len)) {
        FUZZ_CHECK(!aib_agent_calls(pool, kind, out, out_len, injected, NULL, &left));
        for (i = 0; i < left.calls->nelts; i++)
            FUZZ_CHECK(!APR_ARRAY_IDX(left.calls, i, aib_agent_call_t).tool);
    }

    results = apr_array_make(pool, 2, sizeof(aib_agent_result_t));
    for (i = 0; i < calls.calls->nelts; i++) {
        aib_agent_result_t *r = &APR_ARRAY_PUSH(results, aib_agent_result_t);

        r->id = APR_ARRAY_IDX(calls.calls, i, aib_agent_call_t).id;
        r->output = "out";
        r->is_error = i & 1;
    }
    if (!aib_agent_continue(pool, kind, body, size, body, size, results, &out, &out_len))
        check_object(out, out_len, body);

    aib_usage_init(&prev, pool);
    prev.seen = 1;
    prev.input = 3;
    if (!aib_agent_usage_rewrite(pool, kind, body, size, &prev, &out, &out_len))
        check_object(out, out_len, body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const aib_format_t *const kinds[] = {
        &aib_format_chat, &aib_format_responses, &aib_format_messages, NULL
    };
    apr_pool_t *pool = fuzz_pool();
    char *body = fuzz_dup(data, size), *schema = fuzz_strdup(data, size);
    size_t k;

    for (k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
        one_kind(pool, kinds[k], body, size, schema);
    free(body);
    free(schema);
    apr_pool_destroy(pool);
    return 0;
}
