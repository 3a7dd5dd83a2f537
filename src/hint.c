#include <string.h>
#include <apr_strings.h>
#include <apr_sha1.h>

#include "hint.h"

const char *aib_key_hint(apr_pool_t *pool, const char *key)
{
    /* Credentials with parts ("AKID:SECRET[:TOKEN][@region]") are named by
     * their first part only, never by a secret's, token's or region's end;
     * a "bearer:<token>[@region]" by its token's ends. */
    size_t len = strcspn(key, strncmp(key, "bearer:", 7) ? ":@" : "@");
    size_t shown;

    if (len >= 20)
        shown = 4;
    else if (len >= 10)
        shown = 2;
    else if (len >= 5)
        shown = 1;
    else
        return "...";
    return apr_psprintf(pool, "%.*s...%.*s", (int)shown, key, (int)shown, key + len - shown);
}

const char *aib_arg_hint(apr_pool_t *pool, const char *arg)
{
    if (strlen(arg) < 20 || strstr(arg, "://"))
        return arg;
    return aib_key_hint(pool, arg);
}

uint64_t aib_fingerprint(const char *scope, const char *name)
{
    apr_sha1_ctx_t ctx;
    unsigned char digest[APR_SHA1_DIGESTSIZE];
    uint64_t fp = 0;
    int i;

    apr_sha1_init(&ctx);
    /* The NUL separates the two parts so ("ab","c") and ("a","bc") differ. */
    apr_sha1_update_binary(&ctx, (const unsigned char *)scope, strlen(scope) + 1);
    apr_sha1_update_binary(&ctx, (const unsigned char *)name, strlen(name));
    apr_sha1_final(digest, &ctx);
    for (i = 0; i < 8; i++)
        fp = (fp << 8) | digest[i];
    return fp ? fp : 1;
}

uint64_t aib_key_fingerprint(const char *pool_name, const char *key)
{
    return aib_fingerprint(pool_name, key);
}
