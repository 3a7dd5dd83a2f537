/* Unit tests for src/fleet.c: two servers, each with its own key store and
 * sync state, share key state through one fake cache (a table with
 * expiries and a switch that makes it fail), on an explicit clock. */
#include "unit.h"

#include <stdlib.h>
#include <string.h>

#include <apr_hash.h>
#include <apr_strings.h>
#include <apr_tables.h>

#include "fleet.h"
#include "hint.h"
#include "keypool.h"

/* 2026-11-25T12:00:00Z */
#define NOW INT64_C(1795608000000)
#define KEYS 3

typedef struct {
    char *data;
    unsigned len;
    int64_t expiry_ms;
} entry_t;

typedef struct {
    apr_hash_t *entries;         /* id -> entry_t */
    int64_t now_ms;
    int down;                    /* unreachable: every call fails */
    int dead;                    /* held for dead, as APR's clients do: "not found" */
    int gets;
    int puts;
} fake_cache_t;

static apr_status_t fake_get(void *ctx, const unsigned char *id, unsigned id_len, char *buf,
                             unsigned *len, apr_pool_t *tmp)
{
    fake_cache_t *fc = ctx;
    entry_t *e;

    (void)tmp;
    if (fc->down)
        return APR_ECONNREFUSED;
    if (fc->dead)
        return APR_NOTFOUND;
    fc->gets++;
    e = apr_hash_get(fc->entries, id, id_len);
    if (!e || e->expiry_ms <= fc->now_ms)
        return APR_NOTFOUND;
    if (e->len > *len)
        return APR_ENOMEM;
    memcpy(buf, e->data, e->len);
    *len = e->len;
    return APR_SUCCESS;
}

static apr_status_t fake_put(void *ctx, const unsigned char *id, unsigned id_len,
                             int64_t expiry_ms, const char *data, unsigned len, apr_pool_t *tmp)
{
    fake_cache_t *fc = ctx;
    entry_t *e = apr_pcalloc(pool, sizeof(*e));

    (void)tmp;
    if (fc->down)
        return APR_ECONNREFUSED;
    if (fc->dead)
        return APR_NOTFOUND;
    /* A socache stores whole seconds: below one, the write fails. */
    if (expiry_ms - fc->now_ms < 1000)
        return APR_EINVAL;
    fc->puts++;
    e->data = apr_pmemdup(pool, data, len);
    e->len = len;
    e->expiry_ms = expiry_ms;
    apr_hash_set(fc->entries, apr_pmemdup(pool, id, id_len), id_len, e);
    return APR_SUCCESS;
}

typedef struct {
    aib_keypool_t *kp;
    aib_fleet_shared_t shared;
    aib_fleet_t *fleet;
} server_t;

static fake_cache_t cache_state;
static aib_fleet_cache_t cache = { &cache_state, fake_get, fake_put };
static server_t a, b;

static apr_status_t free_slots(void *slots)
{
    free(slots);
    return APR_SUCCESS;
}

/* A server with pool "main" of KEYS keys (the same keys on every server). */
static void server_init(server_t *s)
{
    aib_keystore_t *ks = apr_pcalloc(pool, sizeof(*ks));
    apr_array_header_t *pools = apr_array_make(pool, 1, sizeof(aib_keypool_t *));
    int i;

    memset(&s->shared, 0, sizeof(s->shared));
    s->kp = aib_keypool_create(pool, "main");
    for (i = 0; i < KEYS; i++)
        assert_null(aib_keypool_add_key(s->kp, pool, apr_psprintf(pool, "sk-fleet-secret-%d-"
                                                                  "abcdefghijkl", i)));
    ks->slots = calloc(KEYS, sizeof(aib_slot_t));
    ks->capacity = KEYS;
    apr_pool_cleanup_register(pool, ks->slots, free_slots, apr_pool_cleanup_null);
    APR_ARRAY_PUSH(pools, aib_keypool_t *) = s->kp;
    aib_keystore_assign(ks, NULL, pools, pool);
    s->fleet = aib_fleet_create(pool, &s->shared, pools);
}

static int setup(void **state)
{
    (void)state;
    memset(&cache_state, 0, sizeof(cache_state));
    cache_state.entries = apr_hash_make(pool);
    cache_state.now_ms = NOW;
    server_init(&a);
    server_init(&b);
    return 0;
}

static aib_fleet_round_t round_at(server_t *s, int64_t now_ms)
{
    aib_fleet_round_t out;

    cache_state.now_ms = now_ms;
    aib_fleet_round(s->fleet, &cache, now_ms, pool, &out);
    return out;
}

static aib_key_state_e state_at(const server_t *s, int i, int64_t now_ms, int64_t *until)
{
    return aib_key_state(s->kp, i, now_ms, NULL, until);
}

/* A record's id, as src/fleet.c makes it. */
static void make_id(unsigned char id[9], char kind, uint64_t fp)
{
    int i;

    id[0] = (unsigned char)kind;
    for (i = 0; i < 8; i++)
        id[1 + i] = (unsigned char)(fp >> (56 - 8 * i));
}

static void cooldown_reaches_the_other_server(void **state)
{
    int64_t until;

    (void)state;
    aib_key_cooldown(a.kp, 0, NOW + 30000, AIB_REASON_RATE_LIMITED);
    assert_int_equal(round_at(&a, NOW).written, 1);
    assert_int_equal(state_at(&b, 0, NOW, NULL), AIB_KEY_AVAILABLE);
    assert_int_equal(round_at(&b, NOW + 100).taken, 1);
    assert_int_equal(state_at(&b, 0, NOW + 100, &until), AIB_KEY_COOLING);
    assert_true(until == NOW + 30000);
    assert_int_equal(state_at(&b, 1, NOW + 100, NULL), AIB_KEY_AVAILABLE);
    /* Taken over, not a change of B's own: B writes nothing back. */
    assert_int_equal(round_at(&b, NOW + 200).written, 0);
    /* The record goes with the cooldown. */
    assert_int_equal(round_at(&b, NOW + 30001).taken, 0);
}

static void clear_on_one_server_frees_the_key_everywhere(void **state)
{
    (void)state;
    aib_key_disable(a.kp, 1, AIB_FOREVER, AIB_REASON_UNAUTHORIZED);
    aib_key_cooldown(a.kp, 2, NOW + 60000, AIB_REASON_RATE_LIMITED);
    round_at(&a, NOW);
    round_at(&b, NOW + 100);
    assert_int_equal(state_at(&b, 1, NOW + 100, NULL), AIB_KEY_DISABLED);
    assert_int_equal(state_at(&b, 2, NOW + 100, NULL), AIB_KEY_COOLING);
    /* The operator re-enables on B. */
    aib_key_clear_disabled(b.kp, 1);
    aib_key_clear_cooldown(b.kp, 2);
    assert_int_equal(round_at(&b, NOW + 200).written, 2);
    assert_int_equal(round_at(&a, NOW + 300).taken, 2);
    assert_int_equal(state_at(&a, 1, NOW + 300, NULL), AIB_KEY_AVAILABLE);
    assert_int_equal(state_at(&a, 2, NOW + 300, NULL), AIB_KEY_AVAILABLE);
    /* A server that missed the clear for a while still sees it later. */
    assert_int_equal(state_at(&a, 1, NOW + 30 * 60000, NULL), AIB_KEY_AVAILABLE);
}

static void pending_says_whether_a_round_would_write(void **state)
{
    (void)state;
    assert_false(aib_fleet_pending(a.fleet));
    aib_key_cooldown(a.kp, 2, NOW + 30000, AIB_REASON_RATE_LIMITED);
    assert_true(aib_fleet_pending(a.fleet));
    round_at(&a, NOW);
    assert_false(aib_fleet_pending(a.fleet));
    /* Taken over from another server: nothing to write back. */
    round_at(&b, NOW + 100);
    assert_false(aib_fleet_pending(b.fleet));
}

static void short_cooldowns_stay_local(void **state)
{
    (void)state;
    aib_key_cooldown(a.kp, 0, NOW + AIB_FLEET_MIN_COOLDOWN_MS - 1, AIB_REASON_RATE_LIMITED);
    assert_int_equal(round_at(&a, NOW).written, 0);
    assert_int_equal(cache_state.puts, 1);   /* the marker only */
    assert_int_equal(state_at(&a, 0, NOW, NULL), AIB_KEY_COOLING);
    aib_key_cooldown(a.kp, 0, NOW + AIB_FLEET_MIN_COOLDOWN_MS, AIB_REASON_RATE_LIMITED);
    assert_int_equal(round_at(&a, NOW).written, 1);
}

static void idle_rounds_read_one_stamp_per_pool(void **state)
{
    (void)state;
    aib_key_cooldown(a.kp, 0, NOW + 30000, AIB_REASON_RATE_LIMITED);
    round_at(&a, NOW);
    round_at(&b, NOW + 100);          /* the first round reads everything */
    cache_state.gets = 0;
    round_at(&b, NOW + 200);
    assert_int_equal(cache_state.gets, 2);   /* the marker, the stamp */
    /* A write elsewhere changes the stamp: the pool is read again. */
    aib_key_cooldown(a.kp, 1, NOW + 30000, AIB_REASON_RATE_LIMITED);
    round_at(&a, NOW + 300);
    cache_state.gets = 0;
    assert_int_equal(round_at(&b, NOW + 400).taken, 1);
    assert_int_equal(cache_state.gets, 2 + KEYS);
}

static void disabled_records_are_held_and_renewed(void **state)
{
    unsigned char id[9];
    entry_t *e;

    (void)state;
    make_id(id, 'k', APR_ARRAY_IDX(a.kp->keys, 0, aib_key_t).fingerprint);
    aib_key_disable(a.kp, 0, AIB_FOREVER, AIB_REASON_FORBIDDEN);
    round_at(&a, NOW);
    e = apr_hash_get(cache_state.entries, id, sizeof(id));
    assert_non_null(e);
    assert_true(e->expiry_ms == NOW + AIB_FLEET_HOLD_MS);
    round_at(&a, NOW + AIB_FLEET_HOLD_MS / 2 - 1);
    assert_true(((entry_t *)apr_hash_get(cache_state.entries, id, sizeof(id)))->expiry_ms
                == NOW + AIB_FLEET_HOLD_MS);
    round_at(&a, NOW + AIB_FLEET_HOLD_MS / 2);
    assert_true(((entry_t *)apr_hash_get(cache_state.entries, id, sizeof(id)))->expiry_ms
                == NOW + AIB_FLEET_HOLD_MS / 2 + AIB_FLEET_HOLD_MS);
    /* A server starting after the first hour still sees it disabled. */
    assert_int_equal(round_at(&b, NOW + AIB_FLEET_HOLD_MS + 1).taken, 1);
    assert_int_equal(state_at(&b, 0, NOW + AIB_FLEET_HOLD_MS + 1, NULL), AIB_KEY_DISABLED);
}

static void renewal_never_overwrites_a_newer_record(void **state)
{
    unsigned char stamp_id[9];
    entry_t *stamp, *seen;
    int64_t later = NOW + AIB_FLEET_HOLD_MS / 2;

    (void)state;
    make_id(stamp_id, 's', aib_key_fingerprint("main", ""));
    aib_key_disable(a.kp, 0, AIB_FOREVER, AIB_REASON_FORBIDDEN);
    round_at(&a, NOW);
    round_at(&a, NOW + 50);           /* A has seen its own stamp */
    seen = apr_pmemdup(pool, apr_hash_get(cache_state.entries, stamp_id, 9), sizeof(entry_t));
    round_at(&b, NOW + 100);
    aib_key_enable(b.kp, 0);
    round_at(&b, NOW + 200);
    /* B's stamp is lost (a cache evicted it): A does not read B's record,
     * and its renewal must find it and leave it. */
    stamp = apr_hash_get(cache_state.entries, stamp_id, 9);
    *stamp = *seen;
    stamp->expiry_ms = later + AIB_FLEET_HOLD_MS;
    round_at(&a, later);
    assert_int_equal(state_at(&a, 0, later, NULL), AIB_KEY_DISABLED);
    server_init(&b);
    round_at(&b, later + 100);
    assert_int_equal(state_at(&b, 0, later + 100, NULL), AIB_KEY_AVAILABLE);
}

static void a_local_change_keeps_its_state_but_takes_a_later_cooldown(void **state)
{
    int64_t until;

    (void)state;
    aib_key_cooldown(a.kp, 0, NOW + 50000, AIB_REASON_RATE_LIMITED);
    aib_key_disable(a.kp, 1, AIB_FOREVER, AIB_REASON_UNAUTHORIZED);
    round_at(&a, NOW);
    /* B changed both keys itself before its round. */
    aib_key_cooldown(b.kp, 0, NOW + 20000, AIB_REASON_RATE_LIMITED);
    aib_key_cooldown(b.kp, 1, NOW + 20000, AIB_REASON_RATE_LIMITED);
    round_at(&b, NOW + 100);
    assert_int_equal(state_at(&b, 0, NOW + 100, &until), AIB_KEY_COOLING);
    assert_true(until == NOW + 50000);
    /* B's own change of key 1 (a cooldown) wins over A's older disable. */
    assert_int_equal(state_at(&b, 1, NOW + 100, &until), AIB_KEY_COOLING);
    /* ...and is what the fleet holds now. */
    round_at(&a, NOW + 200);
    assert_int_equal(state_at(&a, 1, NOW + 200, NULL), AIB_KEY_COOLING);
}

static void an_outage_is_reported_once_and_resynchronised(void **state)
{
    aib_fleet_round_t r;

    (void)state;
    assert_int_equal(round_at(&a, NOW).error, APR_SUCCESS);
    assert_true(a.shared.connected);
    assert_true(a.shared.last_sync_ms == NOW);
    cache_state.down = 1;
    aib_key_cooldown(a.kp, 0, NOW + 30000, AIB_REASON_RATE_LIMITED);
    r = round_at(&a, NOW + 100);
    assert_int_not_equal(r.error, APR_SUCCESS);
    assert_true(r.outage_begins);
    assert_false(a.shared.connected);
    assert_false(round_at(&a, NOW + 200).outage_begins);
    /* Local state serves meanwhile. */
    assert_int_equal(state_at(&a, 0, NOW + 200, NULL), AIB_KEY_COOLING);
    cache_state.down = 0;
    r = round_at(&a, NOW + 300);
    assert_int_equal(r.error, APR_SUCCESS);
    assert_true(r.recovered);
    assert_int_equal(r.written, 1);
    assert_true(a.shared.connected);
    assert_true(a.shared.last_sync_ms == NOW + 300);
    assert_false(round_at(&a, NOW + 400).recovered);
    round_at(&b, NOW + 500);
    assert_int_equal(state_at(&b, 0, NOW + 500, NULL), AIB_KEY_COOLING);
}

static void a_cache_that_lost_its_records_gets_them_again(void **state)
{
    (void)state;
    aib_key_disable(a.kp, 0, AIB_FOREVER, AIB_REASON_UNAUTHORIZED);
    aib_key_cooldown(a.kp, 1, NOW + 60000, AIB_REASON_RATE_LIMITED);
    aib_key_cooldown(a.kp, 2, NOW + 60000, AIB_REASON_RATE_LIMITED);
    aib_key_clear_cooldown(a.kp, 2);
    assert_int_equal(round_at(&a, NOW).written, 3);
    /* The cache restarts empty, unnoticed between two rounds. */
    cache_state.entries = apr_hash_make(pool);
    assert_int_equal(round_at(&a, NOW + 100).written, 2);   /* not the cleared key */
    assert_int_equal(round_at(&b, NOW + 200).taken, 2);
    assert_int_equal(state_at(&b, 0, NOW + 200, NULL), AIB_KEY_DISABLED);
    assert_int_equal(state_at(&b, 1, NOW + 200, NULL), AIB_KEY_COOLING);
    /* Nothing lost: nothing written again. */
    assert_int_equal(round_at(&a, NOW + 300).written, 0);
}

static void a_cache_held_for_dead_is_an_outage(void **state)
{
    aib_fleet_round_t r;

    (void)state;
    assert_int_equal(round_at(&a, NOW).error, APR_SUCCESS);
    cache_state.dead = 1;
    r = round_at(&a, NOW + 100);
    assert_int_not_equal(r.error, APR_SUCCESS);
    assert_true(r.outage_begins);
    r = round_at(&a, NOW + 200);
    assert_int_not_equal(r.error, APR_SUCCESS);
    assert_false(r.recovered);
    assert_false(a.shared.connected);
    cache_state.dead = 0;
    assert_true(round_at(&a, NOW + 300).recovered);
}

static void malformed_records_are_ignored(void **state)
{
    unsigned char id[9];
    static const char *const bad[] = {
        "", "aib1", "aib2 0000000000000001 1 1 0 0",
        "aib1 0000000000000001 1795608030000 9 0 0",
        "aib1 0000000000000001 -5 1 0 0",
        "aib1 0000000000000001 1795608030000 1 0 0 trailing",
        "aib1 0000000000000000 1795608030000 1 0 0",
    };
    size_t n;

    (void)state;
    make_id(id, 'k', APR_ARRAY_IDX(b.kp->keys, 0, aib_key_t).fingerprint);
    for (n = 0; n < sizeof(bad) / sizeof(bad[0]); n++) {
        fake_put(&cache_state, id, sizeof(id), NOW + 60000, bad[n], (unsigned)strlen(bad[n]),
                 pool);
        server_init(&b);
        assert_int_equal(round_at(&b, NOW).taken, 0);
        assert_int_equal(state_at(&b, 0, NOW, NULL), AIB_KEY_AVAILABLE);
    }
    fake_put(&cache_state, id, sizeof(id), NOW + 60000,
             "aib1 0000000000000001 1795608030000 1 0 0", 41, pool);
    server_init(&b);
    assert_int_equal(round_at(&b, NOW).taken, 1);
    assert_int_equal(state_at(&b, 0, NOW, NULL), AIB_KEY_COOLING);
}

static void the_cache_never_sees_a_key(void **state)
{
    apr_hash_index_t *hi;

    (void)state;
    aib_key_disable(a.kp, 0, AIB_FOREVER, AIB_REASON_UNAUTHORIZED);
    aib_key_cooldown(a.kp, 1, NOW + 30000, AIB_REASON_RATE_LIMITED);
    round_at(&a, NOW);
    assert_int_equal(apr_hash_count(cache_state.entries), 4);   /* marker, two keys, stamp */
    for (hi = apr_hash_first(pool, cache_state.entries); hi; hi = apr_hash_next(hi)) {
        const void *id;
        apr_ssize_t len;
        entry_t *e;
        apr_hash_this(hi, &id, &len, (void **)&e);
        assert_null(memmem(id, (size_t)len, "sk-fleet", 8));
        assert_null(memmem(e->data, e->len, "sk-fleet", 8));
        assert_null(memmem(e->data, e->len, "main", 4));
    }
}

static void one_process_holds_the_lease(void **state)
{
    aib_fleet_shared_t sh;

    (void)state;
    memset(&sh, 0, sizeof(sh));
    assert_true(aib_fleet_lease(&sh, 100, NOW, 2000));
    assert_false(aib_fleet_lease(&sh, 200, NOW + 1000, 2000));
    assert_true(aib_fleet_lease(&sh, 100, NOW + 1500, 2000));   /* renewed */
    assert_false(aib_fleet_lease(&sh, 200, NOW + 3000, 2000));
    /* The holder stopped renewing: the next one takes over. */
    assert_true(aib_fleet_lease(&sh, 200, NOW + 3501, 2000));
    assert_false(aib_fleet_lease(&sh, 100, NOW + 3600, 2000));
    assert_int_equal(sh.owner, 200);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, aib_clear_pool)
        T(cooldown_reaches_the_other_server),
        T(clear_on_one_server_frees_the_key_everywhere),
        T(pending_says_whether_a_round_would_write),
        T(short_cooldowns_stay_local),
        T(idle_rounds_read_one_stamp_per_pool),
        T(disabled_records_are_held_and_renewed),
        T(renewal_never_overwrites_a_newer_record),
        T(a_local_change_keeps_its_state_but_takes_a_later_cooldown),
        T(an_outage_is_reported_once_and_resynchronised),
        T(a_cache_that_lost_its_records_gets_them_again),
        T(a_cache_held_for_dead_is_an_outage),
        T(malformed_records_are_ignored),
        T(the_cache_never_sees_a_key),
        T(one_process_holds_the_lease),
#undef T
    };
    return AIB_RUN_TESTS(tests);
}
