/* Unit tests for src/keypool.c: key state, the walker, exhaustion, counters
 * and slot assignment across graceful restarts.
 *
 * The key store is a plain calloc'd array (httpd uses shared memory) and
 * the clock is explicit: every call gets a now_ms. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "unit.h"

#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <apr_tables.h>

#include "hint.h"
#include "keypool.h"

/* 2026-11-25T12:00:00Z */
#define NOW INT64_C(1795608000000)


/* ---- helpers ----------------------------------------------------------- */

#define ASSERT_I64(a, b) check_i64((a), (b), __FILE__, __LINE__)

static void check_i64(int64_t got, int64_t want, const char *file, int line)
{
    if (got != want) {
        print_error("got %lld, want %lld\n", (long long)got, (long long)want);
        _fail(file, line);
    }
}

static apr_status_t free_slots(void *slots)
{
    free(slots);
    return APR_SUCCESS;
}

/* A zeroed store, freed when the pool is cleared. */
static aib_keystore_t *new_store(uint32_t capacity)
{
    aib_keystore_t *ks = apr_pcalloc(pool, sizeof(*ks));

    ks->slots = calloc(capacity, sizeof(aib_slot_t));
    assert_non_null(ks->slots);
    ks->capacity = capacity;
    apr_pool_cleanup_register(pool, ks->slots, free_slots, apr_pool_cleanup_null);
    return ks;
}

/* A distinct, realistic-looking key value for a short tag. */
static const char *key_value(const char *tag)
{
    return apr_psprintf(pool, "sk-test-%s-0123456789abcdef", tag);
}

/* A pool object holding the keys named by the NULL-terminated tags. */
static aib_keypool_t *keypool(const char *name, ...)
{
    aib_keypool_t *kp = aib_keypool_create(pool, name);
    const char *tag;
    va_list ap;

    va_start(ap, name);
    while ((tag = va_arg(ap, const char *)) != NULL)
        assert_null(aib_keypool_add_key(kp, pool, key_value(tag)));
    va_end(ap);
    return kp;
}

/* The NULL-terminated pool objects as the array the store API takes. */
static apr_array_header_t *pools_of(aib_keypool_t *first, ...)
{
    apr_array_header_t *arr = apr_array_make(pool, 4, sizeof(aib_keypool_t *));
    aib_keypool_t *kp;
    va_list ap;

    va_start(ap, first);
    for (kp = first; kp; kp = va_arg(ap, aib_keypool_t *))
        APR_ARRAY_PUSH(arr, aib_keypool_t *) = kp;
    va_end(ap);
    return arr;
}

/* One pool in a fresh store sized exactly for it. */
static aib_keypool_t *assigned(aib_keypool_t *kp)
{
    apr_array_header_t *pools = pools_of(kp, NULL);

    aib_keystore_assign(new_store(aib_keystore_slots_needed(pools, pool)), NULL,
                        pools, pool);
    return kp;
}

static uint32_t slot_no(const aib_keypool_t *kp, int i)
{
    return APR_ARRAY_IDX(kp->keys, i, aib_key_t).slot;
}

static aib_slot_t snapshot(const aib_keypool_t *kp, int i)
{
    aib_slot_t s;

    aib_key_snapshot(kp, i, &s);
    return s;
}

static void assert_state(const aib_keypool_t *kp, int i, int64_t now,
                         aib_key_state_e want, aib_reason_e want_reason,
                         int64_t want_until)
{
    aib_reason_e reason = (aib_reason_e)-1;
    int64_t until = -1;

    assert_int_equal(aib_key_state(kp, i, now, &reason, &until), want);
    assert_int_equal(reason, want_reason);
    ASSERT_I64(until, want_until);
}

#define ASSERT_AVAILABLE(kp, i, now) \
    assert_state((kp), (i), (now), AIB_KEY_AVAILABLE, AIB_REASON_NONE, 0)

static void assert_exhaustion(const aib_keypool_t *kp, int64_t now,
                              aib_exhaustion_e kind, int64_t retry_after_s)
{
    aib_exhaustion_t ex = aib_keypool_exhaustion(kp, now);

    assert_int_equal(ex.kind, kind);
    ASSERT_I64(ex.retry_after_s, retry_after_s);
}

/* ---- walker and state -------------------------------------------------- */

static void test_walker_all_available(void **state)
{
    aib_keypool_t *kp = assigned(keypool("p", "a", "b", "c", NULL));
    aib_walker_t w;

    (void)state;
    aib_walker_init(&w, kp);
    assert_int_equal(aib_walker_next(&w, NOW), 0);
    assert_int_equal(aib_walker_next(&w, NOW), 1);
    assert_int_equal(aib_walker_next(&w, NOW), 2);
    assert_int_equal(aib_walker_next(&w, NOW), -1);
    assert_int_equal(aib_walker_next(&w, NOW), -1);
}

static void test_walker_skips_unavailable(void **state)
{
    aib_keypool_t *kp = assigned(keypool("p", "a", "b", "c", "d", "e", NULL));
    aib_walker_t w;

    (void)state;
    aib_key_cooldown(kp, 0, NOW + 30000, AIB_REASON_RATE_LIMITED);
    aib_key_disable(kp, 2, AIB_FOREVER, AIB_REASON_UNAUTHORIZED);
    aib_key_cooldown(kp, 4, NOW + 1, AIB_REASON_QUOTA);

    assert_state(kp, 0, NOW, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + 30000);
    ASSERT_AVAILABLE(kp, 1, NOW);
    assert_state(kp, 2, NOW, AIB_KEY_DISABLED, AIB_REASON_UNAUTHORIZED, AIB_FOREVER);
    ASSERT_AVAILABLE(kp, 3, NOW);
    assert_state(kp, 4, NOW, AIB_KEY_COOLING, AIB_REASON_QUOTA, NOW + 1);

    aib_walker_init(&w, kp);
    assert_int_equal(aib_walker_next(&w, NOW), 1);
    assert_int_equal(aib_walker_next(&w, NOW), 3);
    assert_int_equal(aib_walker_next(&w, NOW), -1);
}

static void test_cooldown_expires(void **state)
{
    aib_keypool_t *kp = assigned(keypool("p", "a", NULL));
    aib_walker_t w;

    (void)state;
    aib_key_cooldown(kp, 0, NOW + 1000, AIB_REASON_RATE_LIMITED);
    assert_state(kp, 0, NOW + 999, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + 1000);
    aib_walker_init(&w, kp);
    assert_int_equal(aib_walker_next(&w, NOW + 999), -1);

    /* The deadline itself is the first available instant. */
    ASSERT_AVAILABLE(kp, 0, NOW + 1000);
    aib_walker_init(&w, kp);
    assert_int_equal(aib_walker_next(&w, NOW + 1000), 0);
}

static void test_cooldown_default(void **state)
{
    /* Without any rate-limit header the bridge cools a key for the
     * provider's cooldown= (60 s by default). */
    const int64_t cooldown_ms = 60000;
    aib_keypool_t *kp = assigned(keypool("p", "a", NULL));

    (void)state;
    aib_key_cooldown(kp, 0, NOW + cooldown_ms, AIB_REASON_RATE_LIMITED);
    assert_state(kp, 0, NOW, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + cooldown_ms);
    assert_exhaustion(kp, NOW, AIB_EXHAUSTED_RATE_LIMITED, 60);
    assert_state(kp, 0, NOW + cooldown_ms - 1, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED,
                 NOW + cooldown_ms);
    ASSERT_AVAILABLE(kp, 0, NOW + cooldown_ms);
}

static void test_cooldown_longer_wins(void **state)
{
    aib_keypool_t *kp = assigned(keypool("p", "a", NULL));

    (void)state;
    aib_key_cooldown(kp, 0, NOW + 10000, AIB_REASON_RATE_LIMITED);
    /* Shorter or equal: the deadline and its reason stay. */
    aib_key_cooldown(kp, 0, NOW + 5000, AIB_REASON_QUOTA);
    assert_state(kp, 0, NOW, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + 10000);
    aib_key_cooldown(kp, 0, NOW + 10000, AIB_REASON_QUOTA);
    assert_state(kp, 0, NOW, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + 10000);
    /* Longer: extends. */
    aib_key_cooldown(kp, 0, NOW + 20000, AIB_REASON_QUOTA);
    assert_state(kp, 0, NOW, AIB_KEY_COOLING, AIB_REASON_QUOTA, NOW + 20000);
    assert_state(kp, 0, NOW + 15000, AIB_KEY_COOLING, AIB_REASON_QUOTA, NOW + 20000);
}

static void test_disable_for_expires(void **state)
{
    aib_keypool_t *kp = assigned(keypool("p", "a", "b", NULL));
    aib_walker_t w;

    (void)state;
    aib_key_disable(kp, 0, NOW + 300000, AIB_REASON_FORBIDDEN);
    assert_state(kp, 0, NOW + 299999, AIB_KEY_DISABLED, AIB_REASON_FORBIDDEN, NOW + 300000);
    aib_walker_init(&w, kp);
    assert_int_equal(aib_walker_next(&w, NOW + 299999), 1);

    ASSERT_AVAILABLE(kp, 0, NOW + 300000);
    aib_walker_init(&w, kp);
    assert_int_equal(aib_walker_next(&w, NOW + 300000), 0);
}

static void test_disabled_wins_over_cooling(void **state)
{
    aib_keypool_t *kp = assigned(keypool("p", "a", NULL));

    (void)state;
    aib_key_cooldown(kp, 0, NOW + 60000, AIB_REASON_RATE_LIMITED);
    aib_key_disable(kp, 0, NOW + 10000, AIB_REASON_UNAUTHORIZED);
    assert_state(kp, 0, NOW, AIB_KEY_DISABLED, AIB_REASON_UNAUTHORIZED, NOW + 10000);
    /* Once the disable ends, the cooldown still holds. */
    assert_state(kp, 0, NOW + 10000, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + 60000);
}

static void test_enable_clears_both(void **state)
{
    aib_keypool_t *kp = assigned(keypool("p", "a", NULL));
    aib_slot_t s;
    aib_walker_t w;

    (void)state;
    aib_key_cooldown(kp, 0, NOW + 60000, AIB_REASON_RATE_LIMITED);
    aib_key_disable(kp, 0, AIB_FOREVER, AIB_REASON_UNAUTHORIZED);
    aib_key_enable(kp, 0);

    ASSERT_AVAILABLE(kp, 0, NOW);
    aib_walker_init(&w, kp);
    assert_int_equal(aib_walker_next(&w, NOW), 0);
    s = snapshot(kp, 0);
    ASSERT_I64(s.cooldown_until_ms, 0);
    ASSERT_I64(s.disabled_until_ms, 0);
    assert_int_equal(s.cooldown_reason, AIB_REASON_NONE);
    assert_int_equal(s.disabled_reason, AIB_REASON_NONE);
}

static void test_two_walkers_independent(void **state)
{
    aib_keypool_t *kp = assigned(keypool("p", "a", "b", "c", NULL));
    aib_walker_t w1, w2;

    (void)state;
    aib_walker_init(&w1, kp);
    aib_walker_init(&w2, kp);
    assert_int_equal(aib_walker_next(&w1, NOW), 0);
    assert_int_equal(aib_walker_next(&w1, NOW), 1);
    assert_int_equal(aib_walker_next(&w2, NOW), 0);
    /* A mark by one request is seen by the other; positions stay apart. */
    aib_key_cooldown(kp, 1, NOW + 1000, AIB_REASON_RATE_LIMITED);
    assert_int_equal(aib_walker_next(&w2, NOW), 2);
    assert_int_equal(aib_walker_next(&w1, NOW), 2);
    assert_int_equal(aib_walker_next(&w1, NOW), -1);
    assert_int_equal(aib_walker_next(&w2, NOW), -1);
}

static void test_walker_large_pool(void **state)
{
    const int n = 10000;
    aib_keypool_t *kp = aib_keypool_create(pool, "big");
    aib_walker_t w;
    int i;

    (void)state;
    for (i = 0; i < n; i++)
        assert_null(aib_keypool_add_key(kp, pool, key_value(apr_itoa(pool, i))));
    assigned(kp);
    for (i = 0; i < n - 1; i++)
        aib_key_cooldown(kp, i, NOW + 1000 + i, AIB_REASON_RATE_LIMITED);

    aib_walker_init(&w, kp);
    assert_int_equal(aib_walker_next(&w, NOW), n - 1);
    assert_int_equal(aib_walker_next(&w, NOW), -1);
}

/* A pool of n keys, all cooling for a minute but the last one. */
static aib_keypool_t *mostly_cooling(int n)
{
    aib_keypool_t *kp = aib_keypool_create(pool, "hinted");
    int i;

    for (i = 0; i < n; i++)
        assert_null(aib_keypool_add_key(kp, pool, key_value(apr_itoa(pool, i))));
    assigned(kp);
    for (i = 0; i < n - 1; i++)
        aib_key_cooldown(kp, i, NOW + 60000, AIB_REASON_RATE_LIMITED);
    return kp;
}

static int first_available(const aib_keypool_t *kp, int64_t now)
{
    aib_walker_t w;

    aib_walker_init(&w, kp);
    return aib_walker_next(&w, now);
}

/* Another process clears a cooldown: the slot changes, this process's
 * hint does not. */
static void clear_elsewhere(const aib_keypool_t *kp, int i)
{
    kp->store->slots[slot_no(kp, i)].cooldown_until_ms = 0;
}

static void test_walk_hint_holds_at_most_its_time(void **state)
{
    aib_keypool_t *kp = mostly_cooling(200);
    aib_walker_t w;

    (void)state;
    assert_int_equal(first_available(kp, NOW), 199);
    clear_elsewhere(kp, 10);
    /* The walk starts after the 199 keys found out... */
    assert_int_equal(first_available(kp, NOW + AIB_WALK_HINT_MS - 1), 199);
    /* ...and a walker past its first key goes on from there. */
    aib_walker_init(&w, kp);
    assert_int_equal(aib_walker_next(&w, NOW + 1), 199);
    assert_int_equal(aib_walker_next(&w, NOW + 1), -1);
    /* Then every key is looked at again. */
    assert_int_equal(first_available(kp, NOW + AIB_WALK_HINT_MS), 10);
}

static void test_walk_hint_ends_at_the_earliest_deadline(void **state)
{
    aib_keypool_t *kp = mostly_cooling(200);

    (void)state;
    clear_elsewhere(kp, 30);
    aib_key_cooldown(kp, 30, NOW + 40, AIB_REASON_RATE_LIMITED);
    assert_int_equal(first_available(kp, NOW), 199);
    assert_int_equal(first_available(kp, NOW + 39), 199);
    assert_int_equal(first_available(kp, NOW + 40), 30);
}

static void test_walk_hint_dropped_by_this_process(void **state)
{
    aib_keypool_t *kp = mostly_cooling(200);

    (void)state;
    assert_int_equal(first_available(kp, NOW), 199);
    aib_key_clear_cooldown(kp, 120);
    assert_int_equal(first_available(kp, NOW + 1), 120);
    aib_key_cooldown(kp, 120, NOW + 60000, AIB_REASON_RATE_LIMITED);
    assert_int_equal(first_available(kp, NOW + 2), 199);
    aib_key_disable(kp, 5, AIB_FOREVER, AIB_REASON_UNAUTHORIZED);
    aib_key_enable(kp, 5);
    assert_int_equal(first_available(kp, NOW + 3), 5);
}

static void test_walk_hint_exhausted_pool(void **state)
{
    aib_keypool_t *kp = mostly_cooling(200);

    (void)state;
    aib_key_cooldown(kp, 199, NOW + 50, AIB_REASON_RATE_LIMITED);
    assert_int_equal(first_available(kp, NOW), -1);
    assert_int_equal(first_available(kp, NOW + 49), -1);
    assert_int_equal(first_available(kp, NOW + 50), 199);
}

static void test_walk_hint_not_for_small_pools(void **state)
{
    aib_keypool_t *kp = mostly_cooling(AIB_WALK_HINT_KEYS);

    (void)state;
    assert_int_equal(first_available(kp, NOW), AIB_WALK_HINT_KEYS - 1);
    clear_elsewhere(kp, 3);
    assert_int_equal(first_available(kp, NOW + 1), 3);
}

/* ---- exhaustion -------------------------------------------------------- */

static void test_exhaustion_rounds_up(void **state)
{
    static const struct {
        int64_t remaining_ms, retry_after_s;
    } cases[] = {
        { 1, 1 }, { 999, 1 }, { 1000, 1 }, { 1001, 2 },
        { 2000, 2 }, { 2500, 3 }, { 59999, 60 }, { 3600000, 3600 },
    };
    aib_keypool_t *kp = assigned(keypool("p", "a", NULL));
    size_t c;

    (void)state;
    for (c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        aib_key_enable(kp, 0);
        aib_key_cooldown(kp, 0, NOW + cases[c].remaining_ms, AIB_REASON_RATE_LIMITED);
        assert_exhaustion(kp, NOW, AIB_EXHAUSTED_RATE_LIMITED, cases[c].retry_after_s);
    }
}

static void test_exhaustion_all_cooling(void **state)
{
    aib_keypool_t *kp = assigned(keypool("p", "a", "b", "c", NULL));

    (void)state;
    aib_key_cooldown(kp, 0, NOW + 7000, AIB_REASON_RATE_LIMITED);
    aib_key_cooldown(kp, 1, NOW + 2500, AIB_REASON_QUOTA);
    aib_key_cooldown(kp, 2, NOW + 40000, AIB_REASON_RATE_LIMITED);
    /* The smallest remaining cooldown: key b, 2.5 s -> 3 s. */
    assert_exhaustion(kp, NOW, AIB_EXHAUSTED_RATE_LIMITED, 3);
    assert_exhaustion(kp, NOW + 1500, AIB_EXHAUSTED_RATE_LIMITED, 1);
}

static void test_exhaustion_all_disabled(void **state)
{
    aib_keypool_t *kp = assigned(keypool("p", "a", "b", NULL));

    (void)state;
    aib_key_disable(kp, 0, AIB_FOREVER, AIB_REASON_UNAUTHORIZED);
    aib_key_disable(kp, 1, NOW + 5000, AIB_REASON_FORBIDDEN);
    assert_exhaustion(kp, NOW, AIB_EXHAUSTED_AUTH_FAILED, 0);
}

static void test_exhaustion_mixed(void **state)
{
    aib_keypool_t *kp = assigned(keypool("p", "a", "b", "c", NULL));

    (void)state;
    /* Disabled keys do not count, even with a deadline nearer than the
     * cooling key's. */
    aib_key_disable(kp, 0, NOW + 1000, AIB_REASON_UNAUTHORIZED);
    aib_key_cooldown(kp, 1, NOW + 30000, AIB_REASON_RATE_LIMITED);
    aib_key_disable(kp, 2, AIB_FOREVER, AIB_REASON_FORBIDDEN);
    assert_exhaustion(kp, NOW, AIB_EXHAUSTED_RATE_LIMITED, 30);
}

static void test_exhaustion_cooldown_expired_meanwhile(void **state)
{
    aib_keypool_t *kp = assigned(keypool("p", "a", "b", "c", NULL));

    (void)state;
    aib_key_cooldown(kp, 0, NOW + 5000, AIB_REASON_RATE_LIMITED);
    aib_key_cooldown(kp, 1, NOW + 1000, AIB_REASON_RATE_LIMITED);
    aib_key_disable(kp, 2, AIB_FOREVER, AIB_REASON_UNAUTHORIZED);
    /* Key b came back between the walk and the question: try again now. */
    assert_exhaustion(kp, NOW + 1000, AIB_EXHAUSTED_RATE_LIMITED, 0);
    assert_exhaustion(kp, NOW + 1500, AIB_EXHAUSTED_RATE_LIMITED, 0);
}

/* ---- counters ---------------------------------------------------------- */

static void test_counters(void **state)
{
    aib_keypool_t *kp = assigned(keypool("p", "a", "b", NULL));
    static const int statuses[] = { 429, 429, 401, 403, 200, 500, 404 };
    aib_slot_t s;
    size_t k;

    (void)state;
    aib_key_count_attempt(kp, 0, NOW);
    aib_key_count_attempt(kp, 0, NOW + 5);
    aib_key_count_attempt(kp, 0, NOW + 9);
    for (k = 0; k < sizeof(statuses) / sizeof(statuses[0]); k++)
        aib_key_count_status(kp, 0, statuses[k]);

    s = snapshot(kp, 0);
    assert_true(s.fingerprint == APR_ARRAY_IDX(kp->keys, 0, aib_key_t).fingerprint);
    assert_int_equal(s.requests, 3);
    ASSERT_I64(s.last_used_ms, NOW + 9);
    assert_int_equal(s.rate_limited, 2);
    assert_int_equal(s.unauthorized, 1);
    assert_int_equal(s.forbidden, 1);
    /* Counting does not change availability. */
    ASSERT_AVAILABLE(kp, 0, NOW);

    s = snapshot(kp, 1);
    assert_int_equal(s.requests, 0);
    assert_int_equal(s.rate_limited, 0);
    ASSERT_I64(s.last_used_ms, 0);
}

/* ---- adding keys ------------------------------------------------------- */

static void test_add_key_rejects_duplicate_and_empty(void **state)
{
    aib_keypool_t *kp = keypool("team", "a", "b", NULL);
    const char *dup = key_value("a");
    const char *hint = aib_key_hint(pool, dup);
    const char *err;

    (void)state;
    err = aib_keypool_add_key(kp, pool, dup);
    assert_non_null(err);
    assert_non_null(strstr(err, "#3"));     /* the position of the new one */
    assert_non_null(strstr(err, "#1"));     /* the key it duplicates */
    assert_non_null(strstr(err, hint));
    assert_non_null(strstr(err, "team"));
    assert_null(strstr(err, dup));
    assert_int_equal(kp->keys->nelts, 2);

    err = aib_keypool_add_key(kp, pool, "");
    assert_non_null(err);
    assert_non_null(strstr(err, "#3"));
    assert_int_equal(kp->keys->nelts, 2);

    /* The same key in another pool is no duplicate. */
    assert_null(aib_keypool_add_key(keypool("other", "a", NULL), pool, key_value("b")));
}

static void test_add_key_fills_key(void **state)
{
    aib_keypool_t *kp = keypool("team", "a", NULL);
    const aib_key_t *key = &APR_ARRAY_IDX(kp->keys, 0, aib_key_t);

    (void)state;
    assert_string_equal(key->value, key_value("a"));
    assert_string_equal(key->hint, aib_key_hint(pool, key_value("a")));
    assert_true(key->fingerprint == aib_key_fingerprint("team", key_value("a")));
}

/* ---- slot assignment --------------------------------------------------- */

static void test_slots_needed_counts_distinct(void **state)
{
    (void)state;
    assert_int_equal(aib_keystore_slots_needed(pools_of(NULL), pool), 0);
    assert_int_equal(aib_keystore_slots_needed(
                         pools_of(keypool("p", "a", "b", "c", NULL), NULL), pool), 3);
    /* x appears in two objects of pool "shared": one slot. In pool "other"
     * it is another key (another fingerprint). */
    assert_int_equal(aib_keystore_slots_needed(
                         pools_of(keypool("shared", "x", "y", NULL),
                                  keypool("shared", "x", "z", NULL),
                                  keypool("other", "x", NULL), NULL), pool), 4);
}

static void test_assign_gives_distinct_slots(void **state)
{
    aib_keypool_t *p1 = keypool("p1", "a", "b", "c", NULL);
    aib_keypool_t *p2 = keypool("p2", "a", "d", NULL);
    apr_array_header_t *pools = pools_of(p1, p2, NULL);
    aib_keystore_t *store = new_store(aib_keystore_slots_needed(pools, pool));
    int used[5] = { 0 };
    int p, i;

    (void)state;
    assert_int_equal(store->capacity, 5);
    aib_keystore_assign(store, NULL, pools, pool);
    for (p = 0; p < pools->nelts; p++) {
        aib_keypool_t *kp = APR_ARRAY_IDX(pools, p, aib_keypool_t *);
        assert_ptr_equal(kp->store, store);
        for (i = 0; i < kp->keys->nelts; i++) {
            uint32_t s = slot_no(kp, i);
            assert_true(s < store->capacity);
            assert_int_equal(used[s]++, 0);
            assert_true(store->slots[s].fingerprint
                        == APR_ARRAY_IDX(kp->keys, i, aib_key_t).fingerprint);
            ASSERT_AVAILABLE(kp, i, NOW);
        }
    }
}

static void test_same_key_shares_slot(void **state)
{
    aib_keypool_t *p1 = keypool("shared", "x", "y", NULL);
    aib_keypool_t *p2 = keypool("shared", "z", "x", NULL);
    aib_keypool_t *other = keypool("other", "x", NULL);
    apr_array_header_t *pools = pools_of(p1, p2, other, NULL);

    (void)state;
    aib_keystore_assign(new_store(aib_keystore_slots_needed(pools, pool)), NULL,
                        pools, pool);
    assert_int_equal(slot_no(p1, 0), slot_no(p2, 1));
    assert_int_not_equal(slot_no(p1, 0), slot_no(other, 0));

    aib_key_cooldown(p1, 0, NOW + 5000, AIB_REASON_RATE_LIMITED);
    aib_key_count_attempt(p2, 1, NOW);
    assert_state(p2, 1, NOW, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + 5000);
    assert_int_equal(snapshot(p1, 0).requests, 1);
    ASSERT_AVAILABLE(other, 0, NOW);
    assert_int_equal(snapshot(other, 0).requests, 0);
}

/* Graceful restart, in place (shared memory survives, to == from): the old
 * generation has a, b, c; the new one c, d, a in another order, b gone. */
static void test_restart_in_place(void **state)
{
    aib_keypool_t *old = keypool("p", "a", "b", "c", NULL);
    aib_keypool_t *new = keypool("p", "c", "d", "a", NULL);
    apr_array_header_t *new_pools = pools_of(new, NULL);
    aib_keystore_t *store;
    uint32_t slot_a, slot_b, slot_c;
    aib_slot_t s;

    (void)state;
    assigned(old);
    store = old->store;
    slot_a = slot_no(old, 0);
    slot_b = slot_no(old, 1);
    slot_c = slot_no(old, 2);
    aib_key_cooldown(old, 0, NOW + 30000, AIB_REASON_RATE_LIMITED);
    aib_key_count_attempt(old, 0, NOW);
    aib_key_count_status(old, 0, 429);
    aib_key_disable(old, 1, AIB_FOREVER, AIB_REASON_UNAUTHORIZED);
    aib_key_count_attempt(old, 1, NOW);
    aib_key_count_status(old, 1, 401);
    aib_key_disable(old, 2, NOW + 60000, AIB_REASON_FORBIDDEN);

    assert_int_equal(aib_keystore_slots_needed(new_pools, pool), store->capacity);
    aib_keystore_assign(store, store, new_pools, pool);
    assert_ptr_equal(new->store, store);

    /* Keys that stay keep their slot and their state. */
    assert_int_equal(slot_no(new, 2), slot_a);
    assert_state(new, 2, NOW, AIB_KEY_COOLING, AIB_REASON_RATE_LIMITED, NOW + 30000);
    s = snapshot(new, 2);
    assert_int_equal(s.requests, 1);
    assert_int_equal(s.rate_limited, 1);
    ASSERT_I64(s.last_used_ms, NOW);
    assert_int_equal(slot_no(new, 0), slot_c);
    assert_state(new, 0, NOW, AIB_KEY_DISABLED, AIB_REASON_FORBIDDEN, NOW + 60000);

    /* The new key takes b's slot and none of b's state. */
    assert_int_equal(slot_no(new, 1), slot_b);
    assert_true(store->slots[slot_b].fingerprint
                == APR_ARRAY_IDX(new->keys, 1, aib_key_t).fingerprint);
    ASSERT_AVAILABLE(new, 1, NOW);
    s = snapshot(new, 1);
    assert_int_equal(s.requests, 0);
    assert_int_equal(s.unauthorized, 0);
    ASSERT_I64(s.last_used_ms, 0);

    /* An old process still marking b lands nowhere: d is untouched. */
    aib_key_cooldown(old, 1, NOW + 90000, AIB_REASON_RATE_LIMITED);
    aib_key_disable(old, 1, AIB_FOREVER, AIB_REASON_FORBIDDEN);
    aib_key_count_attempt(old, 1, NOW + 7);
    aib_key_count_status(old, 1, 429);
    aib_key_enable(old, 1);
    ASSERT_AVAILABLE(new, 1, NOW);
    s = snapshot(new, 1);
    assert_int_equal(s.requests, 0);
    assert_int_equal(s.rate_limited, 0);
    ASSERT_I64(s.cooldown_until_ms, 0);
    ASSERT_I64(s.last_used_ms, 0);

    /* ... while an old process marking a key that stays still counts. */
    aib_key_cooldown(old, 0, NOW + 45000, AIB_REASON_QUOTA);
    assert_state(new, 2, NOW, AIB_KEY_COOLING, AIB_REASON_QUOTA, NOW + 45000);
}

static void test_restart_in_place_frees_removed(void **state)
{
    aib_keypool_t *gen1 = keypool("p", "a", "b", "c", NULL);
    aib_keypool_t *gen2 = keypool("p", "a", "c", NULL);
    aib_keypool_t *gen3 = keypool("p", "a", "c", "d", NULL);
    aib_keystore_t *store;
    uint32_t slot_b;

    (void)state;
    assigned(gen1);
    store = gen1->store;
    slot_b = slot_no(gen1, 1);
    aib_key_cooldown(gen1, 1, NOW + 30000, AIB_REASON_RATE_LIMITED);
    aib_key_count_attempt(gen1, 1, NOW);

    aib_keystore_assign(store, store, pools_of(gen2, NULL), pool);
    assert_true(store->slots[slot_b].fingerprint == 0);
    ASSERT_I64(store->slots[slot_b].cooldown_until_ms, 0);
    assert_int_equal(store->slots[slot_b].requests, 0);
    /* A late mark on the freed slot does not revive it. */
    aib_key_cooldown(gen1, 1, NOW + 30000, AIB_REASON_RATE_LIMITED);
    aib_key_count_attempt(gen1, 1, NOW);
    assert_true(store->slots[slot_b].fingerprint == 0);
    ASSERT_I64(store->slots[slot_b].cooldown_until_ms, 0);
    assert_int_equal(store->slots[slot_b].requests, 0);

    /* The next restart's new key reuses it. */
    aib_keystore_assign(store, store, pools_of(gen3, NULL), pool);
    assert_int_equal(slot_no(gen3, 2), slot_b);
    ASSERT_AVAILABLE(gen3, 2, NOW);
    assert_int_equal(snapshot(gen3, 2).requests, 0);
    assert_int_equal(slot_no(gen3, 0), slot_no(gen1, 0));
    assert_int_equal(slot_no(gen3, 1), slot_no(gen1, 2));
}

/* Graceful restart into a new, bigger store (to != from). */
static void test_restart_growth(void **state)
{
    aib_keypool_t *old = keypool("p", "a", "b", NULL);
    aib_keypool_t *new = keypool("p", "c", "b", "d", "a", NULL);
    apr_array_header_t *new_pools = pools_of(new, NULL);
    aib_keystore_t *from, *to;
    int used[4] = { 0 };
    aib_slot_t s;
    int i;

    (void)state;
    assigned(old);
    from = old->store;
    aib_key_cooldown(old, 0, NOW + 30000, AIB_REASON_QUOTA);
    aib_key_count_attempt(old, 0, NOW - 10);
    aib_key_count_status(old, 0, 429);
    aib_key_disable(old, 1, AIB_FOREVER, AIB_REASON_UNAUTHORIZED);
    aib_key_count_status(old, 1, 401);
    aib_key_count_status(old, 1, 403);

    to = new_store(aib_keystore_slots_needed(new_pools, pool));
    assert_int_equal(to->capacity, 4);
    aib_keystore_assign(to, from, new_pools, pool);
    assert_ptr_equal(new->store, to);
    for (i = 0; i < 4; i++) {
        assert_true(slot_no(new, i) < 4);
        assert_int_equal(used[slot_no(new, i)]++, 0);
    }

    /* a and b carried over by fingerprint. */
    assert_state(new, 3, NOW, AIB_KEY_COOLING, AIB_REASON_QUOTA, NOW + 30000);
    s = snapshot(new, 3);
    assert_int_equal(s.requests, 1);
    assert_int_equal(s.rate_limited, 1);
    ASSERT_I64(s.last_used_ms, NOW - 10);
    assert_state(new, 1, NOW, AIB_KEY_DISABLED, AIB_REASON_UNAUTHORIZED, AIB_FOREVER);
    s = snapshot(new, 1);
    assert_int_equal(s.unauthorized, 1);
    assert_int_equal(s.forbidden, 1);

    /* c and d are new. */
    ASSERT_AVAILABLE(new, 0, NOW);
    ASSERT_AVAILABLE(new, 2, NOW);
    assert_int_equal(snapshot(new, 0).requests, 0);
    assert_int_equal(snapshot(new, 2).requests, 0);
}

int main(void)
{
#define T(f) cmocka_unit_test_teardown(f, aib_clear_pool)
    const struct CMUnitTest tests[] = {
        T(test_walker_all_available),
        T(test_walker_skips_unavailable),
        T(test_cooldown_expires),
        T(test_cooldown_default),
        T(test_cooldown_longer_wins),
        T(test_disable_for_expires),
        T(test_disabled_wins_over_cooling),
        T(test_enable_clears_both),
        T(test_two_walkers_independent),
        T(test_walker_large_pool),
        T(test_walk_hint_holds_at_most_its_time),
        T(test_walk_hint_ends_at_the_earliest_deadline),
        T(test_walk_hint_dropped_by_this_process),
        T(test_walk_hint_exhausted_pool),
        T(test_walk_hint_not_for_small_pools),
        T(test_exhaustion_rounds_up),
        T(test_exhaustion_all_cooling),
        T(test_exhaustion_all_disabled),
        T(test_exhaustion_mixed),
        T(test_exhaustion_cooldown_expired_meanwhile),
        T(test_counters),
        T(test_add_key_rejects_duplicate_and_empty),
        T(test_add_key_fills_key),
        T(test_slots_needed_counts_distinct),
        T(test_assign_gives_distinct_slots),
        T(test_same_key_shares_slot),
        T(test_restart_in_place),
        T(test_restart_in_place_frees_removed),
        T(test_restart_growth),
    };
#undef T
    return AIB_RUN_TESTS(tests);
}
