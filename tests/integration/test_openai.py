"""The OpenAI bridge end to end: a real httpd with the module, the mock upstream.

Routes, input checks, header and body forwarding, key failover and cooldowns,
first-event failover, streaming (timing, mid-stream failures), transport
errors, client aborts and upstream connection reuse. The helpers shared with
test_anthropic.py are in bridging.py.
"""

import base64
import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from bridging import (wait_for, CHAT, RESPONSES, SCENARIOS, assert_complete, assert_error,
                      assert_stream_error, call, r429, request_body, rfc3339_in,
                      run_failover_scenario, starter, stream_events, wire)
from conftest import free_port

ROUTES = [CHAT, RESPONSES]
ROUTE_IDS = {CHAT: "chat", RESPONSES: "responses"}

route_param = pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS.get)
stream_param = pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming"])


# --------------------------------------------------------------------------
# Helpers


@pytest.fixture
def start(httpd, mock):
    """start(*options, providers=[...], extra=""): httpd with provider 'openai'
    (pool main: k0 k1 k2, cooldown=60, plus `options`) and more providers."""
    return starter(httpd, mock, "openai")


# --------------------------------------------------------------------------
# Routes

@pytest.mark.parametrize("route, stream", [
    pytest.param(CHAT, False, id="chat-blocking", marks=pytest.mark.sanitize),
    pytest.param(CHAT, True, id="chat-streaming"),
    pytest.param(RESPONSES, False, id="responses-blocking"),
    pytest.param(RESPONSES, True, id="responses-streaming", marks=pytest.mark.sanitize),
])
def test_bridged_route(bridge, mock, route, stream):
    reply = call(bridge, route, stream)
    assert_complete(reply, route, stream)
    assert mock.keys() == ["k0"]
    assert mock.requests()[0]["path"] == route


@pytest.mark.parametrize("method, path, allow", [
    ("GET", CHAT, "POST"), ("PUT", CHAT, "POST"), ("DELETE", RESPONSES, "POST"),
    ("PATCH", RESPONSES, "POST"), ("GET", "/v1/embeddings", "POST"),
])
def test_wrong_method_is_405(bridge, mock, method, path, allow):
    reply = call(bridge, path, method=method, body=b"{}")
    assert_error(reply, 405, "invalid_request_error", "method_not_allowed")
    assert reply.headers["Allow"] == allow
    assert mock.requests() == []


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/v1/models?limit=2&order=desc", None),
    ("GET", "/v1/models/gpt-4o-mini?x=1", None),
    ("GET", "/v1/responses/resp_123?include=usage", None),
    ("GET", "/v1/conversations", None),
    ("POST", "/v1/conversations", {"metadata": {"a": "b"}}),
    ("GET", "/v1/conversations/conv_1/items?order=asc", None),
    ("POST", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "Hi"}),
    ("POST", "/v1/moderations", {"input": "Hi"}),
])
def test_passthrough_route(bridge, mock, method, path, body):
    reply = call(bridge, path, method=method, body=body)
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "application/json"
    [seen] = mock.requests()
    route, _, query = path.partition("?")
    assert (seen["method"], seen["path"], seen["query"]) == (method, route, query)
    assert seen["key"] == "k0"
    assert reply.json()  # the mock's answer, relayed
    if body is not None:
        assert seen["body"] == body


def test_passthrough_fails_over(bridge, mock):
    mock.script("k0", r429(5))
    mock.script("k1", {"status": 401})
    reply = call(bridge, "/v1/models", method="GET")
    assert reply.status == 200
    assert [m["id"] for m in reply.json()["data"]][:1] == ["gpt-4o-mini"]
    assert mock.keys() == ["k0", "k1", "k2"]


def test_passthrough_body_is_not_inspected(bridge, mock):
    # Only the bridged routes must be JSON objects.
    reply = call(bridge, "/v1/embeddings", body=b"[1, 2, not json")
    assert reply.status == 200
    assert mock.requests()[0]["body"] == "[1, 2, not json"


@pytest.mark.parametrize("method, path", [
    pytest.param("POST", "/v1/images/generations", marks=pytest.mark.sanitize),
    ("GET", "/v1/files"), ("POST", "/v1/completions"), ("GET", "/v2/models"),
    ("POST", "/v1/chat/completions/extra"), ("GET", "/v1/responses/"),
])
def test_unsupported_route_is_404(bridge, mock, method, path):
    reply = call(bridge, path, method=method, body=b"{}")
    assert_error(reply, 404, "invalid_request_error", "unknown_url",
                 f"route not supported: {method} {path}")
    assert mock.requests() == []


def test_nested_location_per_provider(start, mock):
    # A <Location> per provider, e.g. for its own access rules, inside the
    # one that sets the handler.
    httpd = start(extra="<Location /ai/openai>\n  Require all granted\n</Location>")
    assert_complete(call(httpd, CHAT), CHAT, False)
    assert [r["path"] for r in mock.requests()] == [CHAT]


def test_unknown_provider_is_404(bridge, mock):
    reply = call(bridge, CHAT, provider="nope")
    error = assert_error(reply, 404, "invalid_request_error", "unknown_url")
    assert "nope" in error["message"]
    assert mock.requests() == []


@pytest.mark.parametrize("path", [
    "/v1/models/%252e%252e/%252e%252e/admin",
    "/v1/models/%252E%252E",
    "/v1/models/a%252fb",
    "/v1/responses/x%252F..%252fy",
])
def test_encoded_traversal_is_refused(bridge, mock, path):
    # httpd decodes once: the module sees %2e%2e and %2f, which upstream would decode again.
    reply = call(bridge, path, method="GET")
    assert_error(reply, 400, "invalid_request_error", "invalid_request")
    assert mock.requests() == []


# --------------------------------------------------------------------------
# Request bodies

def nested(depth):
    return ('{"model":"m","messages":[],"x":' + "[" * depth + "]" * depth + "}").encode()


@pytest.mark.parametrize("body", [
    pytest.param(b"not json", id="not_json", marks=pytest.mark.sanitize),
    pytest.param(b"", id="empty"),
    pytest.param(b"[1, 2]", id="array"),
    pytest.param(b'"text"', id="string"),
    pytest.param(b'{"model": "m"', id="truncated"),
    pytest.param(b'{"model": "m"} {}', id="trailing_data"),
    pytest.param(b'{"model": "m", "stream": "yes"}', id="stream_string"),
    pytest.param(b'{"model": "m", "stream": 1}', id="stream_number"),
    pytest.param(b'{"model": "m", "stream": null}', id="stream_null"),
    pytest.param(nested(1000), id="nested_1000"),
])
@route_param
def test_bad_body_is_400(bridge, mock, route, body):
    reply = call(bridge, route, body=body)
    assert_error(reply, 400, "invalid_request_error", "invalid_request")
    assert mock.requests() == []


@route_param
def test_deep_nesting_within_limit_is_forwarded(bridge, mock, route):
    reply = call(bridge, route, body=nested(300))
    assert reply.status == 200
    assert mock.keys() == ["k0"]


def test_body_read_is_exact(bridge, mock):
    # A short body read where a longer one was: nothing of the old one may
    # count as part of it (trailing whitespace is allowed, other data is not).
    with requests.Session() as session:
        for _ in range(10):
            long = call(bridge, RESPONSES, body=b'{"input": "x"}' + b" " * 20000 + b"\n",
                        session=session)
            short = call(bridge, RESPONSES, body=b'{"input": "x"}', session=session)
            assert (long.status, short.status) == (200, 200), short.body


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
def test_body_size_limit(start, mock, chunked):
    httpd = start(extra="AIBridgeMaxBodySize 1K")

    def body_of(size):
        head = b'{"model":"m","messages":[],"pad":"'
        data = head + b"x" * (size - len(head) - 2) + b'"}'
        assert len(data) == size
        # A generator makes requests send it chunked, without Content-Length.
        return (data[i:i + 300] for i in range(0, size, 300)) if chunked else data

    reply = call(httpd, CHAT, body=body_of(1025))
    assert_error(reply, 413, "invalid_request_error", "request_too_large")
    assert mock.requests() == []
    assert call(httpd, CHAT, body=body_of(1024)).status == 200
    assert mock.keys() == ["k0"]


# --------------------------------------------------------------------------
# What goes upstream and what comes back

def test_request_headers_and_body_forwarded(bridge, mock):
    # Odd spacing, escapes and a number no double holds: any re-encoding shows.
    raw = (b'{ "model" :"gpt-4o-mini",\n  "messages": [{"role":"user","content":"\\u00e9 \xc3\xa9"}],'
           b' "seed": 123456789012345678901234567890 }')
    headers = {
        "OpenAI-Organization": "org-1", "OpenAI-Project": "proj-1", "User-Agent": "OpenAI/Python 1.0",
        "X-Stainless-Lang": "python", "X-Stainless-Retry-Count": "0", "X-Custom": "kept",
        "Authorization": "Bearer client-key", "X-Api-Key": "client-x-key", "Cookie": "session=1",
        "Forwarded": "for=1.2.3.4", "X-Forwarded-For": "1.2.3.4", "X-Forwarded-Host": "evil",
        "Accept-Encoding": "gzip", "Proxy-Authorization": "Basic eA==", "TE": "trailers",
        "Connection": "keep-alive, X-Hop", "X-Hop": "hop", "Keep-Alive": "timeout=5",
    }
    reply = call(bridge, CHAT, body=raw, headers=headers)
    assert reply.status == 200
    [seen] = mock.requests()
    sent = seen["headers"]
    for name in ("OpenAI-Organization", "OpenAI-Project", "User-Agent", "X-Stainless-Lang",
                 "X-Stainless-Retry-Count", "X-Custom"):
        assert sent.get(name.lower()) == headers[name], name
    assert sent["content-type"] == "application/json"
    assert sent["authorization"] == "Bearer k0"
    for name in ("X-Api-Key", "Cookie", "Forwarded", "X-Forwarded-For", "X-Forwarded-Host",
                 "Accept-Encoding", "Proxy-Authorization", "TE", "X-Hop", "Keep-Alive"):
        assert name.lower() not in sent, name
    assert sent["host"] == mock.url.split("//")[1]
    # Byte for byte: same length, same parse (json keeps the big integer exact).
    assert int(sent["content-length"]) == len(raw)
    assert seen["body"] == json.loads(raw)


def test_passthrough_body_forwarded_byte_identical(bridge, mock):
    raw = "input=  spaces\tand\nnewlines é \\u00e9"
    reply = call(bridge, "/v1/moderations", body=raw.encode(),
                 headers={"Content-Type": "text/plain"})
    assert reply.status == 200
    [seen] = mock.requests()
    assert seen["body"] == raw
    assert seen["headers"]["content-type"] == "text/plain"


@stream_param
def test_response_headers_relayed(bridge, mock, stream):
    mock.script("k0", {"status": 200, "stream": stream, "headers": {
        "x-ratelimit-reset-requests": "6m0s", "openai-processing-ms": "42",
        "Connection": "X-Upstream-Hop", "X-Upstream-Hop": "1", "Keep-Alive": "timeout=99",
    }})
    reply = call(bridge, CHAT, stream)
    assert reply.status == 200
    h = reply.headers
    assert h["x-request-id"].startswith("req_")
    assert h["x-ratelimit-limit-requests"] == "10000"
    assert h["x-ratelimit-remaining-tokens"] == "199000"
    assert h["x-ratelimit-reset-requests"] == "6m0s"
    assert h["openai-processing-ms"] == "42"
    assert "Set-Cookie" not in h
    assert "X-Upstream-Hop" not in h
    assert h.get("Keep-Alive") != "timeout=99"


def test_upstream_status_and_body_relayed(bridge, mock):
    body = {"anything": ["the", "upstream", "says"], "n": 1}
    mock.script("k0", {"status": 418, "body": body, "headers": {"X-Teapot": "yes"}})
    reply = call(bridge, CHAT)
    assert reply.status == 418
    assert reply.json() == body
    assert reply.headers["X-Teapot"] == "yes"
    assert mock.keys() == ["k0"]


# --------------------------------------------------------------------------
# Failover

# The table (SCENARIOS) is shared with test_anthropic.py: bridging.py.
SANITIZED = {("failover_after_429", CHAT, True), ("all_keys_rate_limited", CHAT, False)}


def scenario_params():
    for name in SCENARIOS:
        for route in ROUTES:
            for stream in (False, True):
                marks = [pytest.mark.sanitize] if (name, route, stream) in SANITIZED else []
                yield pytest.param(name, route, stream, marks=marks,
                                   id=f"{name}-{ROUTE_IDS[route]}-"
                                      f"{'streaming' if stream else 'blocking'}")


@pytest.mark.parametrize("name, route, stream", scenario_params())
def test_failover(start, mock, name, route, stream):
    run_failover_scenario(start, mock, name, route, stream)


def test_byok_off_drops_client_key(bridge, mock):
    reply = call(bridge, CHAT, headers={"Authorization": "Bearer user-key"})
    assert reply.status == 200
    assert mock.keys() == ["k0"]


@stream_param
def test_byok_with_client_key_succeeds(start, mock, stream):
    httpd = start("byok=on")
    assert_complete(call(httpd, CHAT, stream, headers={"Authorization": "Bearer user-key"}),
                    CHAT, stream)
    assert mock.keys() == ["user-key"]


def test_byok_without_pool_needs_a_key(start, mock):
    httpd = start(providers=[f"ownkey openai {mock.url} byok=on"])
    reply = call(httpd, CHAT, provider="ownkey")
    assert_error(reply, 401, "invalid_request_error", "invalid_api_key")
    assert mock.requests() == []
    reply = call(httpd, CHAT, provider="ownkey", headers={"Authorization": "Bearer user-key"})
    assert reply.status == 200
    assert mock.keys() == ["user-key"]


@pytest.fixture
def htpasswd():
    """A password file (alice:secret) that httpd's children, as www-data, can read."""
    folder = tempfile.mkdtemp()
    os.chmod(folder, 0o755)
    path = os.path.join(folder, "htpasswd")
    digest = base64.b64encode(hashlib.sha1(b"secret").digest()).decode()
    with open(path, "w") as f:
        f.write(f"alice:{{SHA}}{digest}\n")
    os.chmod(path, 0o644)
    yield path
    shutil.rmtree(folder)


def test_httpd_authentication_is_not_byok(start, mock, htpasswd):
    # /auth answers only to httpd users. On /auth/rewritten the client's
    # Basic credentials become a Bearer token after authentication (fixups):
    # still httpd's, never a key of the client's own.
    extra = f"""
LoadModule headers_module /usr/lib/apache2/modules/mod_headers.so
<Location /auth>
  SetHandler aibridge
  AuthType Basic
  AuthName bridge
  AuthUserFile "{htpasswd}"
  Require valid-user
</Location>
<Location /rewritten>
  SetHandler aibridge
  AuthType Basic
  AuthName bridge
  AuthUserFile "{htpasswd}"
  Require valid-user
  RequestHeader set Authorization "Bearer user-key"
</Location>"""
    httpd = start("byok=on", extra=extra)
    url = f"{httpd.url}/auth/openai{CHAT}"
    assert requests.post(url, json=request_body(CHAT), timeout=10).status_code == 401
    for prefix in ("/auth", "/rewritten"):
        r = requests.post(f"{httpd.url}{prefix}/openai{CHAT}", json=request_body(CHAT),
                          auth=("alice", "secret"), timeout=10)
        assert r.status_code == 200, r.text
    assert mock.keys() == ["k0", "k0"]
    assert all(r["headers"]["authorization"] == "Bearer k0" for r in mock.requests())


def test_insufficient_quota_cools_for_max_cooldown(start, mock):
    # The headers and cooldown= would allow k0 again after 0.3 s.
    httpd = start("cooldown=0.3", "max-cooldown=60")
    mock.script("k0", {"status": 429, "headers": {"retry-after-ms": "300"}, "body": {"error": {
        "message": "You exceeded your current quota", "type": "insufficient_quota",
        "param": None, "code": "insufficient_quota"}}})
    assert call(httpd, CHAT).status == 200
    time.sleep(0.8)
    assert call(httpd, CHAT).status == 200
    assert mock.keys() == ["k0", "k1", "k1"]


def test_unsupported_region_is_relayed(bridge, mock):
    body = {"error": {"message": "Country, region, or territory not supported",
                      "type": "request_forbidden", "param": None,
                      "code": "unsupported_country_region_territory"}}
    mock.script("k0", {"status": 403, "body": body})
    reply = call(bridge, CHAT)
    assert (reply.status, reply.json()) == (403, body)
    assert call(bridge, CHAT).status == 200
    assert mock.keys() == ["k0", "k0"]


def test_failover_option_limits_statuses(start, mock):
    httpd = start("failover=429,401")
    mock.script("k0", {"status": 403}, {"status": 401})
    reply = call(httpd, CHAT)
    assert reply.status == 403
    assert reply.json()["error"]["message"].startswith("Mock upstream: 403")
    assert mock.keys() == ["k0"]
    # k0 was not disabled by the 403; a 401 still fails over.
    assert call(httpd, CHAT).status == 200
    assert mock.keys() == ["k0", "k0", "k1"]


def first_error_event(route, code, message="Rate limit reached for k0"):
    """An error as the first (and only) event of a 200 stream, in the route's format."""
    if route == CHAT:
        return {"data": {"error": {"message": message, "type": "requests", "param": None,
                                   "code": code}}}
    return {"event": "error", "data": {"type": "error", "code": code, "message": message,
                                       "param": None, "sequence_number": 0}}


@pytest.mark.parametrize("route, code, reason", [
    pytest.param(CHAT, "rate_limit_exceeded", "cooling down", id="chat-rate_limit_exceeded"),
    pytest.param(RESPONSES, "rate_limit_exceeded", "cooling down",
                 id="responses-rate_limit_exceeded"),
    pytest.param(CHAT, "invalid_api_key", "disabled", id="chat-invalid_api_key"),
])
def test_first_event_error_fails_over(bridge, mock, route, code, reason):
    # A 200 stream whose first event is a key's failure is that failure:
    # nothing of it reaches the client, the next key answers.
    mock.script("k0", {"events": [first_error_event(route, code)]})
    reply = call(bridge, route, stream=True)
    assert_complete(reply, route, True)
    assert b"Rate limit reached" not in reply.body
    assert all(event != "error" and '{"error"' not in data for event, data in reply.events)
    assert mock.keys() == ["k0", "k1"]
    assert bridge.log_lines(r"key #1 .* answered 200 with an error event: " + reason)
    assert call(bridge, route, stream=True).status == 200
    assert mock.keys() == ["k0", "k1", "k1"]


@route_param
def test_first_event_other_error_is_relayed(bridge, mock, route):
    # An error that is not the key's: relayed as it is, nothing marked.
    events = [first_error_event(route, "server_error", "The server had an error")]
    mock.script("k0", {"events": events})
    reply = call(bridge, route, stream=True)
    assert reply.status == 200
    assert reply.events == wire(events)
    assert call(bridge, route, stream=True).status == 200
    assert mock.keys() == ["k0", "k0"]


@pytest.mark.parametrize("options, headers, wait", [
    pytest.param((), lambda: {"retry-after-ms": "300"}, 0.3, id="retry_after_ms"),
    pytest.param((), lambda: {"Retry-After": "1"}, 1, id="retry_after_seconds"),
    pytest.param((), lambda: {"x-ratelimit-reset-requests": "1s",
                              "x-ratelimit-remaining-requests": "0"}, 1, id="openai_reset"),
    pytest.param((), lambda: {"anthropic-ratelimit-requests-reset": rfc3339_in(1),
                              "anthropic-ratelimit-requests-remaining": "0"}, 1,
                 id="anthropic_reset"),
    pytest.param(("cooldown=1",), lambda: {}, 1, id="cooldown_option"),
])
def test_cooldown_from_headers(start, mock, options, headers, wait):
    # cooldown=60 unless a header says otherwise: k0 is skipped at once and
    # back shortly after the announced time.
    httpd = start(*options)
    mock.script("k0", {"status": 429, "headers": headers()})
    assert call(httpd, CHAT).status == 200
    assert call(httpd, CHAT).status == 200
    assert mock.keys() == ["k0", "k1", "k1"]
    time.sleep(wait + 0.3)
    assert call(httpd, CHAT).status == 200
    assert mock.keys() == ["k0", "k1", "k1", "k0"]


# --------------------------------------------------------------------------
# Streaming

@route_param
def test_stream_events_arrive_as_sent(bridge, mock, route):
    # Without the upstream's Cache-Control: the module adds its own.
    mock.script("k0", {"events": stream_events(route, 5), "event_delay_ms": 200,
                       "headers": {"Cache-Control": None}})
    reply = call(bridge, route, stream=True)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    assert reply.headers["Cache-Control"] == "no-cache"
    assert "Content-Length" not in reply.headers
    assert reply.headers.get("Transfer-Encoding") == "chunked"
    assert len(reply.events) == len(stream_events(route, 5))
    gaps = [b - a for a, b in zip(reply.times, reply.times[1:])]
    assert all(gap >= 0.12 for gap in gaps), gaps
    # The first event is relayed long before the last one is sent (1.2 s later).
    assert reply.times[0] - reply.sent < 0.6, reply.times[0] - reply.sent


@pytest.mark.parametrize("route", [pytest.param(CHAT, marks=pytest.mark.sanitize, id="chat"),
                                   pytest.param(RESPONSES, id="responses")])
def test_midstream_reset_ends_with_error_event(bridge, mock, route):
    bridge.allow_errors(r"connection broken")
    mock.script("k0", {"stream": True, "drop": "after_events", "drop_after": 2})
    reply = call(bridge, route, stream=True)  # read to a normal end: no exception
    assert reply.status == 200
    assert len(reply.events) == 3
    assert_stream_error(reply, route, "server_error", "upstream connection broken")
    assert reply.body.endswith(b"\n\n")
    assert mock.keys() == ["k0"]
    assert call(bridge, route).status == 200  # nothing marked
    assert mock.keys() == ["k0", "k0"]


@route_param
def test_idle_timeout_ends_with_error_event(start, mock, route):
    httpd = start("idle-timeout=1")
    httpd.allow_errors(r"timed out")
    mock.script("k0", {"events": stream_events(route, 2, complete=False),
                       "silence_after_headers_ms": 4000})
    reply = call(httpd, route, stream=True)
    elapsed = reply.times[-1] - reply.sent
    assert reply.status == 200
    assert len(reply.events) == (3 if route == CHAT else 4)
    assert_stream_error(reply, route, "timeout", "timed out")
    assert 0.9 < elapsed < 3.5, elapsed  # not the upstream's own close after 4 s


@route_param
def test_stream_without_final_event_ends_with_error_event(bridge, mock, route):
    bridge.allow_errors(r"stream ended before its final event")
    mock.script("k0", {"events": stream_events(route, 2, complete=False)})
    reply = call(bridge, route, stream=True)
    assert reply.status == 200
    assert len(reply.events) == (3 if route == CHAT else 4)
    assert_stream_error(reply, route, "server_error", "ended before completion")


@route_param
def test_upstream_error_event_is_relayed_unchanged(bridge, mock, route):
    if route == CHAT:
        error = {"data": {"error": {"message": "overloaded", "type": "server_error",
                                    "param": None, "code": None}}}
    else:
        error = {"event": "error", "data": {"type": "error", "code": "server_error",
                                            "message": "overloaded", "param": None,
                                            "sequence_number": 3}}
    events = stream_events(route, 2, complete=False) + [error]
    mock.script("k0", {"events": events})
    reply = call(bridge, route, stream=True)
    assert reply.status == 200
    assert reply.events == wire(events)


# --------------------------------------------------------------------------
# Transport errors

@pytest.mark.parametrize("stream", [pytest.param(False, marks=pytest.mark.sanitize,
                                                 id="blocking"),
                                    pytest.param(True, id="streaming")])
def test_reset_before_headers_is_502_without_failover(bridge, mock, stream):
    bridge.allow_errors(r"connection broken")
    mock.script("k0", {"drop": "before_headers"})
    reply = call(bridge, CHAT, stream)
    assert_error(reply, 502, "api_error", "server_error")
    assert mock.keys() == ["k0"]
    assert call(bridge, CHAT).status == 200  # k0 not marked
    assert mock.keys() == ["k0", "k0"]


def test_blocking_body_cut_is_not_complete(bridge, mock):
    # Headers (and Content-Length) went out: the client must see a broken
    # transfer, never a short body taken for the whole answer.
    bridge.allow_errors(r"connection broken")
    mock.script("k0", {"body_bytes": 200000, "drop": "after_events", "drop_after": 2})
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        call(bridge, CHAT)
    assert mock.keys() == ["k0"]


@stream_param
def test_connection_refused_is_502(start, mock, stream):
    httpd = start(providers=[f"dead openai http://127.0.0.1:{free_port()} pool=main"])
    httpd.allow_errors(r"unreachable")
    reply = call(httpd, CHAT, stream, provider="dead")
    assert_error(reply, 502, "api_error", "server_error")


def test_timeout_is_504(start, mock):
    httpd = start("timeout=1")
    httpd.allow_errors(r"timed out")
    mock.script("k0", {"delay_ms": 3000})
    began = time.monotonic()
    reply = call(httpd, CHAT)
    assert_error(reply, 504, "api_error", "timeout")
    assert time.monotonic() - began < 2.5


# --------------------------------------------------------------------------
# Client abort and connection reuse

def test_client_abort_ends_upstream_transfer(bridge, mock):
    # 100 events 100 ms apart: 10 s if the module read the stream to its end.
    mock.script("k0", {"events": stream_events(CHAT, 100), "event_delay_ms": 100})
    body = json.dumps(request_body(CHAT, stream=True)).encode()
    with socket.create_connection(("127.0.0.1", bridge.port), timeout=10) as sock:
        sock.sendall(b"POST /ai/openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        received = b""
        while b"data:" not in received:
            received += sock.recv(4096)
    left = time.monotonic()
    assert wait_for(lambda: bridge.log_lines(r"client went away"), 3)
    assert time.monotonic() - left < 2.5


def test_upstream_connections_are_reused(start, mock):
    ports = []

    class Upstream(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            ports.append(self.client_address[1])
            data = json.dumps({"id": "x", "object": "chat.completion", "choices": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        httpd = start(providers=[f"direct openai http://127.0.0.1:{server.server_port} pool=main"])
        # One client connection: one httpd child, whose idle handles keep theirs.
        with requests.Session() as session:
            for _ in range(5):
                assert call(httpd, CHAT, provider="direct", session=session).status == 200
    finally:
        server.shutdown()
        server.server_close()
    assert len(ports) == 5
    assert len(set(ports)) == 1, ports
