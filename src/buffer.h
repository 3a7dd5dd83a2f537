/* A growing byte buffer in an APR pool, kept NUL-terminated so that its
 * text can be handed to string functions and to json-c. */
#ifndef AIB_BUFFER_H
#define AIB_BUFFER_H

#include <apr_pools.h>

typedef struct {
    char *data;                /* NULL until the first append */
    apr_size_t len;
    apr_size_t cap;
} aib_buffer_t;

/* Appends n bytes; the buffer doubles in `pool` when it must grow. */
void aib_buffer_append(aib_buffer_t *b, apr_pool_t *pool, const char *data, apr_size_t n);

/* Appends a NUL-terminated string. */
void aib_buffer_puts(aib_buffer_t *b, apr_pool_t *pool, const char *s);

/* Appends formatted text (the C library's printf formats, PRIu64 and the
 * like included, not APR's). */
__attribute__((format(printf, 3, 4)))
void aib_buffer_printf(aib_buffer_t *b, apr_pool_t *pool, const char *fmt, ...);

#endif
