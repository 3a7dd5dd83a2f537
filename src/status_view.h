/* What the status renderings show (src/status_view.c): the servers'
 * providers each once, their keys' state and counters, times and
 * durations as people read them. Private to src/status*.c. */
#ifndef AIB_STATUS_VIEW_H
#define AIB_STATUS_VIEW_H

#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>

#include "bridge.h"
#include "status.h"

/* "rate_limited", "auth_failed": aib_exhaustion_e as shown. */
extern const char *const aib_status_exhaustion_names[AIB_STAT_EXHAUSTIONS];

/* A provider as shown, with the server it belongs to. */
typedef struct {
    int server_index;
    const char *server;
    const aib_provider_t *pv;
    aib_provider_stats_t stats;       /* zeros without a record */
} aib_status_entry_t;

/* The servers' providers (of aib_status_entry_t), each once: the same
 * object, or the same server and provider name (vhosts sharing a name and
 * port share their counters). */
apr_array_header_t *aib_status_entries(apr_pool_t *p, const apr_array_header_t *servers);

/* A key as shown. */
typedef struct {
    int index;
    const char *hint;
    aib_key_state_e state;
    aib_reason_e reason;
    int64_t remaining_ms;             /* cooling or disabled for a while; -1: until re-enabled */
    aib_slot_t slot;
} aib_status_key_t;

/* Keys of the provider's pool, 0 without one. */
int aib_status_key_count(const aib_provider_t *pv);
void aib_status_key_view(const aib_provider_t *pv, int i, int64_t now_ms, aib_status_key_t *v);

/* Interceptions that ended with `outcome`, over every route and credential. */
uint64_t aib_status_outcome_total(const aib_provider_stats_t *st, int outcome);

/* "45s", "2m 05s", "3h 07m", "2d 04h": rounded up to the second. */
const char *aib_status_duration(apr_pool_t *p, int64_t ms);
/* "never", or the time and how long ago. */
const char *aib_status_when(apr_pool_t *p, int64_t ms, int64_t now_ms);

#endif
