/* Unit tests for src/ratelimit.c: header parsers and cooldown selection.
 * The clock is fixed (NOW) so date arithmetic gives exact expectations. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "unit.h"

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_tables.h>

#include "provider.h"
#include "ratelimit.h"

/* 2026-11-25T12:00:00Z, a Wednesday. */
#define NOW INT64_C(1795608000000)
/* Parsers must leave *out alone on failure; this proves they did. */
#define SENTINEL INT64_C(-777)

#define S(x)   ((int64_t)(x) * 1000)
#define MIN(x) ((int64_t)(x) * 60000)
#define H(x)   ((int64_t)(x) * 3600000)


/* ---- helpers ----------------------------------------------------------- */

#define ASSERT_I64(a, b) check_i64((a), (b), __FILE__, __LINE__)

/* cmocka's assert_int_equal prints negatives as huge unsigned numbers;
 * this prints int64 values as they are. */
static void check_i64(int64_t got, int64_t want, const char *file, int line)
{
    if (got != want) {
        print_error("got %lld, want %lld\n", (long long)got,
                    (long long)want);
        _fail(file, line);
    }
}

/* Two-argument parsers: retry_after_ms, duration, rfc3339. */
#define OK2(fn, v, want) do {                                           \
        int64_t out_ = SENTINEL;                                        \
        if (fn((v), &out_) != 1) {                                      \
            print_error("%s(\"%s\") rejected\n", #fn, (v) ? (v) : "(null)"); \
            _fail(__FILE__, __LINE__);                                  \
        }                                                               \
        ASSERT_I64(out_, (want));                                       \
    } while (0)

#define BAD2(fn, v) do {                                                \
        int64_t out_ = SENTINEL;                                        \
        if (fn((v), &out_) != 0) {                                      \
            print_error("%s(\"%s\") accepted as %lld\n", #fn,           \
                        (v) ? (v) : "(null)", (long long)out_);         \
            _fail(__FILE__, __LINE__);                                  \
        }                                                               \
        ASSERT_I64(out_, SENTINEL);                                     \
    } while (0)

/* Retry-After, which also needs the clock. */
#define RA_OK_AT(now, v, want) do {                                     \
        int64_t out_ = SENTINEL;                                        \
        if (aib_parse_retry_after((v), (now), &out_) != 1) {            \
            print_error("Retry-After \"%s\" rejected\n", (v) ? (v) : "(null)"); \
            _fail(__FILE__, __LINE__);                                  \
        }                                                               \
        ASSERT_I64(out_, (want));                                       \
    } while (0)
#define RA_OK(v, want) RA_OK_AT(NOW, v, want)

#define RA_BAD(v) do {                                                  \
        int64_t out_ = SENTINEL;                                        \
        if (aib_parse_retry_after((v), NOW, &out_) != 0) {              \
            print_error("Retry-After \"%s\" accepted as %lld\n",        \
                        (v) ? (v) : "(null)", (long long)out_);         \
            _fail(__FILE__, __LINE__);                                  \
        }                                                               \
        ASSERT_I64(out_, SENTINEL);                                     \
    } while (0)

/* A header table from NULL-terminated name/value pairs. */
static apr_table_t *hdrs(const char *name, ...)
{
    apr_table_t *t = apr_table_make(pool, 8);
    va_list ap;

    va_start(ap, name);
    while (name != NULL) {
        apr_table_set(t, name, va_arg(ap, const char *));
        name = va_arg(ap, const char *);
    }
    va_end(ap);
    return t;
}

/* The cooldown as the bridge asks for it: every provider's reset headers. */
static int64_t cooldown(const apr_table_t *headers, int64_t now_ms, int64_t default_ms,
                        int64_t max_ms, const char **source)
{
    return aib_cooldown_ms(headers, aib_provider_reset_headers(pool), now_ms, default_ms,
                           max_ms, source);
}

/* The header aib_cooldown_ms names as the one that decided. */
#define FROM_DEFAULT         NULL
#define FROM_RETRY_AFTER_MS  "retry-after-ms"
#define FROM_RETRY_AFTER     "Retry-After"
#define FROM_OPENAI_RESET    "x-ratelimit-reset"
#define FROM_ANTHROPIC_RESET "anthropic-ratelimit-reset"

#define assert_source(got, want) do {                                    \
        const char *want_ = (want);                                     \
        if (want_)                                                      \
            assert_string_equal((got), want_);                          \
        else                                                            \
            assert_null(got);                                           \
    } while (0)

/* Cooldown with default 5000 and max 1 hour; checks value and source. */
#define COOL(t, want, want_src) do {                                    \
        const char *src_ = "unset";                                     \
        ASSERT_I64(cooldown((t), NOW, 5000, H(1), &src_), (want));      \
        assert_source(src_, (want_src));                                \
    } while (0)

/* ---- retry-after-ms ---------------------------------------------------- */

static void test_retry_after_ms_valid(void **state)
{
    (void)state;
    OK2(aib_parse_retry_after_ms, "1500", 1500);
    OK2(aib_parse_retry_after_ms, "0", 0);
    OK2(aib_parse_retry_after_ms, "007", 7);
    OK2(aib_parse_retry_after_ms, " \t1500 \t", 1500);
    /* Fractions round up, never down. */
    OK2(aib_parse_retry_after_ms, "1500.5", 1501);
    OK2(aib_parse_retry_after_ms, "1500.1", 1501);
    OK2(aib_parse_retry_after_ms, "1500.0", 1500);
    OK2(aib_parse_retry_after_ms, "1500.000", 1500);
    OK2(aib_parse_retry_after_ms, "0.001", 1);
    OK2(aib_parse_retry_after_ms, "0.0", 0);
    OK2(aib_parse_retry_after_ms, "20.999", 21);
}

static void test_retry_after_ms_overflow(void **state)
{
    (void)state;
    OK2(aib_parse_retry_after_ms, "9223372036854775806", INT64_MAX - 1);
    OK2(aib_parse_retry_after_ms, "9223372036854775807", INT64_MAX);
    OK2(aib_parse_retry_after_ms, "9223372036854775808", INT64_MAX);
    OK2(aib_parse_retry_after_ms, "99999999999999999999999", INT64_MAX);
    /* Rounding up at the top must saturate too. */
    OK2(aib_parse_retry_after_ms, "9223372036854775807.5", INT64_MAX);
    OK2(aib_parse_retry_after_ms, "9223372036854775806.5", INT64_MAX);
    OK2(aib_parse_retry_after_ms, "99999999999999999999999.9", INT64_MAX);
}

static void test_retry_after_ms_invalid(void **state)
{
    (void)state;
    BAD2(aib_parse_retry_after_ms, NULL);
    BAD2(aib_parse_retry_after_ms, "");
    BAD2(aib_parse_retry_after_ms, " \t ");
    BAD2(aib_parse_retry_after_ms, "-1");
    BAD2(aib_parse_retry_after_ms, "-0");
    BAD2(aib_parse_retry_after_ms, "-1500.5");
    BAD2(aib_parse_retry_after_ms, "+5");
    BAD2(aib_parse_retry_after_ms, "abc");
    BAD2(aib_parse_retry_after_ms, "1500x");
    BAD2(aib_parse_retry_after_ms, "1500ms");
    BAD2(aib_parse_retry_after_ms, "15 00");
    BAD2(aib_parse_retry_after_ms, "1500.");
    BAD2(aib_parse_retry_after_ms, ".5");
    BAD2(aib_parse_retry_after_ms, "1.5.5");
    BAD2(aib_parse_retry_after_ms, "1e3");
    BAD2(aib_parse_retry_after_ms, "inf");
    BAD2(aib_parse_retry_after_ms, "nan");
    BAD2(aib_parse_retry_after_ms, "0x10");
    BAD2(aib_parse_retry_after_ms, "1500\n"); /* only SP and HTAB are OWS */
}

/* ---- Retry-After ------------------------------------------------------- */

static void test_retry_after_delta(void **state)
{
    (void)state;
    RA_OK("120", S(120));
    RA_OK("0", 0);
    RA_OK("1", 1000);
    RA_OK(" \t5\t ", S(5));
    RA_OK("9223372036854775", INT64_C(9223372036854775000));
    RA_OK("9223372036854776", INT64_MAX); /* * 1000 would overflow */
    RA_OK("99999999999999999999999", INT64_MAX);
}

static void test_retry_after_delta_invalid(void **state)
{
    (void)state;
    RA_BAD(NULL);
    RA_BAD("");
    RA_BAD("  \t");
    RA_BAD("-5");
    RA_BAD("-0");
    RA_BAD("+5");
    RA_BAD("1.5");
    RA_BAD("12abc");
    RA_BAD("5 s");
    RA_BAD("abc");
    RA_BAD("0x10");
}

static void test_retry_after_http_date_future(void **state)
{
    (void)state;
    /* The same instant, now + 30 s, in each of the three formats. */
    RA_OK("Wed, 25 Nov 2026 12:00:30 GMT", S(30));
    RA_OK("Wednesday, 25-Nov-26 12:00:30 GMT", S(30));
    RA_OK("Wed Nov 25 12:00:30 2026", S(30));
    RA_OK(" \tWed, 25 Nov 2026 12:00:30 GMT \t", S(30));
    RA_OK("\tWed Nov 25 12:00:30 2026 ", S(30));

    RA_OK("Wed, 25 Nov 2026 13:00:00 GMT", H(1));
    /* asctime pads one-digit days with a space, IMF-fixdate with a 0. */
    RA_OK("Tue Dec  1 12:00:00 2026", H(6 * 24));
    RA_OK("Tue Dec 01 12:00:00 2026", H(6 * 24));
    RA_OK("Tue, 01 Dec 2026 12:00:00 GMT", H(6 * 24));
    RA_OK("Tuesday, 01-Dec-26 12:00:00 GMT", H(6 * 24));
    /* Across a year boundary and onto a leap day. */
    RA_OK("Fri, 01 Jan 2027 00:00:00 GMT", H(36 * 24 + 12));
    RA_OK("Tue, 29 Feb 2028 00:00:00 GMT",
          INT64_C(1835395200000) - NOW);
    /* A leap second lands on the next minute. */
    RA_OK("Wed, 25 Nov 2026 12:00:60 GMT", MIN(1));
}

static void test_retry_after_http_date_past(void **state)
{
    (void)state;
    /* RFC 9110's examples, all in 1994. */
    RA_OK("Sun, 06 Nov 1994 08:49:37 GMT", 0);
    RA_OK("Sunday, 06-Nov-94 08:49:37 GMT", 0);
    RA_OK("Sun Nov  6 08:49:37 1994", 0);
    /* One second ago must be 0, not 1000 (no abs()). */
    RA_OK("Wed, 25 Nov 2026 11:59:59 GMT", 0);
    RA_OK("Wed, 25 Nov 2026 12:00:00 GMT", 0);
    RA_OK("Thu, 01 Jan 1970 00:00:00 GMT", 0); /* not mistaken for failure */
    /* Check the 1994 date is really parsed, with a clock before it. */
    RA_OK_AT(INT64_C(784111777000) - 2500, "Sun, 06 Nov 1994 08:49:37 GMT",
             2500);
    RA_OK_AT(INT64_C(784111777000) - 2500, "Sunday, 06-Nov-94 08:49:37 GMT",
             2500);
    RA_OK_AT(INT64_C(784111777000) - 2500, "Sun Nov  6 08:49:37 1994", 2500);
}

static void test_retry_after_rfc850_century(void **state)
{
    int64_t imf = SENTINEL;

    (void)state;
    /* RFC 9110: a two-digit year more than 50 years ahead is in the past.
     * From 2026, "76" is 2076 (exactly 50 ahead) but "77" is 1977. */
    assert_int_equal(aib_parse_retry_after("Wed, 25 Nov 2076 12:00:30 GMT",
                                           NOW, &imf), 1);
    ASSERT_I64(imf, INT64_C(3373531230000) - NOW);
    RA_OK("Wednesday, 25-Nov-76 12:00:30 GMT", imf);
    RA_OK("Thursday, 25-Nov-77 12:00:30 GMT", 0);
    /* From 1994, "26" is 2026 (future), and "44" is also ahead. */
    RA_OK_AT(INT64_C(784111777000), "Wednesday, 25-Nov-26 12:00:30 GMT",
             NOW + S(30) - INT64_C(784111777000));
    RA_OK_AT(INT64_C(784111777000), "Friday, 25-Nov-44 12:00:30 GMT",
             INT64_C(2363688030000) - INT64_C(784111777000));
    /* "45" from 1994 would be 51 years ahead: it is 1945, in the past. */
    RA_OK_AT(INT64_C(784111777000), "Saturday, 25-Nov-45 12:00:30 GMT", 0);
}

static void test_retry_after_http_date_invalid(void **state)
{
    (void)state;
    RA_BAD("Wed, 25 Nov 2026 12:00:30 GMT x");   /* trailing junk */
    RA_BAD("Wed, 25 Nov 2026 12:00:30 GMTx");
    RA_BAD("Wed Nov 25 12:00:30 2026 GMT");
    RA_BAD("Wednesday, 25-Nov-26 12:00:30 GMT;");
    RA_BAD("Wed, 25 Nov 2026 12:00:30 PST");     /* zone must be GMT */
    RA_BAD("Wed, 25 Nov 2026 12:00:30 UTC");
    RA_BAD("Wed, 25 Nov 2026 12:00:30");
    RA_BAD("Xyz, 25 Nov 2026 12:00:30 GMT");     /* weekday */
    RA_BAD("wed, 25 Nov 2026 12:00:30 GMT");     /* names are case-sensitive */
    RA_BAD("Wed, 25 nov 2026 12:00:30 GMT");
    RA_BAD("Wed, 25 Foo 2026 12:00:30 GMT");
    RA_BAD("25 Nov 2026 12:00:30 GMT");          /* weekday missing */
    RA_BAD("Wed 25 Nov 2026 12:00:30 GMT");      /* comma missing */
    RA_BAD("Wed,  25 Nov 2026 12:00:30 GMT");    /* extra space */
    RA_BAD("Wed, 5 Nov 2026 12:00:30 GMT");      /* IMF day is 2DIGIT */
    RA_BAD("Wed, 25 Nov 26 12:00:30 GMT");       /* IMF year is 4DIGIT */
    RA_BAD("Wednesday, 25-Nov-2026 12:00:30 GMT");
    RA_BAD("Wednesday, 25 Nov 2026 12:00:30 GMT");
    RA_BAD("Wed Nov 25 12:00:30 26");
    RA_BAD("Wed Nov 25 12:00:30");
    RA_BAD("Wed, 32 Nov 2026 12:00:30 GMT");     /* ranges */
    RA_BAD("Mon, 31 Nov 2026 12:00:30 GMT");
    RA_BAD("Mon, 00 Nov 2026 12:00:30 GMT");
    RA_BAD("Mon, 29 Feb 2027 12:00:30 GMT");     /* 2027 is not leap */
    RA_BAD("Mon, 29 Feb 2100 12:00:30 GMT");     /* nor is 2100 */
    RA_BAD("Wed, 25 Nov 2026 24:00:00 GMT");
    RA_BAD("Wed, 25 Nov 2026 12:60:00 GMT");
    RA_BAD("Wed, 25 Nov 2026 12:00:61 GMT");
    RA_BAD("Wed, 25 Nov 2026 12:0:30 GMT");
    RA_BAD("Wed, 25 Nov 2026 12:00 GMT");
    RA_BAD("Wed");
    RA_BAD("Wednesday");
    RA_BAD("tomorrow");
}

/* ---- Go durations ------------------------------------------------------ */

static void test_duration_units(void **state)
{
    (void)state;
    OK2(aib_parse_duration, "1h", H(1));
    OK2(aib_parse_duration, "1m", MIN(1));
    OK2(aib_parse_duration, "1s", S(1));
    OK2(aib_parse_duration, "20ms", 20);
    OK2(aib_parse_duration, "1000us", 1);
    OK2(aib_parse_duration, "1\xc2\xb5s", 1);    /* micro sign */
    OK2(aib_parse_duration, "2000\xce\xbcs", 2); /* Greek mu */
    OK2(aib_parse_duration, "3000000ns", 3);
    /* Below a millisecond rounds up. */
    OK2(aib_parse_duration, "1500us", 2);
    OK2(aib_parse_duration, "1ns", 1);
    OK2(aib_parse_duration, "1000001ns", 2);
    OK2(aib_parse_duration, "0.5ms", 1);
    OK2(aib_parse_duration, "0.0001s", 1);
    /* Zero. */
    OK2(aib_parse_duration, "0", 0);
    OK2(aib_parse_duration, "0s", 0);
    OK2(aib_parse_duration, "0ms", 0);
    OK2(aib_parse_duration, "0.000ns", 0);
    /* Fractions. */
    OK2(aib_parse_duration, "0.5s", 500);
    OK2(aib_parse_duration, ".5s", 500);
    OK2(aib_parse_duration, "1.s", S(1));
    OK2(aib_parse_duration, "1.5h", MIN(90));
    OK2(aib_parse_duration, "1.25m", S(75));
    OK2(aib_parse_duration, "2.5ms", 3);
    OK2(aib_parse_duration, " \t20ms\t ", 20);
}

static void test_duration_exact(void **state)
{
    (void)state;
    /* Values that binary floating point gets slightly wrong; with rounding
     * up, any error would show as one extra millisecond. */
    OK2(aib_parse_duration, "0.1s", 100);
    OK2(aib_parse_duration, "0.3s", 300);
    OK2(aib_parse_duration, "0.7s", 700);
    OK2(aib_parse_duration, "0.001s", 1);
    OK2(aib_parse_duration, "1.1m", S(66));
    OK2(aib_parse_duration, "0.1h", MIN(6));
    OK2(aib_parse_duration, "4.35s", 4350);
    /* Tiny remainders still round up. */
    OK2(aib_parse_duration, "1.0000000001s", 1001);
    OK2(aib_parse_duration, "0.000000001h", 1);
    OK2(aib_parse_duration, "0.999999999999s", S(1));
    OK2(aib_parse_duration, "0.00000000000000000000000001s", 1);
}

static void test_duration_combos(void **state)
{
    (void)state;
    OK2(aib_parse_duration, "6m0s", MIN(6));
    OK2(aib_parse_duration, "1h2m3.5s", H(1) + MIN(2) + 3500);
    OK2(aib_parse_duration, "1m30s", S(90));
    OK2(aib_parse_duration, "2h45m", MIN(165));
    OK2(aib_parse_duration, "1s500ms", 1500);
    OK2(aib_parse_duration, "1s1s", S(2));
    OK2(aib_parse_duration, "1ms500us", 2);
    OK2(aib_parse_duration, "1ms500us500000ns", 2);
    OK2(aib_parse_duration, "999us999us2us", 2);
    OK2(aib_parse_duration, "1h0m0s0ms0us0ns", H(1));
    OK2(aib_parse_duration, "0.5h0.5m0.5s", MIN(30) + S(30) + 500);
    OK2(aib_parse_duration, " 6m0s\t", MIN(6));
}

static void test_duration_overflow(void **state)
{
    (void)state;
    OK2(aib_parse_duration, "99999999999999999999999s", INT64_MAX);
    OK2(aib_parse_duration, "9223372036854775807h", INT64_MAX);
    OK2(aib_parse_duration, "2562047788015h", INT64_C(9223372036854000000));
    OK2(aib_parse_duration, "2562047788016h", INT64_MAX);
    OK2(aib_parse_duration, "9223372036854775807ms", INT64_MAX);
    OK2(aib_parse_duration, "9223372036854775807ms1ms", INT64_MAX);
    OK2(aib_parse_duration, "9223372036854775807ms1ns", INT64_MAX);
    OK2(aib_parse_duration, "9223372036854775806ms1ns", INT64_MAX);
    OK2(aib_parse_duration, "9223372036854775806ms", INT64_MAX - 1);
    /* Huge in ns is still representable in ms, and exact. */
    OK2(aib_parse_duration, "99999999999999999999999ns",
        INT64_C(100000000000000000));
    OK2(aib_parse_duration, "999999999999999999000us",
        INT64_C(999999999999999999));
    OK2(aib_parse_duration, "99999999999999999999999us", INT64_MAX);
    OK2(aib_parse_duration, "99999999999999999999999999ns", INT64_MAX);
}

static void test_duration_invalid(void **state)
{
    (void)state;
    BAD2(aib_parse_duration, NULL);
    BAD2(aib_parse_duration, "");
    BAD2(aib_parse_duration, " \t");
    BAD2(aib_parse_duration, "1");       /* unit required except for "0" */
    BAD2(aib_parse_duration, "10");
    BAD2(aib_parse_duration, "00");
    BAD2(aib_parse_duration, "1s5");
    BAD2(aib_parse_duration, "s");
    BAD2(aib_parse_duration, "ms");
    BAD2(aib_parse_duration, "-1s");
    BAD2(aib_parse_duration, "-0s");
    BAD2(aib_parse_duration, "+1s");
    BAD2(aib_parse_duration, "1x");
    BAD2(aib_parse_duration, "1d");
    BAD2(aib_parse_duration, "1S");
    BAD2(aib_parse_duration, "1sx");
    BAD2(aib_parse_duration, "1mss");
    BAD2(aib_parse_duration, "1s-");
    BAD2(aib_parse_duration, "1 s");
    BAD2(aib_parse_duration, "1s 2m");
    BAD2(aib_parse_duration, "abc");
    BAD2(aib_parse_duration, ".s");
    BAD2(aib_parse_duration, ".");
    BAD2(aib_parse_duration, "1..5s");
    BAD2(aib_parse_duration, "1.5.5s");
    BAD2(aib_parse_duration, "1e3s");
    BAD2(aib_parse_duration, "1\xc2s");       /* truncated UTF-8 */
    BAD2(aib_parse_duration, "1s\n");
}

/* ---- RFC 3339 ---------------------------------------------------------- */

static void test_rfc3339_valid(void **state)
{
    (void)state;
    OK2(aib_parse_rfc3339, "1970-01-01T00:00:00Z", 0);
    OK2(aib_parse_rfc3339, "2000-01-01T00:00:00Z", INT64_C(946684800000));
    OK2(aib_parse_rfc3339, "2026-11-25T12:00:00Z", NOW);
    OK2(aib_parse_rfc3339, "2026-11-25T12:00:30Z", NOW + S(30));
    OK2(aib_parse_rfc3339, "2028-02-29T00:00:00Z", INT64_C(1835395200000));
    OK2(aib_parse_rfc3339, "1969-12-31T23:59:59Z", -1000);
    OK2(aib_parse_rfc3339, "2026-11-25T12:00:60Z", NOW + MIN(1));
    /* Lower case, a space separator, surrounding whitespace. */
    OK2(aib_parse_rfc3339, "2026-11-25t12:00:30z", NOW + S(30));
    OK2(aib_parse_rfc3339, "2026-11-25 12:00:30Z", NOW + S(30));
    OK2(aib_parse_rfc3339, " \t2026-11-25T12:00:30Z\t ", NOW + S(30));
    /* Offsets: all of these are 12:00:30 UTC. */
    OK2(aib_parse_rfc3339, "2026-11-25T13:00:30+01:00", NOW + S(30));
    OK2(aib_parse_rfc3339, "2026-11-25T06:30:30-05:30", NOW + S(30));
    OK2(aib_parse_rfc3339, "2026-11-26T00:00:30+12:00", NOW + S(30));
    OK2(aib_parse_rfc3339, "2026-11-25T00:15:30-11:45", NOW + S(30));
    OK2(aib_parse_rfc3339, "2026-11-25T12:00:30+00:00", NOW + S(30));
    OK2(aib_parse_rfc3339, "2026-11-25T12:00:30-00:00", NOW + S(30));
    /* Fractions: to ms, rounding up anything finer. */
    OK2(aib_parse_rfc3339, "2026-11-25T12:00:30.5Z", NOW + 30500);
    OK2(aib_parse_rfc3339, "2026-11-25T12:00:30.05Z", NOW + 30050);
    OK2(aib_parse_rfc3339, "2026-11-25T12:00:30.123Z", NOW + 30123);
    OK2(aib_parse_rfc3339, "2026-11-25T12:00:30.123000Z", NOW + 30123);
    OK2(aib_parse_rfc3339, "2026-11-25T12:00:30.1231Z", NOW + 30124);
    OK2(aib_parse_rfc3339, "2026-11-25T12:00:30.000Z", NOW + 30000);
    OK2(aib_parse_rfc3339, "2026-11-25T12:00:30.999999999Z", NOW + 31000);
    OK2(aib_parse_rfc3339, "2026-11-25T13:00:30.25+01:00", NOW + 30250);
}

static void test_rfc3339_invalid(void **state)
{
    (void)state;
    BAD2(aib_parse_rfc3339, NULL);
    BAD2(aib_parse_rfc3339, "");
    BAD2(aib_parse_rfc3339, "  ");
    BAD2(aib_parse_rfc3339, "tomorrow");
    BAD2(aib_parse_rfc3339, "2026-11-25");
    BAD2(aib_parse_rfc3339, "2026-11-25T12:00:30");     /* no offset */
    BAD2(aib_parse_rfc3339, "2026-11-25T12:00Z");
    BAD2(aib_parse_rfc3339, "2026-11-25X12:00:30Z");
    BAD2(aib_parse_rfc3339, "2026-11-25T12:00:30ZZ");   /* trailing junk */
    BAD2(aib_parse_rfc3339, "2026-11-25T12:00:30Z x");
    BAD2(aib_parse_rfc3339, "2026-11-25T12:00:30+01:00Z");
    BAD2(aib_parse_rfc3339, "2026-11-25T12:00:30.Z");
    BAD2(aib_parse_rfc3339, "2026-11-25T12:00:30,5Z");
    BAD2(aib_parse_rfc3339, "26-11-25T12:00:30Z");
    BAD2(aib_parse_rfc3339, "2026-1-25T12:00:30Z");
    BAD2(aib_parse_rfc3339, "-2026-11-25T12:00:30Z");
    BAD2(aib_parse_rfc3339, "2026-13-01T00:00:00Z");    /* ranges */
    BAD2(aib_parse_rfc3339, "2026-00-10T00:00:00Z");
    BAD2(aib_parse_rfc3339, "2026-11-00T00:00:00Z");
    BAD2(aib_parse_rfc3339, "2026-11-31T00:00:00Z");
    BAD2(aib_parse_rfc3339, "2027-02-29T00:00:00Z");
    BAD2(aib_parse_rfc3339, "2026-11-25T24:00:00Z");
    BAD2(aib_parse_rfc3339, "2026-11-25T12:60:00Z");
    BAD2(aib_parse_rfc3339, "2026-11-25T12:00:61Z");
    BAD2(aib_parse_rfc3339, "2026-11-25T12:00:30+24:00");
    BAD2(aib_parse_rfc3339, "2026-11-25T12:00:30+01:60");
    BAD2(aib_parse_rfc3339, "2026-11-25T12:00:30+0100");
    BAD2(aib_parse_rfc3339, "2026-11-25T12:00:30+01");
    BAD2(aib_parse_rfc3339, "2026-11-25T12:00:30 +01:00");
    BAD2(aib_parse_rfc3339, "2026-11-25T12:00:30 Z");
}

/* ---- aib_cooldown_ms --------------------------------------------------- */

static void test_precedence(void **state)
{
    apr_table_t *t = hdrs("retry-after-ms", "1000",
                          "Retry-After", "2",
                          "x-ratelimit-reset-requests", "3s",
                          "anthropic-ratelimit-requests-reset",
                          "2026-11-25T12:00:04Z",
                          NULL);

    (void)state;
    COOL(t, 1000, FROM_RETRY_AFTER_MS);
    apr_table_unset(t, "retry-after-ms");
    COOL(t, S(2), FROM_RETRY_AFTER);
    apr_table_unset(t, "Retry-After");
    COOL(t, S(3), FROM_OPENAI_RESET);
    apr_table_unset(t, "x-ratelimit-reset-requests");
    COOL(t, S(4), FROM_ANTHROPIC_RESET);
    apr_table_unset(t, "anthropic-ratelimit-requests-reset");
    COOL(t, 5000, FROM_DEFAULT);

    /* Precedence is by header, not by size: a later, longer one loses. */
    COOL(hdrs("retry-after-ms", "10", "Retry-After", "60", NULL), 10,
         FROM_RETRY_AFTER_MS);
    COOL(hdrs("Retry-After", "60", "x-ratelimit-reset-tokens", "1s", NULL),
         S(60), FROM_RETRY_AFTER);
    COOL(hdrs("x-ratelimit-reset-tokens", "1s",
              "anthropic-ratelimit-tokens-reset", "2026-11-25T12:10:00Z",
              NULL), S(1), FROM_OPENAI_RESET);
}

static void test_invalid_falls_through(void **state)
{
    apr_table_t *t = hdrs("retry-after-ms", "abc",
                          "Retry-After", "soon",
                          "x-ratelimit-reset-requests", "3 s",
                          "x-ratelimit-reset-tokens", "-3s",
                          "anthropic-ratelimit-requests-reset",
                          "2026-11-25T12:00:04Z",
                          NULL);

    (void)state;
    COOL(t, S(4), FROM_ANTHROPIC_RESET);
    apr_table_set(t, "anthropic-ratelimit-requests-reset", "12:00:04");
    COOL(t, 5000, FROM_DEFAULT);
    apr_table_set(t, "Retry-After", "7");
    COOL(t, S(7), FROM_RETRY_AFTER);
    apr_table_set(t, "retry-after-ms", "");
    COOL(t, S(7), FROM_RETRY_AFTER);
    apr_table_set(t, "retry-after-ms", " \t ");
    COOL(t, S(7), FROM_RETRY_AFTER);
    apr_table_set(t, "retry-after-ms", "-1");
    COOL(t, S(7), FROM_RETRY_AFTER);
    apr_table_set(t, "retry-after-ms", "8.5");
    COOL(t, 9, FROM_RETRY_AFTER_MS);
}

static void test_zero_is_a_value(void **state)
{
    (void)state;
    /* A valid 0 decides; it must not fall through to the next source. */
    COOL(hdrs("retry-after-ms", "0", "Retry-After", "120", NULL), 0,
         FROM_RETRY_AFTER_MS);
    COOL(hdrs("Retry-After", "0", "x-ratelimit-reset-tokens", "9s", NULL), 0,
         FROM_RETRY_AFTER);
    COOL(hdrs("Retry-After", "Sun, 06 Nov 1994 08:49:37 GMT",
              "x-ratelimit-reset-tokens", "9s", NULL), 0,
         FROM_RETRY_AFTER);
    COOL(hdrs("x-ratelimit-reset-tokens", "0s",
              "anthropic-ratelimit-tokens-reset", "2026-11-25T12:00:09Z",
              NULL), 0, FROM_OPENAI_RESET);
    COOL(hdrs("anthropic-ratelimit-tokens-reset", "2026-11-25T11:00:00Z",
              NULL), 0, FROM_ANTHROPIC_RESET);
}

static void test_openai_rules(void **state)
{
    (void)state;
    /* Nothing exhausted: the longer, whichever header it is in. */
    COOL(hdrs("x-ratelimit-reset-requests", "1s",
              "x-ratelimit-reset-tokens", "6m0s", NULL),
         MIN(6), FROM_OPENAI_RESET);
    COOL(hdrs("x-ratelimit-reset-requests", "6m0s",
              "x-ratelimit-reset-tokens", "1s", NULL),
         MIN(6), FROM_OPENAI_RESET);
    COOL(hdrs("x-ratelimit-reset-requests", "1s",
              "x-ratelimit-remaining-requests", "10",
              "x-ratelimit-reset-tokens", "6m0s",
              "x-ratelimit-remaining-tokens", "5000", NULL),
         MIN(6), FROM_OPENAI_RESET);
    /* The exhausted one wins even when shorter. */
    COOL(hdrs("x-ratelimit-reset-requests", "1s",
              "x-ratelimit-remaining-requests", "0",
              "x-ratelimit-reset-tokens", "6m0s",
              "x-ratelimit-remaining-tokens", "5000", NULL),
         S(1), FROM_OPENAI_RESET);
    COOL(hdrs("x-ratelimit-reset-requests", "6m0s",
              "x-ratelimit-remaining-requests", "7",
              "x-ratelimit-reset-tokens", "20ms",
              "x-ratelimit-remaining-tokens", " 0\t", NULL),
         20, FROM_OPENAI_RESET);
    /* Both exhausted: the longer of them. */
    COOL(hdrs("x-ratelimit-reset-requests", "20s",
              "x-ratelimit-remaining-requests", "0",
              "x-ratelimit-reset-tokens", "6m0s",
              "x-ratelimit-remaining-tokens", "0", NULL),
         MIN(6), FROM_OPENAI_RESET);
    COOL(hdrs("x-ratelimit-reset-requests", "6m0s",
              "x-ratelimit-remaining-requests", "0",
              "x-ratelimit-reset-tokens", "20s",
              "x-ratelimit-remaining-tokens", "0", NULL),
         MIN(6), FROM_OPENAI_RESET);
    /* Exhausted but its reset unusable: fall back to the other one. */
    COOL(hdrs("x-ratelimit-reset-requests", "garbage",
              "x-ratelimit-remaining-requests", "0",
              "x-ratelimit-reset-tokens", "2s", NULL),
         S(2), FROM_OPENAI_RESET);
    /* Non-zero, empty or junk remaining counts do not mean exhausted. */
    COOL(hdrs("x-ratelimit-reset-requests", "1s",
              "x-ratelimit-remaining-requests", "",
              "x-ratelimit-reset-tokens", "3s",
              "x-ratelimit-remaining-tokens", "0x", NULL),
         S(3), FROM_OPENAI_RESET);
    COOL(hdrs("x-ratelimit-reset-requests", "1s",
              "x-ratelimit-remaining-requests", "10",
              "x-ratelimit-reset-tokens", "3s",
              "x-ratelimit-remaining-tokens", "01", NULL),
         S(3), FROM_OPENAI_RESET);
    /* Remaining counts alone decide nothing. */
    COOL(hdrs("x-ratelimit-remaining-requests", "0",
              "x-ratelimit-remaining-tokens", "0", NULL),
         5000, FROM_DEFAULT);
}

static void test_anthropic_rules(void **state)
{
    apr_table_t *t = hdrs(
        "anthropic-ratelimit-requests-reset", "2026-11-25T12:00:30Z",
        "anthropic-ratelimit-tokens-reset", "2026-11-25T12:01:00Z",
        "anthropic-ratelimit-input-tokens-reset", "2026-11-25T12:00:10Z",
        "anthropic-ratelimit-output-tokens-reset", "2026-11-25T12:00:20Z",
        "anthropic-ratelimit-requests-remaining", "49",
        "anthropic-ratelimit-tokens-remaining", "1000",
        NULL);

    (void)state;
    /* Nothing exhausted: the longest. */
    COOL(t, S(60), FROM_ANTHROPIC_RESET);
    /* Each kind, when it alone is exhausted, decides. */
    apr_table_set(t, "anthropic-ratelimit-requests-remaining", "0");
    COOL(t, S(30), FROM_ANTHROPIC_RESET);
    apr_table_set(t, "anthropic-ratelimit-requests-remaining", "1");
    apr_table_set(t, "anthropic-ratelimit-input-tokens-remaining", "0");
    COOL(t, S(10), FROM_ANTHROPIC_RESET);
    apr_table_set(t, "anthropic-ratelimit-output-tokens-remaining", "0");
    COOL(t, S(20), FROM_ANTHROPIC_RESET); /* longest exhausted */
    apr_table_set(t, "anthropic-ratelimit-input-tokens-remaining", "5");
    COOL(t, S(20), FROM_ANTHROPIC_RESET);
    apr_table_set(t, "anthropic-ratelimit-output-tokens-remaining", "5");
    apr_table_set(t, "anthropic-ratelimit-tokens-remaining", "0");
    COOL(t, S(60), FROM_ANTHROPIC_RESET);
    /* An exhausted limit that has already reset: 0, not the others. */
    apr_table_set(t, "anthropic-ratelimit-tokens-reset",
                  "2026-11-25T11:59:00Z");
    COOL(t, 0, FROM_ANTHROPIC_RESET);
    /* Offsets and fractions reach the cooldown. */
    COOL(hdrs("anthropic-ratelimit-tokens-reset",
              "2026-11-25T13:00:30+01:00", NULL),
         S(30), FROM_ANTHROPIC_RESET);
    COOL(hdrs("anthropic-ratelimit-output-tokens-reset",
              "2026-11-25T12:00:30.5Z", NULL),
         30500, FROM_ANTHROPIC_RESET);
    /* Invalid resets are skipped, valid ones still count. */
    COOL(hdrs("anthropic-ratelimit-requests-reset", "soon",
              "anthropic-ratelimit-requests-remaining", "0",
              "anthropic-ratelimit-input-tokens-reset",
              "2026-11-25T12:00:05Z", NULL),
         S(5), FROM_ANTHROPIC_RESET);
}

static void test_clamp(void **state)
{
    const char *src = "unset";

    (void)state;
    ASSERT_I64(cooldown(hdrs("retry-after-ms", "999999", NULL), NOW,
                        5000, 60000, &src), 60000);
    assert_source(src, FROM_RETRY_AFTER_MS);
    ASSERT_I64(cooldown(hdrs("retry-after-ms", "60000", NULL), NOW,
                        5000, 60000, &src), 60000);
    ASSERT_I64(cooldown(hdrs("retry-after-ms", "59999", NULL), NOW,
                        5000, 60000, &src), 59999);
    ASSERT_I64(cooldown(hdrs("retry-after-ms",
                                    "99999999999999999999999", NULL),
                               NOW, 5000, 60000, &src), 60000);
    ASSERT_I64(cooldown(hdrs("Retry-After",
                                    "99999999999999999999999", NULL),
                               NOW, 5000, 60000, &src), 60000);
    assert_source(src, FROM_RETRY_AFTER);
    ASSERT_I64(cooldown(hdrs("Retry-After",
                                    "99999999999999999999999", NULL),
                               NOW, 5000, INT64_MAX, &src), INT64_MAX);
    ASSERT_I64(cooldown(hdrs("x-ratelimit-reset-tokens", "2h", NULL),
                        NOW, 5000, 60000, &src), 60000);
    assert_source(src, FROM_OPENAI_RESET);
    ASSERT_I64(cooldown(hdrs("anthropic-ratelimit-tokens-reset",
                                    "2099-01-01T00:00:00Z", NULL),
                               NOW, 5000, 60000, &src), 60000);
    assert_source(src, FROM_ANTHROPIC_RESET);
    /* The default is clamped as well. */
    ASSERT_I64(cooldown(hdrs(NULL), NOW, 90000, 60000, &src), 60000);
    assert_source(src, FROM_DEFAULT);
    ASSERT_I64(cooldown(hdrs(NULL), NOW, -5, 60000, &src), 0);
    ASSERT_I64(cooldown(hdrs(NULL), NOW, INT64_MIN, 60000, &src), 0);
    ASSERT_I64(cooldown(hdrs("retry-after-ms", "5", NULL), NOW,
                        5000, 0, &src), 0);
    ASSERT_I64(cooldown(hdrs("retry-after-ms", "5", NULL), NOW,
                        5000, -10, &src), 0);
}

static void test_source_and_edges(void **state)
{
    const char *src = "unset";

    (void)state;
    /* source may be NULL. */
    ASSERT_I64(cooldown(hdrs("Retry-After", "3", NULL), NOW, 5000,
                        60000, NULL), S(3));
    /* No headers at all: the default, and source is reset to DEFAULT. */
    ASSERT_I64(cooldown(hdrs(NULL), NOW, 5000, 60000, &src), 5000);
    assert_source(src, FROM_DEFAULT);
    src = "unset";
    ASSERT_I64(cooldown(NULL, NOW, 5000, 60000, &src), 5000);
    assert_source(src, FROM_DEFAULT);
    /* Header names are case-insensitive. */
    COOL(hdrs("RETRY-AFTER-MS", "250", NULL), 250,
         FROM_RETRY_AFTER_MS);
    COOL(hdrs("retry-after", "4", NULL), S(4), FROM_RETRY_AFTER);
    COOL(hdrs("X-RateLimit-Reset-Tokens", "1m",
              "X-RateLimit-Remaining-Tokens", "0",
              "X-RateLimit-Reset-Requests", "2m", NULL),
         MIN(1), FROM_OPENAI_RESET);
    COOL(hdrs("Anthropic-RateLimit-Tokens-Reset", "2026-11-25T12:00:30Z",
              NULL), S(30), FROM_ANTHROPIC_RESET);
}

static void test_only_the_resets_given(void **state)
{
    const aib_reset_headers_t *openai_only[] = { aib_provider_openai.reset_headers, NULL };
    apr_table_t *t = hdrs("anthropic-ratelimit-tokens-reset", "2026-11-25T12:00:30Z", NULL);
    const char *src = "unset";

    (void)state;
    /* Reset headers no description lists are not read. */
    ASSERT_I64(aib_cooldown_ms(t, openai_only, NOW, 5000, H(1), &src), 5000);
    assert_source(src, FROM_DEFAULT);
    ASSERT_I64(aib_cooldown_ms(t, NULL, NOW, 5000, H(1), &src), 5000);
    assert_source(src, FROM_DEFAULT);
    apr_table_set(t, "x-ratelimit-reset-tokens", "2s");
    ASSERT_I64(aib_cooldown_ms(t, openai_only, NOW, 5000, H(1), &src), S(2));
    assert_source(src, FROM_OPENAI_RESET);
}

static void test_extreme_clock(void **state)
{
    const char *src;

    (void)state;
    /* Subtractions against an absurd clock saturate instead of
     * overflowing (run under -fsanitize=undefined). */
    RA_OK_AT(INT64_MIN, "Wed, 25 Nov 2026 12:00:30 GMT", INT64_MAX);
    RA_OK_AT(INT64_MAX, "Wed, 25 Nov 2026 12:00:30 GMT", 0);
    /* A two-digit year is read relative to the clock, whatever it is, so
     * it is never more than 50 years (plus a day or so) ahead. */
    {
        static const int64_t clocks[] = {INT64_MIN, -1, INT64_MAX};
        size_t i;

        for (i = 0; i < sizeof(clocks) / sizeof(clocks[0]); i++) {
            int64_t out = SENTINEL;

            assert_int_equal(aib_parse_retry_after(
                "Wednesday, 25-Nov-26 12:00:30 GMT", clocks[i], &out), 1);
            assert_true(out >= 0 && out <= H(51 * 366 * 24));
        }
    }
    RA_OK_AT(-1, "Thu, 01 Jan 1970 00:00:00 GMT", 1);
    ASSERT_I64(cooldown(hdrs("anthropic-ratelimit-tokens-reset",
                                    "2026-11-25T12:00:30Z", NULL),
                               INT64_MIN, 5000, 60000, &src), 60000);
    assert_source(src, FROM_ANTHROPIC_RESET);
    ASSERT_I64(cooldown(hdrs("anthropic-ratelimit-tokens-reset",
                                    "2026-11-25T12:00:30Z", NULL),
                               INT64_MAX, 5000, 60000, &src), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_after_ms_valid),
        cmocka_unit_test(test_retry_after_ms_overflow),
        cmocka_unit_test(test_retry_after_ms_invalid),
        cmocka_unit_test(test_retry_after_delta),
        cmocka_unit_test(test_retry_after_delta_invalid),
        cmocka_unit_test(test_retry_after_http_date_future),
        cmocka_unit_test(test_retry_after_http_date_past),
        cmocka_unit_test(test_retry_after_rfc850_century),
        cmocka_unit_test(test_retry_after_http_date_invalid),
        cmocka_unit_test(test_duration_units),
        cmocka_unit_test(test_duration_exact),
        cmocka_unit_test(test_duration_combos),
        cmocka_unit_test(test_duration_overflow),
        cmocka_unit_test(test_duration_invalid),
        cmocka_unit_test(test_rfc3339_valid),
        cmocka_unit_test(test_rfc3339_invalid),
        cmocka_unit_test_teardown(test_precedence, aib_clear_pool),
        cmocka_unit_test_teardown(test_invalid_falls_through, aib_clear_pool),
        cmocka_unit_test_teardown(test_zero_is_a_value, aib_clear_pool),
        cmocka_unit_test_teardown(test_openai_rules, aib_clear_pool),
        cmocka_unit_test_teardown(test_anthropic_rules, aib_clear_pool),
        cmocka_unit_test_teardown(test_clamp, aib_clear_pool),
        cmocka_unit_test_teardown(test_source_and_edges, aib_clear_pool),
        cmocka_unit_test_teardown(test_only_the_resets_given, aib_clear_pool),
        cmocka_unit_test_teardown(test_extreme_clock, aib_clear_pool),
    };
    return AIB_RUN_TESTS(tests);
}
