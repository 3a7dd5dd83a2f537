/* The agentic loop's JSON transforms (see agent.h).
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
 *   field counts here exactly as it counts in the module's logs. */
#include <stdint.h>
#include <string.h>

#include <json.h>
#include <apr_strings.h>

#include "agent.h"
#include "request.h"

#define EMPTY_SCHEMA "{\"type\":\"object\",\"properties\":{}}"

static int route_ok(aib_usage_kind_e kind)
{
    return kind == AIB_USAGE_CHAT || kind == AIB_USAGE_RESPONSES
           || kind == AIB_USAGE_MESSAGES;
}

static int string_is(json_object *s, const char *value)
{
    return s && json_object_is_type(s, json_type_string)
           && !strcmp(json_object_get_string(s), value);
}

static const char *str_of(apr_pool_t *p, json_object *obj, const char *key)
{
    json_object *v = aib_json_member(obj, key, json_type_string);

    return v ? apr_pstrdup(p, json_object_get_string(v)) : NULL;
}

/* root as compact JSON text in p. */
static const char *serialise(apr_pool_t *p, json_object *root, const char **out,
                             apr_size_t *out_len)
{
    size_t n;
    const char *s = json_object_to_json_string_length(
        root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);

    if (!s)
        return "out of memory";
    *out = apr_pstrmemdup(p, s, n);
    *out_len = n;
    return NULL;
}

static void add_string(json_object *obj, const char *key, const char *value)
{
    json_object_object_add(obj, key, json_object_new_string(value ? value : ""));
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

/* The name of a client tool: Chat nests it under its type ("function",
 * "custom"), the others have it at the top. NULL for hosted tools. */
static const char *client_tool_name(aib_usage_kind_e kind, json_object *item)
{
    json_object *name;

    if (kind == AIB_USAGE_CHAT) {
        json_object *type = aib_json_member(item, "type", json_type_string);

        item = aib_json_member(item, type ? json_object_get_string(type) : "function",
                      json_type_object);
    }
    name = aib_json_member(item, "name", json_type_string);
    return name ? json_object_get_string(name) : NULL;
}

static int clashes(aib_usage_kind_e kind, json_object *client_tools, const char *name)
{
    size_t i, n = client_tools ? json_object_array_length(client_tools) : 0;

    for (i = 0; i < n; i++) {
        const char *c = client_tool_name(kind, json_object_array_get_idx(client_tools, i));

        if (c && !strcmp(c, name))
            return 1;
    }
    return 0;
}

/* The tool in the route's form; *err set when its schema is not an object. */
static json_object *tool_entry(apr_pool_t *p, aib_usage_kind_e kind,
                               const aib_agent_tool_t *t, const char **err)
{
    json_object *schema = NULL, *entry, *fn;
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

    entry = json_object_new_object();
    if (kind == AIB_USAGE_MESSAGES) {
        fn = entry;
    }
    else {
        add_string(entry, "type", "function");
        fn = kind == AIB_USAGE_CHAT ? json_object_new_object() : entry;
    }
    add_string(fn, "name", t->name);
    if (t->description)
        add_string(fn, "description", t->description);
    json_object_object_add(fn, kind == AIB_USAGE_MESSAGES ? "input_schema" : "parameters",
                           schema);
    if (fn != entry)
        json_object_object_add(entry, "function", fn);
    return entry;
}

const char *aib_agent_inject(apr_pool_t *p, aib_usage_kind_e kind,
                             const char *body, apr_size_t len,
                             const apr_array_header_t *tools,
                             const char **out, apr_size_t *out_len,
                             apr_array_header_t **injected)
{
    json_object *root, *client_tools = NULL, *choice = NULL, *all;
    apr_array_header_t *list;
    const char *err = NULL;
    int i;

    if (!route_ok(kind))
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
        if (kind == AIB_USAGE_MESSAGES) {
            if (!json_object_is_type(choice, json_type_object)) {
                err = "'tool_choice' must be an object";
                goto done;
            }
            if (string_is(aib_json_member(choice, "type", json_type_string), "none"))
                goto done;
        }
        else if (string_is(choice, "none")) {
            goto done;
        }
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
        if (clashes(kind, client_tools, t.name) || aib_agent_tool_find(list, t.name))
            continue;
        entry = tool_entry(p, kind, &t, &err);
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

    if (kind == AIB_USAGE_MESSAGES) {
        if (!choice) {
            choice = json_object_new_object();
            add_string(choice, "type", "auto");
            json_object_object_add(root, "tool_choice", choice);
        }
        json_object_object_add(choice, "disable_parallel_tool_use",
                               json_object_new_boolean(1));
    }
    else {
        json_object_object_add(root, "parallel_tool_calls", json_object_new_boolean(0));
    }
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

/* Chat: the choices[0].message object, or NULL. */
static json_object *chat_message(json_object *root)
{
    json_object *choices = aib_json_member(root, "choices", json_type_array);

    if (!choices || !json_object_array_length(choices))
        return NULL;
    return aib_json_member(json_object_array_get_idx(choices, 0), "message",
                           json_type_object);
}

/* The array the calls are items of (NULL: Chat without tool_calls), into
 * *arr; or an error. */
static const char *call_array(aib_usage_kind_e kind, json_object *root, json_object **arr)
{
    json_object *msg, *v;

    *arr = NULL;
    switch (kind) {
    case AIB_USAGE_CHAT:
        msg = chat_message(root);
        if (!msg)
            return "response has no choices[0].message object";
        if (!json_object_object_get_ex(msg, "tool_calls", &v) || !v)
            return NULL;
        if (!json_object_is_type(v, json_type_array))
            return "'tool_calls' must be an array";
        *arr = v;
        return NULL;
    case AIB_USAGE_RESPONSES:
        *arr = aib_json_member(root, "output", json_type_array);
        return *arr ? NULL : "response has no 'output' array";
    default:
        *arr = aib_json_member(root, "content", json_type_array);
        return *arr ? NULL : "response has no 'content' array";
    }
}

/* Reads one item of the call array into c; 0 when the item is no call. */
static int read_call(apr_pool_t *p, aib_usage_kind_e kind, json_object *item,
                     aib_agent_call_t *c, const char **err)
{
    json_object *type = aib_json_member(item, "type", json_type_string), *fn, *input;
    const char *t = type ? json_object_get_string(type) : NULL;
    size_t n;

    memset(c, 0, sizeof(*c));
    if (!json_object_is_type(item, json_type_object)) {
        *err = "a tool call or output item is not an object";
        return 0;
    }
    switch (kind) {
    case AIB_USAGE_CHAT:
        c->id = str_of(p, item, "id");
        if (!c->id) {
            *err = "a tool call has no string 'id'";
            return 0;
        }
        if (t && strcmp(t, "function")) {
            /* A custom tool: the client's, whatever its name. */
            c->name = str_of(p, aib_json_member(item, t, json_type_object), "name");
            return 1;
        }
        fn = aib_json_member(item, "function", json_type_object);
        c->name = str_of(p, fn, "name");
        c->arguments = str_of(p, fn, "arguments");
        if (!c->name || !c->arguments) {
            *err = "a tool call has no string function.name or function.arguments";
            return 0;
        }
        return 1;
    case AIB_USAGE_RESPONSES:
        if (!t) {
            *err = "an output item has no string 'type'";
            return 0;
        }
        if (!strcmp(t, "function_call")) {
            c->id = str_of(p, item, "call_id");
            c->name = str_of(p, item, "name");
            c->arguments = str_of(p, item, "arguments");
            if (!c->id || !c->name || !c->arguments) {
                *err = "a function_call item has no string call_id, name or arguments";
                return 0;
            }
            return 1;
        }
        if (!is_client_item(t))
            return 0;
        c->id = str_of(p, item, "call_id");
        if (!c->id)
            c->id = str_of(p, item, "id");
        c->name = str_of(p, item, "name");
        return 1;
    default:
        if (!t || strcmp(t, "tool_use"))
            return 0;
        c->id = str_of(p, item, "id");
        c->name = str_of(p, item, "name");
        input = aib_json_member(item, "input", json_type_object);
        if (!c->id || !c->name || !input) {
            *err = "a tool_use block has no string id, string name or object input";
            return 0;
        }
        c->arguments = apr_pstrdup(p, json_object_to_json_string_length(
            input, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n));
        return 1;
    }
}

apr_array_header_t *aib_agent_client_tools(apr_pool_t *p, aib_usage_kind_e kind,
                                           const char *body, apr_size_t len)
{
    json_object *root = aib_json_parse_object(body, len);
    json_object *tools = aib_json_member(root, "tools", json_type_array);
    size_t i, n = tools ? json_object_array_length(tools) : 0;
    apr_array_header_t *names;

    if (!root)
        return NULL;
    names = apr_array_make(p, n ? (int)n : 1, sizeof(const char *));
    for (i = 0; i < n; i++) {
        const char *name = client_tool_name(kind, json_object_array_get_idx(tools, i));
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
static const char *calls_of(apr_pool_t *p, aib_usage_kind_e kind, json_object *root,
                            const apr_array_header_t *injected,
                            const apr_array_header_t *client_tools, apr_array_header_t **calls)
{
    json_object *arr;
    const char *err = call_array(kind, root, &arr);
    size_t i, n = arr ? json_object_array_length(arr) : 0;

    if (err)
        return err;
    *calls = apr_array_make(p, n ? (int)n : 1, sizeof(aib_agent_call_t));
    for (i = 0; i < n; i++) {
        aib_agent_call_t c;

        if (read_call(p, kind, json_object_array_get_idx(arr, i), &c, &err)) {
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

const char *aib_agent_calls(apr_pool_t *p, aib_usage_kind_e kind,
                            const char *response, apr_size_t len,
                            const apr_array_header_t *injected,
                            const apr_array_header_t *client_tools,
                            aib_agent_calls_t *out)
{
    json_object *root;
    apr_array_header_t *calls;
    const char *err;
    int i, client = 0;

    if (!route_ok(kind))
        return "route has no tools";
    root = aib_json_parse_object(response, len);
    if (!root)
        return "response body is not a JSON object";
    err = calls_of(p, kind, root, injected, client_tools, &calls);
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
    add_string(o, "message", message);
    s = apr_pstrdup(p, json_object_to_json_string_ext(
                           o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
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

/* The array member `key` of root, created when absent; NULL (an error)
 * when it has another type. Responses' string input becomes one message. */
static json_object *history(aib_usage_kind_e kind, json_object *root, const char *key)
{
    json_object *v, *msg;

    if (!json_object_object_get_ex(root, key, &v)) {
        if (kind != AIB_USAGE_RESPONSES)
            return NULL;
        v = json_object_new_array();
        json_object_object_add(root, key, v);
        return v;
    }
    if (json_object_is_type(v, json_type_array))
        return v;
    if (kind != AIB_USAGE_RESPONSES || !json_object_is_type(v, json_type_string))
        return NULL;
    msg = json_object_new_object();
    add_string(msg, "role", "user");
    json_object_object_add(msg, "content", json_object_get(v));
    v = json_object_new_array();
    json_object_array_add(v, msg);
    json_object_object_add(root, key, v);  /* puts the string once */
    return v;
}

const char *aib_agent_continue(apr_pool_t *p, aib_usage_kind_e kind,
                               const char *request, apr_size_t request_len,
                               const char *response, apr_size_t response_len,
                               const apr_array_header_t *results,
                               const char **out, apr_size_t *out_len)
{
    json_object *req = NULL, *resp = NULL, *hist, *msg, *blocks = NULL, *items;
    apr_array_header_t *calls;
    const char *err = NULL;
    size_t k, n;
    int i, j;

    if (!route_ok(kind))
        return "route has no tools";
    req = aib_json_parse_object(request, request_len);
    if (!req)
        return "request body is not a JSON object";
    resp = aib_json_parse_object(response, response_len);
    if (!resp) {
        err = "response body is not a JSON object";
        goto done;
    }
    if ((err = calls_of(p, kind, resp, NULL, NULL, &calls)) != NULL)
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

    hist = history(kind, req, kind == AIB_USAGE_RESPONSES ? "input" : "messages");
    if (!hist) {
        err = kind == AIB_USAGE_RESPONSES ? "'input' must be a string or an array"
                                          : "request has no 'messages' array";
        goto done;
    }
    switch (kind) {
    case AIB_USAGE_CHAT:
        json_object_array_add(hist, json_object_get(chat_message(resp)));
        break;
    case AIB_USAGE_RESPONSES:
        items = aib_json_member(resp, "output", json_type_array);
        n = json_object_array_length(items);
        for (k = 0; k < n; k++)
            json_object_array_add(hist,
                                  json_object_get(json_object_array_get_idx(items, k)));
        break;
    default:
        msg = json_object_new_object();
        add_string(msg, "role", "assistant");
        json_object_object_add(msg, "content", json_object_get(aib_json_member(
                                                   resp, "content", json_type_array)));
        json_object_array_add(hist, msg);
        blocks = json_object_new_array();
        msg = json_object_new_object();
        add_string(msg, "role", "user");
        json_object_object_add(msg, "content", blocks);
        json_object_array_add(hist, msg);
        break;
    }

    for (i = 0; i < calls->nelts; i++) {
        const aib_agent_call_t *c = &APR_ARRAY_IDX(calls, i, aib_agent_call_t);
        const aib_agent_result_t *r = result_for(p, results, c->id, &err);
        const char *text;

        if (!r)
            goto done;
        text = r->output ? r->output : "";
        if (r->is_error && kind != AIB_USAGE_MESSAGES)
            text = aib_agent_error_output(p, text);
        msg = json_object_new_object();
        switch (kind) {
        case AIB_USAGE_CHAT:
            add_string(msg, "role", "tool");
            add_string(msg, "tool_call_id", c->id);
            add_string(msg, "content", text);
            json_object_array_add(hist, msg);
            break;
        case AIB_USAGE_RESPONSES:
            add_string(msg, "type", "function_call_output");
            add_string(msg, "call_id", c->id);
            add_string(msg, "output", text);
            json_object_array_add(hist, msg);
            break;
        default:
            add_string(msg, "type", "tool_result");
            add_string(msg, "tool_use_id", c->id);
            add_string(msg, "content", text);
            if (r->is_error)
                json_object_object_add(msg, "is_error", json_object_new_boolean(1));
            json_object_array_add(blocks, msg);
            break;
        }
    }
    err = serialise(p, req, out, out_len);

done:
    json_object_put(req);
    json_object_put(resp);
    return err;
}

/* ------------------------------------------------------------------ */
/* Mixed turns                                                         */

const char *aib_agent_strip_injected(apr_pool_t *p, aib_usage_kind_e kind,
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

    if (!route_ok(kind))
        return "route has no tools";
    root = aib_json_parse_object(response, len);
    if (!root)
        return "response body is not a JSON object";
    /* Validates the whole call array first, so that the removal below
     * meets only well-formed items. */
    if ((err = calls_of(p, kind, root, injected, client_tools, &calls)) != NULL)
        goto done;
    call_array(kind, root, &arr);
    n = arr ? json_object_array_length(arr) : 0;
    for (i = n; i-- > 0;) {
        aib_agent_call_t c;

        if (!read_call(p, kind, json_object_array_get_idx(arr, i), &c, &err))
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
    if (!left) {
        if (kind == AIB_USAGE_CHAT) {
            json_object *choice = json_object_array_get_idx(
                aib_json_member(root, "choices", json_type_array), 0);

            json_object_object_del(chat_message(root), "tool_calls");
            if (string_is(aib_json_member(choice, "finish_reason", json_type_string),
                          "tool_calls"))
                add_string(choice, "finish_reason", "stop");
        }
        else if (kind == AIB_USAGE_MESSAGES
                 && string_is(aib_json_member(root, "stop_reason", json_type_string),
                              "tool_use")) {
            add_string(root, "stop_reason", "end_turn");
        }
    }
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

static void set_count(json_object *obj, const char *key, int64_t n)
{
    json_object_object_add(obj, key, json_object_new_int64(n));
}

/* <key>.<field> = n, creating <key> only when n is not 0. */
static void set_detail(json_object *usage, const char *key, const char *field, int64_t n)
{
    json_object *d = aib_json_member(usage, key, json_type_object);

    if (!d) {
        if (!n)
            return;
        d = json_object_new_object();
        json_object_object_add(usage, key, d);
    }
    set_count(d, field, n);
}

const char *aib_agent_usage_rewrite(apr_pool_t *p, aib_usage_kind_e kind,
                                    const char *response, apr_size_t len,
                                    const aib_usage_t *previous,
                                    const char **out, apr_size_t *out_len)
{
    json_object *root, *usage = NULL;
    aib_usage_reader_t *reader;
    aib_usage_t sum;
    const char *err = NULL;

    if (!route_ok(kind))
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
    reader = aib_usage_reader_create(p, kind, &sum, len);
    aib_usage_reader_feed(reader, response, len);
    aib_usage_reader_finish(reader);
    aib_agent_usage_add(&sum, previous);

    if (!usage) {
        usage = json_object_new_object();
        json_object_object_add(root, "usage", usage);
    }
    switch (kind) {
    case AIB_USAGE_CHAT:
        set_count(usage, "prompt_tokens", sum.input);
        set_count(usage, "completion_tokens", sum.output);
        set_count(usage, "total_tokens", aib_count_add(sum.input, sum.output));
        set_detail(usage, "prompt_tokens_details", "cached_tokens", sum.cache_read);
        set_detail(usage, "completion_tokens_details", "reasoning_tokens", sum.reasoning);
        break;
    case AIB_USAGE_RESPONSES:
        set_count(usage, "input_tokens", sum.input);
        set_count(usage, "output_tokens", sum.output);
        set_count(usage, "total_tokens", aib_count_add(sum.input, sum.output));
        set_detail(usage, "input_tokens_details", "cached_tokens", sum.cache_read);
        set_detail(usage, "output_tokens_details", "reasoning_tokens", sum.reasoning);
        break;
    default:
        set_count(usage, "input_tokens", sum.input);
        set_count(usage, "output_tokens", sum.output);
        set_count(usage, "cache_read_input_tokens", sum.cache_read);
        set_count(usage, "cache_creation_input_tokens", sum.cache_write);
        break;
    }
    err = serialise(p, root, out, out_len);

done:
    json_object_put(root);
    return err;
}
