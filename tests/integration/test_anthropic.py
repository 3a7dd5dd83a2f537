"""The Anthropic bridge end to end: a real httpd with the module, the mock upstream.

Routes (bridged Messages, passthrough models and count_tokens), the module's
errors in Anthropic's shape, credentials and version headers, the failover
table, 529, cooldowns from Anthropic's headers, first-event failover and
streams that break. The helpers shared with test_openai.py are in bridging.py.
"""

import functools
import json
import time

import pytest

import bridging
from bridging import (COUNT_TOKENS, MESSAGES, SCENARIOS, assert_complete, assert_stream_error,
                      request_body, rfc3339_in, run_failover_scenario, starter, stream_events,
                      wire)

PROVIDER = "anthropic"
call = functools.partial(bridging.call, provider=PROVIDER)
assert_error = functools.partial(bridging.assert_error, provider=PROVIDER)

stream_param = pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming"])


@pytest.fixture
def start(httpd, mock):
    """start(*options, providers=[...], extra=""): httpd with provider 'anthropic'
    (pool main: k0 k1 k2, cooldown=60, plus `options`) and more providers."""
    return starter(httpd, mock, PROVIDER)


def error_event(type_, message):
    """Anthropic's `event: error`, as a mock event."""
    return {"event": "error", "data": {"type": "error",
                                       "error": {"type": type_, "message": message}}}


def event_names(reply):
    return [event for event, _ in reply.events]


# --------------------------------------------------------------------------
# Routes

@pytest.mark.parametrize("stream", [pytest.param(False, id="blocking"),
                                    pytest.param(True, id="streaming",
                                                 marks=pytest.mark.sanitize)])
def test_messages(bridge, mock, stream):
    reply = call(bridge, MESSAGES, stream)
    assert_complete(reply, MESSAGES, stream)
    assert reply.headers["request-id"].startswith("req_")
    [seen] = mock.requests()
    assert (seen["method"], seen["path"], seen["query"]) == ("POST", MESSAGES, "")
    assert seen["body"] == request_body(MESSAGES, stream)
    assert (seen["key"], seen["key_header"]) == ("k0", "x-api-key")
    if stream:
        # The mock's stream has a ping among its events: relayed in its place.
        assert event_names(reply)[:3] == ["message_start", "content_block_start", "ping"]


@stream_param
def test_messages_query_goes_upstream(bridge, mock, stream):
    # Routes match the path alone; the SDK's ?beta=true reaches the upstream.
    reply = call(bridge, MESSAGES + "?beta=true", stream, body=request_body(MESSAGES, stream))
    assert_complete(reply, MESSAGES, stream)
    [seen] = mock.requests()
    assert (seen["path"], seen["query"]) == (MESSAGES, "beta=true")


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models?limit=5&after_id=claude-x", None),
    ("GET", "/v1/models/claude-sonnet-4-5", None),
    ("POST", COUNT_TOKENS, request_body(COUNT_TOKENS)),
    ("POST", COUNT_TOKENS + "?beta=true", request_body(COUNT_TOKENS)),
])
def test_passthrough_route(bridge, mock, method, path, body):
    reply = call(bridge, path, method=method, body=body)
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json()
    [seen] = mock.requests()
    route, _, query = path.partition("?")
    assert (seen["method"], seen["path"], seen["query"]) == (method, route, query)
    assert (seen["key"], seen["key_header"]) == ("k0", "x-api-key")
    if body is not None:
        assert seen["body"] == body


def test_count_tokens_body_is_not_inspected(bridge, mock):
    reply = call(bridge, COUNT_TOKENS, body=b"[1, 2, not json")
    assert reply.status == 200
    assert mock.requests()[0]["body"] == "[1, 2, not json"


@pytest.mark.parametrize("method, path", [
    pytest.param("POST", "/v1/complete", marks=pytest.mark.sanitize),
    ("POST", "/v1/messages/batches"), ("GET", "/v1/messages/batches/msgbatch_1"),
    ("POST", "/v1/messages/"), ("POST", "/v1/messages/count_tokens/x"),
    ("GET", "/v1/models/"), ("POST", "/v1/chat/completions"), ("GET", "/v1/files"),
    ("GET", "/v2/models"),
])
def test_unsupported_route_is_404(bridge, mock, method, path):
    reply = call(bridge, path, method=method, body=b"{}")
    assert_error(reply, 404, "not_found_error", message=f"route not supported: {method} {path}")
    assert mock.requests() == []


@pytest.mark.parametrize("method, path, allow", [
    ("GET", MESSAGES, "POST"), ("PUT", MESSAGES, "POST"), ("DELETE", MESSAGES, "POST"),
    ("GET", COUNT_TOKENS, "POST"), ("POST", "/v1/models", "GET"),
    ("DELETE", "/v1/models/claude-sonnet-4-5", "GET"),
])
def test_wrong_method_is_405(bridge, mock, method, path, allow):
    reply = call(bridge, path, method=method, body=b"{}")
    assert_error(reply, 405, "invalid_request_error")
    assert reply.headers["Allow"] == allow
    assert mock.requests() == []


# --------------------------------------------------------------------------
# Request bodies

@pytest.mark.parametrize("body", [
    pytest.param(b"not json", id="not_json"),
    pytest.param(b"", id="empty"),
    pytest.param(b"[1, 2]", id="array"),
    pytest.param(b'{"model": "m"', id="truncated"),
    pytest.param(b'{"model": "m", "stream": "yes"}', id="stream_string"),
    pytest.param(b'{"model":"m","x":' + b"[" * 1000 + b"]" * 1000 + b"}", id="nested_1000"),
])
def test_bad_body_is_400(bridge, mock, body):
    reply = call(bridge, MESSAGES, body=body)
    assert_error(reply, 400, "invalid_request_error")
    assert mock.requests() == []


def test_body_size_limit(start, mock):
    httpd = start(extra="AIBridgeMaxBodySize 1K")

    def body_of(size):
        head = b'{"model":"m","max_tokens":1,"messages":[],"pad":"'
        return head + b"x" * (size - len(head) - 2) + b'"}'

    reply = call(httpd, MESSAGES, body=body_of(1025))
    assert_error(reply, 413, "request_too_large", message="request body is too large")
    assert mock.requests() == []
    assert call(httpd, MESSAGES, body=body_of(1024)).status == 200
    assert mock.keys() == ["k0"]


# --------------------------------------------------------------------------
# Credentials and headers

@pytest.mark.parametrize("method, path", [("POST", MESSAGES), ("POST", COUNT_TOKENS),
                                          ("GET", "/v1/models")])
def test_pool_key_replaces_client_credentials(bridge, mock, method, path):
    # byok=off: whatever the client sends, the upstream gets the pool's key,
    # as x-api-key and never as Authorization.
    headers = {"Authorization": "Bearer client-bearer", "x-api-key": "client-x-key"}
    reply = call(bridge, path, method=method, headers=headers)
    assert reply.status == 200, reply.body
    [seen] = mock.requests()
    assert seen["headers"]["x-api-key"] == "k0"
    assert "authorization" not in seen["headers"]
    assert b"client-" not in reply.body


@pytest.mark.parametrize("sent, used", [
    pytest.param({"x-api-key": "user-x", "Authorization": "Bearer user-bearer"}, "user-x",
                 id="x_api_key_wins"),
    pytest.param({"Authorization": "Bearer user-bearer"}, "user-bearer", id="bearer_alone"),
    pytest.param({"x-api-key": "user-x"}, "user-x", id="x_api_key_alone"),
    pytest.param({"x-api-key": "", "Authorization": "Bearer user-bearer"}, "user-bearer",
                 id="empty_x_api_key"),
    pytest.param({"Authorization": "Basic dXNlcjpwdw=="}, "k0", id="basic_is_no_key"),
    pytest.param({}, "k0", id="none_pool_key"),
])
def test_byok_client_key(start, mock, sent, used):
    httpd = start("byok=on")
    assert_complete(call(httpd, MESSAGES, headers=sent), MESSAGES, False)
    [seen] = mock.requests()
    assert seen["headers"]["x-api-key"] == used
    assert "authorization" not in seen["headers"]


@pytest.mark.parametrize("method, path", [("POST", MESSAGES), ("POST", COUNT_TOKENS),
                                          ("GET", "/v1/models")])
def test_version_and_beta_headers(bridge, mock, method, path):
    beta = "prompt-caching-2024-07-31,token-efficient-tools-2025-02-19"
    call(bridge, path, method=method,
         headers={"anthropic-version": "2024-10-22", "anthropic-beta": beta})
    call(bridge, path, method=method)
    kept, added = (r["headers"] for r in mock.requests())
    assert kept["anthropic-version"] == "2024-10-22"
    assert kept["anthropic-beta"] == beta
    assert added["anthropic-version"] == "2023-06-01"
    assert "anthropic-beta" not in added


@stream_param
def test_response_headers_relayed(bridge, mock, stream):
    mock.script("k0", {"stream": stream, "headers": {
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2026-11-25T12:00:00Z"}})
    reply = call(bridge, MESSAGES, stream)
    assert reply.status == 200
    assert reply.headers["request-id"].startswith("req_")
    assert reply.headers["anthropic-ratelimit-requests-remaining"] == "49"
    assert reply.headers["anthropic-ratelimit-requests-reset"] == "2026-11-25T12:00:00Z"
    assert "Set-Cookie" not in reply.headers


# --------------------------------------------------------------------------
# Failover

ROUTES = [(MESSAGES, False, "messages-blocking"), (MESSAGES, True, "messages-streaming"),
          (COUNT_TOKENS, False, "count_tokens")]
SANITIZED = {("failover_after_429", "messages-blocking")}


def scenario_params():
    for name in SCENARIOS:
        for route, stream, route_id in ROUTES:
            marks = [pytest.mark.sanitize] if (name, route_id) in SANITIZED else []
            yield pytest.param(name, route, stream, marks=marks, id=f"{name}-{route_id}")


@pytest.mark.parametrize("name, route, stream", scenario_params())
def test_failover(start, mock, name, route, stream):
    run_failover_scenario(start, mock, name, route, stream, provider=PROVIDER)


@pytest.mark.parametrize("options", [(), ("failover=429,401,403,529",)],
                         ids=["default", "failover_529"])
@stream_param
def test_overloaded_529_is_relayed(start, mock, options, stream):
    # Capacity, not the key: relayed with its status even where 529 is a
    # failover status, and k0 is not marked.
    httpd = start(*options)
    mock.script("k0", {"status": 529, "headers": {"retry-after": "30"}})
    reply = call(httpd, MESSAGES, stream)
    assert reply.status == 529
    body = reply.json()
    assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"
    assert body["error"]["message"].startswith("Mock upstream: 529")
    assert reply.headers["retry-after"] == "30"
    assert mock.keys() == ["k0"]
    assert_complete(call(httpd, MESSAGES, stream), MESSAGES, stream)
    assert mock.keys() == ["k0", "k0"]


@pytest.mark.parametrize("headers, wait", [
    pytest.param(lambda: {"anthropic-ratelimit-requests-reset": rfc3339_in(0.6),
                          "anthropic-ratelimit-requests-remaining": "0"}, 0.6,
                 id="requests_reset"),
    # The exhausted limit decides, not the later reset of one with room left.
    pytest.param(lambda: {"anthropic-ratelimit-requests-reset": rfc3339_in(60),
                          "anthropic-ratelimit-requests-remaining": "7",
                          "anthropic-ratelimit-input-tokens-reset": rfc3339_in(0.6),
                          "anthropic-ratelimit-input-tokens-remaining": "0"}, 0.6,
                 id="exhausted_limit_decides"),
    # retry-after comes before the reset headers.
    pytest.param(lambda: {"retry-after": "1",
                          "anthropic-ratelimit-tokens-reset": rfc3339_in(60),
                          "anthropic-ratelimit-tokens-remaining": "0"}, 1,
                 id="retry_after_first"),
])
def test_cooldown_from_headers(start, mock, headers, wait):
    # cooldown=60 unless a header says otherwise: k0 is skipped at once and
    # back shortly after the announced time.
    httpd = start()
    mock.script("k0", {"status": 429, "headers": headers()})
    assert call(httpd, MESSAGES).status == 200
    assert call(httpd, MESSAGES).status == 200
    assert mock.keys() == ["k0", "k1", "k1"]
    time.sleep(wait + 0.3)
    assert call(httpd, MESSAGES).status == 200
    assert mock.keys() == ["k0", "k1", "k1", "k0"]


# --------------------------------------------------------------------------
# First-event failover: a 200 stream whose first event is a key's failure

@pytest.mark.parametrize("type_, outcome, pacing", [
    pytest.param("rate_limit_error", "cooling down for 60.000 s", {}, id="rate_limit_error",
                 marks=pytest.mark.sanitize),
    # The event dribbles in a few bytes at a time: held until it is whole.
    pytest.param("rate_limit_error", "cooling down for 60.000 s",
                 {"chunk_size": 9, "chunk_delay_ms": 5}, id="rate_limit_error-split"),
    pytest.param("authentication_error", "disabled until re-enabled", {},
                 id="authentication_error"),
    pytest.param("permission_error", "disabled until re-enabled", {}, id="permission_error"),
])
def test_first_event_key_failure_fails_over(bridge, mock, type_, outcome, pacing):
    mock.script("k0", {"events": [error_event(type_, "Number of requests exceeded: k0")],
                       **pacing})
    reply = call(bridge, MESSAGES, stream=True)
    assert_complete(reply, MESSAGES, True)
    assert "error" not in event_names(reply)
    assert b"k0" not in reply.body
    assert mock.keys() == ["k0", "k1"]
    assert bridge.log_lines(r"key #1 .* answered 200 with an error event: " + outcome)
    assert_complete(call(bridge, MESSAGES, stream=True), MESSAGES, True)
    assert mock.keys() == ["k0", "k1", "k1"]


def test_first_event_rate_limit_honours_retry_after(bridge, mock):
    # The 200's own retry-after sets the cooldown, as on a 429.
    mock.script("k0", {"events": [error_event("rate_limit_error", "slow down")],
                       "headers": {"retry-after": "1"}})
    assert_complete(call(bridge, MESSAGES, stream=True), MESSAGES, True)
    assert call(bridge, MESSAGES).status == 200
    assert mock.keys() == ["k0", "k1", "k1"]
    time.sleep(1.3)
    assert call(bridge, MESSAGES).status == 200
    assert mock.keys() == ["k0", "k1", "k1", "k0"]


def test_first_event_rate_limit_on_every_key_is_429(bridge, mock):
    for key, seconds in (("k0", 5), ("k1", 2), ("k2", 9)):
        mock.script(key, {"events": [error_event("rate_limit_error", "slow down")],
                          "headers": {"retry-after": str(seconds)}})
    reply = call(bridge, MESSAGES, stream=True)
    assert_error(reply, 429, "rate_limit_error",
                 message="all configured keys are rate-limited (retry after 2s)")
    assert reply.headers["Retry-After"] == "2"
    assert mock.keys() == ["k0", "k1", "k2"]


@pytest.mark.parametrize("type_", ["overloaded_error", "api_error"])
def test_first_event_other_error_is_relayed(bridge, mock, type_):
    events = [error_event(type_, "Overloaded")]
    mock.script("k0", {"events": events})
    reply = call(bridge, MESSAGES, stream=True)
    assert reply.status == 200
    assert reply.events == wire(events)  # the upstream's last word: nothing added
    assert mock.keys() == ["k0"]
    assert_complete(call(bridge, MESSAGES, stream=True), MESSAGES, True)
    assert mock.keys() == ["k0", "k0"]


def test_first_event_failover_limited_by_option(start, mock):
    # failover=429 only: an authentication_error event is relayed, k0 kept.
    httpd = start("failover=429")
    events = [error_event("authentication_error", "invalid x-api-key")]
    mock.script("k0", {"events": events})
    reply = call(httpd, MESSAGES, stream=True)
    assert (reply.status, reply.events) == (200, wire(events))
    assert call(httpd, MESSAGES).status == 200
    assert mock.keys() == ["k0", "k0"]


def test_first_event_byok_is_relayed(start, mock):
    # The client's own key: one attempt, its stream relayed as it is.
    httpd = start("byok=on")
    events = [error_event("rate_limit_error", "slow down")]
    mock.script("user-key", {"events": events})
    reply = call(httpd, MESSAGES, stream=True, headers={"x-api-key": "user-key"})
    assert (reply.status, reply.events) == (200, wire(events))
    assert mock.keys() == ["user-key"]


def test_ping_events_pass_unchanged(bridge, mock):
    # A ping first is no error: the stream is let go at once, pings in place.
    ping = {"event": "ping", "data": {"type": "ping"}}
    events = stream_events(MESSAGES, 2)
    events = [ping] + events[:3] + [ping] + events[3:]
    mock.script("k0", {"events": events, "event_delay_ms": 100})
    reply = call(bridge, MESSAGES, stream=True)
    assert reply.status == 200
    assert reply.events == wire(events)
    # Each event was relayed as it came, the first ping not held back with
    # what followed.
    gaps = [b - a for a, b in zip(reply.times, reply.times[1:])]
    assert all(gap >= 0.06 for gap in gaps), gaps
    assert mock.keys() == ["k0"]


# --------------------------------------------------------------------------
# Streams that break

def test_midstream_reset_ends_with_error_event(bridge, mock):
    bridge.allow_errors(r"connection broken")
    mock.script("k0", {"stream": True, "drop": "after_events", "drop_after": 2})
    reply = call(bridge, MESSAGES, stream=True)  # read to a normal end: no exception
    assert reply.status == 200
    assert event_names(reply) == ["message_start", "content_block_start", "error"]
    assert_stream_error(reply, MESSAGES, "api_error", "upstream connection broken")
    assert reply.body.endswith(b"\n\n")
    assert call(bridge, MESSAGES).status == 200  # nothing marked
    assert mock.keys() == ["k0", "k0"]


def test_stream_without_message_stop_ends_with_error_event(bridge, mock):
    bridge.allow_errors(r"stream ended before its final event")
    events = stream_events(MESSAGES, 2, complete=False)
    mock.script("k0", {"events": events})
    reply = call(bridge, MESSAGES, stream=True)
    assert reply.status == 200
    assert reply.events[:-1] == wire(events)
    assert_stream_error(reply, MESSAGES, "api_error", "ended before completion")


def test_upstream_error_event_midstream_is_relayed_unchanged(bridge, mock):
    events = stream_events(MESSAGES, 2, complete=False)
    events.append(error_event("overloaded_error", "Overloaded"))
    mock.script("k0", {"events": events})
    reply = call(bridge, MESSAGES, stream=True)
    assert reply.status == 200
    assert reply.events == wire(events)
    assert json.loads(reply.events[-1][1])["error"]["type"] == "overloaded_error"
    assert mock.keys() == ["k0"]
