#include <stdarg.h>
#include <string.h>
#include <json.h>
#include <apr_strings.h>

#include "agent_body.h"
#include "agent_loop.h"
#include "agent_stream.h"
#include "buffer.h"
#include "headers.h"
#include "request.h"
#include "sse.h"

/* Of an upstream error met after the client's stream began, this much is
 * read for the message of the error event. */
#define ERROR_BODY_MAX 65536

typedef struct {
    aib_interception_t *ic;
    aib_agent_t *agent;
    const aib_format_t *format;
    apr_pool_t *pool;
    const aib_sink_t *client;
    apr_array_header_t *injected;      /* aib_agent_tool_t */
    apr_array_header_t *client_tools;  /* const char *: names of the client's tools */
    int client_started;
    aib_mcp_wait_t wait;               /* while a tool runs */
    int64_t last_write_ms;             /* streaming: the client last got a frame */
} loop_t;

/* A tool still running: a stream's client gets a keep-alive this often. */
#define KEEPALIVE_MS 10000

const char *aib_tool_outcome_name(aib_tool_outcome_e outcome)
{
    switch (outcome) {
    case AIB_TOOL_OK: return "ok";
    case AIB_TOOL_ERROR: return "tool_error";
    default: return "failed";
    }
}

static void logf_(loop_t *L, aib_log_level_e level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    L->client->log(L->client->ctx, level, apr_pvsprintf(L->pool, fmt, ap));
    va_end(ap);
}

/* The tools the sources offer now; a source that cannot list them is left
 * out (its client reports the outage once). */
static apr_array_header_t *offered_tools(loop_t *L)
{
    const apr_array_header_t *sources = L->agent->sources;
    apr_array_header_t *tools = apr_array_make(L->pool, 8, sizeof(aib_agent_tool_t));
    int i, j;

    for (i = 0; i < sources->nelts; i++) {
        const aib_agent_source_t *src = &APR_ARRAY_IDX(sources, i, aib_agent_source_t);
        const char *failure = NULL;
        const apr_array_header_t *list = aib_mcp_tools(src->client, L->agent->transport, L->pool,
                                                       L->ic->now_ms(), &failure);
        if (failure)
            logf_(L, AIB_LOG_WARNING, "MCP server '%s': %s: its tools are left out, asked "
                  "again in %d s", src->name, failure, (int)(AIB_MCP_RETRY_MS / 1000));
        for (j = 0; list && j < list->nelts; j++) {
            const aib_mcp_tool_t *t = &APR_ARRAY_IDX(list, j, aib_mcp_tool_t);
            aib_agent_tool_t *tool = apr_array_push(tools);
            memset(tool, 0, sizeof(*tool));
            tool->server = src->name;
            tool->tool = t->name;
            tool->description = t->description;
            tool->input_schema = t->input_schema;
        }
    }
    return tools;
}

/* One upstream call with its own key walk, its answer going to `sink`; the
 * interception's outcome fields take it in. */
static void iterate(loop_t *L, const char *body, apr_size_t len, const aib_sink_t *sink,
                    aib_interception_t *sub)
{
    aib_interception_t *ic = L->ic;
    int i;

    memset(sub, 0, sizeof(*sub));
    aib_interception_init(sub, L->pool);
    sub->provider = ic->provider;
    sub->route = ic->route;
    sub->method = ic->method;
    sub->url = ic->url;
    sub->headers = ic->headers;
    sub->body = body;
    sub->body_len = len;
    sub->stream = ic->stream;
    sub->model = ic->model;
    sub->client_key = ic->client_key;
    /* A stream's usage is hidden by the filter, which sums it first. */
    sub->strip_usage = ic->stream ? 0 : ic->strip_usage;
    sub->transport = ic->transport;
    sub->sink = sink;
    sub->now_ms = ic->now_ms;
    aib_bridge_run(sub);

    L->agent->iterations++;
    ic->attempts += sub->attempts;
    for (i = 0; i < sub->tried->nelts; i++)
        APR_ARRAY_PUSH(ic->tried, const char *) = APR_ARRAY_IDX(sub->tried, i, const char *);
    if (sub->key_hint) {
        ic->key_index = sub->key_index;
        ic->key_hint = sub->key_hint;
    }
    if (sub->upstream_status)
        ic->upstream_status = sub->upstream_status;
    aib_agent_usage_add(&ic->usage, &sub->usage);
    for (i = 0; sub->usage.tools && i < sub->usage.tools->nelts; i++)
        APR_ARRAY_PUSH(ic->usage.tools, const char *) =
            APR_ARRAY_IDX(sub->usage.tools, i, const char *);
    ic->status = sub->status;
    ic->outcome = sub->outcome;
}

static aib_mcp_client_t *client_of(loop_t *L, const char *server)
{
    const apr_array_header_t *sources = L->agent->sources;
    int i;

    for (i = 0; i < sources->nelts; i++) {
        const aib_agent_source_t *src = &APR_ARRAY_IDX(sources, i, aib_agent_source_t);
        if (!strcmp(src->name, server))
            return src->client;
    }
    return NULL;
}

static void add_result(apr_array_header_t *results, const char *id, const char *output,
                       int is_error)
{
    aib_agent_result_t *r;

    if (!results)
        return;
    r = apr_array_push(results);
    r->id = id;
    r->output = output;
    r->is_error = is_error;
}

/* Runs the calls of `calls` (aib_agent_call_t) that are ours; their results
 * (aib_agent_result_t) go to `results` when it is not NULL. */
static void run_tools(loop_t *L, const apr_array_header_t *calls, apr_array_header_t *results)
{
    int i;

    for (i = 0; i < calls->nelts; i++) {
        const aib_agent_call_t *call = &APR_ARRAY_IDX(calls, i, aib_agent_call_t);
        aib_tool_run_t *run;
        aib_mcp_result_t res;
        int64_t started = L->ic->now_ms();

        if (!call->ours)
            continue;
        if (!call->tool) {
            /* The model made up a name of ours: it hears so, like any tool error. */
            logf_(L, AIB_LOG_INFO, "the model called %s, which is not offered", call->name);
            add_result(results, call->id, apr_psprintf(L->pool, "no tool named %s is offered",
                                                       call->name), 1);
            continue;
        }
        aib_mcp_call(client_of(L, call->tool->server), L->agent->transport, L->pool,
                     call->tool->tool, call->arguments, AIB_TOOL_TIMEOUT_MS, &L->wait, &res);
        run = apr_array_push(L->agent->tool_runs);
        run->server = call->tool->server;
        run->tool = call->tool->tool;
        run->duration_ms = L->ic->now_ms() - started;
        run->outcome = res.failure ? AIB_TOOL_FAILED : res.is_error ? AIB_TOOL_ERROR : AIB_TOOL_OK;
        run->error = res.failure ? res.failure : res.is_error ? res.text : NULL;
        if (res.failure)
            logf_(L, AIB_LOG_WARNING, "MCP tool %s/%s could not run: %s", run->server,
                  run->tool, res.failure);
        else
            logf_(L, AIB_LOG_INFO, "MCP tool %s/%s %s in %" APR_INT64_T_FMT " ms", run->server,
                  run->tool, res.is_error ? "answered an error" : "answered", run->duration_ms);
        add_result(results, call->id, res.text, res.is_error);
    }
}

static const char *limit_message(loop_t *L)
{
    return apr_psprintf(L->pool, "the model still called tools after %d upstream calls "
                        "(AIBridgeMaxToolIterations)", L->agent->max_iterations);
}

/* ---- blocking: every answer held, the last one given ---- */

typedef struct {
    loop_t *L;
    int started;
    int status;
    const apr_table_t *headers;
    aib_buffer_t body;
    int broken;
    int too_large;
} held_t;

static void held_start(void *ctx, int status, const apr_table_t *headers)
{
    held_t *h = ctx;

    h->started = 1;
    h->status = status;
    h->headers = headers;
    h->body.len = 0;
}

static int held_write(void *ctx, const char *data, apr_size_t len, int flush)
{
    held_t *h = ctx;

    (void)flush;
    if (len > AIB_AGENT_ANSWER_MAX - h->body.len) {
        h->too_large = 1;
        return 1;
    }
    aib_buffer_append(&h->body, h->L->pool, data, len);
    return h->L->client->client_gone(h->L->client->ctx);
}

static int held_client_gone(void *ctx)
{
    held_t *h = ctx;

    return h->L->client->client_gone(h->L->client->ctx);
}

static void held_fail(void *ctx)
{
    ((held_t *)ctx)->broken = 1;
}

static void held_log(void *ctx, aib_log_level_e level, const char *message)
{
    held_t *h = ctx;

    h->L->client->log(h->L->client->ctx, level, message);
}

static void answer(loop_t *L, int status, const apr_table_t *headers, const char *body,
                   apr_size_t len)
{
    L->ic->status = status;
    L->ic->first_byte_ms = L->ic->now_ms();
    L->client->start(L->client->ctx, status, headers);
    L->client->write(L->client->ctx, body, len, 0);
}

/* The final answer, its usage summed with the earlier iterations'. */
static void answer_final(loop_t *L, const held_t *h, const char *body, apr_size_t len,
                         const aib_usage_t *before)
{
    const char *out;
    apr_size_t out_len;
    const char *err = aib_agent_usage_rewrite(L->pool, L->format, body, len, before, &out,
                                              &out_len);

    if (err) {
        logf_(L, AIB_LOG_WARNING, "usage of the tool loop not summed in the answer: %s", err);
        out = body;
        out_len = len;
    }
    answer(L, h->status, h->headers, out, out_len);
}

static void run_blocking(loop_t *L, const char *body, apr_size_t len)
{
    aib_usage_t before;

    aib_usage_init(&before, L->pool);
    for (;;) {
        held_t h;
        aib_sink_t sink = { &h, held_start, held_write, held_client_gone, held_fail, held_log };
        aib_interception_t sub;
        aib_agent_calls_t calls;
        apr_array_header_t *results;
        const char *err;

        memset(&h, 0, sizeof(h));
        h.L = L;
        iterate(L, body, len, &sink, &sub);
        if (h.too_large) {
            aib_bridge_reject(L->ic, AIB_ERROR_UPSTREAM, "the upstream's answer is too large "
                              "for the tool loop", NULL, 0);
            return;
        }
        if (!h.started)
            return;                   /* the client went away */
        if (h.broken) {
            aib_bridge_reject(L->ic, AIB_ERROR_UPSTREAM, "the upstream's answer broke off",
                              NULL, 0);
            return;
        }
        /* Errors, the pool's exhaustion among them, go back as they are. */
        if (sub.outcome != AIB_OUTCOME_OK || h.status >= 300) {
            answer(L, h.status, h.headers, h.body.data, h.body.len);
            return;
        }
        err = aib_agent_calls(L->pool, L->format, h.body.data, h.body.len, L->injected, NULL,
                              &calls);
        if (err) {
            logf_(L, AIB_LOG_WARNING, "answer not understood by the tool loop (%s): relayed",
                  err);
            answer(L, h.status, h.headers, h.body.data, h.body.len);
            return;
        }
        if (calls.none) {
            answer_final(L, &h, h.body.data, h.body.len, &before);
            return;
        }
        if (calls.any_client) {
            const char *out;
            apr_size_t out_len;
            /* The injected calls are run first; the client gets the calls it can answer. */
            run_tools(L, calls.calls, NULL);
            err = aib_agent_strip_injected(L->pool, L->format, h.body.data, h.body.len, L->injected,
                                           L->client_tools, &out,
                                           &out_len);
            if (err) {
                out = h.body.data;
                out_len = h.body.len;
            }
            answer_final(L, &h, out, out_len, &before);
            return;
        }
        if (L->agent->iterations >= L->agent->max_iterations) {
            logf_(L, AIB_LOG_WARNING, "%s", limit_message(L));
            aib_bridge_reject(L->ic, AIB_ERROR_UPSTREAM, limit_message(L), NULL, 0);
            return;
        }
        results = apr_array_make(L->pool, calls.calls->nelts, sizeof(aib_agent_result_t));
        run_tools(L, calls.calls, results);
        err = aib_agent_continue(L->pool, L->format, body, len, h.body.data, h.body.len, results, &body, &len);
        if (err) {
            logf_(L, AIB_LOG_WARNING, "tool loop cannot continue: %s", err);
            aib_bridge_reject(L->ic, AIB_ERROR_UPSTREAM, "the tool loop cannot continue", NULL,
                              0);
            return;
        }
        aib_agent_usage_add(&before, &sub.usage);
    }
}

/* ---- streaming: one stream for the client across the iterations ---- */

typedef enum {
    RELAY_NONE = 0,
    RELAY_STREAM,       /* the iteration's events go through the filter */
    RELAY_DIRECT,       /* before the client's stream began: an error, as it is */
    RELAY_HELD_ERROR    /* after it began: an error, held for the error event */
} relay_mode_e;

typedef struct {
    loop_t *L;
    aib_agent_stream_t *filter;
    aib_sse_parser_t *parser;
    relay_mode_e mode;
    int status;
    aib_buffer_t error;
    int broken;
} relay_t;

static void relay_start(void *ctx, int status, const apr_table_t *headers)
{
    relay_t *r = ctx;
    loop_t *L = r->L;

    r->status = status;
    if (status < 300 && aib_is_event_stream(headers)) {
        r->mode = RELAY_STREAM;
        r->parser = aib_sse_parser_create(L->pool, AIB_AGENT_HELD_MAX, aib_agent_stream_event,
                                          r->filter);
    }
    else if (!L->client_started)
        r->mode = RELAY_DIRECT;
    else {
        r->mode = RELAY_HELD_ERROR;
        r->error.len = 0;
        return;
    }
    if (!L->client_started) {
        L->client_started = 1;
        L->ic->first_byte_ms = L->ic->now_ms();
        L->client->start(L->client->ctx, status, headers);
    }
}

static int relay_write(void *ctx, const char *data, apr_size_t len, int flush)
{
    relay_t *r = ctx;
    const aib_sink_t *client = r->L->client;

    switch (r->mode) {
    case RELAY_DIRECT:
        return client->write(client->ctx, data, len, flush);
    case RELAY_HELD_ERROR:
        if (len > ERROR_BODY_MAX - r->error.len)
            len = ERROR_BODY_MAX - r->error.len;
        aib_buffer_append(&r->error, r->L->pool, data, len);
        break;
    case RELAY_STREAM:
        /* Non-zero: the filter stopped the iteration (error relayed,
         * too much held, client gone): so does the upstream call. */
        if (aib_sse_feed(r->parser, data, len) > 0)
            return 1;
        break;
    default:
        break;
    }
    return client->client_gone(client->ctx);
}

static int relay_client_gone(void *ctx)
{
    const aib_sink_t *client = ((relay_t *)ctx)->L->client;

    return client->client_gone(client->ctx);
}

static void relay_fail(void *ctx)
{
    relay_t *r = ctx;

    r->broken = 1;
    r->L->client->fail(r->L->client->ctx);
}

static void relay_log(void *ctx, aib_log_level_e level, const char *message)
{
    const aib_sink_t *client = ((relay_t *)ctx)->L->client;

    client->log(client->ctx, level, message);
}

static int emit_to_client(void *ctx, const char *frame, apr_size_t len)
{
    loop_t *L = ctx;

    L->last_write_ms = L->ic->now_ms();
    return L->client->write(L->client->ctx, frame, len, 1);
}

static int keep_alive(loop_t *L)
{
    apr_size_t len;
    const char *frame = aib_agent_stream_keepalive(L->format, &len);

    return emit_to_client(L, frame, len);
}

/* While a tool runs: a client that left stops it; a stream's is kept alive. */
static int tool_tick(void *ctx)
{
    loop_t *L = ctx;

    if (L->client_started && L->ic->stream
        && L->ic->now_ms() - L->last_write_ms >= KEEPALIVE_MS && keep_alive(L))
        return 1;
    return L->client->client_gone(L->client->ctx);
}

/* The error event that ends the client's stream; `outcome` says why. */
static void stream_error(loop_t *L, aib_agent_stream_t *filter, aib_outcome_e outcome,
                         aib_error_kind_e kind, const char *message)
{
    const char *frame = aib_route_stream_error(L->pool, &L->ic->route, L->ic->provider->ops,
                                               kind, message,
                                               aib_agent_stream_next_sequence(filter));

    L->ic->outcome = outcome;
    L->client->write(L->client->ctx, frame, strlen(frame), 1);
}

/* An upstream error met after the stream began, as an error event. */
static void relay_held_error(loop_t *L, const relay_t *r)
{
    json_object *body = r->error.data ? aib_json_parse_object(r->error.data, r->error.len)
                                      : NULL;
    json_object *error = body ? aib_json_member(body, "error", json_type_object) : NULL;
    json_object *message = error ? aib_json_member(error, "message", json_type_string) : NULL;
    const char *text = message ? apr_pstrdup(L->pool, json_object_get_string(message))
                               : apr_psprintf(L->pool, "upstream answered %d", r->status);
    aib_error_kind_e kind = r->status == 429 ? AIB_ERROR_RATE_LIMIT
                            : r->status == 504 ? AIB_ERROR_TIMEOUT : AIB_ERROR_UPSTREAM;

    if (body)
        json_object_put(body);
    logf_(L, AIB_LOG_WARNING, "tool loop: iteration %d answered %d: %s; an error event ends "
          "the stream", L->agent->iterations, r->status, text);
    stream_error(L, r->filter, L->ic->outcome, kind, text);
}

/* The assistant turn a stream gave, in the shape of a blocking answer,
 * for aib_agent_continue. */
static const char *as_response(loop_t *L, const char *assistant)
{
    return L->format->turn_as_response(L->pool, assistant);
}

/* The stream's injected calls, as the blocking side names them. */
static apr_array_header_t *stream_calls(loop_t *L, const aib_agent_turn_t *turn)
{
    apr_array_header_t *calls = apr_array_make(L->pool, turn->calls->nelts,
                                               sizeof(aib_agent_call_t));
    int i;

    for (i = 0; i < turn->calls->nelts; i++) {
        const aib_agent_stream_call_t *c = &APR_ARRAY_IDX(turn->calls, i,
                                                          aib_agent_stream_call_t);
        aib_agent_call_t *call = apr_array_push(calls);
        call->id = c->id;
        call->name = c->name;
        call->arguments = c->arguments;
        call->tool = aib_agent_tool_find(L->injected, c->name);
        call->ours = 1;
    }
    return calls;
}

static void run_streaming(loop_t *L, const char *body, apr_size_t len)
{
    aib_agent_stream_t *filter = aib_agent_stream_create(L->pool, L->format,
                                                         AIB_AGENT_TOOL_PREFIX, L->client_tools,
                                                         !L->ic->strip_usage, 0,
                                                         emit_to_client, L);
    for (;;) {
        relay_t r;
        aib_sink_t sink = { &r, relay_start, relay_write, relay_client_gone, relay_fail,
                            relay_log };
        aib_interception_t sub;
        aib_agent_turn_t *turn;
        apr_array_header_t *calls, *results;
        const char *response, *err;

        memset(&r, 0, sizeof(r));
        r.L = L;
        r.filter = filter;
        iterate(L, body, len, &sink, &sub);
        if (r.mode == RELAY_NONE || r.mode == RELAY_DIRECT)
            return;                   /* the client left, or got the error as it is */
        L->ic->status = 200;          /* what the client's stream began with */
        if (r.mode == RELAY_HELD_ERROR) {
            relay_held_error(L, &r);
            return;
        }
        turn = aib_agent_stream_end(filter, L->pool);
        switch (turn->outcome) {
        case AIB_AGENT_TOOLS:
            break;
        case AIB_AGENT_DONE:
            /* A turn that called client tools too: the injected ones run
             * first, the client answers its own. */
            if (turn->client_tools)
                run_tools(L, stream_calls(L, turn), NULL);
            return;
        case AIB_AGENT_TRUNCATED:
            if (!r.broken && sub.outcome != AIB_OUTCOME_CLIENT_ABORT)
                stream_error(L, filter, AIB_OUTCOME_TRANSPORT_ERROR, AIB_ERROR_UPSTREAM,
                             "the upstream stream ended early");
            return;
        case AIB_AGENT_TOO_LARGE:
            logf_(L, AIB_LOG_WARNING, "tool loop: %s", turn->error);
            stream_error(L, filter, AIB_OUTCOME_UPSTREAM_ERROR, AIB_ERROR_UPSTREAM, turn->error);
            return;
        default:
            return;                   /* an error event relayed, or the client left */
        }
        if (L->agent->iterations >= L->agent->max_iterations) {
            logf_(L, AIB_LOG_WARNING, "%s", limit_message(L));
            stream_error(L, filter, AIB_OUTCOME_REJECTED, AIB_ERROR_UPSTREAM, limit_message(L));
            return;
        }
        if (keep_alive(L))
            return;
        calls = stream_calls(L, turn);
        results = apr_array_make(L->pool, calls->nelts, sizeof(aib_agent_result_t));
        run_tools(L, calls, results);
        response = as_response(L, turn->assistant);
        err = aib_agent_continue(L->pool, L->format, body, len, response, strlen(response),
                                 results, &body, &len);
        if (err) {
            logf_(L, AIB_LOG_WARNING, "tool loop cannot continue: %s", err);
            stream_error(L, filter, AIB_OUTCOME_REJECTED, AIB_ERROR_UPSTREAM,
                         "the tool loop cannot continue");
            return;
        }
    }
}

void aib_agent_run(aib_interception_t *ic, aib_agent_t *agent)
{
    loop_t L;
    const char *body, *err;
    apr_size_t len;

    memset(&L, 0, sizeof(L));
    L.ic = ic;
    L.agent = agent;
    L.pool = ic->pool;
    L.client = ic->sink;
    L.format = ic->route.format;
    L.wait.tick = tool_tick;
    L.wait.ctx = &L;
    agent->iterations = 0;
    agent->tools_offered = 0;
    agent->tool_runs = apr_array_make(ic->pool, 2, sizeof(aib_tool_run_t));
    if (!ic->tried)
        aib_interception_init(ic, ic->pool);
    err = !L.format ? "" :
          aib_agent_inject(L.pool, L.format, ic->body, ic->body_len, offered_tools(&L), &body,
                           &len, &L.injected);
    if (err && *err)
        logf_(&L, AIB_LOG_WARNING, "no tools offered: %s", err);
    if (err || !L.injected->nelts) {
        aib_bridge_run(ic);
        return;
    }
    L.client_tools = aib_agent_client_tools(L.pool, L.format, ic->body, ic->body_len);
    agent->tools_offered = L.injected->nelts;
    if (ic->stream)
        run_streaming(&L, body, len);
    else
        run_blocking(&L, body, len);
}
