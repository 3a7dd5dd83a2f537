/* The only ways a key is ever named: a masked hint for people, a
 * fingerprint for machines. Neither lets anyone recover the key. */
#ifndef AIB_HINT_H
#define AIB_HINT_H

#include <stdint.h>
#include <apr_pools.h>

/* Masked hint: first and last 4 characters for keys of 20 or more
 * characters ("sk-p...wxyz"), 2 and 2 for 10 to 19, 1 and 1 for 5 to 9,
 * only "..." below 5. */
const char *aib_key_hint(apr_pool_t *pool, const char *key);

/* A configuration argument as an error message may show it: as is when it
 * is shorter than 20 characters or holds "://", else masked like a key, for
 * it may be a key written in the wrong place. */
const char *aib_arg_hint(apr_pool_t *pool, const char *arg);

/* Stable 64-bit fingerprint of `name` within `scope` (SHA-1 of both,
 * truncated): ("ab", "c") and ("a", "bc") differ. Never 0, so 0 can mean
 * "free slot". */
uint64_t aib_fingerprint(const char *scope, const char *name);

/* A key's within its pool. */
uint64_t aib_key_fingerprint(const char *pool_name, const char *key);

#endif
