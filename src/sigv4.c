/* AWS Signature Version 4, step by step as botocore's SigV4Auth does it:
 * canonical request, string to sign, signing key, Authorization header. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <apr_escape.h>
#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_time.h>
#include <apr_uri.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "sigv4.h"

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"

/* ------------------------------------------------------------------ */
/* Credentials                                                         */

int aib_aws_is_region(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!apr_islower(*s) && !apr_isdigit(*s) && *s != '-')
            return 0;
    return 1;
}

static int is_access_key_id(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!apr_isalnum(*s))
            return 0;
    return 1;
}

const char *aib_aws_credentials_parse(apr_pool_t *p, const char *entry,
                                      aib_aws_credentials_t *creds, const char **region)
{
    static const char *const shape =
        "an AWS credential is AKID:SECRET or AKID:SECRET:SESSION_TOKEN, optionally followed by @region";
    char *copy = apr_pstrdup(p, entry);
    /* Secrets and session tokens are base64: neither '@' nor ':' occurs in them. */
    char *at = strrchr(copy, '@');
    char *secret, *token = NULL;

    *region = NULL;
    if (at) {
        *at = '\0';
        if (!aib_aws_is_region(at + 1))
            return apr_psprintf(p, "%s; the region after '@' is letters, digits and '-'", shape);
        *region = at + 1;
    }
    secret = strchr(copy, ':');
    if (!secret)
        return shape;
    *secret++ = '\0';
    token = strchr(secret, ':');
    if (token) {
        *token++ = '\0';
        if (!*token || strchr(token, ':'))
            return shape;
    }
    if (!is_access_key_id(copy))
        return apr_psprintf(p, "%s; the access key id is letters and digits", shape);
    if (!*secret)
        return apr_psprintf(p, "%s; the secret is empty", shape);
    creds->access_key_id = copy;
    creds->secret = secret;
    creds->session_token = token;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Canonical request                                                   */

const char *aib_aws_uri_encode(apr_pool_t *p, const char *s, int keep_slash)
{
    static const char digits[] = "0123456789ABCDEF";
    char *out = apr_palloc(p, 3 * strlen(s) + 1);
    char *o = out;

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
            || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
            *o++ = (char)c;
        }
        else {
            *o++ = '%';
            *o++ = digits[c >> 4];
            *o++ = digits[c & 0x0f];
        }
    }
    *o = '\0';
    return out;
}

/* The path with empty, "." and ".." segments resolved (services other than
 * S3 require it), then encoded once more as it stands: the "%3A" of a
 * Bedrock model id becomes "%253A", as AWS computes it on its side. */
static const char *canonical_uri(apr_pool_t *p, const char *path)
{
    apr_array_header_t *segments = apr_array_make(p, 8, sizeof(const char *));
    char *segment, *state;
    size_t len = path ? strlen(path) : 0;

    if (!len)
        return "/";
    for (segment = apr_strtok(apr_pstrdup(p, path), "/", &state); segment;
         segment = apr_strtok(NULL, "/", &state)) {
        if (!strcmp(segment, ".."))
            apr_array_pop(segments);
        else if (strcmp(segment, "."))
            APR_ARRAY_PUSH(segments, const char *) = segment;
    }
    return aib_aws_uri_encode(p,
                          apr_pstrcat(p, path[0] == '/' ? "/" : "",
                                      apr_array_pstrcat(p, segments, '/'),
                                      path[len - 1] == '/' && segments->nelts ? "/" : "",
                                      NULL),
                          1);
}

typedef struct {
    const char *name;
    const char *value;
    int order; /* position in the request, for repeated names */
} sigv4_pair_t;

static int compare_query_pairs(const void *a, const void *b)
{
    const sigv4_pair_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);

    return c ? c : strcmp(x->value, y->value);
}

/* One query name or value, decoded from however the URL encodes it and
 * encoded again the AWS way; NULL for a malformed escape. */
static const char *query_component(apr_pool_t *p, const char *raw)
{
    const char *decoded = apr_punescape_url(p, raw, NULL, NULL, 0);

    return decoded ? aib_aws_uri_encode(p, decoded, 0) : NULL;
}

/* Parameters sorted by encoded name, then value, as "name=value" joined
 * with '&'; a parameter without '=' has the empty value. */
static const char *canonical_query(apr_pool_t *p, const char *query)
{
    apr_array_header_t *pairs = apr_array_make(p, 4, sizeof(sigv4_pair_t));
    apr_array_header_t *joined;
    char *param, *state;
    int i;

    if (!query || !*query)
        return "";
    for (param = apr_strtok(apr_pstrdup(p, query), "&", &state); param;
         param = apr_strtok(NULL, "&", &state)) {
        sigv4_pair_t *pair = apr_array_push(pairs);
        char *eq = strchr(param, '=');

        if (eq)
            *eq = '\0';
        pair->name = query_component(p, param);
        pair->value = query_component(p, eq ? eq + 1 : "");
        if (!pair->name || !pair->value)
            return NULL;
    }
    qsort(pairs->elts, pairs->nelts, sizeof(sigv4_pair_t), compare_query_pairs);
    joined = apr_array_make(p, pairs->nelts, sizeof(const char *));
    for (i = 0; i < pairs->nelts; i++) {
        const sigv4_pair_t *pair = &APR_ARRAY_IDX(pairs, i, sigv4_pair_t);

        APR_ARRAY_PUSH(joined, const char *) = apr_pstrcat(p, pair->name, "=", pair->value, NULL);
    }
    return apr_array_pstrcat(p, joined, '&');
}

static const char *lowercase(apr_pool_t *p, const char *s)
{
    char *out = apr_pstrdup(p, s);
    char *c;

    for (c = out; *c; c++)
        *c = (char)apr_tolower(*c);
    return out;
}

/* Headers botocore never signs: clients and proxies change them. */
static int is_unsigned_header(const char *lower_name)
{
    return !strcmp(lower_name, "user-agent") || !strcmp(lower_name, "expect")
           || !strcmp(lower_name, "x-amzn-trace-id");
}

/* SigV4's Trimall: no leading or trailing white space, inner runs as one
 * space. */
static const char *trim_all(apr_pool_t *p, const char *value)
{
    char *out = apr_palloc(p, strlen(value) + 1);
    char *o = out;

    for (;;) {
        while (apr_isspace(*value))
            value++;
        if (!*value)
            break;
        if (o != out)
            *o++ = ' ';
        while (*value && !apr_isspace(*value))
            *o++ = *value++;
    }
    *o = '\0';
    return out;
}

static int compare_header_pairs(const void *a, const void *b)
{
    const sigv4_pair_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);

    return c ? c : x->order - y->order;
}

/* The canonical headers (each "name:value\n", repeated names' values
 * joined by ',' in request order) and the signed header list. */
static void canonical_headers(apr_pool_t *p, const apr_table_t *headers, const char *host,
                              const char **canonical, const char **signed_names)
{
    const apr_array_header_t *elts = apr_table_elts(headers);
    const apr_table_entry_t *e = (const apr_table_entry_t *)elts->elts;
    apr_array_header_t *pairs = apr_array_make(p, elts->nelts + 1, sizeof(sigv4_pair_t));
    apr_array_header_t *lines = apr_array_make(p, elts->nelts + 1, sizeof(const char *));
    apr_array_header_t *names = apr_array_make(p, elts->nelts + 1, sizeof(const char *));
    int has_host = 0, i;

    for (i = 0; i < elts->nelts; i++) {
        const char *name = lowercase(p, e[i].key);
        sigv4_pair_t *pair;

        if (is_unsigned_header(name))
            continue;
        has_host |= !strcmp(name, "host");
        pair = apr_array_push(pairs);
        pair->name = name;
        pair->value = trim_all(p, e[i].val ? e[i].val : "");
        pair->order = i;
    }
    if (!has_host) {
        sigv4_pair_t *pair = apr_array_push(pairs);

        pair->name = "host";
        pair->value = host;
        pair->order = i;
    }
    qsort(pairs->elts, pairs->nelts, sizeof(sigv4_pair_t), compare_header_pairs);
    for (i = 0; i < pairs->nelts; i++) {
        const sigv4_pair_t *pair = &APR_ARRAY_IDX(pairs, i, sigv4_pair_t);

        if (i && !strcmp(pair[-1].name, pair->name)) {
            const char **line = &APR_ARRAY_IDX(lines, lines->nelts - 1, const char *);

            *line = apr_pstrcat(p, *line, ",", pair->value, NULL);
            continue;
        }
        APR_ARRAY_PUSH(lines, const char *) = apr_pstrcat(p, pair->name, ":", pair->value, NULL);
        APR_ARRAY_PUSH(names, const char *) = pair->name;
    }
    *canonical = apr_pstrcat(p, apr_array_pstrcat(p, lines, '\n'), "\n", NULL);
    *signed_names = apr_array_pstrcat(p, names, ';');
}

/* The Host header the URL implies: lowercase, IPv6 in brackets, the port
 * only when it is not the scheme's default. */
static const char *host_of(apr_pool_t *p, const apr_uri_t *uri)
{
    const char *host = lowercase(p, uri->hostname);

    if (strchr(host, ':'))
        host = apr_pstrcat(p, "[", host, "]", NULL);
    if (uri->port_str && *uri->port_str && uri->port != apr_uri_port_of_scheme(uri->scheme))
        host = apr_psprintf(p, "%s:%u", host, (unsigned)uri->port);
    return host;
}

/* ------------------------------------------------------------------ */
/* Signature                                                           */

/* SHA-256 fetched once per process: OpenSSL 3's one-shot SHA256() and
 * HMAC() look the algorithm up by name on every call, which cost more than
 * the hashing itself (./dev bench, BENCHMARKS.md). */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

/* The digest of a and then b (b may be NULL). */
static int sha256_of(const void *a, size_t a_len, const void *b, size_t b_len,
                     unsigned char out[SHA256_DIGEST_LENGTH])
{
    EVP_MD_CTX *ctx;
    int ok;

    pthread_once(&sha256_once, sha256_fetch);
    if (!sha256_md || !(ctx = EVP_MD_CTX_new()))
        return 0;
    ok = EVP_DigestInit_ex2(ctx, sha256_md, NULL) && EVP_DigestUpdate(ctx, a, a_len)
         && (!b || EVP_DigestUpdate(ctx, b, b_len)) && EVP_DigestFinal_ex(ctx, out, NULL);
    EVP_MD_CTX_free(ctx);
    return ok;
}

static const char *sha256_hex(apr_pool_t *p, const void *data, apr_size_t len)
{
    unsigned char digest[SHA256_DIGEST_LENGTH];

    if (!sha256_of(len ? data : (const void *)"", len, NULL, 0, digest))
        return NULL;
    return apr_pescape_hex(p, digest, sizeof(digest), 0);
}

#define HMAC_BLOCK 64   /* SHA-256's block size */

/* HMAC-SHA256 (RFC 2104) over the process's SHA-256. Its pads are as good
 * as the key: wiped before returning. */
static int hmac_sha256(const void *key, apr_size_t key_len, const char *msg,
                       unsigned char out[SHA256_DIGEST_LENGTH])
{
    unsigned char block[HMAC_BLOCK] = { 0 }, pad[HMAC_BLOCK], inner[SHA256_DIGEST_LENGTH];
    int ok = 1, i;

    if (key_len > HMAC_BLOCK)
        ok = sha256_of(key, key_len, NULL, 0, block);
    else
        memcpy(block, key, key_len);
    for (i = 0; i < HMAC_BLOCK; i++)
        pad[i] = block[i] ^ 0x36;
    ok = ok && sha256_of(pad, sizeof(pad), msg, strlen(msg), inner);
    for (i = 0; i < HMAC_BLOCK; i++)
        pad[i] = block[i] ^ 0x5c;
    ok = ok && sha256_of(pad, sizeof(pad), inner, sizeof(inner), out);
    OPENSSL_cleanse(block, sizeof(block));
    OPENSSL_cleanse(pad, sizeof(pad));
    return ok;
}

/* The signing key depends only on the secret, the day, the region and the
 * service: each thread keeps the last few it derived, so a request costs
 * one HMAC instead of five. Each is as good as its secret for that day,
 * which this process holds anyway. */
#define SIGNING_KEYS_KEPT 4
#define SIGNING_SCOPE_MAX 160

typedef struct {
    char scope[SIGNING_SCOPE_MAX];   /* date/region/service/secret; "" unused */
    unsigned char key[SHA256_DIGEST_LENGTH];
} signing_key_t;

static __thread signing_key_t signing_keys[SIGNING_KEYS_KEPT];
static __thread unsigned signing_keys_next;

/* HMAC chain from "AWS4" + secret over date, region, service and
 * "aws4_request". */
static int derive_signing_key(apr_pool_t *p, const char *secret, const char *date,
                              const char *region, const char *service,
                              unsigned char key[SHA256_DIGEST_LENGTH])
{
    char *secret_key = apr_pstrcat(p, "AWS4", secret, NULL);
    size_t secret_key_len = strlen(secret_key);
    int ok = hmac_sha256(secret_key, secret_key_len, date, key)
             && hmac_sha256(key, SHA256_DIGEST_LENGTH, region, key)
             && hmac_sha256(key, SHA256_DIGEST_LENGTH, service, key)
             && hmac_sha256(key, SHA256_DIGEST_LENGTH, "aws4_request", key);

    OPENSSL_cleanse(secret_key, secret_key_len);
    return ok;
}

static const char *signature_of(apr_pool_t *p, const char *secret, const char *date,
                                const char *region, const char *service,
                                const char *string_to_sign)
{
    char *scope = apr_pstrcat(p, date, "/", region, "/", service, "/", secret, NULL);
    size_t scope_len = strlen(scope);
    unsigned char key[SHA256_DIGEST_LENGTH], signature[SHA256_DIGEST_LENGTH];
    signing_key_t *kept = NULL;
    int ok = 1, i;

    for (i = 0; i < SIGNING_KEYS_KEPT && !kept; i++)
        if (!strcmp(signing_keys[i].scope, scope))
            kept = &signing_keys[i];
    if (kept)
        memcpy(key, kept->key, sizeof(key));
    else {
        ok = derive_signing_key(p, secret, date, region, service, key);
        if (ok && scope_len < SIGNING_SCOPE_MAX) {
            kept = &signing_keys[signing_keys_next++ % SIGNING_KEYS_KEPT];
            memcpy(kept->scope, scope, scope_len + 1);
            memcpy(kept->key, key, sizeof(key));
        }
    }
    ok = ok && hmac_sha256(key, sizeof(key), string_to_sign, signature);
    OPENSSL_cleanse(scope, scope_len);
    OPENSSL_cleanse(key, sizeof(key));
    return ok ? apr_pescape_hex(p, signature, sizeof(signature), 0) : NULL;
}

const char *aib_sigv4_sign(apr_pool_t *p, const char *method, const char *url,
                           apr_table_t *headers, const char *body, apr_size_t body_len,
                           const aib_aws_credentials_t *creds, const char *region,
                           const char *service, int64_t now_ms)
{
    apr_uri_t uri;
    apr_time_exp_t t;
    const char *amz_date, *date, *scope, *query, *canonical, *signed_names, *request;
    const char *string_to_sign, *signature, *body_hash, *request_hash;

    if (!creds || !creds->access_key_id || !*creds->access_key_id || !creds->secret
        || !*creds->secret)
        return "SigV4: no access key id or secret";
    if (!region || !*region || !service || !*service || !method || !*method)
        return "SigV4: no region, service or method";
    if (apr_uri_parse(p, url, &uri) != APR_SUCCESS || !uri.scheme || !uri.hostname
        || !*uri.hostname)
        return apr_psprintf(p, "SigV4: not an absolute URL: %s", url);
    query = canonical_query(p, uri.query);
    if (!query)
        return apr_psprintf(p, "SigV4: malformed %%-escape in the query of %s", url);
    if (apr_time_exp_gmt(&t, apr_time_from_msec(now_ms)) != APR_SUCCESS)
        return "SigV4: the time cannot be expressed";
    amz_date = apr_psprintf(p, "%04d%02d%02dT%02d%02d%02dZ", t.tm_year + 1900, t.tm_mon + 1,
                            t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec);
    date = apr_pstrndup(p, amz_date, 8);
    scope = apr_pstrcat(p, date, "/", region, "/", service, "/aws4_request", NULL);

    /* A table signed before (failover to another credential) loses the
     * old signature first, as botocore does on a retry. */
    apr_table_unset(headers, "Authorization");
    apr_table_set(headers, "X-Amz-Date", amz_date);
    if (creds->session_token && *creds->session_token)
        apr_table_set(headers, "X-Amz-Security-Token", creds->session_token);
    else
        apr_table_unset(headers, "X-Amz-Security-Token");

    canonical_headers(p, headers, host_of(p, &uri), &canonical, &signed_names);
    body_hash = sha256_hex(p, body, body_len);
    request = body_hash ? apr_pstrcat(p, method, "\n", canonical_uri(p, uri.path), "\n", query,
                                      "\n", canonical, "\n", signed_names, "\n", body_hash,
                                      NULL)
                        : NULL;
    request_hash = request ? sha256_hex(p, request, strlen(request)) : NULL;
    string_to_sign = request_hash ? apr_pstrcat(p, SIGV4_ALGORITHM "\n", amz_date, "\n", scope,
                                                "\n", request_hash, NULL)
                                  : NULL;
    signature = string_to_sign ? signature_of(p, creds->secret, date, region, service,
                                              string_to_sign)
                               : NULL;
    if (!signature)
        return "SigV4: HMAC-SHA256 failed";
    apr_table_set(headers, "Authorization",
                  apr_pstrcat(p, SIGV4_ALGORITHM " Credential=", creds->access_key_id, "/",
                              scope, ", SignedHeaders=", signed_names,
                              ", Signature=", signature, NULL));
    return NULL;
}
