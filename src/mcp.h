/* A Model Context Protocol client over Streamable HTTP: the tools of one
 * MCP server, listed (cached, filtered) and called. Pure APR: the httpd glue
 * parses AIBridgeMCPServer with aib_mcp_server_parse and creates one client
 * per server in each child process. */
#ifndef AIB_MCP_H
#define AIB_MCP_H

#include <stdint.h>
#include <regex.h>
#include <apr_pools.h>
#include <apr_tables.h>

#include "transport.h"

/* Any one answer of an MCP server is read up to this size, then failed. */
#define AIB_MCP_MAX_ANSWER ((apr_size_t)8 * 1024 * 1024)
/* After a failed tool listing, the server is asked again this much later. */
#define AIB_MCP_RETRY_MS INT64_C(5000)
#define AIB_MCP_TOOLS_TTL_MS INT64_C(300000)
/* The version offered in initialize; the server may answer another. */
#define AIB_MCP_PROTOCOL_VERSION "2025-06-18"

typedef struct {
    const char *name;
    const char *url;
    apr_table_t *headers;          /* header= options, env: resolved */
    regex_t *allow;                /* NULL: every tool */
    regex_t *deny;                 /* NULL: none; wins over allow */
    int64_t tools_ttl_ms;
    apr_size_t max_answer;         /* AIB_MCP_MAX_ANSWER */
} aib_mcp_server_t;

/* Parses `AIBridgeMCPServer <name> <url> [header=<Name>:<value> ...]
 * [allow=<regex>] [deny=<regex>] [tools-ttl=<seconds>]`, where a value may
 * be env:VAR. Returns NULL and sets *out, or an error message, which never
 * holds a header value. */
const char *aib_mcp_server_parse(apr_pool_t *p, int argc, char *const argv[],
                                 aib_mcp_server_t **out);

typedef struct aib_mcp_client aib_mcp_client_t;

/* A client for one server: caches its session and tool list in `pool`
 * (long-lived, e.g. the child's) and is safe to use from any thread. No
 * network I/O here. NULL if no mutex could be created. */
aib_mcp_client_t *aib_mcp_client_create(apr_pool_t *pool, const aib_mcp_server_t *server);

typedef struct {
    const char *name;              /* the MCP tool's own name */
    const char *description;       /* "" when the server gave none */
    const char *input_schema;      /* JSON text */
} aib_mcp_tool_t;

/* The server's tools that allow=/deny= let through, as an array of
 * aib_mcp_tool_t valid (and not to be modified) while `p` lives. Listed on
 * first use and once tools-ttl has passed; while one thread lists, the
 * others get the previous list at once (none before the first listing).
 * When the server fails, the list is empty and it is asked again after
 * AIB_MCP_RETRY_MS; *failure is then set, only for the first failure of an
 * outage, to a message to log (else NULL). */
const apr_array_header_t *aib_mcp_tools(aib_mcp_client_t *client, aib_transport_t *transport,
                                        apr_pool_t *p, int64_t now_ms, const char **failure);

/* While a call waits for its answer, tick(ctx) runs several times a
 * second (keep-alives to a client); non-zero stops the call. */
typedef struct {
    int (*tick)(void *ctx);
    void *ctx;
} aib_mcp_wait_t;

typedef struct {
    const char *text;              /* for the model; never NULL */
    int is_error;                  /* the tool failed (isError) or could not run */
    const char *failure;           /* could not run (transport, HTTP, JSON-RPC
                                    * error): a message to log; else NULL */
} aib_mcp_result_t;

/* Runs tools/call for `tool` with `arguments_json` (a JSON object; NULL or
 * "" for none). The text is the result's content items joined with '\n':
 * a text item's text, any other item as its JSON. */
void aib_mcp_call(aib_mcp_client_t *client, aib_transport_t *transport, apr_pool_t *p,
                  const char *tool, const char *arguments_json, int64_t timeout_ms,
                  const aib_mcp_wait_t *wait, aib_mcp_result_t *out);

#endif
