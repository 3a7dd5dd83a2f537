/* Cooldown that a rate-limited upstream response asks for.
 *
 * Every parser works on a trimmed [begin, end) span of the header value, so
 * nothing is copied or allocated. All arithmetic on untrusted numbers goes
 * through the saturating helpers below: a hostile or buggy upstream must
 * never be able to trigger signed overflow (undefined behaviour). */
#include "ratelimit.h"

#include <string.h>

#define NS_PER_MS  INT64_C(1000000)
#define MS_PER_SEC INT64_C(1000)
#define MS_PER_DAY INT64_C(86400000)

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Narrows `value` to [*b, *e) without surrounding spaces and tabs (HTTP's
 * OWS). Returns 0 for NULL or an all-blank value, which is invalid. */
static int trim(const char *value, const char **b, const char **e)
{
    const char *s, *t;

    if (value == NULL)
        return 0;
    for (s = value; *s == ' ' || *s == '\t'; s++)
        ;
    for (t = s + strlen(s); t > s && (t[-1] == ' ' || t[-1] == '\t'); t--)
        ;
    *b = s;
    *e = t;
    return s < t;
}

static int64_t sat_add(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b)
        return INT64_MIN;
    return a + b;
}

static int64_t sat_sub(int64_t a, int64_t b)
{
    if (b < 0 && a > INT64_MAX + b)
        return INT64_MAX;
    if (b > 0 && a < INT64_MIN + b)
        return INT64_MIN;
    return a - b;
}

/* b must be positive (it is always a unit constant here). */
static int64_t sat_mul(int64_t a, int64_t b)
{
    if (a > INT64_MAX / b)
        return INT64_MAX;
    if (a < INT64_MIN / b)
        return INT64_MIN;
    return a * b;
}

/* Decimal value of the digits in [b, e) (all digits, caller checked),
 * saturating at INT64_MAX instead of overflowing. */
static int64_t span_value(const char *b, const char *e)
{
    int64_t v = 0;

    for (; b < e; b++) {
        int d = *b - '0';
        v = (v > (INT64_MAX - d) / 10) ? INT64_MAX : v * 10 + d;
    }
    return v;
}

/* Advances *p over a run of digits; returns the end of the run. */
static const char *skip_digits(const char *p, const char *e)
{
    while (p < e && is_digit(*p))
        p++;
    return p;
}

/* Exactly n digits at *p, as an int (n is small, so no overflow). */
static int fixed_digits(const char **p, const char *e, int n, int *out)
{
    int i, v = 0;

    if (e - *p < n)
        return 0;
    for (i = 0; i < n; i++) {
        if (!is_digit((*p)[i]))
            return 0;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 1;
}

static int match_lit(const char **p, const char *e, const char *lit)
{
    size_t n = strlen(lit);

    if ((size_t)(e - *p) < n || memcmp(*p, lit, n) != 0)
        return 0;
    *p += n;
    return 1;
}

/* Case-sensitive, as RFC 9110 defines HTTP-date names. */
static int match_word(const char **p, const char *e,
                      const char *const *names, int count, int *idx)
{
    int i;

    for (i = 0; i < count; i++) {
        if (match_lit(p, e, names[i])) {
            *idx = i;
            return 1;
        }
    }
    return 0;
}

/* ---- calendar ---------------------------------------------------------- */

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return (m == 2 && is_leap(y)) ? 29 : dim[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * algorithm); avoids timegm(), which is neither C99 nor thread-safe via TZ. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* Gregorian year containing day z (days since the epoch). */
static int64_t year_from_days(int64_t z)
{
    int64_t era, doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    return yoe + era * 400 + (mp >= 10); /* Jan and Feb belong to next year */
}

/* Validated broken-down UTC time to Unix ms. Second 60 (a leap second) is
 * accepted and simply lands on the next minute. */
static int civil_to_ms(int64_t y, int mon, int day, int h, int mi, int s,
                       int64_t *out)
{
    int64_t ms;

    if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(y, mon)
        || h > 23 || mi > 59 || s > 60)
        return 0;
    ms = sat_mul(days_from_civil(y, mon, day), MS_PER_DAY);
    *out = sat_add(ms, ((int64_t)h * 3600 + mi * 60 + s) * MS_PER_SEC);
    return 1;
}

/* "HH:MM:SS" */
static int parse_hms(const char **p, const char *e, int *h, int *mi, int *s)
{
    return fixed_digits(p, e, 2, h) && match_lit(p, e, ":")
        && fixed_digits(p, e, 2, mi) && match_lit(p, e, ":")
        && fixed_digits(p, e, 2, s);
}

/* ---- HTTP-date (RFC 9110 section 5.6.7) -------------------------------- */

static const char *const day_names[7] = {
    "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"
};
static const char *const long_day_names[7] = {
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
    "Sunday"
};
static const char *const month_names[12] = {
    "Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
};

/* RFC 9110: a two-digit year more than 50 years in the future means the
 * most recent past year with those digits. */
static int64_t rfc850_year(int yy, int64_t now_ms)
{
    int64_t days = now_ms / MS_PER_DAY, now_year, y;

    if (now_ms % MS_PER_DAY < 0) /* floor, not truncation, before 1970 */
        days--;
    now_year = year_from_days(days);
    y = now_year - now_year % 100 + yy;
    /* y is within 200 years of now_year, so each loop runs at most twice. */
    while (y > now_year + 50)
        y -= 100;
    while (y <= now_year - 50)
        y += 100;
    return y;
}

/* Strict on purpose: apr_date_parse_http() accepts trailing junk, any
 * weekday and any zone name, and returns 0 both for errors and the epoch.
 * The weekday is required but not cross-checked against the date. */
static int parse_http_date(const char *p, const char *e, int64_t now_ms,
                           int64_t *out)
{
    int wd, day, mon, year, h, mi, s;
    int64_t full_year;

    if (match_word(&p, e, long_day_names, 7, &wd)) {
        /* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT (tried first: "Sunday"
         * starts with "Sun") */
        if (!match_lit(&p, e, ", ") || !fixed_digits(&p, e, 2, &day)
            || !match_lit(&p, e, "-")
            || !match_word(&p, e, month_names, 12, &mon)
            || !match_lit(&p, e, "-") || !fixed_digits(&p, e, 2, &year)
            || !match_lit(&p, e, " ") || !parse_hms(&p, e, &h, &mi, &s)
            || !match_lit(&p, e, " GMT"))
            return 0;
        full_year = rfc850_year(year, now_ms);
    }
    else if (match_word(&p, e, day_names, 7, &wd)) {
        if (match_lit(&p, e, ", ")) {
            /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
            if (!fixed_digits(&p, e, 2, &day) || !match_lit(&p, e, " ")
                || !match_word(&p, e, month_names, 12, &mon)
                || !match_lit(&p, e, " ") || !fixed_digits(&p, e, 4, &year)
                || !match_lit(&p, e, " ") || !parse_hms(&p, e, &h, &mi, &s)
                || !match_lit(&p, e, " GMT"))
                return 0;
        }
        else {
            /* asctime: Sun Nov  6 08:49:37 1994 (day is 2DIGIT or SP DIGIT) */
            if (!match_lit(&p, e, " ")
                || !match_word(&p, e, month_names, 12, &mon)
                || !match_lit(&p, e, " "))
                return 0;
            if (match_lit(&p, e, " ")) {
                if (!fixed_digits(&p, e, 1, &day))
                    return 0;
            }
            else if (!fixed_digits(&p, e, 2, &day))
                return 0;
            if (!match_lit(&p, e, " ") || !parse_hms(&p, e, &h, &mi, &s)
                || !match_lit(&p, e, " ") || !fixed_digits(&p, e, 4, &year))
                return 0;
        }
        full_year = year;
    }
    else
        return 0;

    if (p != e)
        return 0;
    return civil_to_ms(full_year, mon + 1, day, h, mi, s, out);
}

/* ---- single-header parsers --------------------------------------------- */

int aib_parse_retry_after_ms(const char *value, int64_t *out_ms)
{
    const char *p, *e, *q;
    int64_t ms;

    /* Plain decimal only: no sign, exponent, inf/nan or hex that strtod()
     * would let through. */
    if (!trim(value, &p, &e) || !is_digit(*p))
        return 0;
    q = skip_digits(p, e);
    ms = span_value(p, q);
    p = q;
    if (p < e && *p == '.') {
        int nonzero = 0;

        q = skip_digits(++p, e);
        if (q == p)
            return 0;
        for (; p < q; p++)
            nonzero |= *p != '0';
        /* Round up: retrying a fraction of a ms early would be too early. */
        if (nonzero)
            ms = sat_add(ms, 1);
    }
    if (p != e)
        return 0;
    *out_ms = ms;
    return 1;
}

int aib_parse_retry_after(const char *value, int64_t now_ms, int64_t *out_ms)
{
    const char *p, *e, *q;
    int64_t date_ms, ms;

    if (!trim(value, &p, &e))
        return 0;
    if (is_digit(*p)) {
        /* delta-seconds = 1*DIGIT; no HTTP-date starts with a digit. */
        q = skip_digits(p, e);
        if (q != e)
            return 0;
        *out_ms = sat_mul(span_value(p, q), MS_PER_SEC);
        return 1;
    }
    if (!parse_http_date(p, e, now_ms, &date_ms))
        return 0;
    ms = sat_sub(date_ms, now_ms);
    *out_ms = ms > 0 ? ms : 0;
    return 1;
}

/* Unit of a Go duration, in ns; 0 if unknown. */
static int64_t duration_unit(const char *b, const char *e)
{
    static const struct {
        const char *name;
        int64_t ns;
    } units[] = {
        {"ns", 1},
        {"us", 1000},
        {"\xc2\xb5s", 1000},    /* U+00B5 micro sign, as Go accepts */
        {"\xce\xbcs", 1000},    /* U+03BC Greek mu */
        {"ms", NS_PER_MS},
        {"s", INT64_C(1000000000)},
        {"m", INT64_C(60000000000)},
        {"h", INT64_C(3600000000000)},
    };
    size_t i, n = (size_t)(e - b);

    for (i = 0; i < COUNT(units); i++)
        if (strlen(units[i].name) == n && memcmp(units[i].name, b, n) == 0)
            return units[i].ns;
    return 0;
}

/* Exact, overflow-free: whole milliseconds are accumulated saturating, the
 * sub-millisecond part separately in ns, and the final result is rounded up
 * (a "0.5ms" cooldown must not become 0). */
int aib_parse_duration(const char *value, int64_t *out_ms)
{
    const char *p, *e;
    int64_t ms = 0, ns = 0; /* ns stays below NS_PER_MS after each term */
    int inexact = 0;        /* a fraction finer than 1 ns was dropped */

    if (!trim(value, &p, &e))
        return 0;
    if (e - p == 1 && *p == '0') { /* Go's only unitless duration */
        *out_ms = 0;
        return 1;
    }
    while (p < e) {
        const char *ib = p, *ie, *fb, *fe, *ub;
        int64_t unit, q = 0;

        ie = skip_digits(p, e);
        fb = fe = ie;
        if (ie < e && *ie == '.') {
            fb = ie + 1;
            fe = skip_digits(fb, e);
        }
        if (ie == ib && fe == fb) /* "." alone, sign, letter first, ... */
            return 0;
        /* The unit runs to the next number (Go's rule), so "1sx" fails. */
        for (ub = p = fe; p < e && !is_digit(*p) && *p != '.'; p++)
            ;
        unit = duration_unit(ub, p);
        if (unit == 0)
            return 0;

        if (unit >= NS_PER_MS) {
            ms = sat_add(ms, sat_mul(span_value(ib, ie), unit / NS_PER_MS));
        }
        else {
            /* ns or us: 10^k units make a ms, so the last k digits are the
             * sub-ms part and the rest count whole ms; never overflows. */
            int k = unit == 1 ? 6 : 3;
            const char *split = (ie - ib > k) ? ie - k : ib;

            ms = sat_add(ms, span_value(ib, split));
            ns += span_value(split, ie) * unit;
        }

        /* Fraction: Horner's scheme from the last digit, value * unit / 10
         * per step, keeps the ns part exact and every term below unit. */
        while (fe > fb) {
            int64_t t = (*--fe - '0') * unit + q;
            inexact |= t % 10 != 0;
            q = t / 10;
        }
        ms = sat_add(ms, q / NS_PER_MS);
        ns += q % NS_PER_MS;
        ms = sat_add(ms, ns / NS_PER_MS);
        ns %= NS_PER_MS;
    }
    if (ns > 0 || inexact)
        ms = sat_add(ms, 1);
    *out_ms = ms;
    return 1;
}

int aib_parse_rfc3339(const char *value, int64_t *out_unix_ms)
{
    const char *p, *e;
    int y, mon, day, h, mi, s, oh = 0, om = 0, frac_ms = 0, round_up = 0;
    int64_t ms;
    char sep;

    if (!trim(value, &p, &e))
        return 0;
    if (!fixed_digits(&p, e, 4, &y) || !match_lit(&p, e, "-")
        || !fixed_digits(&p, e, 2, &mon) || !match_lit(&p, e, "-")
        || !fixed_digits(&p, e, 2, &day) || p == e)
        return 0;
    /* RFC 3339 5.6 allows lower case t and, by note, a space. */
    sep = *p++;
    if (sep != 'T' && sep != 't' && sep != ' ')
        return 0;
    if (!parse_hms(&p, e, &h, &mi, &s))
        return 0;
    if (p < e && *p == '.') {
        int n = 0;

        if (++p == e || !is_digit(*p))
            return 0;
        for (; p < e && is_digit(*p); p++, n++) {
            if (n < 3)
                frac_ms = frac_ms * 10 + (*p - '0');
            else
                round_up |= *p != '0'; /* below 1 ms: round the time up */
        }
        for (; n < 3; n++)
            frac_ms *= 10;
    }
    if (p == e)
        return 0; /* the offset is mandatory */
    if (*p == 'Z' || *p == 'z') {
        p++;
    }
    else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1;

        if (!fixed_digits(&p, e, 2, &oh) || !match_lit(&p, e, ":")
            || !fixed_digits(&p, e, 2, &om) || oh > 23 || om > 59)
            return 0;
        oh *= sign;
        om *= sign;
    }
    else
        return 0;
    if (p != e || !civil_to_ms(y, mon, day, h, mi, s, &ms))
        return 0;
    /* Local time = UTC + offset, so UTC = local - offset. Years are at
     * most 9999 here, so none of this can overflow. */
    ms -= ((int64_t)oh * 3600 + om * 60) * MS_PER_SEC;
    *out_unix_ms = ms + frac_ms + round_up;
    return 1;
}

/* ---- combining the headers --------------------------------------------- */

/* Longest candidate, where exhausted limits win over the others: they are
 * the ones actually blocking, the rest would only over-wait. */
typedef struct {
    int have, have_exhausted;
    int64_t longest, longest_exhausted;
} pick_t;

static void pick_add(pick_t *pk, int64_t ms, int exhausted)
{
    if (!pk->have || ms > pk->longest)
        pk->longest = ms;
    pk->have = 1;
    if (exhausted) {
        if (!pk->have_exhausted || ms > pk->longest_exhausted)
            pk->longest_exhausted = ms;
        pk->have_exhausted = 1;
    }
}

static int pick_result(const pick_t *pk, int64_t *out)
{
    if (pk->have_exhausted)
        *out = pk->longest_exhausted;
    else if (pk->have)
        *out = pk->longest;
    else
        return 0;
    return 1;
}

/* A remaining count of zero ("0", or "00" etc.) means the limit is hit. */
static int is_exhausted(const char *remaining)
{
    const char *p, *e;

    if (!trim(remaining, &p, &e))
        return 0;
    for (; p < e; p++)
        if (*p != '0')
            return 0;
    return 1;
}

/* The wait one provider's reset headers ask for: the longest, exhausted
 * limits first. A duration counts from now; an RFC 3339 time is what is
 * left of it. */
static int provider_reset(const apr_table_t *headers, const aib_reset_headers_t *rh,
                          int64_t now_ms, int64_t *out)
{
    pick_t pk = {0, 0, 0, 0};
    size_t i;
    int64_t ms;

    for (i = 0; i < rh->count; i++) {
        const char *value = apr_table_get(headers, rh->limits[i].reset);
        if (rh->form == AIB_RESET_DURATION) {
            if (!aib_parse_duration(value, &ms))
                continue;
        }
        else {
            if (!aib_parse_rfc3339(value, &ms))
                continue;
            ms = sat_sub(ms, now_ms);
            if (ms < 0)
                ms = 0;
        }
        pick_add(&pk, ms, is_exhausted(apr_table_get(headers, rh->limits[i].remaining)));
    }
    return pick_result(&pk, out);
}

int64_t aib_cooldown_ms(const apr_table_t *headers, const aib_reset_headers_t *const *resets,
                        int64_t now_ms, int64_t default_ms, int64_t max_ms,
                        const char **source)
{
    const char *src = NULL;
    int64_t ms = default_ms, v;

    if (headers != NULL) {
        if (aib_parse_retry_after_ms(apr_table_get(headers, "retry-after-ms"),
                                     &v))
            src = "retry-after-ms";
        else if (aib_parse_retry_after(apr_table_get(headers, "Retry-After"),
                                       now_ms, &v))
            src = "Retry-After";
        for (; !src && resets && *resets; resets++)
            if (provider_reset(headers, *resets, now_ms, &v))
                src = (*resets)->name;
        if (src)
            ms = v;
    }
    if (max_ms < 0)
        max_ms = 0;
    if (ms < 0)
        ms = 0;
    if (ms > max_ms)
        ms = max_ms;
    if (source != NULL)
        *source = src;
    return ms;
}
