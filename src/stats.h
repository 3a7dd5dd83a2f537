/* Per-provider counters in shared memory, for the status page and the
 * Prometheus metrics: the same totals whichever child process serves. Like
 * key slots, a record holds fixed-size numbers only, updated atomically. */
#ifndef AIB_STATS_H
#define AIB_STATS_H

#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>

#include "format.h"
#include "keypool.h"

/* One route index per wire format (aib_formats' order), then passthrough. */
#define AIB_STAT_ROUTES (AIB_FORMAT_COUNT + 1)
#define AIB_STAT_PASSTHROUGH AIB_FORMAT_COUNT
#define AIB_STAT_CREDENTIALS 2     /* pool, byok */
#define AIB_STAT_OUTCOMES 6        /* aib_outcome_e */
#define AIB_STAT_REASONS 5         /* aib_reason_e (NONE unused) */
#define AIB_STAT_EXHAUSTIONS 2     /* aib_exhaustion_e */
#define AIB_DURATION_BUCKETS 11
#define AIB_ATTEMPT_BUCKETS 7

/* Upper bounds of the histogram buckets (a last +Inf bucket is implicit). */
extern const double aib_duration_bounds[AIB_DURATION_BUCKETS];   /* seconds */
extern const int aib_attempt_bounds[AIB_ATTEMPT_BUCKETS];

typedef struct {
    uint64_t fingerprint;          /* which provider owns the record; 0 = free */
    int64_t inflight;
    uint64_t interceptions[AIB_STAT_ROUTES][AIB_STAT_CREDENTIALS][AIB_STAT_OUTCOMES];
    uint64_t duration_buckets[AIB_STAT_ROUTES][AIB_DURATION_BUCKETS + 1];  /* not cumulative */
    uint64_t duration_sum_us[AIB_STAT_ROUTES];
    uint64_t attempt_buckets[AIB_ATTEMPT_BUCKETS + 1];                     /* not cumulative */
    uint64_t attempt_sum;
    uint64_t transitions[AIB_STAT_REASONS];
    uint64_t exhaustions[AIB_STAT_EXHAUSTIONS];
} aib_provider_stats_t;

typedef struct {
    aib_provider_stats_t *records;
    uint32_t capacity;
} aib_statstore_t;

/* The route index of a route name (a format's name, else passthrough). */
int aib_stat_route(const char *route_name);
/* The names of the route indices: the formats' names, then "passthrough";
 * filled from the format table when the library is loaded. */
extern const char *aib_stat_route_names[AIB_STAT_ROUTES];

/* Fingerprint of a provider: its server (name and port) and its name. */
uint64_t aib_provider_fingerprint(const char *server, const char *provider);

/* Gives each fingerprint in `fps` (uint64_t) a record in `to`, keeping the
 * counters of those already in `from` (which may be `to`: in place, records
 * that stay keep their place). out[i] gets the record of fps[i]. `to` must
 * have room for the distinct fingerprints. */
void aib_statstore_assign(aib_statstore_t *to, const aib_statstore_t *from,
                          const apr_array_header_t *fps, aib_provider_stats_t **out,
                          apr_pool_t *tmp);

void aib_stats_begin(aib_provider_stats_t *s);
/* One finished interception. */
void aib_stats_end(aib_provider_stats_t *s, int route, int byok, int outcome,
                   int64_t duration_us, int attempts);
void aib_stats_transition(aib_provider_stats_t *s, aib_reason_e reason);
void aib_stats_exhaustion(aib_provider_stats_t *s, int kind);
/* A consistent-enough copy for display. */
void aib_stats_snapshot(const aib_provider_stats_t *s, aib_provider_stats_t *out);

/* Calls of MCP tools the module ran, per MCP server and tool, in a table
 * of fixed-size records (names truncated to fit) in shared memory. */
#define AIB_TOOL_OUTCOMES 3        /* aib_tool_outcome_e: ok, tool_error, failed */
typedef struct {
    uint64_t fingerprint;          /* of server and tool; 0 = free */
    uint32_t ready;                /* the names are written */
    char server[48];
    char tool[80];
    uint64_t calls[AIB_TOOL_OUTCOMES];
    uint64_t duration_ms_sum;
} aib_tool_stats_t;

typedef struct {
    aib_tool_stats_t *records;
    uint32_t capacity;
} aib_toolstore_t;

/* Counts one call; when the table is full, it goes uncounted (returns 0). */
int aib_tool_stats_count(aib_toolstore_t *store, const char *server, const char *tool,
                         int outcome, int64_t duration_ms);

#endif
