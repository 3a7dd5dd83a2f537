#include <string.h>
#include <apr_hash.h>
#include <apr_strings.h>

#include "hint.h"
#include "keypool.h"

aib_keypool_t *aib_keypool_create(apr_pool_t *pool, const char *name)
{
    aib_keypool_t *kp = apr_pcalloc(pool, sizeof(*kp));
    kp->name = apr_pstrdup(pool, name);
    kp->keys = apr_array_make(pool, 4, sizeof(aib_key_t));
    kp->walk_hint = apr_pcalloc(pool, sizeof(*kp->walk_hint));
    return kp;
}

const char *aib_keypool_add_key(aib_keypool_t *kp, apr_pool_t *pool, const char *value)
{
    aib_key_t *key;
    uint64_t fp;
    int i, position = kp->keys->nelts + 1;

    if (!value || !*value)
        return apr_psprintf(pool, "key #%d of pool '%s' is empty", position, kp->name);
    fp = aib_key_fingerprint(kp->name, value);
    for (i = 0; i < kp->keys->nelts; i++) {
        const aib_key_t *other = &APR_ARRAY_IDX(kp->keys, i, aib_key_t);
        if (other->fingerprint == fp && !strcmp(other->value, value))
            return apr_psprintf(pool, "key #%d (%s) of pool '%s' duplicates key #%d",
                                position, other->hint, kp->name, i + 1);
    }
    key = apr_array_push(kp->keys);
    key->value = apr_pstrdup(pool, value);
    key->hint = aib_key_hint(pool, value);
    key->fingerprint = fp;
    key->slot = 0;
    return NULL;
}

static const aib_key_t *key_at(const aib_keypool_t *kp, int i)
{
    return &APR_ARRAY_IDX(kp->keys, i, aib_key_t);
}

/* The slot of key i, or NULL when it now belongs to another key. */
aib_slot_t *aib_key_slot(const aib_keypool_t *kp, int i)
{
    const aib_key_t *key = key_at(kp, i);
    aib_slot_t *slot;

    if (!kp->store || key->slot >= kp->store->capacity)
        return NULL;
    slot = &kp->store->slots[key->slot];
    return AIB_LOAD(&slot->fingerprint) == key->fingerprint ? slot : NULL;
}

uint32_t aib_keystore_slots_needed(const apr_array_header_t *pools, apr_pool_t *tmp)
{
    apr_hash_t *seen = apr_hash_make(tmp);
    int p, i;

    for (p = 0; p < pools->nelts; p++) {
        const aib_keypool_t *kp = APR_ARRAY_IDX(pools, p, const aib_keypool_t *);
        for (i = 0; i < kp->keys->nelts; i++) {
            const aib_key_t *key = key_at(kp, i);
            apr_hash_set(seen, &key->fingerprint, sizeof(key->fingerprint), "");
        }
    }
    return apr_hash_count(seen);
}

static void slot_reset(aib_slot_t *slot, uint64_t fingerprint)
{
    AIB_STORE(&slot->fingerprint, 0);
    AIB_STORE(&slot->cooldown_until_ms, 0);
    AIB_STORE(&slot->disabled_until_ms, 0);
    AIB_STORE(&slot->cooldown_reason, AIB_REASON_NONE);
    AIB_STORE(&slot->disabled_reason, AIB_REASON_NONE);
    AIB_STORE(&slot->requests, 0);
    AIB_STORE(&slot->rate_limited, 0);
    AIB_STORE(&slot->unauthorized, 0);
    AIB_STORE(&slot->forbidden, 0);
    AIB_STORE(&slot->last_used_ms, 0);
    AIB_STORE(&slot->last_failure_ms, 0);
    AIB_STORE(&slot->last_failure_status, 0);
    AIB_STORE(&slot->tokens_input, 0);
    AIB_STORE(&slot->tokens_output, 0);
    AIB_STORE(&slot->tokens_cache_read, 0);
    AIB_STORE(&slot->tokens_cache_write, 0);
    AIB_STORE(&slot->version, 0);
    AIB_STORE(&slot->fleet_version, 0);
    AIB_STORE(&slot->fleet_tag, 0);
    AIB_STORE(&slot->fleet_written_ms, 0);
    /* Owner last: a writer that checks the fingerprint sees a clean slot. */
    AIB_STORE(&slot->fingerprint, fingerprint);
}

static void slot_copy(aib_slot_t *to, const aib_slot_t *from)
{
    AIB_STORE(&to->cooldown_until_ms, AIB_LOAD(&from->cooldown_until_ms));
    AIB_STORE(&to->disabled_until_ms, AIB_LOAD(&from->disabled_until_ms));
    AIB_STORE(&to->cooldown_reason, AIB_LOAD(&from->cooldown_reason));
    AIB_STORE(&to->disabled_reason, AIB_LOAD(&from->disabled_reason));
    AIB_STORE(&to->requests, AIB_LOAD(&from->requests));
    AIB_STORE(&to->rate_limited, AIB_LOAD(&from->rate_limited));
    AIB_STORE(&to->unauthorized, AIB_LOAD(&from->unauthorized));
    AIB_STORE(&to->forbidden, AIB_LOAD(&from->forbidden));
    AIB_STORE(&to->last_used_ms, AIB_LOAD(&from->last_used_ms));
    AIB_STORE(&to->last_failure_ms, AIB_LOAD(&from->last_failure_ms));
    AIB_STORE(&to->last_failure_status, AIB_LOAD(&from->last_failure_status));
    AIB_STORE(&to->tokens_input, AIB_LOAD(&from->tokens_input));
    AIB_STORE(&to->tokens_output, AIB_LOAD(&from->tokens_output));
    AIB_STORE(&to->tokens_cache_read, AIB_LOAD(&from->tokens_cache_read));
    AIB_STORE(&to->tokens_cache_write, AIB_LOAD(&from->tokens_cache_write));
    AIB_STORE(&to->version, AIB_LOAD(&from->version));
    AIB_STORE(&to->fleet_version, AIB_LOAD(&from->fleet_version));
    AIB_STORE(&to->fleet_tag, AIB_LOAD(&from->fleet_tag));
    AIB_STORE(&to->fleet_written_ms, AIB_LOAD(&from->fleet_written_ms));
}

void aib_keystore_assign(aib_keystore_t *to, const aib_keystore_t *from,
                         const apr_array_header_t *pools, apr_pool_t *tmp)
{
    apr_hash_t *old = apr_hash_make(tmp);      /* fingerprint -> slot in `from` */
    apr_hash_t *wanted = apr_hash_make(tmp);   /* fingerprint -> slot in `to` */
    uint32_t s, next_free = 0;
    int p, i;

    if (from) {
        for (s = 0; s < from->capacity; s++)
            if (from->slots[s].fingerprint)
                apr_hash_set(old, &from->slots[s].fingerprint, sizeof(uint64_t),
                             &from->slots[s]);
    }
    if (to == from) {
        /* Free the slots of keys that are gone before handing slots out. */
        for (p = 0; p < pools->nelts; p++) {
            const aib_keypool_t *kp = APR_ARRAY_IDX(pools, p, const aib_keypool_t *);
            for (i = 0; i < kp->keys->nelts; i++)
                apr_hash_set(wanted, &key_at(kp, i)->fingerprint, sizeof(uint64_t), "");
        }
        for (s = 0; s < to->capacity; s++) {
            uint64_t fp = to->slots[s].fingerprint;
            if (fp && !apr_hash_get(wanted, &fp, sizeof(fp)))
                slot_reset(&to->slots[s], 0);
        }
        wanted = apr_hash_make(tmp);
    }
    for (p = 0; p < pools->nelts; p++) {
        aib_keypool_t *kp = APR_ARRAY_IDX(pools, p, aib_keypool_t *);
        kp->store = to;
        for (i = 0; i < kp->keys->nelts; i++) {
            aib_key_t *key = &APR_ARRAY_IDX(kp->keys, i, aib_key_t);
            const aib_slot_t *previous = apr_hash_get(old, &key->fingerprint, sizeof(uint64_t));
            uint32_t *assigned = apr_hash_get(wanted, &key->fingerprint, sizeof(uint64_t));

            if (assigned) {                 /* same key in another pool object */
                key->slot = *assigned;
                continue;
            }
            if (to == from && previous) {   /* stays where it is */
                key->slot = (uint32_t)(previous - to->slots);
            }
            else {
                while (next_free < to->capacity && to->slots[next_free].fingerprint)
                    next_free++;
                key->slot = next_free;
                slot_reset(&to->slots[key->slot], key->fingerprint);
                if (previous)
                    slot_copy(&to->slots[key->slot], previous);
            }
            assigned = apr_palloc(tmp, sizeof(*assigned));
            *assigned = key->slot;
            apr_hash_set(wanted, &key->fingerprint, sizeof(uint64_t), assigned);
        }
    }
}

aib_key_state_e aib_key_state(const aib_keypool_t *kp, int i, int64_t now_ms,
                              aib_reason_e *reason, int64_t *until_ms)
{
    const aib_slot_t *slot = aib_key_slot(kp, i);
    int64_t disabled_until, cooldown_until;

    if (reason)
        *reason = AIB_REASON_NONE;
    if (until_ms)
        *until_ms = 0;
    if (!slot)
        return AIB_KEY_AVAILABLE;
    disabled_until = AIB_LOAD(&slot->disabled_until_ms);
    if (disabled_until > now_ms) {
        if (reason)
            *reason = AIB_LOAD(&slot->disabled_reason);
        if (until_ms)
            *until_ms = disabled_until;
        return AIB_KEY_DISABLED;
    }
    cooldown_until = AIB_LOAD(&slot->cooldown_until_ms);
    if (cooldown_until > now_ms) {
        if (reason)
            *reason = AIB_LOAD(&slot->cooldown_reason);
        if (until_ms)
            *until_ms = cooldown_until;
        return AIB_KEY_COOLING;
    }
    return AIB_KEY_AVAILABLE;
}

void aib_key_cooldown(const aib_keypool_t *kp, int i, int64_t until_ms, aib_reason_e reason)
{
    aib_slot_t *slot = aib_key_slot(kp, i);
    int64_t current;

    if (!slot)
        return;
    current = AIB_LOAD(&slot->cooldown_until_ms);
    /* The later deadline wins, also against a concurrent writer. */
    while (until_ms > current) {
        if (__atomic_compare_exchange_n(&slot->cooldown_until_ms, &current, until_ms, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            AIB_STORE(&slot->cooldown_reason, reason);
            AIB_ADD(&slot->version, 1);
            break;
        }
    }
}

void aib_key_disable(const aib_keypool_t *kp, int i, int64_t until_ms, aib_reason_e reason)
{
    aib_slot_t *slot = aib_key_slot(kp, i);

    if (!slot)
        return;
    AIB_STORE(&slot->disabled_reason, reason);
    AIB_STORE(&slot->disabled_until_ms, until_ms);
    AIB_ADD(&slot->version, 1);
}

/* Key i is available earlier than a walk may have noted. */
static void drop_walk_hint(const aib_keypool_t *kp)
{
    if (kp->walk_hint)
        AIB_STORE(kp->walk_hint, 0);
}

/* Which deadlines clear_deadlines ends. */
enum { CLEAR_DISABLED = 1, CLEAR_COOLDOWN = 2 };

/* Ends the deadlines `which` names: a local change (the fleet sync writes
 * it out), and this process's walks see the key at once. */
static void clear_deadlines(const aib_keypool_t *kp, int i, int which)
{
    aib_slot_t *slot = aib_key_slot(kp, i);

    if (!slot)
        return;
    if (which & CLEAR_DISABLED) {
        AIB_STORE(&slot->disabled_until_ms, 0);
        AIB_STORE(&slot->disabled_reason, AIB_REASON_NONE);
    }
    if (which & CLEAR_COOLDOWN) {
        AIB_STORE(&slot->cooldown_until_ms, 0);
        AIB_STORE(&slot->cooldown_reason, AIB_REASON_NONE);
    }
    AIB_ADD(&slot->version, 1);
    drop_walk_hint(kp);
}

void aib_key_enable(const aib_keypool_t *kp, int i)
{
    clear_deadlines(kp, i, CLEAR_DISABLED | CLEAR_COOLDOWN);
}

void aib_key_clear_disabled(const aib_keypool_t *kp, int i)
{
    clear_deadlines(kp, i, CLEAR_DISABLED);
}

void aib_key_clear_cooldown(const aib_keypool_t *kp, int i)
{
    clear_deadlines(kp, i, CLEAR_COOLDOWN);
}

void aib_key_apply(const aib_keypool_t *kp, int i, int64_t cooldown_seen,
                   int64_t cooldown_until_ms, aib_reason_e cooldown_reason,
                   int64_t disabled_until_ms, aib_reason_e disabled_reason)
{
    aib_slot_t *slot = aib_key_slot(kp, i);

    if (!slot)
        return;
    AIB_STORE(&slot->disabled_reason, disabled_reason);
    AIB_STORE(&slot->disabled_until_ms, disabled_until_ms);
    if (__atomic_compare_exchange_n(&slot->cooldown_until_ms, &cooldown_seen, cooldown_until_ms,
                                    0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        AIB_STORE(&slot->cooldown_reason, cooldown_reason);
    drop_walk_hint(kp);
}

void aib_key_count_attempt(const aib_keypool_t *kp, int i, int64_t now_ms)
{
    aib_slot_t *slot = aib_key_slot(kp, i);

    if (!slot)
        return;
    AIB_ADD(&slot->requests, 1);
    AIB_STORE(&slot->last_used_ms, now_ms);
}

void aib_key_count_status(const aib_keypool_t *kp, int i, int status)
{
    aib_slot_t *slot = aib_key_slot(kp, i);

    if (!slot)
        return;
    if (status == 429)
        AIB_ADD(&slot->rate_limited, 1);
    else if (status == 401)
        AIB_ADD(&slot->unauthorized, 1);
    else if (status == 403)
        AIB_ADD(&slot->forbidden, 1);
}

void aib_key_note_failure(const aib_keypool_t *kp, int i, int64_t now_ms, int status)
{
    aib_slot_t *slot = aib_key_slot(kp, i);

    if (!slot)
        return;
    AIB_STORE(&slot->last_failure_status, (uint64_t)status);
    AIB_STORE(&slot->last_failure_ms, now_ms);
}

void aib_key_count_tokens(const aib_keypool_t *kp, int i, int64_t input, int64_t output,
                          int64_t cache_read, int64_t cache_write)
{
    aib_slot_t *slot = aib_key_slot(kp, i);

    if (!slot)
        return;
    AIB_ADD(&slot->tokens_input, (uint64_t)(input > 0 ? input : 0));
    AIB_ADD(&slot->tokens_output, (uint64_t)(output > 0 ? output : 0));
    AIB_ADD(&slot->tokens_cache_read, (uint64_t)(cache_read > 0 ? cache_read : 0));
    AIB_ADD(&slot->tokens_cache_write, (uint64_t)(cache_write > 0 ? cache_write : 0));
}

void aib_key_snapshot(const aib_keypool_t *kp, int i, aib_slot_t *out)
{
    const aib_slot_t *slot = aib_key_slot(kp, i);

    memset(out, 0, sizeof(*out));
    if (!slot)
        return;
    out->fingerprint = AIB_LOAD(&slot->fingerprint);
    out->cooldown_until_ms = AIB_LOAD(&slot->cooldown_until_ms);
    out->disabled_until_ms = AIB_LOAD(&slot->disabled_until_ms);
    out->cooldown_reason = AIB_LOAD(&slot->cooldown_reason);
    out->disabled_reason = AIB_LOAD(&slot->disabled_reason);
    out->requests = AIB_LOAD(&slot->requests);
    out->rate_limited = AIB_LOAD(&slot->rate_limited);
    out->unauthorized = AIB_LOAD(&slot->unauthorized);
    out->forbidden = AIB_LOAD(&slot->forbidden);
    out->last_used_ms = AIB_LOAD(&slot->last_used_ms);
    out->last_failure_ms = AIB_LOAD(&slot->last_failure_ms);
    out->last_failure_status = AIB_LOAD(&slot->last_failure_status);
    out->tokens_input = AIB_LOAD(&slot->tokens_input);
    out->tokens_output = AIB_LOAD(&slot->tokens_output);
    out->tokens_cache_read = AIB_LOAD(&slot->tokens_cache_read);
    out->tokens_cache_write = AIB_LOAD(&slot->tokens_cache_write);
}

void aib_walker_init(aib_walker_t *w, const aib_keypool_t *kp)
{
    w->pool = kp;
    w->next = 0;
    w->hinted = 0;
    w->out_until_ms = INT64_MAX;
}

/* A hint is one word, so threads read it whole: the number of keys that
 * are out (24 bits) and until when (40 bits of milliseconds after
 * HINT_EPOCH_MS, enough for 34 years). */
#define HINT_KEYS_MAX ((1 << 24) - 1)
#define HINT_EPOCH_MS INT64_C(1735689600000)   /* 2025-01-01 */
#define HINT_UNTIL_MAX ((INT64_C(1) << 40) - 1)

/* Starts the walk after the keys this process last found out, while that
 * holds. */
static void take_walk_hint(aib_walker_t *w, int64_t now_ms)
{
    uint64_t hint = w->pool->walk_hint ? AIB_LOAD(w->pool->walk_hint) : 0;
    int n = (int)(hint & HINT_KEYS_MAX);
    int64_t until = (int64_t)(hint >> 24) + HINT_EPOCH_MS;

    w->hinted = 1;
    if (n && n <= w->pool->keys->nelts && now_ms < until) {
        w->next = n;
        w->out_until_ms = until;
    }
}

/* The first `n` keys were found out: leave a hint when they are many and
 * it says more than the one there. */
static void leave_walk_hint(aib_walker_t *w, int n, int64_t now_ms)
{
    uint64_t hint = w->pool->walk_hint ? AIB_LOAD(w->pool->walk_hint) : 0;
    int64_t until = w->out_until_ms;

    if (!w->pool->walk_hint || n < AIB_WALK_HINT_KEYS || n > HINT_KEYS_MAX
        || now_ms < HINT_EPOCH_MS)
        return;
    if ((int)(hint & HINT_KEYS_MAX) == n
        && now_ms < (int64_t)(hint >> 24) + HINT_EPOCH_MS)
        return;   /* the same hint, still in force: no write */
    if (until > now_ms + AIB_WALK_HINT_MS)
        until = now_ms + AIB_WALK_HINT_MS;
    if (until - HINT_EPOCH_MS > HINT_UNTIL_MAX)
        return;
    AIB_STORE(w->pool->walk_hint, ((uint64_t)(until - HINT_EPOCH_MS) << 24) | (uint64_t)n);
}

int aib_walker_next(aib_walker_t *w, int64_t now_ms)
{
    int first = 0;

    if (!w->pool)
        return -1;
    if (!w->hinted) {
        take_walk_hint(w, now_ms);
        first = 1;
    }
    while (w->next < w->pool->keys->nelts) {
        int i = w->next++;
        int64_t until;
        if (aib_key_state(w->pool, i, now_ms, NULL, &until) == AIB_KEY_AVAILABLE) {
            if (first)
                leave_walk_hint(w, i, now_ms);
            return i;
        }
        /* Out at least until then (a disabled key may be cooling after). */
        if (until < w->out_until_ms)
            w->out_until_ms = until;
    }
    if (first)
        leave_walk_hint(w, w->pool->keys->nelts, now_ms);
    return -1;
}

aib_exhaustion_t aib_keypool_exhaustion(const aib_keypool_t *kp, int64_t now_ms)
{
    aib_exhaustion_t result = { AIB_EXHAUSTED_AUTH_FAILED, 0 };
    int64_t smallest = -1;
    int i;

    for (i = 0; i < kp->keys->nelts; i++) {
        int64_t until, remaining;
        aib_key_state_e state = aib_key_state(kp, i, now_ms, NULL, &until);

        if (state == AIB_KEY_DISABLED)
            continue;
        /* Not disabled: cooling, or its cooldown ran out while we walked. */
        remaining = state == AIB_KEY_COOLING ? until - now_ms : 0;
        if (smallest < 0 || remaining < smallest)
            smallest = remaining;
    }
    if (smallest >= 0) {
        result.kind = AIB_EXHAUSTED_RATE_LIMITED;
        result.retry_after_s = (smallest + 999) / 1000;
    }
    return result;
}

const char *aib_reason_name(aib_reason_e reason)
{
    switch (reason) {
    case AIB_REASON_RATE_LIMITED: return "rate_limited";
    case AIB_REASON_QUOTA:        return "quota";
    case AIB_REASON_UNAUTHORIZED: return "unauthorized";
    case AIB_REASON_FORBIDDEN:    return "forbidden";
    default:                      return "none";
    }
}

const char *aib_key_state_name(aib_key_state_e state)
{
    switch (state) {
    case AIB_KEY_COOLING:  return "cooling";
    case AIB_KEY_DISABLED: return "disabled";
    default:               return "available";
    }
}
