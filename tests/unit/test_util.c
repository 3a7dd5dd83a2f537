/* Unit tests for src/util.c: the usage record's time format and the random
 * hex of interception ids and status page nonces. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "unit.h"

#include <string.h>

#include <apr_pools.h>

#include "util.h"


static void test_time_epoch(void **state)
{
    (void)state;
    assert_string_equal(aib_time_rfc3339(pool, 0), "1970-01-01T00:00:00.000Z");
}

/* Milliseconds are shown with three digits, leading zeros kept. */
static void test_time_milliseconds(void **state)
{
    (void)state;
    assert_string_equal(aib_time_rfc3339(pool, INT64_C(1738326896789)),
                        "2025-01-31T12:34:56.789Z");
    assert_string_equal(aib_time_rfc3339(pool, INT64_C(1738326896007)),
                        "2025-01-31T12:34:56.007Z");
}

static void test_time_leap_day(void **state)
{
    (void)state;
    assert_string_equal(aib_time_rfc3339(pool, INT64_C(1709251199999)),
                        "2024-02-29T23:59:59.999Z");
}

static void test_now_is_after_2025(void **state)
{
    (void)state;
    assert_true(aib_now_ms() > INT64_C(1735689600000));
}

static void test_random_hex_shape(void **state)
{
    const char *hex = aib_random_hex(pool, 8);

    (void)state;
    assert_non_null(hex);
    assert_int_equal(strlen(hex), 16);
    assert_int_equal(strspn(hex, "0123456789abcdef"), 16);
}

/* 128 random bits twice alike would be a broken generator. */
static void test_random_hex_differs(void **state)
{
    const char *a = aib_random_hex(pool, 16), *b = aib_random_hex(pool, 16);

    (void)state;
    assert_int_equal(strlen(a), 32);
    assert_string_not_equal(a, b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_time_epoch, aib_clear_pool),
        cmocka_unit_test_teardown(test_time_milliseconds, aib_clear_pool),
        cmocka_unit_test_teardown(test_time_leap_day, aib_clear_pool),
        cmocka_unit_test(test_now_is_after_2025),
        cmocka_unit_test_teardown(test_random_hex_shape, aib_clear_pool),
        cmocka_unit_test_teardown(test_random_hex_differs, aib_clear_pool),
    };
    return AIB_RUN_TESTS(tests);
}
