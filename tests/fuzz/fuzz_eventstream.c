/* libFuzzer target: the AWS event stream decoder (src/eventstream.c).
 *
 * The input is a stream as Bedrock would send it. It is decoded as it is
 * and, so that the fuzzer gets past the checksums into headers and
 * payloads, once more with every frame's two CRCs set right. Each is
 * decoded whole, byte by byte and in pseudo-random pieces (some empty),
 * with a frame limit far above the input and one derived from it: the
 * events, the result and its reason must not depend on the cutting. Every
 * event must be named, NUL-terminated, fit to be written as SSE (no CR, no
 * line end in its name) and within the limit. */
#include "fuzz.h"
#include "eventstream.h"

typedef struct {
    apr_size_t max_frame;
    uint64_t digest;        /* of every event, then of the outcome, in order */
    size_t count;
} rec_t;

static void fold(rec_t *r, const void *d, size_t n)
{
    r->digest = r->digest * UINT64_C(0x100000001b3) ^ fuzz_hash(d, n);
}

static int on_event(void *ctx, const char *event, const char *data, apr_size_t len)
{
    rec_t *r = ctx;
    size_t elen;

    FUZZ_CHECK(event != NULL && data != NULL);
    FUZZ_CHECK(data[len] == '\0' && !memchr(data, '\r', len));
    elen = strlen(event);
    FUZZ_CHECK(elen && !strpbrk(event, "\r\n"));
    /* A chunk's JSON is decoded within the frame; an error event is JSON
     * written anew, whose escapes may take up to 6 bytes a byte. */
    FUZZ_CHECK(strcmp(event, "error") ? len < r->max_frame : len < 6 * r->max_frame + 256);
    fold(r, event, elen);
    fold(r, data, len);
    r->count++;
    return 0;
}

/* mode 0: whole; 1: byte by byte; 2: pieces of 0 to 2^k bytes. */
static void decode(rec_t *r, const char *s, size_t n, apr_size_t max_frame, int mode,
                   uint64_t seed)
{
    apr_pool_t *pool = fuzz_pool();
    aib_eventstream_t *d;
    const char *why;
    size_t off = 0, piece;
    int rc = 0;

    memset(r, 0, sizeof(*r));
    r->max_frame = max_frame;
    d = aib_eventstream_create(pool, max_frame, on_event, r);
    while (!rc && off < n) {
        piece = mode == 0 ? n : mode == 1 ? 1 : fuzz_next(&seed) % ((size_t)2 << (seed % 9));
        if (piece > n - off)
            piece = n - off;
        rc = aib_eventstream_feed(d, s + off, piece);
        FUZZ_CHECK(rc == 0 || rc == AIB_FRAMING_MALFORMED);
        off += piece;
    }
    if (!rc)
        rc = aib_eventstream_finish(d);
    why = aib_eventstream_error(d);
    FUZZ_CHECK((rc == AIB_FRAMING_MALFORMED) == (why != NULL));
    fold(r, why ? why : "", why ? strlen(why) : 0);
    apr_pool_destroy(pool);
}

static void same(const rec_t *a, const rec_t *b)
{
    FUZZ_CHECK(a->count == b->count);
    FUZZ_CHECK(a->digest == b->digest);
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void set_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Sets the CRCs of every frame whose length fits, up to the first that
 * does not. */
static void repair(unsigned char *s, size_t n)
{
    size_t off = 0;
    uint32_t total;

    while (n - off >= 16) {
        total = be32(s + off);
        if (total < 16 || total > n - off)
            break;
        set_be32(s + off + 8, aib_crc32(0, s + off, 8));
        set_be32(s + off + total - 4, aib_crc32(0, s + off, total - 4));
        off += total;
    }
}

static void check(const char *s, size_t size, uint64_t h)
{
    apr_size_t limits[2];
    rec_t whole, cut;
    int i;

    limits[0] = (apr_size_t)1 << 20;
    limits[1] = (apr_size_t)(h % (size + 2));   /* 0 to size + 1 */
    for (i = 0; i < 2; i++) {
        decode(&whole, s, size, limits[i], 0, 0);
        decode(&cut, s, size, limits[i], 2, h + (uint64_t)i);
        same(&whole, &cut);
        if (i == 0 && size <= 4096) {
            decode(&cut, s, size, limits[i], 1, 0);
            same(&whole, &cut);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_dup(data, size);
    uint64_t h = fuzz_hash(data, size);

    check(s, size, h);
    repair((unsigned char *)s, size);
    check(s, size, h);
    free(s);
    return 0;
}
