#include <string.h>

#include "buffer.h"

void aib_buffer_append(aib_buffer_t *b, apr_pool_t *pool, const char *data, apr_size_t n)
{
    if (b->len + n + 1 > b->cap) {
        apr_size_t cap = (b->len + n + 1) * 2;
        char *grown = apr_palloc(pool, cap);

        if (b->len)
            memcpy(grown, b->data, b->len);
        b->data = grown;
        b->cap = cap;
    }
    if (n)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
}
