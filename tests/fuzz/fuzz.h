/* Shared by the libFuzzer targets in this folder (see README.md, Fuzzing).
 *
 * The core sources are compiled for fuzzing with -Dapr_palloc=aib_fuzz_palloc:
 * every block they take from a pool is then its own malloc(), freed by a
 * pool cleanup, so AddressSanitizer sees the exact bounds of each buffer
 * (inside an APR pool block an overrun would go unnoticed) and any use
 * after the pool is gone. */
#ifndef AIB_FUZZ_H
#define AIB_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_pools.h>

/* A fresh pool for one input; the target destroys it. */
apr_pool_t *fuzz_pool(void);

/* A property every input must keep: a failure is a crash to libFuzzer. */
#define FUZZ_CHECK(cond)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
            abort();                                                         \
        }                                                                    \
    } while (0)

/* Deterministic choices (chunk sizes, limits) derived from the input, so a
 * reproducer replays exactly and the seeds stay plain realistic text. */
static inline uint64_t fuzz_hash(const uint8_t *d, size_t n)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    size_t i;

    for (i = 0; i < n; i++)
        h = (h ^ d[i]) * UINT64_C(0x100000001b3);
    return h;
}

/* splitmix64 */
static inline uint64_t fuzz_next(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* A copy of d[0, n) in a malloc block of exactly n bytes (1 when n is 0),
 * with no NUL after it: reading past the end is an ASan error. */
static inline char *fuzz_dup(const uint8_t *d, size_t n)
{
    char *s = malloc(n ? n : 1);

    if (!s)
        abort();
    if (n)
        memcpy(s, d, n);
    return s;
}

/* The same, NUL-terminated (n + 1 bytes). */
static inline char *fuzz_strdup(const uint8_t *d, size_t n)
{
    char *s = malloc(n + 1);

    if (!s)
        abort();
    if (n)
        memcpy(s, d, n);
    s[n] = '\0';
    return s;
}

#endif
