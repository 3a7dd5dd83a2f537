/* Small helpers that more than one part of the module needs, kept once. */
#ifndef AIB_UTIL_H
#define AIB_UTIL_H

#include <stdint.h>
#include <apr_pools.h>

/* Now, in milliseconds since the epoch. */
int64_t aib_now_ms(void);

/* RFC 3339 in UTC with milliseconds: 2025-01-31T12:34:56.789Z; "?" for a
 * time that cannot be shown. */
const char *aib_time_rfc3339(apr_pool_t *p, int64_t unix_ms);

/* `nbytes` random bytes as lowercase hex (2 * nbytes characters), or NULL
 * when the system has no randomness to give. */
const char *aib_random_hex(apr_pool_t *p, apr_size_t nbytes);

#endif
