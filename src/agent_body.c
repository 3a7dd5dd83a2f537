/* The agentic loop's JSON transforms of whole bodies (see agent_body.h).
 *
 * Design notes:
 * - Bodies are parsed whole with aib_json_parse_object (the request's
 *   depth limit: tool schemas nest deeply), edited as json-c trees and
 *   serialised again. Items moved from a response into a request are
 *   shared by reference (json_object_get), not copied: both trees are put
 *   before returning.
 * - Reading the calls (calls_of) also validates the structure, so strip and
 *   continue refuse exactly what aib_agent_calls refuses.
 * - The final usage is read with the usage reader (usage.c), so that a
 *   field counts here exactly as it counts in the module's logs.
 * - Where the calls, tools and conversation are in a body is the wire
 *   format's (format.h): this file holds what the formats share. */
#include <stdint.h>
#include <string.h>

#include <json.h>
#include <apr_strings.h>

#include "agent_body.h"
#include "json_helpers.h"

#define EMPTY_SCHEMA "{\"type\":\"object\",\"properties\":{}}"

/* root as compact JSON text in p. */
static const char *serialise(apr_pool_t *p, json_object *root, const char **out,
                             apr_size_t *out_len)
{
    size_t n;
    const char *s = json_object_to_json_string_length(root, AIB_JSON_FLAGS, &n);

    if (!s)
        return "out of memory";
    *out = apr_pstrmemdup(p, s, n);
    *out_len = n;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Injection                                                           */

const aib_agent_tool_t *aib_agent_tool_find(const apr_array_header_t *injected,
                                            const char *name)
{
    int i;

    if (!injected || !name)
        return NULL;
    for (i = 0; i < injected->nelts; i++) {
        const aib_agent_tool_t *t = &APR_ARRAY_IDX(injected, i, aib_agent_tool_t);

        if (t->name && !strcmp(t->name, name))
            return t;
    }
    return NULL;
}

static int clashes(const aib_format_t *format, json_object *client_tools, const char *name)
{
    size_t i, n = client_tools ? json_object_array_length(client_tools) : 0;

    for (i = 0; i < n; i++) {
        const char *c = format->client_tool_name(json_object_array_get_idx(client_tools, i));

        if (c && !strcmp(c, name))
            return 1;
    }
    return 0;
}

/* The tool in the route's form; *err set when its schema is not an object. */
static json_object *tool_entry(apr_pool_t *p, const aib_format_t *format,
                               const aib_agent_tool_t *t, const char **err)
{
    json_object *schema = NULL;
    const char *text = t->input_schema;

    if (text && *text) {
        schema = aib_json_parse_object(text, strlen(text));
        if (!schema) {
            *err = apr_psprintf(p, "inputSchema of tool '%s' is not a JSON object",
                                t->name);
            return NULL;
        }
        if (!json_object_object_length(schema)) {
            json_object_put(schema);
            schema = NULL;
        }
    }
    if (!schema)
        schema = json_tokener_parse(EMPTY_SCHEMA);

    return format->tool_entry(t, schema);
}

const char *aib_agent_inject(apr_pool_t *p, const aib_format_t *format,
                             const char *body, apr_size_t len,
                             const apr_array_header_t *tools,
                             const char **out, apr_size_t *out_len,
                             apr_array_header_t **injected)
{
    json_object *root, *client_tools = NULL, *choice = NULL, *all;
    apr_array_header_t *list;
    const char *err = NULL;
    int i;

    if (!format)
        return "route has no tools";
    root = aib_json_parse_object(body, len);
    if (!root)
        return "request body is not a JSON object";
    list = apr_array_make(p, tools && tools->nelts ? tools->nelts : 1,
                          sizeof(aib_agent_tool_t));

    if (json_object_object_get_ex(root, "tools", &client_tools)
        && !json_object_is_type(client_tools, json_type_array)) {
        err = "'tools' must be an array";
        goto done;
    }
    if (json_object_object_get_ex(root, "tool_choice", &choice)) {
        int none = 0;

        if ((err = format->tool_choice_none(choice, &none)) != NULL || none)
            goto done;
    }

    /* New entries go into their own array first: the client's stays
     * untouched until it is known that something is injected. */
    all = json_object_new_array();
    for (i = 0; tools && i < tools->nelts; i++) {
        aib_agent_tool_t t = APR_ARRAY_IDX(tools, i, aib_agent_tool_t);
        json_object *entry;

        if (!t.server || !t.tool) {
            err = "an injected tool has no server or tool name";
            break;
        }
        t.name = apr_pstrcat(p, AIB_AGENT_TOOL_PREFIX, t.server, "_", t.tool, NULL);
        if (clashes(format, client_tools, t.name) || aib_agent_tool_find(list, t.name))
            continue;
        entry = tool_entry(p, format, &t, &err);
        if (!entry)
            break;
        json_object_array_add(all, entry);
        APR_ARRAY_PUSH(list, aib_agent_tool_t) = t;
    }
    if (err || !list->nelts) {
        json_object_put(all);
        goto done;
    }

    if (!client_tools) {
        client_tools = json_object_new_array();
        json_object_object_add(root, "tools", client_tools);
    }
    for (i = 0; i < list->nelts; i++)
        json_object_array_add(client_tools,
                              json_object_get(json_object_array_get_idx(all, (size_t)i)));
    json_object_put(all);

    format->serial_tool_calls(root, choice);
    err = serialise(p, root, out, out_len);

done:
    json_object_put(root);
    if (err)
        return err;
    if (!list->nelts) {
        *out = body;
        *out_len = len;
    }
    *injected = list;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Reading the calls                                                   */

apr_array_header_t *aib_agent_client_tools(apr_pool_t *p, const aib_format_t *format,
                                           const char *body, apr_size_t len)
{
    json_object *root = format ? aib_json_parse_object(body, len) : NULL;
    json_object *tools = aib_json_member(root, "tools", json_type_array);
    size_t i, n = tools ? json_object_array_length(tools) : 0;
    apr_array_header_t *names;

    if (!root)
        return NULL;
    names = apr_array_make(p, n ? (int)n : 1, sizeof(const char *));
    for (i = 0; i < n; i++) {
        const char *name = format->client_tool_name(json_object_array_get_idx(tools, i));
        if (name)
            APR_ARRAY_PUSH(names, const char *) = apr_pstrdup(p, name);
    }
    json_object_put(root);
    return names;
}

/* Whether a call of `name` is for the module; *tool: the injected one. */
static int is_ours(const apr_array_header_t *injected, const apr_array_header_t *client_tools,
                   const char *name, const aib_agent_tool_t **tool)
{
    int i;

    *tool = aib_agent_tool_find(injected, name);
    if (*tool)
        return 1;
    if (!name || strncmp(name, AIB_AGENT_TOOL_PREFIX, sizeof(AIB_AGENT_TOOL_PREFIX) - 1))
        return 0;
    for (i = 0; client_tools && i < client_tools->nelts; i++)
        if (!strcmp(APR_ARRAY_IDX(client_tools, i, const char *), name))
            return 0;
    return 1;
}

/* The calls of a parsed response (aib_agent_call_t). */
static const char *calls_of(apr_pool_t *p, const aib_format_t *format, json_object *root,
                            const apr_array_header_t *injected,
                            const apr_array_header_t *client_tools, apr_array_header_t **calls)
{
    json_object *arr;
    const char *err = format->call_array(root, &arr);
    size_t i, n = arr ? json_object_array_length(arr) : 0;

    if (err)
        return err;
    *calls = apr_array_make(p, n ? (int)n : 1, sizeof(aib_agent_call_t));
    for (i = 0; i < n; i++) {
        aib_agent_call_t c;

        if (format->read_call(p, json_object_array_get_idx(arr, i), &c, &err)) {
            /* Only a function call can be one of ours. */
            c.tool = NULL;
            c.ours = c.arguments && is_ours(injected, client_tools, c.name, &c.tool);
            APR_ARRAY_PUSH(*calls, aib_agent_call_t) = c;
        }
        else if (err) {
            return err;
        }
    }
    return NULL;
}

const char *aib_agent_calls(apr_pool_t *p, const aib_format_t *format,
                            const char *response, apr_size_t len,
                            const apr_array_header_t *injected,
                            const apr_array_header_t *client_tools,
                            aib_agent_calls_t *out)
{
    json_object *root;
    apr_array_header_t *calls;
    const char *err;
    int i, client = 0;

    if (!format)
        return "route has no tools";
    root = aib_json_parse_object(response, len);
    if (!root)
        return "response body is not a JSON object";
    err = calls_of(p, format, root, injected, client_tools, &calls);
    json_object_put(root);
    if (err)
        return err;
    for (i = 0; i < calls->nelts; i++)
        if (!APR_ARRAY_IDX(calls, i, aib_agent_call_t).ours)
            client = 1;
    out->calls = calls;
    out->none = !calls->nelts;
    out->any_client = client;
    out->only_injected = calls->nelts && !client;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Continuation                                                        */

const char *aib_agent_error_output(apr_pool_t *p, const char *message)
{
    json_object *o = json_object_new_object();
    const char *s;

    json_object_object_add(o, "error", json_object_new_boolean(1));
    aib_json_set_string(o, "message", message);
    s = aib_json_text(p, o);
    json_object_put(o);
    return s;
}

/* The result answering call `id`; *err set unless there is exactly one. */
static const aib_agent_result_t *result_for(apr_pool_t *p,
                                            const apr_array_header_t *results,
                                            const char *id, const char **err)
{
    const aib_agent_result_t *found = NULL;
    int i;

    for (i = 0; results && i < results->nelts; i++) {
        const aib_agent_result_t *r = &APR_ARRAY_IDX(results, i, aib_agent_result_t);

        if (r->id && !strcmp(r->id, id)) {
            if (found) {
                *err = apr_psprintf(p, "two results for tool call '%s'", id);
                return NULL;
            }
            found = r;
        }
    }
    if (!found)
        *err = apr_psprintf(p, "no result for tool call '%s'", id);
    return found;
}

const char *aib_agent_continue(apr_pool_t *p, const aib_format_t *format,
                               const char *request, apr_size_t request_len,
                               const char *response, apr_size_t response_len,
                               const apr_array_header_t *results,
                               const char **out, apr_size_t *out_len)
{
    json_object *req = NULL, *resp = NULL, *hist, *results_to;
    apr_array_header_t *calls;
    const char *err = NULL;
    int i, j;

    if (!format)
        return "route has no tools";
    req = aib_json_parse_object(request, request_len);
    if (!req)
        return "request body is not a JSON object";
    resp = aib_json_parse_object(response, response_len);
    if (!resp) {
        err = "response body is not a JSON object";
        goto done;
    }
    if ((err = calls_of(p, format, resp, NULL, NULL, &calls)) != NULL)
        goto done;
    if (!calls->nelts) {
        err = "the response calls no tool";
        goto done;
    }
    if (!results || results->nelts != calls->nelts) {
        err = apr_psprintf(p, "%d results for %d tool calls",
                           results ? results->nelts : 0, calls->nelts);
        goto done;
    }
    for (i = 0; i < calls->nelts; i++) {
        const aib_agent_call_t *c = &APR_ARRAY_IDX(calls, i, aib_agent_call_t);

        if (!c->arguments || !c->id) {
            err = "the response calls a tool that is not a function";
            goto done;
        }
        for (j = 0; j < i; j++)
            if (!strcmp(APR_ARRAY_IDX(calls, j, aib_agent_call_t).id, c->id)) {
                err = apr_psprintf(p, "two tool calls have the id '%s'", c->id);
                goto done;
            }
    }

    hist = format->history(req, &err);
    if (!hist)
        goto done;
    results_to = format->append_turn(hist, resp);
    for (i = 0; i < calls->nelts; i++) {
        const aib_agent_call_t *c = &APR_ARRAY_IDX(calls, i, aib_agent_call_t);
        const aib_agent_result_t *r = result_for(p, results, c->id, &err);

        if (!r)
            goto done;
        format->append_result(p, results_to, c, r);
    }
    err = serialise(p, req, out, out_len);

done:
    json_object_put(req);
    json_object_put(resp);
    return err;
}

/* ------------------------------------------------------------------ */
/* Mixed turns                                                         */

const char *aib_agent_strip_injected(apr_pool_t *p, const aib_format_t *format,
                                     const char *response, apr_size_t len,
                                     const apr_array_header_t *injected,
                                     const apr_array_header_t *client_tools,
                                     const char **out, apr_size_t *out_len)
{
    json_object *root, *arr;
    apr_array_header_t *calls;
    const char *err;
    size_t i, n;
    int removed = 0, left = 0;

    if (!format)
        return "route has no tools";
    root = aib_json_parse_object(response, len);
    if (!root)
        return "response body is not a JSON object";
    /* Validates the whole call array first, so that the removal below
     * meets only well-formed items. */
    if ((err = calls_of(p, format, root, injected, client_tools, &calls)) != NULL)
        goto done;
    format->call_array(root, &arr);
    n = arr ? json_object_array_length(arr) : 0;
    for (i = n; i-- > 0;) {
        aib_agent_call_t c;

        if (!format->read_call(p, json_object_array_get_idx(arr, i), &c, &err))
            continue;
        if (c.arguments && is_ours(injected, client_tools, c.name, &c.tool)) {
            json_object_array_del_idx(arr, i, 1);
            removed++;
        }
        else {
            left++;
        }
    }
    if (!removed) {
        *out = response;
        *out_len = len;
        goto done;
    }
    if (!left)
        format->no_calls_left(root);
    err = serialise(p, root, out, out_len);

done:
    json_object_put(root);
    return err;
}

/* ------------------------------------------------------------------ */
/* Usage                                                               */

void aib_agent_usage_add(aib_usage_t *sum, const aib_usage_t *u)
{
    sum->seen |= u->seen;
    sum->input = aib_count_add(sum->input, u->input);
    sum->output = aib_count_add(sum->output, u->output);
    sum->cache_read = aib_count_add(sum->cache_read, u->cache_read);
    sum->cache_write = aib_count_add(sum->cache_write, u->cache_write);
    sum->reasoning = aib_count_add(sum->reasoning, u->reasoning);
}

const char *aib_agent_usage_rewrite(apr_pool_t *p, const aib_format_t *format,
                                    const char *response, apr_size_t len,
                                    const aib_usage_t *previous,
                                    const char **out, apr_size_t *out_len)
{
    json_object *root, *usage = NULL;
    aib_usage_reader_t *reader;
    aib_usage_t sum;
    const char *err = NULL;

    if (!format)
        return "route has no usage";
    root = aib_json_parse_object(response, len);
    if (!root)
        return "response body is not a JSON object";
    if (json_object_object_get_ex(root, "usage", &usage) && usage
        && !json_object_is_type(usage, json_type_object)) {
        err = "'usage' must be an object";
        goto done;
    }
    if (!previous->seen) {
        *out = response;
        *out_len = len;
        goto done;
    }

    aib_usage_init(&sum, p);
    reader = aib_usage_reader_create(p, format, &sum, len);
    aib_usage_reader_feed(reader, response, len);
    aib_usage_reader_finish(reader);
    aib_agent_usage_add(&sum, previous);

    if (!usage) {
        usage = json_object_new_object();
        json_object_object_add(root, "usage", usage);
    }
    aib_format_usage_write(format, usage, &sum, AIB_COUNT_ALL);
    err = serialise(p, root, out, out_len);

done:
    json_object_put(root);
    return err;
}
