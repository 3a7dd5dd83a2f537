#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "buffer.h"

/* Spare room aib_buffer_printf makes before it formats. */
#define PRINTF_ROOM 256

/* Room for n more bytes and the NUL. */
static void reserve(aib_buffer_t *b, apr_pool_t *pool, apr_size_t n)
{
    if (b->len + n + 1 > b->cap) {
        apr_size_t cap = (b->len + n + 1) * 2;
        char *grown = apr_palloc(pool, cap);

        if (b->len)
            memcpy(grown, b->data, b->len);
        b->data = grown;
        b->cap = cap;
    }
}

void aib_buffer_append(aib_buffer_t *b, apr_pool_t *pool, const char *data, apr_size_t n)
{
    reserve(b, pool, n);
    if (n)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void aib_buffer_puts(aib_buffer_t *b, apr_pool_t *pool, const char *s)
{
    aib_buffer_append(b, pool, s, strlen(s));
}

void aib_buffer_printf(aib_buffer_t *b, apr_pool_t *pool, const char *fmt, ...)
{
    va_list ap;
    int n;

    /* Formatted straight into the spare room (most pieces are short); once
     * more after growing when it did not fit. */
    reserve(b, pool, PRINTF_ROOM);
    va_start(ap, fmt);
    n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->data[b->len] = '\0';
        return;
    }
    if ((apr_size_t)n >= b->cap - b->len) {
        reserve(b, pool, (apr_size_t)n);
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (apr_size_t)n;
}
