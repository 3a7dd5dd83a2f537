/* libFuzzer target: the blocking-response usage reader (src/usage.c,
 * aib_usage_reader_*).
 *
 * The input is a response body. It is read as each kind (chat, responses,
 * messages, and none), fed whole and in pseudo-random pieces: both must
 * give the same usage and tool names, with no negative count. One more
 * reader gets a byte limit below the body's size (it must read nothing),
 * and one is left to its pool's cleanup without being finished (a
 * connection that went away mid-body). A body with a NUL byte in it must
 * give nothing. */
#include "fuzz.h"
#include "format.h"
#include "usage.h"

static int number_char(char c)
{
    return (c >= '0' && c <= '9') || c == '.';
}

static void read_body(aib_usage_t *u, apr_pool_t *pool, const aib_format_t *kind,
                      const char *body, size_t size, apr_size_t max_bytes, uint64_t *seed,
                      int finish)
{
    aib_usage_reader_t *r;
    size_t off = 0;

    aib_usage_init(u, pool);
    r = aib_usage_reader_create(pool, kind, u, max_bytes);
    FUZZ_CHECK(r != NULL);
    while (off < size) {
        size_t piece = seed ? fuzz_next(seed) % 64 : size;

        if (piece > size - off)
            piece = size - off;
        /* json-c (0.16, and master as of 2025) resumes a number cut
         * between feeds as if a '-' could start it again: "1" then "-2"
         * gives 1 where "1-2" whole is an error. Only invalid JSON can
         * tell, so cuts stay clear of that spot. */
        while (off + piece < size && off + piece > 0 && body[off + piece] == '-'
               && number_char(body[off + piece - 1]))
            piece++;
        aib_usage_reader_feed(r, body + off, piece);
        off += piece;
    }
    if (finish) {
        aib_usage_reader_finish(r);
        aib_usage_reader_finish(r); /* twice is harmless */
        aib_usage_reader_feed(r, body, size); /* and so is feeding after */
    }
}

static void check_sane(const aib_usage_t *u)
{
    int i;

    FUZZ_CHECK(u->input >= 0 && u->output >= 0 && u->cache_read >= 0
               && u->cache_write >= 0 && u->reasoning >= 0);
    FUZZ_CHECK(u->seen || (!u->input && !u->output && !u->cache_read && !u->cache_write
                           && !u->reasoning));
    for (i = 0; i < u->tools->nelts; i++) {
        const char *name = APR_ARRAY_IDX(u->tools, i, const char *);

        FUZZ_CHECK(name != NULL && *name);
    }
}

static void same(const aib_usage_t *a, const aib_usage_t *b)
{
    int i;

    FUZZ_CHECK(a->seen == b->seen && a->input == b->input && a->output == b->output
               && a->cache_read == b->cache_read && a->cache_write == b->cache_write
               && a->reasoning == b->reasoning);
    FUZZ_CHECK(a->tools->nelts == b->tools->nelts);
    for (i = 0; i < a->tools->nelts; i++)
        FUZZ_CHECK(!strcmp(APR_ARRAY_IDX(a->tools, i, const char *),
                           APR_ARRAY_IDX(b->tools, i, const char *)));
}

static int nothing(const aib_usage_t *u)
{
    return !u->seen && !u->input && !u->output && !u->cache_read && !u->cache_write
           && !u->reasoning && u->tools->nelts == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const aib_format_t *const kinds[] = {
        &aib_format_chat, &aib_format_responses, &aib_format_messages, NULL
    };
    apr_pool_t *pool = fuzz_pool(), *sub;
    char *body = fuzz_dup(data, size);
    uint64_t seed = fuzz_hash(data, size);
    aib_usage_t whole, cut;
    size_t k;

    for (k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        read_body(&whole, pool, kinds[k], body, size, (apr_size_t)-1, NULL, 1);
        read_body(&cut, pool, kinds[k], body, size, (apr_size_t)-1, &seed, 1);
        check_sane(&whole);
        same(&whole, &cut);
        /* NONE reads nothing; nor does anything read a body with a NUL
         * byte, which json-c would take for its end (no JSON holds one). */
        if (kinds[k] == NULL || memchr(body, '\0', size))
            FUZZ_CHECK(nothing(&whole));
    }
    if (size > 0) {
        read_body(&cut, pool, kinds[seed % 3], body, size, (apr_size_t)(seed % size), &seed, 1);
        FUZZ_CHECK(nothing(&cut));
    }
    /* Not finished: the pool's cleanup frees the parser. */
    apr_pool_create(&sub, pool);
    read_body(&cut, sub, kinds[seed % 3], body, size, (apr_size_t)-1, &seed, 0);
    apr_pool_destroy(sub);

    free(body);
    apr_pool_destroy(pool);
    return 0;
}
