/* Unit tests for src/hint.c: the masked hint shown to people and the
 * fingerprint that identifies a key in the shared key store. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "unit.h"

#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>

#include "hint.h"


/* The first `len` characters of a key whose every character is distinct,
 * so a hint showing the wrong characters cannot match by accident. */
static const char *key_of_length(size_t len)
{
    static const char chars[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

    assert_true(len < sizeof(chars));
    return apr_pstrmemdup(pool, chars, len);
}

#define HINT_IS(len, want) do {                                         \
        const char *key_ = key_of_length(len);                          \
        const char *hint_ = aib_key_hint(pool, key_);                   \
        if (strcmp(hint_, (want))) {                                    \
            print_error("hint of %d-char key \"%s\" is \"%s\", want \"%s\"\n", \
                        (int)(len), key_, hint_, (want));               \
            _fail(__FILE__, __LINE__);                                  \
        }                                                               \
    } while (0)

/* ---- masked hint ------------------------------------------------------ */

static void test_hint_below_five_shows_nothing(void **state)
{
    (void)state;
    HINT_IS(0, "...");
    HINT_IS(1, "...");
    HINT_IS(4, "...");
}

static void test_hint_boundaries(void **state)
{
    (void)state;
    HINT_IS(5, "a...e");                /* 5 to 9: one and one */
    HINT_IS(9, "a...i");
    HINT_IS(10, "ab...ij");             /* 10 to 19: two and two */
    HINT_IS(19, "ab...rs");
    HINT_IS(20, "abcd...qrst");         /* 20 and more: four and four */
    HINT_IS(21, "abcd...rstu");
}

static void test_hint_long_key(void **state)
{
    const char *key = "sk-proj-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-abcdefghijklmnopqrstuvwxyz"
                      "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-abcdefghijklmnopqrstuvwxyz";

    (void)state;
    assert_string_equal(aib_key_hint(pool, key), "sk-p...wxyz");
}

/* An AWS credential is named by its access key id alone: no end of the
 * secret, the session token or the region shows; a bearer entry by its
 * token's ends. */
static void test_hint_credential_with_parts(void **state)
{
    (void)state;
    assert_string_equal(aib_key_hint(pool, "AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI/K7MDENG/bPxRfiCY"),
                        "AKIA...MPLE");
    assert_string_equal(aib_key_hint(pool, "AKIAIOSFODNN7EXAMPLE:secretsecretsecret:"
                                           "FwoGZXIvYXdzEBYaDtokentokentoken@eu-west-1"),
                        "AKIA...MPLE");
    assert_string_equal(aib_key_hint(pool, "bearer:ABSKQmVkcm9ja0FQSUtleS1hYmNk@us-west-2"),
                        "bear...YmNk");
    assert_string_equal(aib_key_hint(pool, "bearer:eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.x.sig42"),
                        "bear...ig42");
}

static void test_hint_never_contains_key(void **state)
{
    size_t len;

    (void)state;
    for (len = 1; len <= 40; len++) {
        const char *key = key_of_length(len);
        const char *hint = aib_key_hint(pool, key);
        size_t shown = len >= 20 ? 4 : len >= 10 ? 2 : len >= 5 ? 1 : 0;

        assert_null(strstr(hint, key));
        assert_int_equal(strlen(hint), 2 * shown + 3);
    }
}

/* A configuration argument: shown as is unless it may be a key. */
static void test_arg_hint(void **state)
{
    (void)state;
    assert_string_equal(aib_arg_hint(pool, "Main"), "Main");
    assert_string_equal(aib_arg_hint(pool, "0123456789abcdefghi"), "0123456789abcdefghi");
    assert_string_equal(aib_arg_hint(pool, "https://api.example.com/v1?x=1"),
                        "https://api.example.com/v1?x=1");
    assert_string_equal(aib_arg_hint(pool, "sk-proj-Secret_0123456789wxyz"), "sk-p...wxyz");
}

/* ---- fingerprint ------------------------------------------------------ */

static void test_fingerprint_known_value(void **state)
{
    (void)state;
    /* printf 'openai\0sk-test-key' | sha1sum -> 6d45374249b3e216...:
     * SHA-1 of the pool name, a NUL and the key, first 8 bytes big-endian.
     * A fixed value proves every process computes the same one. */
    assert_true(aib_key_fingerprint("openai", "sk-test-key")
                == UINT64_C(0x6d45374249b3e216));
}

static void test_fingerprint_stable(void **state)
{
    char pool_name[] = "openai", key[] = "sk-test-key";

    (void)state;
    /* Depends on the contents only, not on where they live. */
    assert_true(aib_key_fingerprint("openai", "sk-test-key")
                == aib_key_fingerprint(pool_name, key));
    assert_true(aib_key_fingerprint(pool_name, key)
                == aib_key_fingerprint(pool_name, key));
}

static void test_fingerprint_differs(void **state)
{
    uint64_t base = aib_key_fingerprint("openai", "sk-test-key");

    (void)state;
    assert_true(aib_key_fingerprint("anthropic", "sk-test-key") != base);
    assert_true(aib_key_fingerprint("openai", "sk-test-kez") != base);
    assert_true(aib_key_fingerprint("openai", "sk-test-key ") != base);
    /* The boundary between pool name and key is part of the input. */
    assert_true(aib_key_fingerprint("ab", "c") != aib_key_fingerprint("a", "bc"));
    assert_true(aib_key_fingerprint("", "abc") != aib_key_fingerprint("abc", ""));
}

static void test_fingerprint_never_zero(void **state)
{
    int i;

    (void)state;
    assert_true(aib_key_fingerprint("", "") != 0);
    for (i = 0; i < 20000; i++)
        assert_true(aib_key_fingerprint("p", apr_psprintf(pool, "k%d", i)) != 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_hint_below_five_shows_nothing, aib_clear_pool),
        cmocka_unit_test_teardown(test_hint_boundaries, aib_clear_pool),
        cmocka_unit_test_teardown(test_hint_long_key, aib_clear_pool),
        cmocka_unit_test_teardown(test_hint_credential_with_parts, aib_clear_pool),
        cmocka_unit_test_teardown(test_hint_never_contains_key, aib_clear_pool),
        cmocka_unit_test_teardown(test_arg_hint, aib_clear_pool),
        cmocka_unit_test(test_fingerprint_known_value),
        cmocka_unit_test(test_fingerprint_stable),
        cmocka_unit_test(test_fingerprint_differs),
        cmocka_unit_test_teardown(test_fingerprint_never_zero, aib_clear_pool),
    };
    return AIB_RUN_TESTS(tests);
}
