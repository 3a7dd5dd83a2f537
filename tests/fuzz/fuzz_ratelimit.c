/* libFuzzer target: the rate-limit header parsers (src/ratelimit.c).
 *
 * The input is a block of response header lines ("name: value", one per
 * line, CRLF or LF). Each value, and the whole input as one value, goes
 * through aib_parse_retry_after_ms, aib_parse_retry_after,
 * aib_parse_duration and aib_parse_rfc3339; the lines also make the table
 * that aib_cooldown_ms reads, at a realistic time and at one derived from
 * the input (any int64, also negative and extreme), with default and
 * maximum cooldowns likewise, with every provider's reset headers. Beyond
 * ASan and UBSan (signed overflow is the classic bug here): waits are never
 * negative, the cooldown stays in [0, max], and the header the source
 * names gives that cooldown. */
#include <string.h>
#include <apr_tables.h>

#include "fuzz.h"
#include "provider.h"
#include "ratelimit.h"

#define NOW_MS INT64_C(1764072000000) /* 2025-11-25T12:00:00Z */

static void parse_value(const char *value, int64_t now_ms)
{
    int64_t ms, again;

    if (aib_parse_retry_after_ms(value, &ms)) {
        FUZZ_CHECK(ms >= 0);
        FUZZ_CHECK(aib_parse_retry_after_ms(value, &again) && again == ms);
    }
    if (aib_parse_retry_after(value, now_ms, &ms))
        FUZZ_CHECK(ms >= 0);
    if (aib_parse_duration(value, &ms))
        FUZZ_CHECK(ms >= 0);
    (void)aib_parse_rfc3339(value, &ms);
}

static int64_t clamp(int64_t v, int64_t max)
{
    if (max < 0)
        max = 0;
    return v < 0 ? 0 : v > max ? max : v;
}

static void cooldown(const apr_table_t *t, const aib_reset_headers_t *const *resets,
                     int64_t now_ms, int64_t def, int64_t max)
{
    const char *src;
    int64_t ms = aib_cooldown_ms(t, resets, now_ms, def, max, &src), v;
    const aib_reset_headers_t *const *r;

    FUZZ_CHECK(ms >= 0 && ms <= (max < 0 ? 0 : max));
    FUZZ_CHECK(aib_cooldown_ms(t, resets, now_ms, def, max, NULL) == ms);
    if (!src) {
        FUZZ_CHECK(ms == clamp(def, max));
    }
    else if (!strcmp(src, "retry-after-ms")) {
        FUZZ_CHECK(aib_parse_retry_after_ms(apr_table_get(t, "retry-after-ms"), &v));
        FUZZ_CHECK(ms == clamp(v, max));
    }
    else if (!strcmp(src, "Retry-After")) {
        FUZZ_CHECK(!aib_parse_retry_after_ms(apr_table_get(t, "retry-after-ms"), &v));
        FUZZ_CHECK(aib_parse_retry_after(apr_table_get(t, "retry-after"), now_ms, &v));
        FUZZ_CHECK(ms == clamp(v, max));
    }
    else {
        FUZZ_CHECK(!aib_parse_retry_after_ms(apr_table_get(t, "retry-after-ms"), &v));
        FUZZ_CHECK(!aib_parse_retry_after(apr_table_get(t, "retry-after"), now_ms, &v));
        for (r = resets; *r && strcmp((*r)->name, src); r++)
            ;
        FUZZ_CHECK(*r != NULL);   /* one of the reset headers given */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *pool = fuzz_pool();
    apr_table_t *t = apr_table_make(pool, 8);
    const aib_reset_headers_t *const *resets = aib_provider_reset_headers(pool);
    char *s = fuzz_strdup(data, size), *line, *next, *colon, *end;
    uint64_t h = fuzz_hash(data, size), seed = h;
    int64_t now_any = (int64_t)fuzz_next(&seed);

    /* The whole input as one value (NUL bytes end it, as in a C string). */
    parse_value(s, NOW_MS);
    parse_value(s, now_any);

    for (line = s; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        end = line + strlen(line);
        if (end > line && end[-1] == '\r')
            *--end = '\0';
        colon = strchr(line, ':');
        if (!colon) {
            parse_value(line, NOW_MS);
            continue;
        }
        *colon = '\0';
        parse_value(colon + 1, NOW_MS);
        parse_value(colon + 1, now_any);
        apr_table_add(t, line, colon + 1);
    }

    cooldown(t, resets, NOW_MS, 60000, 3600000);
    cooldown(t, resets, now_any, 60000, 3600000);
    cooldown(t, resets, NOW_MS, (int64_t)fuzz_next(&seed), (int64_t)fuzz_next(&seed));
    cooldown(t, resets, now_any, (int64_t)fuzz_next(&seed),
             (int64_t)(fuzz_next(&seed) % 100000));
    cooldown(NULL, resets, now_any, 1000, 5000);
    free(s);
    apr_pool_destroy(pool);
    return 0;
}
