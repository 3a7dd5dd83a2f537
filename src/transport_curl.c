#include <string.h>
#include <curl/curl.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>
#include <apr_time.h>

#include "transport.h"

/* Handles kept idle for reuse; each holds its own connection cache. */
#define AIB_IDLE_HANDLES 64

typedef struct {
    aib_transport_t base;
    apr_thread_mutex_t *lock;
    CURL *idle[AIB_IDLE_HANDLES];
    int nidle;
} curl_transport_t;

typedef struct {
    const aib_upstream_handler_t *handler;
    apr_pool_t *pool;
    CURL *curl;
    apr_table_t *headers;
    int response_seen;
    int stopped;
    int idle;                 /* stopped for silence: a timeout */
    apr_time_t last_tick;
    apr_time_t last_byte;     /* when the upstream last sent anything */
    apr_interval_time_t idle_timeout;
} exchange_t;

static apr_status_t curl_cleanup(void *unused)
{
    (void)unused;
    curl_global_cleanup();
    return APR_SUCCESS;
}

apr_status_t aib_curl_init(apr_pool_t *process_pool)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return APR_EGENERAL;
    apr_pool_cleanup_register(process_pool, NULL, curl_cleanup, apr_pool_cleanup_null);
    return APR_SUCCESS;
}

/* Headers arrive a line at a time; the blank line ends a header block.
 * 1xx blocks (100-continue) are dropped: only the final one counts. */
static size_t on_header(char *line, size_t size, size_t n, void *userdata)
{
    exchange_t *x = userdata;
    size_t len = size * n;
    const char *colon;
    long status = 0;

    x->last_byte = apr_time_now();
    if (len >= 5 && !strncmp(line, "HTTP/", 5)) {
        apr_table_clear(x->headers);
        return len;
    }
    if (len <= 2 && (line[0] == '\r' || line[0] == '\n')) {
        curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200 && !x->response_seen) {
            x->response_seen = 1;
            if (x->handler->on_response(x->handler->ctx, (int)status, x->headers)) {
                x->stopped = 1;
                return 0;
            }
        }
        return len;
    }
    colon = memchr(line, ':', len);
    if (colon) {
        const char *value = colon + 1, *end = line + len;
        while (value < end && (*value == ' ' || *value == '\t'))
            value++;
        while (end > value && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
            end--;
        apr_table_addn(x->headers, apr_pstrmemdup(x->pool, line, (apr_size_t)(colon - line)),
                       apr_pstrmemdup(x->pool, value, (apr_size_t)(end - value)));
    }
    return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *userdata)
{
    exchange_t *x = userdata;
    size_t len = size * n;

    x->last_byte = apr_time_now();
    if (x->handler->on_data(x->handler->ctx, data, len)) {
        x->stopped = 1;
        return 0;
    }
    return len;
}

static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow,
                       curl_off_t ultotal, curl_off_t ulnow)
{
    exchange_t *x = userdata;
    apr_time_t now = apr_time_now();

    (void)dltotal; (void)dlnow; (void)ultotal; (void)ulnow;
    /* libcurl calls this very often; the client check is a syscall. */
    if (now - x->last_tick < apr_time_from_msec(100))
        return 0;
    x->last_tick = now;
    /* Checked here, not with libcurl's low-speed limit: that one averages
     * over seconds of history, so a stream gone silent after a burst would
     * pass for alive long after idle-timeout. */
    if (x->idle_timeout && now - x->last_byte >= x->idle_timeout) {
        x->stopped = x->idle = 1;
        return 1;
    }
    if (x->handler->on_tick && x->handler->on_tick(x->handler->ctx)) {
        x->stopped = 1;
        return 1;
    }
    return 0;
}

static CURL *take_handle(curl_transport_t *t)
{
    CURL *curl = NULL;

    apr_thread_mutex_lock(t->lock);
    if (t->nidle)
        curl = t->idle[--t->nidle];
    apr_thread_mutex_unlock(t->lock);
    if (curl)
        curl_easy_reset(curl);   /* keeps its live connections */
    else
        curl = curl_easy_init();
    return curl;
}

static void return_handle(curl_transport_t *t, CURL *curl, int reusable)
{
    if (reusable) {
        apr_thread_mutex_lock(t->lock);
        if (t->nidle < AIB_IDLE_HANDLES) {
            t->idle[t->nidle++] = curl;
            curl = NULL;
        }
        apr_thread_mutex_unlock(t->lock);
    }
    if (curl)
        curl_easy_cleanup(curl);
}

static aib_xfer_result_e classify(CURLcode rc, int stopped, int idle)
{
    if (rc == CURLE_OK)
        return AIB_XFER_OK;
    if (idle)
        return AIB_XFER_TIMEOUT;
    if (stopped)
        return AIB_XFER_STOPPED;
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return AIB_XFER_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        return AIB_XFER_TIMEOUT;
    default:
        return AIB_XFER_BROKEN;
    }
}

static aib_xfer_result_e curl_perform(aib_transport_t *self, apr_pool_t *pool,
                                      const aib_upstream_request_t *req,
                                      const aib_upstream_handler_t *handler,
                                      const char **error)
{
    curl_transport_t *t = (curl_transport_t *)self;
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *headers = NULL;
    const apr_array_header_t *arr = apr_table_elts(req->headers);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
    exchange_t x;
    CURLcode rc;
    int i;

    memset(&x, 0, sizeof(x));
    x.handler = handler;
    x.pool = pool;
    x.headers = apr_table_make(pool, 16);
    x.last_tick = x.last_byte = apr_time_now();
    x.idle_timeout = apr_time_from_msec(req->idle_timeout_ms);
    x.curl = take_handle(t);
    if (!x.curl) {
        *error = "cannot create a libcurl handle";
        return AIB_XFER_BROKEN;
    }
    for (i = 0; i < arr->nelts; i++)
        headers = curl_slist_append(headers, apr_pstrcat(pool, e[i].key, ": ", e[i].val, NULL));
    /* libcurl would otherwise add these on its own. */
    headers = curl_slist_append(headers, "Expect:");
    if (!apr_table_get(req->headers, "Accept"))
        headers = curl_slist_append(headers, "Accept:");
    /* A POST body would get application/x-www-form-urlencoded. */
    if (!apr_table_get(req->headers, "Content-Type"))
        headers = curl_slist_append(headers, "Content-Type:");

    curl_easy_setopt(x.curl, CURLOPT_URL, req->url);
    curl_easy_setopt(x.curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(x.curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(x.curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(x.curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(x.curl, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(x.curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(x.curl, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    curl_easy_setopt(x.curl, CURLOPT_CONNECTTIMEOUT_MS, (long)req->connect_timeout_ms);
    if (req->timeout_ms)
        curl_easy_setopt(x.curl, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
    if (req->proxy)
        curl_easy_setopt(x.curl, CURLOPT_PROXY, req->proxy);
    else
        curl_easy_setopt(x.curl, CURLOPT_PROXY, "");   /* ignore http_proxy env */
    if (req->ca_file)
        curl_easy_setopt(x.curl, CURLOPT_CAINFO, req->ca_file);
    if (!strcmp(req->method, "POST") || req->body_len) {
        curl_easy_setopt(x.curl, CURLOPT_POST, 1L);
        curl_easy_setopt(x.curl, CURLOPT_POSTFIELDS, req->body ? req->body : "");
        curl_easy_setopt(x.curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    }
    if (strcmp(req->method, "GET") && strcmp(req->method, "POST"))
        curl_easy_setopt(x.curl, CURLOPT_CUSTOMREQUEST, req->method);
    else if (!strcmp(req->method, "GET"))
        curl_easy_setopt(x.curl, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(x.curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(x.curl, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(x.curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(x.curl, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(x.curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(x.curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(x.curl, CURLOPT_XFERINFODATA, &x);

    rc = curl_easy_perform(x.curl);
    if (x.idle)
        apr_snprintf(errbuf, sizeof(errbuf), "no data for %" APR_INT64_T_FMT " ms",
                     (apr_int64_t)req->idle_timeout_ms);
    if (rc == CURLE_OK && !x.response_seen) {
        rc = CURLE_GOT_NOTHING;
        apr_cpystrn(errbuf, "no response", sizeof(errbuf));
    }
    *error = rc == CURLE_OK ? NULL
             : apr_pstrdup(pool, *errbuf ? errbuf : curl_easy_strerror(rc));
    curl_slist_free_all(headers);
    /* A handle whose transfer was cut keeps no connection worth reusing. */
    return_handle(t, x.curl, rc == CURLE_OK);
    return classify(rc, x.stopped, x.idle);
}

static apr_status_t transport_cleanup(void *data)
{
    curl_transport_t *t = data;

    while (t->nidle)
        curl_easy_cleanup(t->idle[--t->nidle]);
    return APR_SUCCESS;
}

aib_transport_t *aib_curl_transport_create(apr_pool_t *pool)
{
    curl_transport_t *t = apr_pcalloc(pool, sizeof(*t));

    t->base.perform = curl_perform;
    if (apr_thread_mutex_create(&t->lock, APR_THREAD_MUTEX_DEFAULT, pool) != APR_SUCCESS)
        return NULL;
    apr_pool_cleanup_register(pool, t, transport_cleanup, apr_pool_cleanup_null);
    return &t->base;
}
