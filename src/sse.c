/* Incremental Server-Sent Events parser (see sse.h).
 *
 * Design notes:
 * - Lines that end inside the current feed are parsed straight from the
 *   caller's bytes; only a line cut off by the end of a feed is copied
 *   (the "pending" line) so it can be completed by the next feed.
 * - Line ends are found with memchr for '\n' and for '\r'. Each hit is
 *   cached until the scan position passes it, so every byte is scanned at
 *   most once per character even for streams that use only one kind of
 *   line end (a naive per-line memchr for the absent one is quadratic).
 * - All per-event state lives in ONE buffer: joined data grows up from the
 *   bottom, the pending line sits right after it, and the NUL-terminated
 *   event name sits at the very top. The three together are capped at
 *   max_event, so the buffer never needs more than max_event + 2 bytes
 *   (one NUL for data, one for the name). It starts small and doubles up
 *   to that cap; a doubling abandons the old block to the pool, so the
 *   pool holds less than 2 * (max_event + 2) + SSE_INITIAL_CAP bytes over
 *   the whole stream, however many events it carries. Nothing is
 *   allocated per event. */
#include <string.h>

#include <apr_pools.h>

#include "headers.h"
#include "sse.h"

/* Large enough for a typical streamed chat/response chunk, so most
 * streams never grow the buffer. */
#define SSE_INITIAL_CAP 4096

struct aib_sse_parser {
    aib_sse_event_fn *on_event;
    void *ctx;
    apr_pool_t *pool;
    char *buf;              /* [data][pending line] ... [event name]\0 */
    apr_size_t cap;
    apr_size_t max_event;
    apr_size_t data_len;
    apr_size_t line_len;    /* pending line bytes; when skipping only 0/1 */
    apr_size_t event_len;
    apr_size_t count;
    int bom;                /* BOM bytes matched at stream start, -1 after */
    unsigned has_data : 1;  /* a data line was seen (data may be empty) */
    unsigned has_event : 1; /* an event line was seen (name may be empty) */
    unsigned skipping : 1;  /* discarding an oversized event */
    unsigned after_cr : 1;  /* last feed ended in '\r': eat a leading '\n' */
};

/* Old blocks are left to the pool: pools cannot free, and doubling keeps
 * the total waste below the final size. */
static void grow(aib_sse_parser_t *p, apr_size_t need)
{
    apr_size_t limit = p->max_event + 2;
    apr_size_t ncap = p->cap;
    char *nbuf;

    while (ncap < need && ncap < limit)
        ncap *= 2;
    if (ncap > limit)
        ncap = limit;
    nbuf = apr_palloc(p->pool, ncap);
    memcpy(nbuf, p->buf, p->data_len + p->line_len);
    memcpy(nbuf + ncap - 1 - p->event_len,
           p->buf + p->cap - 1 - p->event_len, p->event_len + 1);
    p->buf = nbuf;
    p->cap = ncap;
}

static APR_INLINE void reserve(aib_sse_parser_t *p, apr_size_t need)
{
    if (need > p->cap)
        grow(p, need);
}

static void start_skip(aib_sse_parser_t *p, int mid_line)
{
    p->skipping = 1;
    p->data_len = 0;
    p->event_len = 0;
    p->has_data = 0;
    p->has_event = 0;
    p->line_len = mid_line ? 1 : 0;
    p->buf[p->cap - 1] = '\0';
}

/* Append bytes to the pending line. Returns 1 if that made the event too
 * large (the parser is then skipping, mid-line). */
static int stash(aib_sse_parser_t *p, const char *s, apr_size_t n)
{
    if (p->skipping) {
        /* Only whether the line is blank matters while skipping. */
        p->line_len = 1;
        return 0;
    }
    /* Invariant: data_len + event_len + line_len <= max_event, so this
     * subtraction cannot wrap, and the sum below cannot overflow. */
    if (n > p->max_event - (p->data_len + p->event_len + p->line_len)) {
        start_skip(p, 1);
        return 1;
    }
    reserve(p, p->data_len + p->line_len + n + p->event_len + 2);
    memcpy(p->buf + p->data_len + p->line_len, s, n);
    p->line_len += n;
    return 0;
}

/* Blank line: hand over the event, if it has data, and reset for the next
 * one. Returns the callback's value. */
static int dispatch(aib_sse_parser_t *p)
{
    int rc = 0;

    if (p->has_data) {
        p->buf[p->data_len] = '\0';
        p->count++;
        if (p->on_event)
            rc = p->on_event(p->ctx,
                             p->has_event
                                 ? p->buf + p->cap - 1 - p->event_len
                                 : NULL,
                             p->buf, p->data_len);
    }
    p->data_len = 0;
    p->event_len = 0;
    p->has_data = 0;
    p->has_event = 0;
    p->buf[p->cap - 1] = '\0';
    return rc;
}

/* A line ended: s/n is its tail in the current feed (the whole line unless
 * a pending head exists). Returns the callback's value; sets *too_large if
 * the line made the event too large. */
static int end_line(aib_sse_parser_t *p, const char *s, apr_size_t n,
                    int *too_large)
{
    const char *line, *colon, *val;
    apr_size_t len, flen, vlen;
    int pending;

    if (p->skipping) {
        if (p->line_len == 0 && n == 0)
            p->skipping = 0; /* frame boundary: resume normal parsing */
        p->line_len = 0;
        return 0;
    }

    pending = p->line_len != 0;
    if (pending) {
        if (stash(p, s, n)) {
            *too_large = 1;
            p->line_len = 0; /* that line is over; skip to the blank one */
            return 0;
        }
        line = p->buf + p->data_len;
        len = p->line_len;
        p->line_len = 0;
    }
    else {
        if (n == 0)
            return dispatch(p);
        /* Same limit as stash() applies to a split line, so the outcome
         * does not depend on how the stream was cut into feeds. */
        if (n > p->max_event - (p->data_len + p->event_len)) {
            start_skip(p, 0);
            *too_large = 1;
            return 0;
        }
        line = s;
        len = n;
    }

    if (line[0] == ':')
        return 0; /* comment, typically a keep-alive */

    colon = memchr(line, ':', len);
    if (colon) {
        flen = (apr_size_t)(colon - line);
        val = colon + 1;
        vlen = len - flen - 1;
        if (vlen && *val == ' ') {
            val++;
            vlen--;
        }
    }
    else {
        flen = len;
        val = line + len;
        vlen = 0;
    }

    /* The value may overlap its destination when the line was pending (it
     * lives right above the data), hence memmove. A pending line already
     * reserved room for data + event + whole line, which covers the
     * result; a line read from the feed reserves the same here. The buffer
     * must not move while `line` points into it, so only the non-pending
     * case may grow. */
    if (flen == 4 && memcmp(line, "data", 4) == 0) {
        char *dst;

        if (!pending)
            reserve(p, p->data_len + p->event_len + len + 2);
        dst = p->buf + p->data_len;
        if (p->has_data)
            *dst++ = '\n';
        memmove(dst, val, vlen);
        p->data_len = (apr_size_t)(dst - p->buf) + vlen;
        p->has_data = 1;
    }
    else if (flen == 5 && memcmp(line, "event", 5) == 0) {
        if (!pending)
            reserve(p, p->data_len + p->event_len + len + 2);
        memmove(p->buf + p->cap - 1 - vlen, val, vlen);
        p->buf[p->cap - 1] = '\0';
        p->event_len = vlen;
        p->has_event = 1;
    }
    /* id, retry and unknown fields: nothing to do. */
    return 0;
}

/* Skip a UTF-8 BOM at stream start, which may itself be split across
 * feeds. If only a prefix matched, those bytes belong to the first line. */
static const char *skip_bom(aib_sse_parser_t *p, const char *s,
                            const char *end, int *too_large)
{
    static const unsigned char bom[3] = { 0xEF, 0xBB, 0xBF };

    while (s < end) {
        if ((unsigned char)*s == bom[p->bom]) {
            s++;
            if (++p->bom == 3) {
                p->bom = -1;
                break;
            }
        }
        else {
            if (p->bom > 0 &&
                stash(p, (const char *)bom, (apr_size_t)p->bom))
                *too_large = 1;
            p->bom = -1;
            break;
        }
    }
    return s;
}

aib_sse_parser_t *aib_sse_parser_create(apr_pool_t *pool, apr_size_t max_event,
                                        aib_sse_event_fn *on_event, void *ctx)
{
    aib_sse_parser_t *p = apr_pcalloc(pool, sizeof(*p));

    /* Keeps max_event + 2 and the doubling in grow() from overflowing. */
    if (max_event > APR_SIZE_MAX / 4)
        max_event = APR_SIZE_MAX / 4;
    p->on_event = on_event;
    p->ctx = ctx;
    p->pool = pool;
    p->max_event = max_event;
    p->cap = max_event + 2 < SSE_INITIAL_CAP ? max_event + 2 : SSE_INITIAL_CAP;
    p->buf = apr_palloc(pool, p->cap);
    p->buf[p->cap - 1] = '\0';
    p->bom = 0;
    return p;
}

int aib_sse_feed(aib_sse_parser_t *p, const char *buf, apr_size_t len)
{
    const char *s = buf, *end = buf + len;
    const char *nl = NULL, *cr = NULL; /* next '\n' / '\r', end if none */
    const char *eol, *next;
    int too_large = 0;
    int rc;

    if (len == 0)
        return AIB_SSE_OK;
    if (p->bom >= 0) {
        s = skip_bom(p, s, end, &too_large);
        if (s == end)
            return too_large ? AIB_SSE_TOO_LARGE : AIB_SSE_OK;
    }
    if (p->after_cr) {
        /* "\r" closing the last feed and "\n" opening this one are one
         * line end. */
        p->after_cr = 0;
        if (*s == '\n')
            s++;
    }

    while (s < end) {
        if (!nl || nl < s) {
            nl = memchr(s, '\n', (apr_size_t)(end - s));
            if (!nl)
                nl = end;
        }
        if (!cr || cr < s) {
            cr = memchr(s, '\r', (apr_size_t)(end - s));
            if (!cr)
                cr = end;
        }
        eol = nl < cr ? nl : cr;
        if (eol == end) {
            if (stash(p, s, (apr_size_t)(end - s)))
                too_large = 1;
            break;
        }
        next = eol + 1;
        if (*eol == '\r') {
            if (next == end)
                p->after_cr = 1;
            else if (*next == '\n')
                next++;
        }
        rc = end_line(p, s, (apr_size_t)(eol - s), &too_large);
        if (rc)
            return rc; /* the caller asked to stop; rest of buf unparsed */
        s = next;
    }
    return too_large ? AIB_SSE_TOO_LARGE : AIB_SSE_OK;
}

apr_size_t aib_sse_frame(char *out, const char *event, const char *data, apr_size_t len)
{
    apr_size_t n = 0, i;

    if (event) {
        apr_size_t event_len = strlen(event);

        memcpy(out, "event: ", 7);
        memcpy(out + 7, event, event_len);
        out[7 + event_len] = '\n';
        n = event_len + 8;
    }
    memcpy(out + n, "data: ", 6);
    n += 6;
    /* Byte by byte: data may lie further on in out (see sse.h). */
    for (i = 0; i < len; i++) {
        out[n++] = data[i];
        if (data[i] == '\n') {
            memcpy(out + n, "data: ", 6);
            n += 6;
        }
    }
    out[n++] = '\n';
    out[n++] = '\n';
    return n;
}

apr_size_t aib_sse_event_count(const aib_sse_parser_t *p)
{
    return p->count;
}

static void *sse_create(apr_pool_t *pool, apr_size_t max_event, aib_sse_event_fn *on_event,
                        void *ctx)
{
    return aib_sse_parser_create(pool, max_event, on_event, ctx);
}

/* A too large event is skipped, not an end: only the callback's stop counts. */
static int sse_feed(void *decoder, const char *buf, apr_size_t len)
{
    int rv = aib_sse_feed(decoder, buf, len);
    return rv == AIB_SSE_TOO_LARGE ? 0 : rv;
}

const aib_stream_framing_t aib_sse_framing = {
    aib_is_event_stream, sse_create, sse_feed, NULL, NULL
};
