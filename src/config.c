#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <apr_file_io.h>
#include <apr_strings.h>
#include <apr_uri.h>

#include "config.h"
#include "hint.h"

int aib_valid_name(const char *name)
{
    const char *c;
    int dash_ok = 0;

    if (!name || !*name)
        return 0;
    for (c = name; *c; c++) {
        if ((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9'))
            dash_ok = 1;
        else if (*c == '-' && dash_ok)
            dash_ok = 0;
        else
            return 0;
    }
    return dash_ok;
}

const char *aib_parse_seconds(const char *value, int64_t *out_ms)
{
    const char *c;
    char *end;
    double s;

    /* Digits with at most one dot: strtod alone would take "inf" and hex. */
    for (c = value; *c; c++)
        if (!isdigit((unsigned char)*c) && *c != '.')
            return "must be a non-negative number of seconds";
    errno = 0;
    s = strtod(value, &end);
    if (!*value || *end || errno || !isfinite(s) || s > 1e9)
        return "must be a non-negative number of seconds";
    *out_ms = (int64_t)(s * 1000.0 + 0.5);
    return NULL;
}

static const char *parse_failover(apr_pool_t *p, aib_provider_t *pv, const char *list)
{
    char *copy = apr_pstrdup(p, list), *state, *item;

    memset(pv->failover, 0, sizeof(pv->failover));
    for (item = apr_strtok(copy, ",", &state); item; item = apr_strtok(NULL, ",", &state)) {
        char *end;
        long status = strtol(item, &end, 10);
        if (*end || end == item || status < 100 || status > 599)
            return apr_psprintf(p, "failover= takes HTTP statuses 100-599, not '%s'", item);
        pv->failover[status / 64] |= (uint64_t)1 << (status % 64);
    }
    if (!list[strspn(list, ", ")])
        return "failover= needs at least one HTTP status";
    return NULL;
}

int aib_provider_fails_over(const aib_provider_t *pv, int status)
{
    if (status < 0 || status >= 640)
        return 0;
    return (pv->failover[status / 64] >> (status % 64)) & 1;
}

static const char *parse_url(apr_pool_t *p, const char *what, const char *value,
                             const char **out)
{
    apr_uri_t uri;
    char *url;
    size_t len;

    if (apr_uri_parse(p, value, &uri) != APR_SUCCESS || !uri.scheme || !uri.hostname || !*uri.hostname
        || (strcasecmp(uri.scheme, "http") && strcasecmp(uri.scheme, "https"))
        || uri.query || uri.fragment)
        return apr_psprintf(p, "%s '%s' is not an http:// or https:// URL", what,
                            aib_arg_hint(p, value));
    url = apr_pstrdup(p, value);
    len = strlen(url);
    while (len && url[len - 1] == '/')
        url[--len] = '\0';
    *out = url;
    return NULL;
}

static const char *parse_time_option(apr_pool_t *p, const char *option,
                                     const char *value, int64_t *out_ms)
{
    const char *err = aib_parse_seconds(value, out_ms);
    return err ? apr_psprintf(p, "%s=%s: %s", option, value, err) : NULL;
}

/* mcp=<server>[,<server>...]: resolved once the whole configuration is read. */
static const char *parse_mcp(apr_pool_t *p, aib_provider_t *pv, const char *value)
{
    char *list = apr_pstrdup(p, value), *last, *name;

    pv->mcp_names = apr_array_make(p, 2, sizeof(const char *));
    for (name = apr_strtok(list, ",", &last); name; name = apr_strtok(NULL, ",", &last)) {
        if (!aib_valid_name(name))
            return apr_psprintf(p, "mcp=%s: '%s' is no MCP server name", value, name);
        APR_ARRAY_PUSH(pv->mcp_names, const char *) = name;
    }
    if (!pv->mcp_names->nelts)
        return "mcp= takes one or more MCP server names, separated by commas";
    return NULL;
}

static const char *parse_option(apr_pool_t *p, aib_provider_t *pv, const char *option,
                                const char *value)
{
    static const struct {
        const char *name;
        size_t offset;
    } times[] = {
        { "cooldown", offsetof(aib_provider_t, cooldown_ms) },
        { "max-cooldown", offsetof(aib_provider_t, max_cooldown_ms) },
        { "disable-for", offsetof(aib_provider_t, disable_for_ms) },
        { "connect-timeout", offsetof(aib_provider_t, connect_timeout_ms) },
        { "timeout", offsetof(aib_provider_t, timeout_ms) },
        { "idle-timeout", offsetof(aib_provider_t, idle_timeout_ms) },
    };
    size_t i;

    for (i = 0; i < sizeof(times) / sizeof(times[0]); i++)
        if (!strcmp(option, times[i].name))
            return parse_time_option(p, option, value,
                                     (int64_t *)((char *)pv + times[i].offset));
    if (!strcmp(option, "pool")) {
        if (!aib_valid_name(value))
            return apr_psprintf(p, "pool='%s': pool names are [a-z0-9]+(-[a-z0-9]+)*",
                                aib_arg_hint(p, value));
        pv->pool_name = value;
    }
    else if (!strcmp(option, "byok")) {
        if (strcasecmp(value, "on") && strcasecmp(value, "off"))
            return apr_psprintf(p, "byok=%s: must be on or off", value);
        pv->byok = !strcasecmp(value, "on");
    }
    else if (!strcmp(option, "failover"))
        return parse_failover(p, pv, value);
    else if (!strcmp(option, "mcp"))
        return parse_mcp(p, pv, value);
    else if (!strcmp(option, "proxy"))
        return parse_url(p, "proxy=", value, &pv->proxy);
    else if (!strcmp(option, "ca-file")) {
        apr_finfo_t finfo;
        if (apr_stat(&finfo, value, APR_FINFO_TYPE, p) != APR_SUCCESS
            || finfo.filetype != APR_REG)
            return apr_psprintf(p, "ca-file=%s: not a readable file", value);
        pv->ca_file = value;
    }
    else {
        const char *err = pv->ops->option ? pv->ops->option(p, pv, option, value)
                                          : aib_option_unknown;
        if (err == aib_option_unknown)
            return apr_psprintf(p, "unknown option '%s'", option);
        return err;
    }
    return NULL;
}

/* The optional base URL is the argument that is no option=value; a URL may
 * hold '=' too, but only after its "://". */
static int is_base_url(const char *arg)
{
    const char *eq = strchr(arg, '='), *scheme = strstr(arg, "://");

    return !eq || (scheme && scheme < eq);
}

const char *aib_provider_parse(apr_pool_t *p, int argc, char *const argv[],
                               aib_provider_t **out)
{
    aib_provider_t *pv;
    const char *err;
    int i = 2;

    if (argc < 2)
        return "takes a name, a type and options";
    pv = apr_pcalloc(p, sizeof(*pv));
    pv->name = apr_pstrdup(p, argv[0]);
    if (!aib_valid_name(pv->name))
        return apr_psprintf(p, "provider name '%s' must match [a-z0-9]+(-[a-z0-9]+)*",
                            aib_arg_hint(p, argv[0]));
    pv->ops = aib_provider_ops_find(argv[1]);
    if (!pv->ops)
        return apr_psprintf(p, "unknown provider type '%s' (%s)",
                            aib_arg_hint(p, argv[1]), aib_provider_types(p));
    pv->base_url = pv->ops->default_base_url;
    pv->cooldown_ms = 60 * 1000;
    pv->max_cooldown_ms = 3600 * 1000;
    pv->connect_timeout_ms = 10 * 1000;
    pv->timeout_ms = 600 * 1000;
    pv->idle_timeout_ms = 300 * 1000;
    parse_failover(p, pv, "429,401,403");

    if (argc > 2 && is_base_url(argv[2])) {
        err = parse_url(p, "base URL", argv[2], &pv->base_url);
        if (err)
            return err;
        i = 3;
    }
    for (; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        if (!eq || eq == argv[i])
            return apr_psprintf(p, "'%s' is not option=value", aib_arg_hint(p, argv[i]));
        err = parse_option(p, pv, apr_pstrmemdup(p, argv[i], (apr_size_t)(eq - argv[i])),
                           eq + 1);
        if (err)
            return err;
    }
    if (pv->cooldown_ms > pv->max_cooldown_ms)
        return "cooldown= is longer than max-cooldown=";
    if (pv->ops->options_done && (err = pv->ops->options_done(p, pv)))
        return err;
    if (!pv->pool_name && !pv->byok)
        return apr_psprintf(p, "provider '%s' has neither pool= nor byok=on: "
                            "no request could be served", pv->name);
    *out = pv;
    return NULL;
}

/* Adds the keys of a whitespace- or comma-separated list. */
static const char *add_list(aib_keypool_t *kp, apr_pool_t *p, char *list, const char *origin)
{
    char *state, *item;
    int before = kp->keys->nelts;

    for (item = apr_strtok(list, ", \t\r\n", &state); item;
         item = apr_strtok(NULL, ", \t\r\n", &state)) {
        const char *err = aib_keypool_add_key(kp, p, item);
        if (err)
            return apr_psprintf(p, "%s: %s", origin, err);
    }
    if (kp->keys->nelts == before)
        return apr_psprintf(p, "%s holds no key", origin);
    return NULL;
}

static const char *add_file(aib_keypool_t *kp, apr_pool_t *p, const char *path)
{
    const char *origin = apr_psprintf(p, "file:%s", path);
    apr_file_t *f;
    apr_status_t rv;
    char line[8192];
    int before = kp->keys->nelts;

    rv = apr_file_open(&f, path, APR_FOPEN_READ, APR_FPROT_OS_DEFAULT, p);
    if (rv != APR_SUCCESS) {
        char buf[120];
        return apr_psprintf(p, "%s: cannot read: %s", origin, apr_strerror(rv, buf, sizeof(buf)));
    }
    while ((rv = apr_file_gets(line, sizeof(line), f)) == APR_SUCCESS) {
        char *key = line, *end;
        const char *err;

        while (*key == ' ' || *key == '\t')
            key++;
        end = key + strlen(key);
        while (end > key && isspace((unsigned char)end[-1]))
            *--end = '\0';
        if (!*key || *key == '#')
            continue;
        err = aib_keypool_add_key(kp, p, key);
        if (err) {
            apr_file_close(f);
            return apr_psprintf(p, "%s: %s", origin, err);
        }
    }
    apr_file_close(f);
    if (rv != APR_EOF) {                /* a directory, an I/O error */
        char buf[120];
        return apr_psprintf(p, "%s: cannot read: %s", origin, apr_strerror(rv, buf, sizeof(buf)));
    }
    if (kp->keys->nelts == before)
        return apr_psprintf(p, "%s holds no key", origin);
    return NULL;
}

const char *aib_keypool_add_source(aib_keypool_t *kp, apr_pool_t *p, const char *source)
{
    const char *err;

    if (!strncmp(source, "file:", 5)) {
        if (!source[5])
            return "file: needs a path";
        return add_file(kp, p, source + 5);
    }
    if (!strncmp(source, "env:", 4)) {
        const char *value;
        if (!source[4])
            return "env: needs a variable name";
        value = getenv(source + 4);
        if (!value)
            return apr_psprintf(p, "%s: environment variable is not set", source);
        return add_list(kp, p, apr_pstrdup(p, value), source);
    }
    err = aib_keypool_add_key(kp, p, source);
    return err;
}
