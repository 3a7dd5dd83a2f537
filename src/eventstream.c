/* AWS event stream decoder (see eventstream.h).
 *
 * Design notes:
 * - A frame that lies whole in one feed is decoded straight from the
 *   caller's bytes; only a frame cut by the end of a feed is copied, into
 *   one buffer that starts small and doubles up to max_frame (old blocks
 *   are left to the pool, which so holds less than 2 * max_frame bytes
 *   over the whole stream). The same buffer takes a chunk's decoded JSON,
 *   which is shorter than the frame it came in.
 * - The prelude's own CRC is checked before its lengths are believed, so a
 *   corrupted length is reported as such, never waited for.
 * - Nothing is allocated per event from the pool: json-c's objects are
 *   freed once on_event returns. */
#include <string.h>
#include <strings.h>

#include <apr_base64.h>
#include <json.h>

#include "eventstream.h"
#include "request.h"

#define PRELUDE_LEN 12               /* total length, headers length, CRC */
#define MIN_FRAME (PRELUDE_LEN + 4)  /* and the message CRC */
#define INITIAL_CAP 4096             /* a typical Bedrock frame fits */

struct aib_eventstream {
    aib_sse_event_fn *on_event;
    void *ctx;
    apr_pool_t *pool;
    apr_size_t max_frame;
    unsigned char *buf;
    apr_size_t cap;
    apr_size_t have;     /* bytes of the current frame in buf */
    apr_size_t total;    /* its length once its prelude is read, else 0 */
    const char *error;   /* why the stream is malformed: set once */
};

/* The headers the decoder reads, all with string values. */
enum { H_MESSAGE_TYPE, H_EVENT_TYPE, H_EXCEPTION_TYPE, H_ERROR_CODE, H_ERROR_MESSAGE, H_COUNT };

static const char *const header_names[H_COUNT] = {
    ":message-type", ":event-type", ":exception-type", ":error-code", ":error-message"
};

typedef struct {
    const char *value;   /* NULL when the message has no such string header */
    apr_size_t len;
} header_t;

static const uint32_t crc_table[256] = {
    0x00000000, 0x77073096, 0xee0e612c, 0x990951ba, 0x076dc419, 0x706af48f,
    0xe963a535, 0x9e6495a3, 0x0edb8832, 0x79dcb8a4, 0xe0d5e91e, 0x97d2d988,
    0x09b64c2b, 0x7eb17cbd, 0xe7b82d07, 0x90bf1d91, 0x1db71064, 0x6ab020f2,
    0xf3b97148, 0x84be41de, 0x1adad47d, 0x6ddde4eb, 0xf4d4b551, 0x83d385c7,
    0x136c9856, 0x646ba8c0, 0xfd62f97a, 0x8a65c9ec, 0x14015c4f, 0x63066cd9,
    0xfa0f3d63, 0x8d080df5, 0x3b6e20c8, 0x4c69105e, 0xd56041e4, 0xa2677172,
    0x3c03e4d1, 0x4b04d447, 0xd20d85fd, 0xa50ab56b, 0x35b5a8fa, 0x42b2986c,
    0xdbbbc9d6, 0xacbcf940, 0x32d86ce3, 0x45df5c75, 0xdcd60dcf, 0xabd13d59,
    0x26d930ac, 0x51de003a, 0xc8d75180, 0xbfd06116, 0x21b4f4b5, 0x56b3c423,
    0xcfba9599, 0xb8bda50f, 0x2802b89e, 0x5f058808, 0xc60cd9b2, 0xb10be924,
    0x2f6f7c87, 0x58684c11, 0xc1611dab, 0xb6662d3d, 0x76dc4190, 0x01db7106,
    0x98d220bc, 0xefd5102a, 0x71b18589, 0x06b6b51f, 0x9fbfe4a5, 0xe8b8d433,
    0x7807c9a2, 0x0f00f934, 0x9609a88e, 0xe10e9818, 0x7f6a0dbb, 0x086d3d2d,
    0x91646c97, 0xe6635c01, 0x6b6b51f4, 0x1c6c6162, 0x856530d8, 0xf262004e,
    0x6c0695ed, 0x1b01a57b, 0x8208f4c1, 0xf50fc457, 0x65b0d9c6, 0x12b7e950,
    0x8bbeb8ea, 0xfcb9887c, 0x62dd1ddf, 0x15da2d49, 0x8cd37cf3, 0xfbd44c65,
    0x4db26158, 0x3ab551ce, 0xa3bc0074, 0xd4bb30e2, 0x4adfa541, 0x3dd895d7,
    0xa4d1c46d, 0xd3d6f4fb, 0x4369e96a, 0x346ed9fc, 0xad678846, 0xda60b8d0,
    0x44042d73, 0x33031de5, 0xaa0a4c5f, 0xdd0d7cc9, 0x5005713c, 0x270241aa,
    0xbe0b1010, 0xc90c2086, 0x5768b525, 0x206f85b3, 0xb966d409, 0xce61e49f,
    0x5edef90e, 0x29d9c998, 0xb0d09822, 0xc7d7a8b4, 0x59b33d17, 0x2eb40d81,
    0xb7bd5c3b, 0xc0ba6cad, 0xedb88320, 0x9abfb3b6, 0x03b6e20c, 0x74b1d29a,
    0xead54739, 0x9dd277af, 0x04db2615, 0x73dc1683, 0xe3630b12, 0x94643b84,
    0x0d6d6a3e, 0x7a6a5aa8, 0xe40ecf0b, 0x9309ff9d, 0x0a00ae27, 0x7d079eb1,
    0xf00f9344, 0x8708a3d2, 0x1e01f268, 0x6906c2fe, 0xf762575d, 0x806567cb,
    0x196c3671, 0x6e6b06e7, 0xfed41b76, 0x89d32be0, 0x10da7a5a, 0x67dd4acc,
    0xf9b9df6f, 0x8ebeeff9, 0x17b7be43, 0x60b08ed5, 0xd6d6a3e8, 0xa1d1937e,
    0x38d8c2c4, 0x4fdff252, 0xd1bb67f1, 0xa6bc5767, 0x3fb506dd, 0x48b2364b,
    0xd80d2bda, 0xaf0a1b4c, 0x36034af6, 0x41047a60, 0xdf60efc3, 0xa867df55,
    0x316e8eef, 0x4669be79, 0xcb61b38c, 0xbc66831a, 0x256fd2a0, 0x5268e236,
    0xcc0c7795, 0xbb0b4703, 0x220216b9, 0x5505262f, 0xc5ba3bbe, 0xb2bd0b28,
    0x2bb45a92, 0x5cb36a04, 0xc2d7ffa7, 0xb5d0cf31, 0x2cd99e8b, 0x5bdeae1d,
    0x9b64c2b0, 0xec63f226, 0x756aa39c, 0x026d930a, 0x9c0906a9, 0xeb0e363f,
    0x72076785, 0x05005713, 0x95bf4a82, 0xe2b87a14, 0x7bb12bae, 0x0cb61b38,
    0x92d28e9b, 0xe5d5be0d, 0x7cdcefb7, 0x0bdbdf21, 0x86d3d2d4, 0xf1d4e242,
    0x68ddb3f8, 0x1fda836e, 0x81be16cd, 0xf6b9265b, 0x6fb077e1, 0x18b74777,
    0x88085ae6, 0xff0f6a70, 0x66063bca, 0x11010b5c, 0x8f659eff, 0xf862ae69,
    0x616bffd3, 0x166ccf45, 0xa00ae278, 0xd70dd2ee, 0x4e048354, 0x3903b3c2,
    0xa7672661, 0xd06016f7, 0x4969474d, 0x3e6e77db, 0xaed16a4a, 0xd9d65adc,
    0x40df0b66, 0x37d83bf0, 0xa9bcae53, 0xdebb9ec5, 0x47b2cf7f, 0x30b5ffe9,
    0xbdbdf21c, 0xcabac28a, 0x53b39330, 0x24b4a3a6, 0xbad03605, 0xcdd70693,
    0x54de5729, 0x23d967bf, 0xb3667a2e, 0xc4614ab8, 0x5d681b02, 0x2a6f2b94,
    0xb40bbe37, 0xc30c8ea1, 0x5a05df1b, 0x2d02ef8d,
};

uint32_t aib_crc32(uint32_t crc, const void *buf, apr_size_t len)
{
    const unsigned char *p = buf;

    crc = ~crc;
    while (len--)
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int fail(aib_eventstream_t *d, const char *why)
{
    d->error = why;
    return AIB_FRAMING_MALFORMED;
}

/* Makes room for `need` bytes, keeping the frame held so far. */
static void reserve(aib_eventstream_t *d, apr_size_t need)
{
    apr_size_t ncap = d->cap;
    unsigned char *nbuf;

    if (need <= d->cap)
        return;
    while (ncap < need)
        ncap *= 2;
    if (ncap > d->max_frame)
        ncap = d->max_frame;
    nbuf = apr_palloc(d->pool, ncap);
    memcpy(nbuf, d->buf, d->have);
    d->buf = nbuf;
    d->cap = ncap;
}

/* Checks a prelude and takes its frame's length. */
static int start_frame(aib_eventstream_t *d, const unsigned char *prelude)
{
    uint32_t total = be32(prelude), headers = be32(prelude + 4);

    if (aib_crc32(0, prelude, 8) != be32(prelude + 8))
        return fail(d, "prelude CRC mismatch");
    if (total < MIN_FRAME || headers > total - MIN_FRAME)
        return fail(d, "impossible frame length");
    if (total > d->max_frame)
        return fail(d, "frame larger than the limit");
    d->total = total;
    return 0;
}

/* Whether the len bytes at s (NULL: none) are the literal. */
static int is(const void *s, apr_size_t len, const char *literal)
{
    return s && strlen(literal) == len && !memcmp(s, literal, len);
}

/* The bytes a header value of this type takes after its type byte, and
 * for variable lengths, how many bytes say that length (-1: no such type). */
static int value_size(unsigned type, int *len_bytes)
{
    static const signed char fixed[] = { 0, 0, 1, 2, 4, 8, -1, -1, 8, 16 };

    *len_bytes = 0;
    if (type == 6 || type == 7) {
        *len_bytes = 2;
        return 0;
    }
    return type < sizeof(fixed) ? fixed[type] : -1;
}

/* Reads the header block; only the string values of header_names are
 * kept. Returns 0 or AIB_FRAMING_MALFORMED. */
static int parse_headers(aib_eventstream_t *d, const unsigned char *p, apr_size_t len,
                         header_t *h)
{
    const unsigned char *end = p + len;

    memset(h, 0, H_COUNT * sizeof(*h));
    while (p < end) {
        apr_size_t name_len = *p++, value_len;
        const unsigned char *name = p;
        int len_bytes, size;
        unsigned type, i;

        if (name_len == 0 || (apr_size_t)(end - p) < name_len + 1)
            return fail(d, "header cut short");
        p += name_len;
        type = *p++;
        size = value_size(type, &len_bytes);
        if (size < 0)
            return fail(d, "unknown header value type");
        if ((apr_size_t)(end - p) < (apr_size_t)len_bytes)
            return fail(d, "header cut short");
        value_len = len_bytes ? (apr_size_t)p[0] << 8 | p[1] : (apr_size_t)size;
        p += len_bytes;
        if ((apr_size_t)(end - p) < value_len)
            return fail(d, "header cut short");
        for (i = 0; type == 7 && i < H_COUNT; i++) {
            if (is(name, name_len, header_names[i])) {
                h[i].value = (const char *)p;
                h[i].len = value_len;
            }
        }
        p += value_len;
    }
    return 0;
}

/* The Anthropic error type for an AWS exception name, compared without
 * case: exception messages say "throttlingException", the HTTP
 * x-amzn-ErrorType "ThrottlingException". Anthropic's own types keep
 * stream_fault() as it is: a rate_limit_error first is the key's fault,
 * the others are not. */
static const char *anthropic_type(const char *name, apr_size_t len)
{
    static const char *const map[][2] = {
        { "throttlingException", "rate_limit_error" },
        { "serviceUnavailableException", "overloaded_error" },
        { "modelTimeoutException", "timeout_error" },
        { "validationException", "invalid_request_error" },
    };
    apr_size_t i;

    for (i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strlen(map[i][0]) == len && !strncasecmp(name, map[i][0], len))
            return map[i][1];
    return "api_error";   /* internalServerException, modelStreamErrorException... */
}

/* An exception or error message as Anthropic's "error" event. The message
 * is the payload's, else the header's (an error message), else the name. */
static int on_exception(aib_eventstream_t *d, const header_t *name, const header_t *message,
                        const char *payload, apr_size_t payload_len)
{
    static const header_t unnamed = { "unknownException", 16 };
    json_object *body = aib_json_parse_object(payload, payload_len);
    json_object *text = aib_json_member(body, "message", json_type_string);
    json_object *error = json_object_new_object(), *event = json_object_new_object();
    const char *data;
    size_t len;
    int rc;

    if (!name->value)
        name = &unnamed;
    if (!text && message && message->value)
        text = json_object_new_string_len(message->value, (int)message->len);
    else if (!text)
        text = json_object_new_string_len(name->value, (int)name->len);
    else
        json_object_get(text);   /* body holds it too */
    json_object_object_add(error, "type", json_object_new_string(anthropic_type(name->value,
                                                                                name->len)));
    json_object_object_add(error, "message", text);
    json_object_object_add(error, "aws_exception", json_object_new_string_len(name->value,
                                                                              (int)name->len));
    json_object_object_add(event, "type", json_object_new_string("error"));
    json_object_object_add(event, "error", error);
    data = json_object_to_json_string_length(event, JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    rc = d->on_event(d->ctx, "error", data, len);
    json_object_put(event);
    json_object_put(body);
    return rc;
}

/* Whether s[0, len) is padded standard base64 (which apr_base64 decodes
 * without checking). */
static int is_base64(const char *s, apr_size_t len)
{
    apr_size_t i, pad = 0;

    if (len == 0 || len % 4)
        return 0;
    while (pad < 2 && s[len - 1 - pad] == '=')
        pad++;
    for (i = 0; i < len - pad; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
              || c == '+' || c == '/'))
            return 0;
    }
    return 1;
}

/* Whether the bridge can write s as an SSE event name: one line. */
static int is_event_name(const char *s)
{
    return *s && !strpbrk(s, "\r\n");
}

/* A chunk: the Anthropic event in its base64 "bytes", decoded into buf
 * (the frame it came in is no longer needed). */
static int on_chunk(aib_eventstream_t *d, const char *payload, apr_size_t payload_len)
{
    json_object *body = aib_json_parse_object(payload, payload_len);
    json_object *bytes = aib_json_member(body, "bytes", json_type_string);
    json_object *event = NULL, *type = NULL;
    unsigned char *cr;
    const char *b64 = bytes ? json_object_get_string(bytes) : NULL;
    int len = 0, rc;

    if (b64 && is_base64(b64, (apr_size_t)json_object_get_string_len(bytes))) {
        /* Decoded, it is shorter than the payload, so within max_frame. */
        reserve(d, (apr_size_t)apr_base64_decode_len(b64));
        len = apr_base64_decode_binary(d->buf, b64);
        d->buf[len] = '\0';
        /* The bridge writes the event out as SSE, where a CR ends a line.
         * In valid JSON a raw CR can only be whitespace: a space is the
         * same. */
        for (cr = d->buf; (cr = memchr(cr, '\r', (apr_size_t)(d->buf + len - cr))); )
            *cr = ' ';
        event = aib_json_parse_object((const char *)d->buf, (apr_size_t)len);
        type = aib_json_member(event, "type", json_type_string);
    }
    if (!b64)
        rc = fail(d, "chunk without its bytes");
    else if (!event)
        rc = fail(d, "chunk bytes are no base64 JSON object");
    else if (!type || !is_event_name(json_object_get_string(type)))
        rc = fail(d, "chunk event has no type");
    else
        rc = d->on_event(d->ctx, json_object_get_string(type), (const char *)d->buf,
                         (apr_size_t)len);
    json_object_put(event);
    json_object_put(body);
    return rc;
}

/* One whole frame, at f (the caller's bytes or buf). */
static int decode_frame(aib_eventstream_t *d, const unsigned char *f, apr_size_t total)
{
    apr_size_t headers_len = be32(f + 4);
    const char *payload = (const char *)f + PRELUDE_LEN + headers_len;
    apr_size_t payload_len = total - MIN_FRAME - headers_len;
    header_t h[H_COUNT];
    const header_t *type = &h[H_MESSAGE_TYPE];

    if (aib_crc32(0, f, total - 4) != be32(f + total - 4))
        return fail(d, "message CRC mismatch");
    if (parse_headers(d, f + PRELUDE_LEN, headers_len, h))
        return AIB_FRAMING_MALFORMED;
    if (is(type->value, type->len, "exception"))
        return on_exception(d, &h[H_EXCEPTION_TYPE], NULL, payload, payload_len);
    if (is(type->value, type->len, "error"))
        return on_exception(d, &h[H_ERROR_CODE], &h[H_ERROR_MESSAGE], payload, payload_len);
    if (is(type->value, type->len, "event")
        && is(h[H_EVENT_TYPE].value, h[H_EVENT_TYPE].len, "chunk"))
        return on_chunk(d, payload, payload_len);
    return 0;   /* no other event carries an answer */
}

aib_eventstream_t *aib_eventstream_create(apr_pool_t *pool, apr_size_t max_frame,
                                          aib_sse_event_fn *on_event, void *ctx)
{
    aib_eventstream_t *d = apr_pcalloc(pool, sizeof(*d));

    /* A frame's length is a u32; the prelude must always fit. */
    if (max_frame > UINT32_MAX)
        max_frame = UINT32_MAX;
    if (max_frame < MIN_FRAME)
        max_frame = MIN_FRAME;
    d->on_event = on_event;
    d->ctx = ctx;
    d->pool = pool;
    d->max_frame = max_frame;
    d->cap = max_frame < INITIAL_CAP ? max_frame : INITIAL_CAP;
    d->buf = apr_palloc(pool, d->cap);
    return d;
}

int aib_eventstream_feed(aib_eventstream_t *d, const char *buf, apr_size_t len)
{
    const unsigned char *s = (const unsigned char *)buf;
    apr_size_t n;
    int rc;

    if (d->error)
        return AIB_FRAMING_MALFORMED;
    while (len) {
        if (d->have == 0 && len >= PRELUDE_LEN) {
            if (start_frame(d, s))
                return AIB_FRAMING_MALFORMED;
            if (len >= d->total) {
                n = d->total;
                d->total = 0;
                if ((rc = decode_frame(d, s, n)))
                    return rc;
                s += n;
                len -= n;
                continue;
            }
            reserve(d, d->total);
        }
        /* A frame cut by the end of this feed: held until it is whole. */
        n = (d->total ? d->total : PRELUDE_LEN) - d->have;
        if (n > len)
            n = len;
        memcpy(d->buf + d->have, s, n);
        d->have += n;
        s += n;
        len -= n;
        if (!d->total && d->have == PRELUDE_LEN) {
            if (start_frame(d, d->buf))
                return AIB_FRAMING_MALFORMED;
            reserve(d, d->total);
        }
        if (d->total && d->have == d->total) {
            n = d->total;
            d->have = d->total = 0;
            if ((rc = decode_frame(d, d->buf, n)))
                return rc;
        }
    }
    return 0;
}

int aib_eventstream_finish(aib_eventstream_t *d)
{
    if (!d->error && d->have)
        fail(d, "stream cut inside a frame");
    return d->error ? AIB_FRAMING_MALFORMED : 0;
}

const char *aib_eventstream_error(const aib_eventstream_t *d)
{
    return d->error;
}

static int eventstream_is_stream(const apr_table_t *headers)
{
    const char *type = apr_table_get(headers, "Content-Type");

    return type && !strncasecmp(type, "application/vnd.amazon.eventstream", 34);
}

static void *eventstream_create(apr_pool_t *pool, apr_size_t max_event,
                                aib_sse_event_fn *on_event, void *ctx)
{
    return aib_eventstream_create(pool, max_event, on_event, ctx);
}

static int eventstream_feed(void *decoder, const char *buf, apr_size_t len)
{
    return aib_eventstream_feed(decoder, buf, len);
}

static const char *eventstream_error(void *decoder)
{
    return aib_eventstream_error(decoder);
}

static int eventstream_finish(void *decoder)
{
    return aib_eventstream_finish(decoder);
}

const aib_stream_framing_t aib_eventstream_framing = {
    eventstream_is_stream, eventstream_create, eventstream_feed, eventstream_error,
    eventstream_finish
};
