/* libFuzzer target: the incremental SSE parser (src/sse.c).
 *
 * The input is a stream as an upstream would send it. It is parsed whole,
 * byte by byte and in pseudo-random pieces (some empty), with an event
 * limit far above the input and with one derived from the input (so
 * oversized events are skipped): the events, their count and whether any
 * was too large must not depend on the cutting. Every event must be
 * NUL-terminated and fit the limit. */
#include "fuzz.h"
#include "sse.h"

typedef struct {
    apr_size_t max_event;
    unsigned char *log;     /* every event, serialised */
    size_t len, cap;
    size_t count;
} rec_t;

static void put(rec_t *r, const void *d, size_t n)
{
    if (r->len + n > r->cap) {
        while (r->len + n > r->cap)
            r->cap = r->cap ? 2 * r->cap : 256;
        r->log = realloc(r->log, r->cap);
        FUZZ_CHECK(r->log != NULL);
    }
    memcpy(r->log + r->len, d, n);
    r->len += n;
}

static int on_event(void *ctx, const char *event, const char *data, apr_size_t len)
{
    rec_t *r = ctx;
    size_t elen = event ? strlen(event) : 0;
    unsigned char tag = event ? 'E' : 'N';

    FUZZ_CHECK(data != NULL);
    FUZZ_CHECK(data[len] == '\0');
    /* The memory bound of sse.h: one event's data and name fit max_event. */
    FUZZ_CHECK(len <= r->max_event && elen <= r->max_event - len);
    put(r, &tag, 1);
    put(r, &elen, sizeof(elen));
    put(r, event ? event : "", elen);
    put(r, &len, sizeof(len));
    put(r, data, len);
    r->count++;
    return 0;
}

/* mode 0: whole; 1: byte by byte; 2: pieces of 0 to 2^k bytes. */
static void parse(rec_t *r, const char *s, size_t n, apr_size_t max_event,
                  int mode, uint64_t seed, int *too_large)
{
    apr_pool_t *pool = fuzz_pool();
    aib_sse_parser_t *p;
    size_t off = 0;
    int rc;

    memset(r, 0, sizeof(*r));
    r->max_event = max_event;
    *too_large = 0;
    p = aib_sse_parser_create(pool, max_event, on_event, r);
    if (mode == 0) {
        rc = aib_sse_feed(p, s, n);
        FUZZ_CHECK(rc == AIB_SSE_OK || rc == AIB_SSE_TOO_LARGE);
        *too_large = rc == AIB_SSE_TOO_LARGE;
    }
    while (mode != 0 && off <= n) {
        size_t piece = mode == 1 ? 1 : fuzz_next(&seed) % ((size_t)2 << (seed % 9));

        if (piece > n - off)
            piece = n - off;
        rc = aib_sse_feed(p, s + off, piece);
        FUZZ_CHECK(rc == AIB_SSE_OK || rc == AIB_SSE_TOO_LARGE);
        *too_large |= rc == AIB_SSE_TOO_LARGE;
        off += piece;
        if (off == n)
            break;
    }
    FUZZ_CHECK(aib_sse_event_count(p) == r->count);
    apr_pool_destroy(pool);
}

static void same(const rec_t *a, int a_large, const rec_t *b, int b_large)
{
    FUZZ_CHECK(a->count == b->count);
    FUZZ_CHECK(a->len == b->len);
    FUZZ_CHECK(a->len == 0 || memcmp(a->log, b->log, a->len) == 0);
    FUZZ_CHECK(a_large == b_large);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_dup(data, size);
    uint64_t h = fuzz_hash(data, size);
    apr_size_t limits[2];
    rec_t whole, cut;
    int whole_large, cut_large, i;

    limits[0] = (apr_size_t)1 << 20;
    limits[1] = (apr_size_t)(h % (size + 2)); /* 0 to size + 1 */
    for (i = 0; i < 2; i++) {
        parse(&whole, s, size, limits[i], 0, 0, &whole_large);
        if (i == 0 && size < limits[0])
            FUZZ_CHECK(!whole_large);
        parse(&cut, s, size, limits[i], 2, h + (uint64_t)i, &cut_large);
        same(&whole, whole_large, &cut, cut_large);
        free(cut.log);
        if (i == 0 && size <= 4096) {
            parse(&cut, s, size, limits[i], 1, 0, &cut_large);
            same(&whole, whole_large, &cut, cut_large);
            free(cut.log);
        }
        free(whole.log);
    }
    free(s);
    return 0;
}
