"""Tests of the mock upstream (tests/mock_upstream.py) itself."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

MOCK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mock_upstream.py")
REPLY = "Hello from the mock upstream."


@pytest.fixture(scope="module")
def mock():
    proc = subprocess.Popen([sys.executable, MOCK, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    assert line[:1] == ["LISTENING"], line
    yield f"http://127.0.0.1:{line[1]}"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert stderr == ""  # quiet, and no tracebacks from dropped connections


@pytest.fixture(autouse=True)
def reset(mock):
    requests.post(f"{mock}/_mock/reset").raise_for_status()


def script(mock, key, *responses, always=None):
    payload = {"key": key, "responses": list(responses)}
    if always is not None:
        payload["always"] = always
    r = requests.post(f"{mock}/_mock/script", json=payload)
    r.raise_for_status()
    return r.json()


def sse_events(text):
    """[(event or None, data)] of an SSE body."""
    events = []
    for frame in text.split("\n\n"):
        lines = [line for line in frame.split("\n") if line and not line.startswith(":")]
        if lines:
            fields = dict(line.split(": ", 1) for line in lines)
            events.append((fields.get("event"), fields["data"]))
    return events


def raw_request(mock, request):
    """A socket that has sent `request` to the mock."""
    host, port = mock.rsplit("/", 1)[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(request.encode())
    return sock


def read_all(sock):
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_chat_blocking(mock):
    r = requests.post(f"{mock}/v1/chat/completions", json={"model": "gpt-x"},
                      headers={"Authorization": "Bearer k1"})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "gpt-x"
    assert body["choices"][0]["message"]["content"] == REPLY
    assert body["usage"] == {
        "prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30,
        "prompt_tokens_details": {"cached_tokens": 5},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }
    assert r.headers["x-request-id"].startswith("req_")
    assert r.headers["x-ratelimit-remaining-requests"] == "9999"
    assert r.headers["set-cookie"] == "upstream=1"
    assert int(r.headers["content-length"]) == len(r.content)


def test_chat_streaming_with_usage(mock):
    r = requests.post(f"{mock}/v1/chat/completions", json={
        "model": "gpt-x", "stream": True, "stream_options": {"include_usage": True}})
    assert r.headers["content-type"] == "text/event-stream"
    assert r.headers["transfer-encoding"] == "chunked"
    events = sse_events(r.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and "usage" in c for c in chunks)
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 30
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == REPLY


def test_responses(mock):
    body = requests.post(f"{mock}/v1/responses", json={"model": "gpt-x"}).json()
    assert body["object"] == "response" and body["status"] == "completed"
    assert body["usage"]["input_tokens_details"] == {"cached_tokens": 5}
    assert body["usage"]["output_tokens_details"] == {"reasoning_tokens": 3}

    r = requests.post(f"{mock}/v1/responses", json={"model": "gpt-x", "stream": True})
    events = sse_events(r.text)
    data = [json.loads(d) for _, d in events]
    assert [e for e, _ in events] == [d["type"] for d in data]
    assert [d["sequence_number"] for d in data] == list(range(len(data)))
    assert events[0][0] == "response.created" and events[-1][0] == "response.completed"
    assert data[-1]["response"]["usage"]["total_tokens"] == 30
    assert "".join(d["delta"] for d in data if d["type"] == "response.output_text.delta") == REPLY


def test_messages(mock):
    r = requests.post(f"{mock}/v1/messages", json={"model": "claude-x"},
                      headers={"x-api-key": "ak"})
    assert r.headers["request-id"].startswith("req_")
    assert "x-request-id" not in r.headers
    body = r.json()
    assert body["type"] == "message" and body["model"] == "claude-x"
    assert body["usage"] == {"input_tokens": 21, "cache_creation_input_tokens": 7,
                             "cache_read_input_tokens": 5, "output_tokens": 9}

    r = requests.post(f"{mock}/v1/messages", json={"model": "claude-x", "stream": True})
    names = [e for e, _ in sse_events(r.text)]
    assert names == ["message_start", "content_block_start", "ping"] + \
        ["content_block_delta"] * 5 + ["content_block_stop", "message_delta", "message_stop"]


def test_other_routes_and_404(mock):
    assert requests.get(f"{mock}/v1/models").json()["object"] == "list"
    assert requests.get(f"{mock}/v1/models/gpt-4.1").json()["id"] == "gpt-4.1"
    assert requests.post(f"{mock}/v1/messages/count_tokens", json={}).json() == {"input_tokens": 21}
    r = requests.post(f"{mock}/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"


def test_script_queue_per_key(mock):
    assert script(mock, "a", {"status": 429}, {"status": 500})["queued"] == 2
    url = f"{mock}/v1/chat/completions"

    def call(key):
        return requests.post(url, json={}, headers={"Authorization": f"Bearer {key}"})

    assert call("b").status_code == 200  # other keys are not affected
    r = call("a")
    assert r.status_code == 429
    assert r.json()["error"] == {"message": r.json()["error"]["message"], "type": "requests",
                                 "param": None, "code": "rate_limit_exceeded"}
    assert call("a").status_code == 500
    assert call("a").status_code == 200  # queue empty: default again

    script(mock, "ak", {"status": 529, "headers": {"retry-after": "3"}})
    r = requests.post(f"{mock}/v1/messages", json={}, headers={"x-api-key": "ak"})
    assert r.status_code == 529 and r.headers["retry-after"] == "3"
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "overloaded_error"

    bad = requests.post(f"{mock}/_mock/script", json={"key": "a", "responses": [{"statu": 1}]})
    assert bad.status_code == 400


def test_star_and_always(mock):
    script(mock, "*", {"status": 503})
    script(mock, "k", always={"status": 401})
    url = f"{mock}/v1/chat/completions"
    k = {"Authorization": "Bearer k"}
    assert requests.post(url, json={}, headers=k).status_code == 401  # own always beats "*"
    assert requests.post(url, json={}, headers={"x-api-key": "z"}).status_code == 503
    assert requests.post(url, json={}).status_code == 200
    r = requests.post(url, json={}, headers=k)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_drop_before_headers_resets(mock):
    script(mock, "*", {"drop": "before_headers"})
    sock = raw_request(mock, "POST /v1/chat/completions HTTP/1.1\r\nHost: m\r\n"
                             "Content-Length: 2\r\n\r\n{}")
    with pytest.raises(ConnectionResetError):
        sock.recv(1024)
    sock.close()
    assert requests.post(f"{mock}/v1/chat/completions", json={}).status_code == 200


def test_drop_after_events(mock):
    script(mock, "*", {"drop": "after_events", "drop_after": 2})
    sock = raw_request(mock, "POST /v1/messages HTTP/1.1\r\nHost: m\r\nContent-Length: 16\r\n\r\n"
                             '{"stream": true}')
    data = b""
    with pytest.raises(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    sock.close()
    assert b"event: message_start" in data and b"event: content_block_start" in data
    assert b"event: ping" not in data


def test_http10(mock):
    script(mock, "*", {"http10": True})
    sock = raw_request(mock, "GET /v1/models HTTP/1.1\r\nHost: m\r\n\r\n")
    head, body = read_all(sock).split(b"\r\n\r\n", 1)
    sock.close()
    lines = head.decode().lower().split("\r\n")
    assert lines[0] == "http/1.0 200 ok"
    assert "connection: close" in lines
    assert not any(l.startswith(("content-length", "transfer-encoding")) for l in lines)
    assert json.loads(body)["object"] == "list"


def test_event_timing_and_client_disconnect(mock):
    events = [{"event": "e", "data": {"i": i}} for i in range(3)]
    script(mock, "*", {"events": events, "event_delay_ms": 200}, {"events": events, "event_delay_ms": 200})
    r = requests.post(f"{mock}/v1/messages", json={}, stream=True)
    arrivals = [time.monotonic() for chunk in r.iter_content(chunk_size=None) if b"data:" in chunk]
    assert len(arrivals) == 3
    assert all(0.15 < b - a < 0.4 for a, b in zip(arrivals, arrivals[1:]))

    r = requests.post(f"{mock}/v1/messages", json={}, stream=True)
    next(r.iter_content(chunk_size=None))
    r.close()  # hang up mid-stream; the fixture checks stderr stays empty
    time.sleep(0.5)
    assert requests.get(f"{mock}/v1/models").status_code == 200


def test_body_bytes(mock):
    script(mock, "*", {"body_bytes": 300_000}, {"body_bytes": 100_000, "stream": True})
    r = requests.post(f"{mock}/v1/chat/completions", json={})
    assert len(r.content) == 300_000 and r.json()["object"] == "chat.completion"
    r = requests.post(f"{mock}/v1/chat/completions", json={})
    assert len(r.content) == 100_000
    assert all(json.loads(d)["object"] == "chat.completion.chunk" for _, d in sse_events(r.text))


def test_keep_alive_and_concurrency(mock):
    conn = http.client.HTTPConnection(mock.rsplit("/", 1)[1], timeout=5)
    local_ports = set()
    for path in ("/v1/models", "/v1/models/x", "/v1/nope"):
        conn.request("GET", path)
        conn.getresponse().read()
        local_ports.add(conn.sock.getsockname()[1])
    conn.close()
    assert len(local_ports) == 1  # all on one connection
    script(mock, "*", always={"delay_ms": 300})
    start = time.monotonic()
    socks = [raw_request(mock, "GET /v1/models HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
             for _ in range(200)]
    replies = [read_all(s) for s in socks]
    for s in socks:
        s.close()
    assert all(reply.startswith(b"HTTP/1.1 200") for reply in replies)
    assert time.monotonic() - start < 3  # served in parallel, not one after another


def test_requests_recording(mock):
    requests.post(f"{mock}/v1/messages?beta=true", json={"model": "m"},
                  headers={"x-api-key": "ak", "Authorization": "Bearer bk", "X-Extra": "1"})
    requests.post(f"{mock}/v1/embeddings", data="not json", headers={"Authorization": "Bearer ok"})
    requests.get(f"{mock}/v1/models")
    recorded = requests.get(f"{mock}/_mock/requests").json()  # control calls are not recorded
    assert [r["path"] for r in recorded] == ["/v1/messages", "/v1/embeddings", "/v1/models"]
    first, second, third = recorded
    assert first["method"] == "POST" and first["query"] == "beta=true"
    assert first["key"] == "ak" and first["key_header"] == "x-api-key" and first["both_key_headers"]
    assert first["headers"]["x-extra"] == "1" and first["body"] == {"model": "m"}
    assert second["key"] == "ok" and second["key_header"] == "authorization"
    assert second["body"] == "not json" and not second["both_key_headers"]
    assert third["key"] is None and third["key_header"] is None and third["body"] is None
    assert first["time"] <= second["time"] <= third["time"] <= time.time()
