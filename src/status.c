/* The operator's actions on the status page, the checks that guard them
 * (same origin, nonce), and the escaping that makes shown text safe. */
#include <errno.h>
#include <string.h>
#include <apr_lib.h>
#include <apr_strings.h>

#include "buffer.h"
#include "status.h"

/* s with each character of `specials` replaced by the string at the same
 * position of `replacements`; s itself when it has none. */
static const char *escape(apr_pool_t *p, const char *s, const char *specials,
                          const char *const replacements[])
{
    aib_buffer_t b = { NULL, 0, 0 };
    const char *run = s, *special;

    if (!s)
        return "";
    if (!strpbrk(s, specials))
        return s;
    while (*(special = run + strcspn(run, specials))) {
        aib_buffer_append(&b, p, run, (apr_size_t)(special - run));
        aib_buffer_puts(&b, p, replacements[strchr(specials, *special) - specials]);
        run = special + 1;
    }
    aib_buffer_puts(&b, p, run);
    return b.data;
}

const char *aib_html_escape(apr_pool_t *p, const char *s)
{
    static const char *const entities[] = { "&amp;", "&lt;", "&gt;", "&quot;", "&#39;" };

    return escape(p, s, "&<>\"'", entities);
}

const char *aib_metrics_label_escape(apr_pool_t *p, const char *s)
{
    static const char *const escapes[] = { "\\\\", "\\\"", "\\n" };

    return escape(p, s, "\\\"\n", escapes);
}

const char *aib_status_apply(apr_pool_t *p, const apr_array_header_t *providers,
                             const char *action, const char *provider, const char *key,
                             const char **hint)
{
    const aib_provider_t *pv = NULL;
    aib_action_e act;
    apr_int64_t index;
    char *end;
    int i;

    if (hint)
        *hint = NULL;
    if (!action || !*action)
        return "no action";
    if (!strcmp(action, "enable"))
        act = AIB_ACTION_ENABLE;
    else if (!strcmp(action, "clear"))
        act = AIB_ACTION_CLEAR;
    else
        return "unknown action (enable, clear)";
    if (!provider || !*provider)
        return "no provider";
    for (i = 0; providers && i < providers->nelts && !pv; i++)
        if (!strcmp(APR_ARRAY_IDX(providers, i, const aib_provider_t *)->name, provider))
            pv = APR_ARRAY_IDX(providers, i, const aib_provider_t *);
    if (!pv)
        return "unknown provider";
    if (!pv->pool)
        return "the provider has no key pool";
    if (!key || !apr_isdigit(*key))
        return "no key index";
    errno = 0;
    index = apr_strtoi64(key, &end, 10);
    if (*end || errno || index < 0 || index >= pv->pool->keys->nelts)
        return "no such key";
    if (act == AIB_ACTION_ENABLE)
        aib_key_clear_disabled(pv->pool, (int)index);
    else
        aib_key_clear_cooldown(pv->pool, (int)index);
    if (hint)
        *hint = APR_ARRAY_IDX(pv->pool->keys, (int)index, aib_key_t).hint;
    (void)p;
    return NULL;
}

/* Splits host[:port] (an IPv6 host in brackets) and gives the port, the
 * scheme's default when absent. Returns 0 when it does not parse. */
static int split_authority(apr_pool_t *p, const char *auth, apr_size_t len, const char *scheme,
                           const char **host, int *port)
{
    const char *colon = NULL, *end = auth + len;

    if (!len || memchr(auth, '@', len))
        return 0;
    if (*auth == '[') {
        const char *close = memchr(auth, ']', len);
        if (!close)
            return 0;
        colon = close + 1 < end ? close + 1 : NULL;
        if (colon && *colon != ':')
            return 0;
        *host = apr_pstrmemdup(p, auth, (apr_size_t)(close + 1 - auth));
    }
    else {
        const char *c;
        for (c = auth; c < end; c++)
            if (*c == ':')
                colon = c;
        *host = apr_pstrmemdup(p, auth, (apr_size_t)((colon ? colon : end) - auth));
        if (!**host)
            return 0;
    }
    if (colon) {
        const char *d;
        int n = 0;
        if (colon + 1 == end)
            colon = NULL;    /* "host:" is the default port */
        for (d = colon ? colon + 1 : end; d < end; d++) {
            if (!apr_isdigit(*d) || n > 65535)
                return 0;
            n = n * 10 + (*d - '0');
        }
        if (colon) {
            *port = n;
            return n > 0 && n <= 65535;
        }
    }
    if (!strcasecmp(scheme, "http"))
        *port = 80;
    else if (!strcasecmp(scheme, "https"))
        *port = 443;
    else
        return 0;
    return 1;
}

int aib_status_same_origin(const char *url, const char *scheme, const char *host)
{
    apr_pool_t *p;
    const char *sep, *auth, *auth_end, *url_host, *want_host;
    int url_port = 0, want_port = 0, same;

    if (!url || !scheme || !host)
        return 0;
    sep = strstr(url, "://");
    if (!sep || (apr_size_t)(sep - url) != strlen(scheme) || strncasecmp(url, scheme, strlen(scheme)))
        return 0;
    auth = sep + 3;
    auth_end = auth + strcspn(auth, "/?#");
    if (apr_pool_create(&p, NULL) != APR_SUCCESS)
        return 0;
    same = split_authority(p, auth, (apr_size_t)(auth_end - auth), scheme, &url_host, &url_port)
           && split_authority(p, host, strlen(host), scheme, &want_host, &want_port)
           && url_port == want_port && !strcasecmp(url_host, want_host);
    apr_pool_destroy(p);
    return same;
}

int aib_status_nonce_equal(const char *expected, const char *given)
{
    size_t n, i;
    unsigned char diff = 0;

    if (!expected || !given || !*expected)
        return 0;
    n = strlen(expected);
    if (strlen(given) != n)
        return 0;
    for (i = 0; i < n; i++)
        diff |= (unsigned char)(expected[i] ^ given[i]);
    return diff == 0;
}
