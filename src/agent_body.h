/* The agentic loop's JSON transforms of whole bodies (blocking calls, and
 * the continuation of streamed ones):
 * tools from MCP servers offered to the model, the calls it makes read
 * back, the next request built from the results, and the final answer's
 * usage summed over the iterations (issue #9). Pure logic: json-c and APR
 * only; the loop itself (running tools, sending requests) is elsewhere.
 *
 * Routes are given as their wire format (format.h); NULL (passthrough)
 * is an error. What differs between the formats is the format's.
 *
 * Every function that can fail returns NULL on success, else a message
 * saying why (malformed JSON, a member of the wrong type, a missing
 * field...), and then leaves its outputs unset. Bodies need no NUL
 * terminator; results are allocated in `p`. Rewritten bodies are
 * re-serialised by json-c (same members and values, not the same bytes)
 * and NUL-terminated; a body returned unchanged is the caller's own
 * pointer, so use *out_len, not strlen.
 *
 * Behaviour decided here:
 * - tool_choice "none" (Chat, Responses) or {"type":"none"} (Messages):
 *   the model may not call any tool, so nothing is injected and the body
 *   is returned unchanged, with an empty injected list.
 * - Any other tool_choice is kept. parallel_tool_calls is set to false
 *   (Messages: tool_choice.disable_parallel_tool_use to true, tool_choice
 *   {"type":"auto"} created when there was none) whenever at least one tool
 *   is injected, so that mixed turns (below) are rare. The continuation
 *   keeps tool_choice too: a client's "required"/"any" makes every turn a
 *   tool call, so only the loop's iteration cap ends such a conversation.
 * - A client tool of the same name as an injected one wins: the injected
 *   one is left out. Two injected tools of the same prefixed name
 *   ("bmcp_a_b" + "c" and "bmcp_a" + "b_c"): the first wins.
 * - Mixed turn (the model calls client tools and injected ones): the
 *   injected calls are NOT run. The response goes to the client with them
 *   removed (aib_agent_strip_injected), so it sees only calls it can
 *   answer; the model calls the injected tools again in a later turn if it
 *   still needs them. Running them here would have side effects whose
 *   results never reach the model (the client's next request carries only
 *   what it saw), inviting the model to run them again.
 * - Calls are read whatever the stop / finish reason says: the calls in
 *   the body are what the model asked for. Arguments are passed on as the
 *   model wrote them (Chat/Responses: a string that may not be valid JSON
 *   when the answer was cut short); the tool runner validates them. */
#ifndef AIB_AGENT_BODY_H
#define AIB_AGENT_BODY_H

#include <apr_pools.h>
#include <apr_tables.h>

#include "format.h"
#include "usage.h"

/* What the names of injected tools begin with: bmcp_<server>_<tool>. */
#define AIB_AGENT_TOOL_PREFIX "bmcp_"

/* An MCP tool offered to the model. */
struct aib_agent_tool {
    const char *server;        /* MCP server name */
    const char *tool;          /* MCP tool name */
    const char *description;   /* NULL: none sent */
    const char *input_schema;  /* inputSchema as JSON text: an object; NULL,
                                * "" or {} stand for {"type":"object",
                                * "properties":{}} */
    const char *name;          /* "bmcp_<server>_<tool>": set by aib_agent_inject */
};

/* The body to send instead of the client's `body`: the tools of `tools`
 * (aib_agent_tool_t, server and tool not NULL) added after the client's
 * own, in the route's form, and parallel tool calls turned off. *injected
 * is a new array of the aib_agent_tool_t actually injected (name set), in
 * order, possibly empty: when it is, *out is `body` itself. */
const char *aib_agent_inject(apr_pool_t *p, const aib_format_t *format,
                             const char *body, apr_size_t len,
                             const apr_array_header_t *tools,
                             const char **out, apr_size_t *out_len,
                             apr_array_header_t **injected);

/* The injected tool (from aib_agent_inject's list) a function name
 * stands for, or NULL when it is not one of them: a client tool. The name
 * alone cannot be split (server names may hold '_'), the list can. */
const aib_agent_tool_t *aib_agent_tool_find(const apr_array_header_t *injected,
                                            const char *name);

/* One tool call of a response. */
struct aib_agent_call {
    const char *id;         /* Chat tool_calls[].id, Responses call_id (id for an
                             * mcp_approval_request), Messages tool_use id */
    const char *name;       /* the name the model called; NULL for a call
                             * without one (Responses computer_call...) */
    const char *arguments;  /* JSON text (Messages: input serialised); NULL
                             * for a call that is not a function call */
    const aib_agent_tool_t *tool;  /* the injected tool called, NULL: none offered */
    int ours;               /* a call for the module: to an injected tool, or to
                             * a bmcp_ name that is no client tool (the model
                             * made it up: it gets an error result) */
};

typedef struct {
    apr_array_header_t *calls;  /* aib_agent_call_t, in the response's order */
    int none;                   /* no tool call: the answer is final */
    int only_injected;          /* every call is injected: run them, continue */
    int any_client;             /* a client tool is called: the client answers */
} aib_agent_calls_t;

/* The names of the client's own tools in request `body` (const char *),
 * or NULL when it is not a JSON object. */
apr_array_header_t *aib_agent_client_tools(apr_pool_t *p, const aib_format_t *format,
                                           const char *body, apr_size_t len);

/* The tool calls of a complete blocking response: Chat
 * choices[0].message.tool_calls[]; Responses output[] items that the
 * client must act on (function_call, custom_tool_call, computer_call,
 * local_shell_call, shell_call, apply_patch_call, mcp_approval_request:
 * all but function_call are client calls); Messages content[] tool_use
 * blocks. Exactly one of the flags is set; calls that are `ours` count as
 * injected. `client_tools` (aib_agent_client_tools, may be NULL) tells a
 * client tool named bmcp_... from one the model made up. */
const char *aib_agent_calls(apr_pool_t *p, const aib_format_t *format,
                            const char *response, apr_size_t len,
                            const apr_array_header_t *injected,
                            const apr_array_header_t *client_tools,
                            aib_agent_calls_t *out);

/* The result of running one injected call. */
struct aib_agent_result {
    const char *id;       /* the call's id */
    const char *output;   /* text the tool returned, or the error message */
    int is_error;
};

/* `message` as the output of a failed tool for the OpenAI routes:
 * {"error":true,"message":<message>}. */
const char *aib_agent_error_output(apr_pool_t *p, const char *message);

/* The next request: `request` (the body sent last) with the response's
 * turn and the results appended. Chat: the assistant message as returned,
 * then one role "tool" message per call. Responses: every output item as
 * returned, then one function_call_output per call, appended to `input`
 * (a string input becomes [{"role":"user","content":<string>}] first;
 * previous_response_id and store are left as they are). Messages: the
 * assistant turn (the response's content), then one user message of
 * tool_result blocks (is_error only when true). An error result's output
 * becomes aib_agent_error_output() on the OpenAI routes. `results`
 * (aib_agent_result_t) must answer every call of the response exactly
 * once, in any order; they are written in the calls' order. */
const char *aib_agent_continue(apr_pool_t *p, const aib_format_t *format,
                               const char *request, apr_size_t request_len,
                               const char *response, apr_size_t response_len,
                               const apr_array_header_t *results,
                               const char **out, apr_size_t *out_len);

/* The response without the calls that are ours, for a mixed turn
 * (see above). When no call is left, Chat's tool_calls member goes and
 * finish_reason "tool_calls" becomes "stop"; Messages' stop_reason
 * "tool_use" becomes "end_turn". */
const char *aib_agent_strip_injected(apr_pool_t *p, const aib_format_t *format,
                                     const char *response, apr_size_t len,
                                     const apr_array_header_t *injected,
                                     const apr_array_header_t *client_tools,
                                     const char **out, apr_size_t *out_len);

/* Adds u's counts to sum's (saturating; tool names not copied); sum->seen
 * is set when u->seen is. */
void aib_agent_usage_add(aib_usage_t *sum, const aib_usage_t *u);

/* The final response with its usage as the sum of `previous` (the earlier
 * iterations, summed with aib_agent_usage_add) and its own. Chat:
 * prompt_tokens, completion_tokens, total_tokens,
 * prompt_tokens_details.cached_tokens,
 * completion_tokens_details.reasoning_tokens; Responses: input_tokens,
 * output_tokens, total_tokens, input_tokens_details.cached_tokens,
 * output_tokens_details.reasoning_tokens; Messages: input_tokens,
 * output_tokens, cache_read_input_tokens, cache_creation_input_tokens.
 * A detail object is written only when the response has it or its sum is
 * not 0. When previous->seen is 0 *out is `response` itself. */
const char *aib_agent_usage_rewrite(apr_pool_t *p, const aib_format_t *format,
                                    const char *response, apr_size_t len,
                                    const aib_usage_t *previous,
                                    const char **out, apr_size_t *out_len);

#endif
