/* Cooldown that a rate-limited upstream response asks for.
 *
 * Upstreams say how long to back off in several headers; this file turns
 * them into one number of milliseconds. The generic ones (Retry-After,
 * retry-after-ms) are read here, a provider's own reset headers are
 * described in its provider file. Pure logic: no httpd, no I/O. */
#ifndef AIB_RATELIMIT_H
#define AIB_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>
#include <apr_tables.h>

/* How a provider's reset header says when a limit resets. */
typedef enum {
    AIB_RESET_DURATION,   /* a Go-style duration from now: "6m0s" */
    AIB_RESET_RFC3339     /* the moment itself: "2026-11-25T12:00:30Z" */
} aib_reset_form_e;

/* One limit a provider reports on: when it resets, and what is left of it
 * (a remaining count of zero means this limit is the one hit). */
typedef struct {
    const char *reset;
    const char *remaining;
} aib_limit_header_t;

/* A provider's rate-limit reset headers (its ops point here). */
typedef struct {
    const char *name;     /* what the logs call them: "x-ratelimit-reset" */
    aib_reset_form_e form;
    const aib_limit_header_t *limits;
    size_t count;
} aib_reset_headers_t;

/* The cooldown in milliseconds for a 429 carrying `headers` (a
 * case-insensitive APR table), first found of: retry-after-ms,
 * Retry-After, each of `resets` in order (NULL-terminated, may be NULL;
 * within one the longest wait, exhausted limits first), else default_ms.
 * The result is clamped to [0, max_ms]. now_ms is the current Unix time in
 * milliseconds (for dates). `source` (may be NULL) is set to the header
 * that decided: "retry-after-ms", "Retry-After", a reset's name, or NULL
 * for the default. */
int64_t aib_cooldown_ms(const apr_table_t *headers, const aib_reset_headers_t *const *resets,
                        int64_t now_ms, int64_t default_ms, int64_t max_ms,
                        const char **source);

/* The single-header parsers, exposed for unit tests. Each returns 1 and
 * sets *out_ms on a valid value, 0 when the value is NULL or invalid
 * (garbage, negative, trailing junk). Values too large to represent
 * saturate at INT64_MAX instead of overflowing. Surrounding whitespace is
 * ignored. */
int aib_parse_retry_after_ms(const char *value, int64_t *out_ms);
/* delta-seconds or an HTTP-date (RFC 9110: IMF-fixdate, RFC 850, asctime);
 * a date in the past gives 0. */
int aib_parse_retry_after(const char *value, int64_t now_ms, int64_t *out_ms);
/* Go-style durations as OpenAI sends them: "1s", "20ms", "6m0s",
 * "1h2m3.5s", "0.5s". */
int aib_parse_duration(const char *value, int64_t *out_ms);
/* RFC 3339 date-time ("2026-11-25T12:00:30Z", fractional seconds and
 * +hh:mm offsets allowed) to Unix milliseconds. */
int aib_parse_rfc3339(const char *value, int64_t *out_unix_ms);

#endif
