#include <string.h>
#include <apr_strings.h>

#include "bridge.h"
#include "format.h"
#include "headers.h"
#include "ratelimit.h"
#include "sse.h"

/* A failover response is read whole to classify it; its body is small
 * (a JSON error), anything past this is dropped. */
#define AIB_ERROR_BODY_MAX (64 * 1024)
/* Blocking bodies larger than this are relayed but their usage not read. */
#define AIB_USAGE_BODY_MAX (16 * 1024 * 1024)
/* Events larger than this are relayed but not inspected. */
#define AIB_SSE_EVENT_MAX (1024 * 1024)

typedef enum {
    ATTEMPT_DONE,     /* the client has its answer */
    ATTEMPT_NEXT      /* the key was at fault: try the next one */
} attempt_result_e;

typedef struct {
    aib_interception_t *ic;
    apr_pool_t *pool;
    int status;
    apr_table_t *headers;
    int fail_over;            /* a failover status: hold the body back */
    int inspecting;           /* a stream held back until its first event */
    aib_fault_e event_fault;  /* that first event was a key's failure */
    int first_event_seen;
    int committed;            /* status and headers reached the sink */
    int relayed;              /* something was passed to the sink after them */
    int event_stream;         /* the body is a stream of events */
    int complete;             /* the stream's final event was seen */
    const char *malformed;    /* why the framing could not decode the stream */
    int client_gone;
    int64_t sequence;         /* the last event's number, when the format numbers them */
    const aib_stream_framing_t *framing;  /* how the upstream frames its events */
    void *events;             /* the framing's decoder, for a stream */
    int reframe;              /* the framing is not SSE: the client gets SSE */
    aib_usage_reader_t *usage;  /* a blocking body's usage, read as relayed */
    int rewrite;              /* events re-emitted one by one (reframed, usage hidden) */
    int unflushed;            /* re-emitted events wait for the flush that ends their read */
    int rewrite_answer;       /* the provider rewrites the blocking answer (provider.h) */
    int holding;              /* such an answer is held whole until its end */
    char *frame;              /* emit()'s buffer */
    apr_size_t frame_cap;
    char *held;
    apr_size_t held_len;
} attempt_t;

static void logf_(aib_interception_t *ic, aib_log_level_e level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void logf_(aib_interception_t *ic, aib_log_level_e level, const char *fmt, ...)
{
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    msg = apr_pvsprintf(ic->pool, fmt, ap);
    va_end(ap);
    ic->sink->log(ic->sink->ctx, level, msg);
}

const char *aib_outcome_name(aib_outcome_e outcome)
{
    static const char *const names[] = {
        "ok", "upstream_error", "exhausted", "transport_error", "client_abort", "rejected"
    };
    return names[outcome];
}

void aib_bridge_reject(aib_interception_t *ic, aib_error_kind_e kind,
                       const char *message, const char *allow, int64_t retry_after_s)
{
    apr_table_t *headers = apr_table_make(ic->pool, 3);
    const char *body = ic->provider->ops->error_body(ic->pool, kind, message);

    apr_table_setn(headers, "Content-Type", "application/json");
    if (allow)
        apr_table_setn(headers, "Allow", allow);
    if (retry_after_s > 0)
        apr_table_setn(headers, "Retry-After",
                       apr_psprintf(ic->pool, "%" APR_INT64_T_FMT, retry_after_s));
    ic->status = aib_error_status(kind);
    if (ic->outcome == AIB_OUTCOME_OK)
        ic->outcome = AIB_OUTCOME_REJECTED;
    ic->sink->start(ic->sink->ctx, ic->status, headers);
    ic->sink->write(ic->sink->ctx, body, strlen(body), 0);
}

static void commit(attempt_t *a);
static int relay(attempt_t *a, const char *data, apr_size_t len);

/* Re-emits one event as the client should see it: as SSE, without the
 * usage the module asked for on the client's behalf. Works in one buffer
 * reused for every event, so a long stream runs in constant memory. */
static int emit(attempt_t *a, const char *event, const char *data, apr_size_t len)
{
    int strip = a->ic->strip_usage;
    apr_size_t kept;
    /* The frame, then room for the stripped data, which aib_sse_frame
     * reads in place. */
    apr_size_t at = AIB_SSE_FRAME_MAX(event ? strlen(event) : 0, len);
    apr_size_t need = strip ? at + len : at;
    char *out;

    if (a->inspecting) {
        a->inspecting = 0;
        commit(a);
    }
    if (need > a->frame_cap) {
        a->frame_cap = need * 2;
        a->frame = apr_palloc(a->pool, a->frame_cap);
    }
    if (!strip)
        return relay(a, a->frame, aib_sse_frame(a->frame, event, data, len));
    out = a->frame + at;
    if (!a->ic->route.format->stream_usage_strip(data, len, out, &kept))
        return 0;
    return relay(a, a->frame, aib_sse_frame(a->frame, event, out, kept));
}

/* Learns from each event: the first may be a key's failure in disguise,
 * the others only tell where the stream stands. */
static int on_event(void *ctx, const char *event, const char *data, apr_size_t len)
{
    attempt_t *a = ctx;
    const aib_provider_ops_t *ops = a->ic->provider->ops;

    if (a->inspecting && !a->first_event_seen) {
        aib_fault_e fault = ops->stream_fault(event, data, len);
        a->first_event_seen = 1;
        if (fault != AIB_FAULT_NONE
            && aib_provider_fails_over(a->ic->provider, aib_fault_status(fault))) {
            a->event_fault = fault;
            return 1;
        }
    }
    if (aib_route_stream_complete(&a->ic->route, ops, event, data))
        a->complete = 1;
    if (a->ic->route.format && a->ic->route.format->event_sequence)
        a->ic->route.format->event_sequence(data, &a->sequence);
    aib_usage_from_event(&a->ic->usage, a->ic->pool, a->ic->route.format, event, data, len);
    if (ops->usage_from_event)
        ops->usage_from_event(&a->ic->usage, event, data, len);
    return a->rewrite ? emit(a, event, data, len) : 0;
}

static void commit(attempt_t *a)
{
    aib_interception_t *ic = a->ic;
    apr_table_t *headers = aib_client_response_headers(a->pool, a->headers);

    a->committed = 1;
    ic->status = a->status;
    if (!ic->first_byte_ms)
        ic->first_byte_ms = ic->now_ms();
    if (a->reframe)
        apr_table_setn(headers, "Content-Type", "text/event-stream");
    ic->sink->start(ic->sink->ctx, a->status, headers);
}

static int on_response(void *ctx, int status, apr_table_t *headers)
{
    attempt_t *a = ctx;
    aib_interception_t *ic = a->ic;
    int ok = status < 300;

    a->status = status;
    a->headers = headers;
    a->event_stream = a->framing->is_stream(headers);
    if (a->event_stream)
        a->events = a->framing->create(a->pool, AIB_SSE_EVENT_MAX, on_event, a);
    if (!ic->client_key && (aib_provider_fails_over(ic->provider, status)
                            || (status >= 400 && ic->provider->ops->classify_answer))) {
        a->fail_over = 1;
        return 0;
    }
    if (a->rewrite_answer && !a->event_stream) {
        a->holding = 1;   /* committed once rewritten */
        return 0;
    }
    a->reframe = a->event_stream && ok && a->framing != &aib_sse_framing;
    a->rewrite = a->reframe || (ic->strip_usage && a->event_stream && ok);
    if (!a->event_stream && ok && ic->route.format)
        a->usage = aib_usage_reader_create(a->pool, ic->route.format, &ic->usage,
                                           AIB_USAGE_BODY_MAX);
    if (!ic->client_key && a->event_stream && ok)
        a->inspecting = 1;   /* until its first event says it is no failure */
    else
        commit(a);
    return 0;
}

/* Keeps bytes back, up to AIB_ERROR_BODY_MAX; returns how many fitted. */
static apr_size_t hold(attempt_t *a, const char *data, apr_size_t len)
{
    apr_size_t room = AIB_ERROR_BODY_MAX - a->held_len;

    if (len > room)
        len = room;
    memcpy(a->held + a->held_len, data, len);
    a->held_len += len;
    return len;
}

static int relay(attempt_t *a, const char *data, apr_size_t len)
{
    /* Events re-emitted from one upstream read go out with one flush
     * (flush_events): a write and a flush per event cost a system call
     * each, which showed with many streams at once. */
    int flush = a->event_stream && !a->rewrite;

    a->relayed = 1;
    a->unflushed |= a->rewrite;
    if (a->ic->sink->write(a->ic->sink->ctx, data, len, flush)) {
        a->client_gone = 1;
        return 1;
    }
    return 0;
}

/* Sends on the events re-emitted since the last flush: nothing waits
 * past the upstream read it came in. */
static int flush_events(attempt_t *a)
{
    if (!a->unflushed || a->client_gone)
        return a->client_gone;
    a->unflushed = 0;
    if (a->ic->sink->write(a->ic->sink->ctx, NULL, 0, 1))
        a->client_gone = 1;
    return a->client_gone;
}

/* The held-back start of a stream goes out after all. */
static int release(attempt_t *a)
{
    a->inspecting = 0;
    commit(a);
    return relay(a, a->held, a->held_len);
}

static int on_data(void *ctx, const char *data, apr_size_t len)
{
    attempt_t *a = ctx;

    if (a->fail_over || a->holding) {
        hold(a, data, len);
        return 0;
    }
    if (a->rewrite) {
        /* Nothing goes out raw: emit() sends each event once it is whole. */
        if (a->framing->feed(a->events, data, len) == AIB_FRAMING_MALFORMED)
            a->malformed = a->framing->error(a->events);
        flush_events(a);
        return a->event_fault || a->client_gone || a->malformed != NULL;
    }
    if (a->inspecting) {
        apr_size_t kept = hold(a, data, len);
        /* A first event larger than the hold is no error event: let it go. */
        if (kept < len && (release(a) || relay(a, data + kept, len - kept)))
            return 1;
    }
    else if (relay(a, data, len))
        return 1;
    if (a->usage)
        aib_usage_reader_feed(a->usage, data, len);
    if (a->events)
        a->framing->feed(a->events, data, len);
    if (a->event_fault)
        return 1;
    if (a->inspecting && a->first_event_seen)
        return release(a);
    return 0;
}

static int on_tick(void *ctx)
{
    attempt_t *a = ctx;

    if (a->ic->sink->client_gone(a->ic->sink->ctx))
        a->client_gone = 1;
    return a->client_gone;
}

/* The exchange broke after the response was committed. */
static void fail_committed(attempt_t *a, aib_error_kind_e kind, const char *message)
{
    aib_interception_t *ic = a->ic;
    const char *event;

    if (!a->event_stream) {
        /* Nothing of the body went out yet: still a clean error. */
        if (!a->relayed)
            aib_bridge_reject(ic, kind, message, NULL, 0);
        else
            ic->sink->fail(ic->sink->ctx);
        return;
    }
    /* An SSE client reads an error event, then a normal end of response:
     * it never takes the cut stream for a complete answer. */
    event = aib_route_stream_error(a->pool, &ic->route, ic->provider->ops, kind, message,
                                   a->sequence + 1);
    ic->sink->write(ic->sink->ctx, event, strlen(event), 1);
}

static const char *describe_key(aib_interception_t *ic, int i)
{
    return apr_psprintf(ic->pool, "key #%d (%s) of pool '%s'", i + 1, ic->key_hint,
                        ic->provider->pool->name);
}

/* Whose fault the held failover answer is; the body the client gets when
 * it is no key's fault replaces it, if the provider rewrites it. */
static aib_fault_e classify(attempt_t *a)
{
    const aib_provider_ops_t *ops = a->ic->provider->ops;
    const char *relay = NULL;
    aib_fault_e fault;

    if (!ops->classify_answer)
        return ops->classify(a->status, a->held, a->held_len);
    fault = ops->classify_answer(a->pool, a->status, a->headers, a->held, a->held_len, &relay);
    if (relay) {
        a->held = (char *)relay;
        a->held_len = strlen(relay);
    }
    return fault;
}

/* The held answer goes to the client, as the provider rewrites it when
 * the request asked for that. */
static void send_held(attempt_t *a)
{
    const aib_provider_ops_t *ops = a->ic->provider->ops;
    const char *body = a->held;

    if (a->rewrite_answer)
        a->status = ops->rewrite_answer(a->ic, a->pool, a->status, a->headers, &body,
                                        &a->held_len);
    commit(a);
    a->ic->sink->write(a->ic->sink->ctx, body, a->held_len, 0);
}

/* A rate-limited key of a provider that names no reset time, limited again
 * within as long as its last cooldown lasted after it ended: twice that. */
static int64_t grown_cooldown(const aib_provider_t *pv, int i, int64_t now, int64_t ms)
{
    aib_slot_t slot;
    int64_t last;

    aib_key_snapshot(pv->pool, i, &slot);
    last = slot.cooldown_until_ms - slot.last_failure_ms;
    if (slot.cooldown_reason != AIB_REASON_RATE_LIMITED || last <= 0
        || now >= slot.cooldown_until_ms + last || 2 * last <= ms)
        return ms;
    return 2 * last < pv->max_cooldown_ms ? 2 * last : pv->max_cooldown_ms;
}

/* Key i failed as `what` says: mark it, or relay the held response when it
 * is not the key's fault. */
static attempt_result_e take_failover(attempt_t *a, int i, aib_fault_e fault, const char *what)
{
    aib_interception_t *ic = a->ic;
    const aib_provider_t *pv = ic->provider;
    int64_t now = ic->now_ms();
    /* Read before this failure is noted over the last one. */
    int64_t base = fault == AIB_FAULT_RATE_LIMITED && pv->ops->cooldown_grows
                   ? grown_cooldown(pv, i, now, pv->cooldown_ms) : pv->cooldown_ms;

    if (fault != AIB_FAULT_NONE)
        aib_key_note_failure(pv->pool, i, now, aib_fault_status(fault));
    if (fault == AIB_FAULT_NONE) {
        logf_(ic, AIB_LOG_INFO, "provider '%s': %s %s, not the key's fault: relayed",
              pv->name, describe_key(ic, i), what);
        send_held(a);
        ic->outcome = AIB_OUTCOME_UPSTREAM_ERROR;
        return ATTEMPT_DONE;
    }
    if (fault == AIB_FAULT_UNAUTHORIZED || fault == AIB_FAULT_FORBIDDEN) {
        aib_reason_e reason = fault == AIB_FAULT_UNAUTHORIZED ? AIB_REASON_UNAUTHORIZED
                                                              : AIB_REASON_FORBIDDEN;
        aib_key_disable(pv->pool, i, pv->disable_for_ms ? now + pv->disable_for_ms : AIB_FOREVER,
                        reason);
        aib_stats_transition(pv->stats, reason);
        logf_(ic, AIB_LOG_WARNING, "provider '%s': %s %s: disabled %s, trying the next key",
              pv->name, describe_key(ic, i), what,
              pv->disable_for_ms ? apr_psprintf(ic->pool, "for %" APR_INT64_T_FMT " s",
                                                pv->disable_for_ms / 1000)
                                 : "until re-enabled");
    }
    else {
        const char *source = NULL;
        int64_t ms = fault == AIB_FAULT_QUOTA
                     ? pv->max_cooldown_ms
                     : aib_cooldown_ms(a->headers, aib_provider_reset_headers(a->pool), now,
                                       base, pv->max_cooldown_ms, &source);
        aib_reason_e reason = fault == AIB_FAULT_QUOTA ? AIB_REASON_QUOTA : AIB_REASON_RATE_LIMITED;
        aib_key_cooldown(pv->pool, i, now + ms, reason);
        aib_stats_transition(pv->stats, reason);
        logf_(ic, AIB_LOG_INFO, "provider '%s': %s %s%s: cooling down for %.3f s (%s), "
              "trying the next key", pv->name, describe_key(ic, i), what,
              fault == AIB_FAULT_QUOTA ? " (insufficient_quota)" : "", ms / 1000.0,
              fault == AIB_FAULT_QUOTA ? "max-cooldown=" : source ? source
              : base > pv->cooldown_ms ? "limited again soon: doubled" : "cooldown=");
    }
    return ATTEMPT_NEXT;
}

/* The provider cannot use key i (a malformed credential): it is disabled
 * like a key the upstream refused, the client's own is refused. */
static attempt_result_e unusable_key(aib_interception_t *ic, int i, const char *why)
{
    const aib_provider_t *pv = ic->provider;

    if (i < 0) {
        aib_bridge_reject(ic, AIB_ERROR_AUTHENTICATION,
                          apr_psprintf(ic->pool, "unusable credential: %s", why), NULL, 0);
        return ATTEMPT_DONE;
    }
    ic->key_hint = APR_ARRAY_IDX(pv->pool->keys, i, aib_key_t).hint;
    aib_key_disable(pv->pool, i, AIB_FOREVER, AIB_REASON_UNAUTHORIZED);
    aib_stats_transition(pv->stats, AIB_REASON_UNAUTHORIZED);
    logf_(ic, AIB_LOG_ERROR, "provider '%s': %s is unusable (%s): disabled until re-enabled",
          pv->name, describe_key(ic, i), why);
    return ATTEMPT_NEXT;
}

/* One upstream call of `out` with `key` (key i of the pool, or the
 * client's own key when i < 0). */
static attempt_result_e attempt(aib_interception_t *ic, const aib_outgoing_t *out,
                                const char *key, int i)
{
    const aib_provider_t *pv = ic->provider;
    aib_upstream_request_t req;
    aib_upstream_handler_t handler = { NULL, on_response, on_data, on_tick };
    attempt_t a;
    aib_outgoing_t sent = *out;
    aib_xfer_result_e result;
    attempt_result_e next = ATTEMPT_DONE;
    const char *error = NULL;

    memset(&a, 0, sizeof(a));
    a.ic = ic;
    a.sequence = -1;
    apr_pool_create(&a.pool, ic->pool);
    a.held = apr_palloc(a.pool, AIB_ERROR_BODY_MAX);
    handler.ctx = &a;
    a.framing = pv->ops->stream_framing ? pv->ops->stream_framing : &aib_sse_framing;
    a.rewrite_answer = out->rewrite_answer;

    sent.headers = apr_table_copy(a.pool, out->headers ? out->headers : ic->headers);
    pv->ops->set_key(a.pool, sent.headers, key);
    if (pv->ops->defaults)
        pv->ops->defaults(sent.headers);
    if (pv->ops->sign && (error = pv->ops->sign(ic, a.pool, key, &sent))) {
        apr_pool_destroy(a.pool);
        return unusable_key(ic, i, error);
    }
    memset(&req, 0, sizeof(req));
    req.method = sent.method;
    req.url = sent.url;
    req.headers = sent.headers;
    req.body = sent.body;
    req.body_len = sent.body_len;
    req.connect_timeout_ms = pv->connect_timeout_ms;
    req.timeout_ms = ic->stream ? 0 : pv->timeout_ms;
    req.idle_timeout_ms = pv->idle_timeout_ms;
    req.proxy = pv->proxy;
    req.ca_file = pv->ca_file;

    ic->attempts++;
    ic->key_index = i;
    ic->key_hint = i >= 0 ? APR_ARRAY_IDX(pv->pool->keys, i, aib_key_t).hint : "byok";
    APR_ARRAY_PUSH(ic->tried, const char *) = ic->key_hint;
    if (i >= 0)
        aib_key_count_attempt(pv->pool, i, ic->now_ms());
    result = ic->transport->perform(ic->transport, a.pool, &req, &handler, &error);
    if (a.status)
        ic->upstream_status = a.status;
    if (a.usage) {
        aib_usage_reader_finish(a.usage);
        if (pv->ops->usage_from_headers)
            pv->ops->usage_from_headers(&ic->usage, a.headers);
    }
    if (i >= 0 && a.status)
        aib_key_count_status(pv->pool, i, a.event_fault ? aib_fault_status(a.event_fault)
                                                        : a.status);
    /* The transfer ended inside a frame of a framing that has them. */
    if (a.rewrite && result == AIB_XFER_OK && !a.malformed && a.framing->finish
        && a.framing->finish(a.events) == AIB_FRAMING_MALFORMED)
        a.malformed = a.framing->error(a.events);
    /* The stream ended or broke before its first event was whole. */
    if (a.inspecting && !a.event_fault && !a.client_gone && result != AIB_XFER_STOPPED
        && !a.malformed)
        release(&a);

    /* The upstream's bytes, not the key: the client is told in SSE, nothing
     * is marked; a broken tail after the final event is only logged. */
    if (a.malformed && !a.client_gone) {
        logf_(ic, AIB_LOG_ERROR, "provider '%s': %s malformed stream: %s", pv->name, req.url,
              a.malformed);
        if (!a.complete) {
            if (!a.committed) {
                a.inspecting = 0;
                commit(&a);
            }
            fail_committed(&a, AIB_ERROR_UPSTREAM,
                           apr_psprintf(ic->pool, "upstream stream malformed: %s", a.malformed));
            ic->outcome = AIB_OUTCOME_TRANSPORT_ERROR;
        }
    }
    else if (a.event_fault && !a.client_gone) {
        next = take_failover(&a, i, a.event_fault,
                             apr_psprintf(ic->pool, "answered %d with an error event", a.status));
    }
    else if (a.client_gone || result == AIB_XFER_STOPPED) {
        logf_(ic, AIB_LOG_INFO, "provider '%s': client went away, upstream transfer ended",
              pv->name);
        ic->outcome = AIB_OUTCOME_CLIENT_ABORT;
        if (!a.committed)
            ic->status = 499;
    }
    else if (a.fail_over) {
        next = take_failover(&a, i, classify(&a), apr_psprintf(ic->pool, "answered %d", a.status));
    }
    /* A stream cut after its final event was whole: no error after it. */
    else if (result != AIB_XFER_OK && !(a.event_stream && a.complete)) {
        aib_error_kind_e kind = result == AIB_XFER_TIMEOUT ? AIB_ERROR_TIMEOUT : AIB_ERROR_UPSTREAM;
        const char *message = apr_psprintf(ic->pool, "upstream %s: %s",
                                           result == AIB_XFER_TIMEOUT ? "timed out"
                                           : result == AIB_XFER_CONNECT ? "unreachable"
                                           : "connection broken", error);
        logf_(ic, AIB_LOG_ERROR, "provider '%s': %s %s", pv->name, req.url, message);
        ic->outcome = AIB_OUTCOME_TRANSPORT_ERROR;
        if (a.committed)
            fail_committed(&a, kind, message);
        else
            aib_bridge_reject(ic, kind, message, NULL, 0);
        ic->outcome = AIB_OUTCOME_TRANSPORT_ERROR;
    }
    else {
        if (a.event_stream && !a.complete) {
            logf_(ic, AIB_LOG_ERROR, "provider '%s': %s stream ended before its final event",
                  pv->name, req.url);
            fail_committed(&a, AIB_ERROR_UPSTREAM, "upstream stream ended before completion");
            ic->outcome = AIB_OUTCOME_TRANSPORT_ERROR;
        }
        else {
            if (a.holding)
                send_held(&a);
            ic->outcome = a.status < 400 ? AIB_OUTCOME_OK : AIB_OUTCOME_UPSTREAM_ERROR;
        }
    }
    if (i >= 0 && next == ATTEMPT_DONE && ic->usage.seen)
        aib_key_count_tokens(pv->pool, i, ic->usage.input, ic->usage.output,
                             ic->usage.cache_read, ic->usage.cache_write);
    apr_pool_destroy(a.pool);
    return next;
}

static void exhausted(aib_interception_t *ic)
{
    const aib_provider_t *pv = ic->provider;
    aib_exhaustion_t ex = aib_keypool_exhaustion(pv->pool, ic->now_ms());

    ic->outcome = AIB_OUTCOME_EXHAUSTED;
    aib_stats_exhaustion(pv->stats, ex.kind);
    if (ex.kind == AIB_EXHAUSTED_AUTH_FAILED) {
        logf_(ic, AIB_LOG_WARNING, "provider '%s': every key of pool '%s' failed authentication",
              pv->name, pv->pool->name);
        aib_bridge_reject(ic, AIB_ERROR_UPSTREAM, "all configured keys failed authentication",
                          NULL, 0);
        return;
    }
    logf_(ic, AIB_LOG_WARNING, "provider '%s': every key of pool '%s' is rate-limited, "
          "retry after %" APR_INT64_T_FMT " s", pv->name, pv->pool->name, ex.retry_after_s);
    aib_bridge_reject(ic, AIB_ERROR_RATE_LIMIT,
                      apr_psprintf(ic->pool, "all configured keys are rate-limited "
                                   "(retry after %" APR_INT64_T_FMT "s)", ex.retry_after_s),
                      NULL, ex.retry_after_s);
}

void aib_interception_init(aib_interception_t *ic, apr_pool_t *pool)
{
    ic->pool = pool;
    ic->key_index = -1;
    ic->tried = apr_array_make(pool, 3, sizeof(const char *));
    aib_usage_init(&ic->usage, pool);
}

/* The request every attempt sends, as the provider's prepare hook has
 * rewritten it. Zero: it refused, and the client has its 400. */
static int prepare(aib_interception_t *ic, aib_outgoing_t *out)
{
    const aib_provider_t *pv = ic->provider;
    const char *refusal;

    out->method = ic->method;
    out->url = ic->url;
    out->headers = NULL;   /* the interception's, copied by each attempt */
    out->body = ic->body;
    out->body_len = ic->body_len;
    out->rewrite_answer = 0;
    if (!pv->ops->prepare)
        return 1;
    out->headers = apr_table_copy(ic->pool, ic->headers);
    refusal = pv->ops->prepare(ic, out);
    if (!refusal)
        return 1;
    logf_(ic, AIB_LOG_INFO, "provider '%s': request refused: %s", pv->name, refusal);
    aib_bridge_reject(ic, AIB_ERROR_INVALID_REQUEST, refusal, NULL, 0);
    return 0;
}

/* Whether the provider answered the request itself. */
static int answer(aib_interception_t *ic)
{
    apr_table_t *headers;
    const char *body;

    if (!ic->provider->ops->answer || !(ic->status = ic->provider->ops->answer(ic, &body)))
        return 0;
    headers = apr_table_make(ic->pool, 1);
    apr_table_setn(headers, "Content-Type", "application/json");
    ic->sink->start(ic->sink->ctx, ic->status, headers);
    ic->sink->write(ic->sink->ctx, body, strlen(body), 0);
    return 1;
}

void aib_bridge_run(aib_interception_t *ic)
{
    const aib_provider_t *pv = ic->provider;
    aib_outgoing_t out;
    aib_walker_t walker;
    int i;

    if (!ic->tried)
        aib_interception_init(ic, ic->pool);
    ic->outcome = AIB_OUTCOME_OK;
    if (answer(ic) || !prepare(ic, &out))
        return;
    if (ic->client_key) {
        attempt(ic, &out, ic->client_key, -1);
        return;
    }
    if (!pv->pool) {
        aib_bridge_reject(ic, AIB_ERROR_AUTHENTICATION,
                          apr_psprintf(ic->pool, "provider '%s' has no key pool: send your own "
                                       "API key", pv->name), NULL, 0);
        return;
    }
    aib_walker_init(&walker, pv->pool);
    while ((i = aib_walker_next(&walker, ic->now_ms())) >= 0) {
        if (attempt(ic, &out, APR_ARRAY_IDX(pv->pool->keys, i, aib_key_t).value, i)
            == ATTEMPT_DONE)
            return;
    }
    exhausted(ic);
}
