/* The agentic loop: an interception whose request is offered tools from
 * MCP servers. Each iteration is one interception of its own (aib_bridge_run:
 * a fresh key walk, so a continuation that meets a 429 fails over by
 * itself); between iterations the module runs the tools the model called
 * and appends the results to the conversation.
 *
 * Blocking: every iteration's answer is held; the client gets the final one
 * only, its usage summed over the iterations. Streaming: the client sees one
 * stream (src/agent_stream.c); failures after it began become an SSE error
 * event in the provider's form. Pure APR, json-c and the core. */
#ifndef AIB_AGENT_LOOP_H
#define AIB_AGENT_LOOP_H

#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>

#include "bridge.h"
#include "mcp.h"

/* A tool call may run this long. */
#define AIB_TOOL_TIMEOUT_MS INT64_C(120000)
/* A blocking answer held between iterations may be this large. */
#define AIB_AGENT_ANSWER_MAX ((apr_size_t)32 * 1024 * 1024)

/* An MCP server whose tools are offered. */
typedef struct {
    const char *name;
    aib_mcp_client_t *client;
} aib_agent_source_t;

typedef enum {
    AIB_TOOL_OK,             /* the tool answered */
    AIB_TOOL_ERROR,          /* the tool answered with isError */
    AIB_TOOL_FAILED          /* it could not be run: unreachable, protocol error */
} aib_tool_outcome_e;

/* One tool the module ran. */
typedef struct {
    const char *server;
    const char *tool;
    int64_t duration_ms;
    aib_tool_outcome_e outcome;
    const char *error;       /* the error text, NULL when OK */
} aib_tool_run_t;

typedef struct {
    /* What to do. */
    const apr_array_header_t *sources;   /* aib_agent_source_t */
    aib_transport_t *transport;          /* to the MCP servers */
    int max_iterations;
    /* What happened. */
    int iterations;                      /* upstream calls made */
    int tools_offered;                   /* tools injected into the request */
    apr_array_header_t *tool_runs;       /* aib_tool_run_t, in order */
} aib_agent_t;

const char *aib_tool_outcome_name(aib_tool_outcome_e outcome);

/* Runs `ic` (set up as for aib_bridge_run) with the tools of the agent's
 * sources offered. When no tool can be offered (none listed, the client's
 * tool_choice is none) it is a plain aib_bridge_run. The interception's
 * outcome fields add up every iteration: attempts, tried keys, usage. */
void aib_agent_run(aib_interception_t *ic, aib_agent_t *agent);

#endif
