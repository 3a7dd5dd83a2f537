/* Cooldown that a rate-limited upstream response asks for.
 *
 * Providers say how long to back off in several headers; this file turns
 * them into one number of milliseconds. Pure logic: no httpd, no I/O. */
#ifndef AIB_RATELIMIT_H
#define AIB_RATELIMIT_H

#include <stdint.h>
#include <apr_tables.h>

typedef enum {
    AIB_COOLDOWN_DEFAULT = 0,     /* no header parsed: the provider's cooldown= */
    AIB_COOLDOWN_RETRY_AFTER_MS,  /* retry-after-ms */
    AIB_COOLDOWN_RETRY_AFTER,     /* Retry-After, delta-seconds or HTTP-date */
    AIB_COOLDOWN_OPENAI_RESET,    /* x-ratelimit-reset-requests / -tokens */
    AIB_COOLDOWN_ANTHROPIC_RESET  /* anthropic-ratelimit-*-reset */
} aib_cooldown_source_e;

/* The cooldown in milliseconds for a 429 carrying `headers` (a
 * case-insensitive APR table), first found of: retry-after-ms,
 * Retry-After, OpenAI x-ratelimit-reset-*, Anthropic
 * anthropic-ratelimit-*-reset, else default_ms. The result is clamped to
 * [0, max_ms]. now_ms is the current Unix time in milliseconds (for dates).
 * `source` (may be NULL) says which header decided. */
int64_t aib_cooldown_ms(const apr_table_t *headers, int64_t now_ms,
                        int64_t default_ms, int64_t max_ms,
                        aib_cooldown_source_e *source);

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
