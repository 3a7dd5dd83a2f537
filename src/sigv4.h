/* AWS Signature Version 4 over the exact request that will be sent, as
 * botocore's SigV4Auth computes it (the authority AWS's own clients follow).
 * Pure: no httpd, no libcurl; HMAC and SHA-256 from libcrypto. */
#ifndef AIB_SIGV4_H
#define AIB_SIGV4_H

#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>

typedef struct {
    const char *access_key_id;
    const char *secret;
    const char *session_token; /* NULL for long-term keys */
} aib_aws_credentials_t;

/* A key pool entry "AKID:SECRET[:SESSION_TOKEN][@region]" (the caller has
 * already set "bearer:" entries apart). *region is NULL when the entry names
 * none. The strings point into a copy in `p`. Returns NULL or an error
 * message, which never shows the secret or the token. */
const char *aib_aws_credentials_parse(apr_pool_t *p, const char *entry,
                                      aib_aws_credentials_t *creds, const char **region);

/* Whether s is a region name: lowercase letters, digits and '-'. */
int aib_aws_is_region(const char *s);

/* AWS's UriEncode: every byte but A-Z a-z 0-9 - _ . ~ as %XX, uppercase,
 * and '/' too unless `keep_slash` (a path segment as AWS's clients write
 * it: the ':' of a model id becomes %3A). */
const char *aib_aws_uri_encode(apr_pool_t *p, const char *s, int keep_slash);

/* Signs the request `method url` with `body`: `headers` holds every header
 * that will be sent; Host may be left out, it is then derived from the URL
 * (lowercase, the port only when not the scheme's default). Sets
 * X-Amz-Date, X-Amz-Security-Token (with a session token) and
 * Authorization in `headers`, replacing any earlier signature, so one
 * table can be signed again with another credential on failover.
 *
 * Every header in `headers` is signed except User-Agent, Expect and
 * X-Amzn-Trace-Id (botocore's exclusions), so each must go out unchanged.
 * X-Amz-Content-Sha256 is not added: SigV4Auth (what boto3 uses for
 * bedrock-runtime) does not send it, and a verifier given one trusts it
 * instead of hashing the body. The query string may be encoded any way: it
 * is decoded and encoded again the AWS way ("+" stays a literal plus).
 * Returns NULL or an error message (never holding a secret). */
const char *aib_sigv4_sign(apr_pool_t *p, const char *method, const char *url,
                           apr_table_t *headers, const char *body, apr_size_t body_len,
                           const aib_aws_credentials_t *creds, const char *region,
                           const char *service, int64_t now_ms);

#endif
