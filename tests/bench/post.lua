-- wrk script for ./dev bench: POSTs a JSON body, prints one RESULT line.
--   AIB_BODY      the request body (default: a small chat completion request)
--   AIB_REQUESTS  stop after this many responses (run wrk with -t1); then
--                 AIB_DONE_FILE is created, for the caller to interrupt wrk
--                 (which would otherwise wait out its -d duration)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("AIB_BODY")
if wrk.body == nil or wrk.body == "" then
    wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'
end

local limit = tonumber(os.getenv("AIB_REQUESTS") or "")
if limit then
    local n = 0
    function response(status, headers, body)
        n = n + 1
        if n == limit then
            wrk.thread:stop()
            local f = io.open(os.getenv("AIB_DONE_FILE"), "w")
            if f then f:close() end
        end
    end
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d seconds=%.3f rps=%.1f p50_us=%.1f p99_us=%.1f mean_us=%.1f "
        .. "socket_errors=%d non2xx=%d\n",
        summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
        latency:percentile(50), latency:percentile(99), latency.mean,
        e.connect + e.read + e.write + e.timeout, e.status))
end
