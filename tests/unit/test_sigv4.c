/* Unit tests for AWS Signature Version 4 (src/sigv4.c).
 *
 * Known answers only: AWS's own published example, and signatures botocore
 * 1.29 (Debian's python3-botocore) computed for the same requests with
 * SigV4Auth.add_auth, its clock fixed to the time given here. A signature
 * is a hash of everything: any canonicalisation slip changes it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "unit.h"

#include <string.h>

#include <apr_strings.h>
#include <apr_tables.h>

#include "sigv4.h"

#define EXAMPLE_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define BEDROCK_BODY                                                                       \
    "{\"anthropic_version\":\"bedrock-2023-05-31\",\"max_tokens\":64,"                     \
    "\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}"
#define TOKEN "IQoJb3JpZ2luX2VjEXAMPLE//TOKEN+value=="

static const aib_aws_credentials_t iam_example = { "AKIDEXAMPLE", EXAMPLE_SECRET, NULL };
static const aib_aws_credentials_t long_term = { "AKIAIOSFODNN7EXAMPLE", EXAMPLE_SECRET, NULL };
static const aib_aws_credentials_t temporary = { "ASIAIOSFODNN7EXAMPLE", EXAMPLE_SECRET, TOKEN };

/* 2024-12-04T13:50:45Z, with milliseconds SigV4 has no room for. */
#define DEC_4_2024 INT64_C(1733320245123)

static apr_table_t *headers_of(const char *name, ...)
{
    apr_table_t *t = apr_table_make(pool, 8);
    va_list ap;

    va_start(ap, name);
    for (; name; name = va_arg(ap, const char *))
        apr_table_add(t, name, va_arg(ap, const char *));
    va_end(ap);
    return t;
}

static void sign_ok(const char *method, const char *url, apr_table_t *headers,
                    const char *body, const aib_aws_credentials_t *creds, const char *region,
                    const char *service, int64_t now_ms)
{
    const char *error = aib_sigv4_sign(pool, method, url, headers, body, strlen(body), creds,
                                       region, service, now_ms);

    assert_null(error);
}

/* ------------------------------------------------------------------ */
/* Known answers                                                       */

static void test_aws_iam_list_users_example(void **state)
{
    apr_table_t *h = headers_of("Content-Type", "application/x-www-form-urlencoded; charset=utf-8",
                                NULL);

    (void)state;
    /* "Elements of an AWS API request signature" / the SigV4 examples:
     * GET iam ListUsers at 20150830T123600Z, documented signature. */
    sign_ok("GET", "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08", h, "",
            &iam_example, "us-east-1", "iam", INT64_C(1440938160000));
    assert_string_equal(apr_table_get(h, "X-Amz-Date"), "20150830T123600Z");
    assert_string_equal(
        apr_table_get(h, "Authorization"),
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, "
        "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7");
    assert_null(apr_table_get(h, "X-Amz-Security-Token"));
    assert_null(apr_table_get(h, "X-Amz-Content-Sha256"));
}

static void test_bedrock_invoke_model_id_with_colon(void **state)
{
    apr_table_t *h = headers_of("Content-Type", "application/json", "Accept", "application/json",
                                NULL);

    (void)state;
    /* The client escapes ':' to %3A; the canonical URI escapes that again
     * (%253A): botocore, and AWS, sign it so. */
    sign_ok("POST",
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/"
            "anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke",
            h, BEDROCK_BODY, &long_term, "us-east-1", "bedrock", DEC_4_2024);
    assert_string_equal(apr_table_get(h, "X-Amz-Date"), "20241204T135045Z");
    assert_string_equal(
        apr_table_get(h, "Authorization"),
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20241204/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=accept;content-type;host;x-amz-date, "
        "Signature=11df065ce9658053c0973dc931b51036047d5facd28ccaafeda12c3b7ed7369d");
    assert_null(apr_table_get(h, "X-Amz-Security-Token"));
}

#define STREAM_URL                                                                         \
    "https://bedrock-runtime.us-west-2.amazonaws.com:8443/model/"                          \
    "us.anthropic.claude-3-7-sonnet-20250219-v1%3A0/invoke-with-response-stream"
#define STREAM_AUTHORIZATION                                                                \
    "AWS4-HMAC-SHA256 Credential=ASIAIOSFODNN7EXAMPLE/20241204/us-west-2/bedrock/aws4_request, " \
    "SignedHeaders=accept;content-type;host;x-amz-date;x-amz-security-token, "              \
    "Signature=2f9bbf769813466204ee1fcc86036a747e89ae92e684e8be8f3cae1bda90dfcc"

static void test_bedrock_stream_session_token_and_port(void **state)
{
    apr_table_t *h = headers_of("Content-Type", "application/json",
                                "Accept", "application/vnd.amazon.eventstream", NULL);

    (void)state;
    /* Cross-region inference profile, temporary credentials, a port that
     * is not https's: the Host signed is "host:8443". */
    sign_ok("POST", STREAM_URL, h, BEDROCK_BODY, &temporary, "us-west-2", "bedrock", DEC_4_2024);
    assert_string_equal(apr_table_get(h, "X-Amz-Security-Token"), TOKEN);
    assert_string_equal(apr_table_get(h, "Authorization"), STREAM_AUTHORIZATION);
}

static void test_query_encoded_again_and_sorted(void **state)
{
    apr_table_t *h = apr_table_make(pool, 4);

    (void)state;
    /* botocore got the decoded parameters (b="x y", a=":/", a="1", c="",
     * t="a+b~*", byProvider="anthropic"); the URL here writes them the way
     * a careless client might: raw ':' '/' '*', a lowercase escape, a
     * literal '+'. Sorted by name, then value; http on a test port. */
    sign_ok("GET", "http://127.0.0.1:9100/foundation-models?byProvider=anthropic&b=x%20y"
                   "&a=%3a/&a=1&c&t=a+b%7E*",
            h, "", &long_term, "eu-central-1", "bedrock", INT64_C(1733270400000));
    assert_string_equal(
        apr_table_get(h, "Authorization"),
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20241204/eu-central-1/bedrock/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=f9f79ef47972736bcbf9d8b4ea06d27942a7ea8d09711dd9a1e9b9fa6f0aa687");
}

#define TRIM_URL                                                                            \
    "https://bedrock-runtime.ap-northeast-1.amazonaws.com:443/a//./b/../model/x%20y%3A1/count-tokens"
#define TRIM_AUTHORIZATION                                                                 \
    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20241231/ap-northeast-1/bedrock/aws4_request, " \
    "SignedHeaders=content-type;host;x-amz-date;x-multi;x-trim, "                          \
    "Signature=c5bd336230f8dbda434a2aef29f200d812a8f7a018436443055ffa01d8d96deb"

static void test_empty_body_trim_repeat_and_unsigned_headers(void **state)
{
    apr_table_t *h = headers_of("X-Trim", "  a   b \t c  ", "X-Multi", "one",
                                "User-Agent", "curl/7.88", "x-multi", " two  words ",
                                "Expect", "100-continue", "Content-Type", "application/json",
                                NULL);

    (void)state;
    /* Values trimmed and their inner runs made one space; a repeated name
     * signed once with its values joined by ',' in order; User-Agent and
     * Expect left unsigned; the explicit default port dropped; "//", "."
     * and ".." resolved in the path; the empty body's hash. */
    sign_ok("POST", TRIM_URL, h, "", &long_term, "ap-northeast-1", "bedrock",
            INT64_C(1735689599000));
    assert_string_equal(apr_table_get(h, "X-Amz-Date"), "20241231T235959Z");
    assert_string_equal(apr_table_get(h, "Authorization"), TRIM_AUTHORIZATION);
    /* The headers given are sent as they are: only the signature is added. */
    assert_string_equal(apr_table_get(h, "X-Trim"), "  a   b \t c  ");
    assert_int_equal(apr_table_elts(h)->nelts, 8);
}

static void test_null_body_is_the_empty_body(void **state)
{
    apr_table_t *h = headers_of("X-Trim", "a b c", "X-Multi", "one", "X-Multi", "two words",
                                "Content-Type", "application/json", NULL);

    (void)state;
    assert_null(aib_sigv4_sign(pool, "POST", TRIM_URL, h, NULL, 0, &long_term, "ap-northeast-1",
                               "bedrock", INT64_C(1735689599000)));
    assert_string_equal(apr_table_get(h, "Authorization"), TRIM_AUTHORIZATION);
}

static void test_host_given_is_signed_as_given(void **state)
{
    apr_table_t *h = headers_of("Host", "bedrock-runtime.us-west-2.amazonaws.com:8443",
                                "Content-Type", "application/json",
                                "Accept", "application/vnd.amazon.eventstream", NULL);

    (void)state;
    sign_ok("POST", STREAM_URL, h, BEDROCK_BODY, &temporary, "us-west-2", "bedrock", DEC_4_2024);
    assert_string_equal(apr_table_get(h, "Authorization"), STREAM_AUTHORIZATION);
}

static void test_signing_again_replaces_the_signature(void **state)
{
    apr_table_t *h = headers_of("Content-Type", "application/json",
                                "Accept", "application/vnd.amazon.eventstream", NULL);
    const char *first;

    (void)state;
    /* Failover: the table signed with temporary credentials is signed
     * again with long-term ones, a minute later: no token, no stale date,
     * one Authorization. */
    sign_ok("POST", STREAM_URL, h, BEDROCK_BODY, &temporary, "us-west-2", "bedrock", DEC_4_2024);
    first = apr_table_get(h, "Authorization");
    sign_ok("POST", STREAM_URL, h, BEDROCK_BODY, &long_term, "us-west-2", "bedrock",
            DEC_4_2024 + 60000);
    assert_null(apr_table_get(h, "X-Amz-Security-Token"));
    assert_string_equal(apr_table_get(h, "X-Amz-Date"), "20241204T135145Z");
    assert_string_not_equal(apr_table_get(h, "Authorization"), first);
    assert_int_equal(apr_table_elts(h)->nelts, 4);
    /* And back: the first signature again, the time too. */
    sign_ok("POST", STREAM_URL, h, BEDROCK_BODY, &temporary, "us-west-2", "bedrock", DEC_4_2024);
    assert_string_equal(apr_table_get(h, "Authorization"), STREAM_AUTHORIZATION);
    assert_int_equal(apr_table_elts(h)->nelts, 5);
}

static void test_body_region_and_service_are_signed(void **state)
{
    const char *base, *other;
    apr_table_t *h = apr_table_make(pool, 4);

    (void)state;
    sign_ok("POST", STREAM_URL, h, BEDROCK_BODY, &long_term, "us-west-2", "bedrock", DEC_4_2024);
    base = apr_table_get(h, "Authorization");
    sign_ok("POST", STREAM_URL, h, BEDROCK_BODY " ", &long_term, "us-west-2", "bedrock",
            DEC_4_2024);
    assert_string_not_equal(apr_table_get(h, "Authorization"), base);
    sign_ok("POST", STREAM_URL, h, BEDROCK_BODY, &long_term, "us-east-1", "bedrock", DEC_4_2024);
    other = apr_table_get(h, "Authorization");
    assert_string_not_equal(other, base);
    assert_non_null(strstr(other, "/20241204/us-east-1/bedrock/aws4_request, "));
    sign_ok("POST", STREAM_URL, h, BEDROCK_BODY, &long_term, "us-west-2", "sts", DEC_4_2024);
    assert_string_not_equal(apr_table_get(h, "Authorization"), base);
}

static void test_sign_errors(void **state)
{
    apr_table_t *h = apr_table_make(pool, 4);
    const aib_aws_credentials_t no_secret = { "AKIAIOSFODNN7EXAMPLE", "", NULL };
    const char *error;

    (void)state;
    assert_non_null(aib_sigv4_sign(pool, "POST", "/model/x/invoke", h, "", 0, &long_term,
                                   "us-east-1", "bedrock", DEC_4_2024));
    assert_non_null(aib_sigv4_sign(pool, "GET", "https://h.example/?a=%zz", h, "", 0, &long_term,
                                   "us-east-1", "bedrock", DEC_4_2024));
    assert_non_null(aib_sigv4_sign(pool, "GET", "https://h.example/", h, "", 0, &long_term, "",
                                   "bedrock", DEC_4_2024));
    assert_non_null(aib_sigv4_sign(pool, "GET", "https://h.example/", h, "", 0, &long_term,
                                   "us-east-1", NULL, DEC_4_2024));
    error = aib_sigv4_sign(pool, "GET", "https://h.example/", h, "", 0, &no_secret, "us-east-1",
                           "bedrock", DEC_4_2024);
    assert_non_null(error);
    assert_null(strstr(error, "AKIA"));
    /* A failed signing adds nothing. */
    assert_int_equal(apr_table_elts(h)->nelts, 0);
}

/* ------------------------------------------------------------------ */
/* Credentials                                                         */

static void test_parse_long_term_and_temporary(void **state)
{
    aib_aws_credentials_t c;
    const char *region = "unset";

    (void)state;
    assert_null(aib_aws_credentials_parse(pool, "AKIAIOSFODNN7EXAMPLE:" EXAMPLE_SECRET, &c,
                                          &region));
    assert_string_equal(c.access_key_id, "AKIAIOSFODNN7EXAMPLE");
    assert_string_equal(c.secret, EXAMPLE_SECRET);
    assert_null(c.session_token);
    assert_null(region);

    assert_null(aib_aws_credentials_parse(pool, "ASIAIOSFODNN7EXAMPLE:" EXAMPLE_SECRET ":" TOKEN,
                                          &c, &region));
    assert_string_equal(c.access_key_id, "ASIAIOSFODNN7EXAMPLE");
    assert_string_equal(c.secret, EXAMPLE_SECRET);
    assert_string_equal(c.session_token, TOKEN);
    assert_null(region);
}

static void test_parse_region_suffix(void **state)
{
    aib_aws_credentials_t c;
    const char *region;

    (void)state;
    assert_null(aib_aws_credentials_parse(pool, "AKIAIOSFODNN7EXAMPLE:" EXAMPLE_SECRET "@eu-west-3",
                                          &c, &region));
    assert_string_equal(region, "eu-west-3");
    assert_string_equal(c.secret, EXAMPLE_SECRET);
    assert_null(c.session_token);

    assert_null(aib_aws_credentials_parse(
        pool, "ASIAIOSFODNN7EXAMPLE:" EXAMPLE_SECRET ":" TOKEN "@us-gov-west-1", &c, &region));
    assert_string_equal(region, "us-gov-west-1");
    assert_string_equal(c.session_token, TOKEN);
}

static void test_parse_rejects_without_showing_secrets(void **state)
{
    static const char *const bad[] = {
        "AKIAIOSFODNN7EXAMPLE",                                  /* no secret */
        "AKIAIOSFODNN7EXAMPLE:",                                 /* empty secret */
        ":" EXAMPLE_SECRET,                                      /* empty key id */
        "AKIA-IOSFODNN7:" EXAMPLE_SECRET,                        /* key id not alphanumeric */
        "AKIAIOSFODNN7EXAMPLE:" EXAMPLE_SECRET ":",              /* empty token */
        "AKIAIOSFODNN7EXAMPLE:" EXAMPLE_SECRET ":" TOKEN ":x",   /* a fourth part */
        "AKIAIOSFODNN7EXAMPLE:" EXAMPLE_SECRET "@",              /* empty region */
        "AKIAIOSFODNN7EXAMPLE:" EXAMPLE_SECRET "@US-EAST-1",     /* not a region name */
        "AKIAIOSFODNN7EXAMPLE:" EXAMPLE_SECRET ":" TOKEN "@us east", /* not a region name */
    };
    aib_aws_credentials_t c;
    const char *region;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *error = aib_aws_credentials_parse(pool, bad[i], &c, &region);

        assert_non_null(error);
        assert_null(strstr(error, "wJalr"));
        assert_null(strstr(error, "EXAMPLEKEY"));
        assert_null(strstr(error, "IQoJ"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_aws_iam_list_users_example, aib_clear_pool),
        cmocka_unit_test_teardown(test_bedrock_invoke_model_id_with_colon, aib_clear_pool),
        cmocka_unit_test_teardown(test_bedrock_stream_session_token_and_port, aib_clear_pool),
        cmocka_unit_test_teardown(test_query_encoded_again_and_sorted, aib_clear_pool),
        cmocka_unit_test_teardown(test_empty_body_trim_repeat_and_unsigned_headers,
                                  aib_clear_pool),
        cmocka_unit_test_teardown(test_null_body_is_the_empty_body, aib_clear_pool),
        cmocka_unit_test_teardown(test_host_given_is_signed_as_given, aib_clear_pool),
        cmocka_unit_test_teardown(test_signing_again_replaces_the_signature, aib_clear_pool),
        cmocka_unit_test_teardown(test_body_region_and_service_are_signed, aib_clear_pool),
        cmocka_unit_test_teardown(test_sign_errors, aib_clear_pool),
        cmocka_unit_test_teardown(test_parse_long_term_and_temporary, aib_clear_pool),
        cmocka_unit_test_teardown(test_parse_region_suffix, aib_clear_pool),
        cmocka_unit_test_teardown(test_parse_rejects_without_showing_secrets, aib_clear_pool),
    };
    return AIB_RUN_TESTS(tests);
}
