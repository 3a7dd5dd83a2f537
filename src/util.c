/* Small helpers that more than one part of the module needs, kept once. */
#include <apr_general.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "util.h"

int64_t aib_now_ms(void)
{
    return apr_time_as_msec(apr_time_now());
}

/* apr_psprintf rather than apr_strftime: strftime has no milliseconds. */
const char *aib_time_rfc3339(apr_pool_t *p, int64_t unix_ms)
{
    apr_time_exp_t t;

    if (apr_time_exp_gmt(&t, apr_time_from_msec(unix_ms)) != APR_SUCCESS)
        return "?";
    return apr_psprintf(p, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900,
                        t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                        t.tm_usec / 1000);
}

const char *aib_random_hex(apr_pool_t *p, apr_size_t nbytes)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char *bytes = apr_palloc(p, nbytes);
    char *hex = apr_palloc(p, 2 * nbytes + 1);
    apr_size_t i;

    if (apr_generate_random_bytes(bytes, nbytes) != APR_SUCCESS)
        return NULL;
    for (i = 0; i < nbytes; i++) {
        hex[2 * i] = digits[bytes[i] >> 4];
        hex[2 * i + 1] = digits[bytes[i] & 0x0f];
    }
    hex[2 * nbytes] = '\0';
    return hex;
}
