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

#endif
