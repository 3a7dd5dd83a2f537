"""Reliability: upstream faults, load and concurrency, graceful restarts and
stops with live streams, clients that hang up, hostile input, and secrets
and access rules under all of that traffic.

What the provider suites already cover for OpenAI (refused, reset before
headers, reset mid-stream, idle timeout, body size limits, bad bodies) is
not repeated here; this file adds the Anthropic shape of those faults, the
state they leave (status JSON), their error-log lines, and what no other
suite does: slow drips, hostile 429s, huge and HTTP/1.0 responses, load,
restarts, leaks. After every test the error log must show no lost worker.
"""

import base64
import hashlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from bridging import (wait_for, CHAT, COUNT_TOKENS, MESSAGES, RESPONSES, assert_complete, assert_error,
                      assert_stream_error, call, r429, request_body, stream_events)
from harness import HTTPD, MODULES_DIR, SLOW, bridge_config, free_port, running

STATUS = "/status"
METRICS = "/metrics"
HANDLERS = f"""
<Location {STATUS}>
  SetHandler aibridge-status
</Location>
<Location {METRICS}>
  SetHandler aibridge-metrics
</Location>"""
# A child that crashed (AH00052) or would not stop (AH00045, AH00046).
LOST_WORKER = re.compile(r"exit signal|Segmentation fault|segfault|AH00052|AH00060|"
                         r"AH0004[56]|double free|stack smashing", re.I)


# --------------------------------------------------------------------------
# Helpers

@pytest.fixture(autouse=True)
def no_worker_lost(httpd):
    """Whatever a test does, no httpd child may crash (also while stopping)."""
    yield
    httpd.stop()
    lost = [line for line in httpd.read_log().splitlines() if LOST_WORKER.search(line)]
    assert not lost, "a worker was lost:\n" + "\n".join(lost)


def start(httpd, mock, *options, keys=("k0", "k1", "k2"), providers=(), extra=""):
    """httpd with providers openai and anthropic on pool main (cooldown=60
    plus `options`), the status page at /status and metrics at /metrics."""
    main = [" ".join([f"{name} {name} {mock.url} pool=main cooldown=60", *options])
            for name in ("openai", "anthropic")]
    httpd.write_config(bridge_config(mock.url, keys=keys, providers=[*main, *providers],
                                     extra=HANDLERS + "\n" + extra))
    httpd.start()
    return httpd



def status_json(httpd):
    r = httpd.get(STATUS + "?format=json")
    assert r.status_code == 200, r.text
    return r.json()


def provider_json(httpd, name="openai"):
    [pv] = [p for p in status_json(httpd)["servers"][0]["providers"] if p["name"] == name]
    return pv


def keys_json(httpd, name="openai"):
    return provider_json(httpd, name)["keys"]


def new_log(httpd, mark):
    """Error-log lines written since `mark` (a length of the log)."""
    return httpd.read_log()[mark:].splitlines()


def children(httpd):
    """httpd's child processes (the parent's pid as their ppid); waits for
    them right after a start, when the parent may not have forked yet."""
    pids = []
    wait_for(lambda: bool(pids.extend(child_pids(httpd)) or pids), 5)
    return pids


def child_pids(httpd):
    parent = httpd.pid()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            pids.append(int(name))
    return pids


def proc_kb(pid, field):
    """A VmRSS / VmHWM style field of /proc/<pid>/status, in kB (0 once gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(httpd, field="VmRSS"):
    """{child pid: field in MB}."""
    return {pid: proc_kb(pid, field) / 1024 for pid in children(httpd)}


def upstream_connections(httpd, port):
    """Established TCP connections that httpd's children hold to 127.0.0.1:port."""
    inodes = set()
    for pid in children(httpd):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


def raw_request(httpd, path, body, headers=()):
    """A request on a raw socket, so that the test decides when to hang up."""
    sock = socket.create_connection(("127.0.0.1", httpd.port), timeout=30 * SLOW)
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *headers]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    return sock


def sse_size(events):
    """Bytes of mock `events` on the wire."""
    size = 0
    for e in events:
        data = e["data"] if isinstance(e["data"], str) else json.dumps(e["data"],
                                                                       separators=(",", ":"))
        size += len(f"event: {e['event']}\n" if e.get("event") else "") + len(data) + 8
    return size


def route_of(provider):
    return MESSAGES if provider == "anthropic" else CHAT


def assert_module_error(reply, provider, status, kind="upstream"):
    """The module's own 502/504, in the provider's shape."""
    if provider == "anthropic":
        return assert_error(reply, status, "timeout_error" if kind == "timeout" else "api_error",
                            provider="anthropic")
    return assert_error(reply, status, "api_error",
                        "timeout" if kind == "timeout" else "server_error")


def assert_stream_fault(reply, provider, kind, message_part):
    route = route_of(provider)
    if provider == "anthropic":
        code = "timeout_error" if kind == "timeout" else "api_error"
    else:
        code = "timeout" if kind == "timeout" else "server_error"
    assert_stream_error(reply, route, code, message_part)


# --------------------------------------------------------------------------
# 1. Faults of the upstream

@pytest.mark.sanitize
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_transport_faults_mark_nothing_and_log_one_line(httpd, mock, provider):
    """Refused, reset before headers, reset mid-stream, silence after the
    headers (blocking and streamed): the client gets the provider's error or
    the stream's error event, no key is marked, one error line each."""
    dead = free_port()
    start(httpd, mock, "idle-timeout=1",
          providers=[f"dead {provider} http://127.0.0.1:{dead} pool=main"])
    httpd.allow_errors(r"unreachable", r"connection broken", r"timed out")
    route = route_of(provider)
    faults = [
        # (name, provider, stream, spec, expected, log fragment)
        ("refused", "dead", False, None, 502, "unreachable"),
        ("refused", "dead", True, None, 502, "unreachable"),
        ("reset before headers", provider, False, {"drop": "before_headers"}, 502,
         "connection broken"),
        ("reset before headers", provider, True, {"drop": "before_headers"}, 502,
         "connection broken"),
        ("reset mid-stream", provider, True,
         {"stream": True, "drop": "after_events", "drop_after": 3}, "event",
         "connection broken"),
        ("silence mid-stream", provider, True,
         {"events": stream_events(route, 2, complete=False),
          "silence_after_headers_ms": 4000}, "timeout", "timed out"),
    ]
    for name, via, stream, spec, expected, fragment in faults:
        mock.reset()
        if spec is not None:
            # Twice: libcurl sends a request again, once, when a reused
            # connection dies before any byte of the answer came.
            mock.script("k0", spec, spec)
        mark = len(httpd.read_log())
        began = time.monotonic()
        reply = call(httpd, route, stream, provider=via)
        took = time.monotonic() - began
        if expected == 502:
            assert_module_error(reply, provider, 502)
        else:
            assert reply.status == 200, (name, reply.body)
            assert reply.events, name
            assert_stream_fault(reply, provider, expected,
                                "timed out" if expected == "timeout" else "connection broken")
            if expected == "timeout":
                assert 0.8 < took < 3.8 * SLOW, took  # idle-timeout=1, not the 4 s close
        seen = mock.keys()
        assert set(seen) <= {"k0"}, (name, seen)
        assert len(seen) in ((0,) if via == "dead" else (1, 2) if "before headers" in name
                             else (1,)), (name, seen)
        lines = [line for line in new_log(httpd, mark) if "interception" in line]
        assert len(lines) == 1, (name, lines)
        assert "[aibridge:error]" in lines[0] and fragment in lines[0], lines
        assert f"provider '{via}'" in lines[0], lines
        # Then the next request is served by k0 again: nothing was marked.
        mock.reset()
        assert call(httpd, route, provider=provider).status == 200, name
        assert mock.keys() == ["k0"], name

    for key in keys_json(httpd, provider) + keys_json(httpd, "dead"):
        assert key["state"] == "available", key
        assert (key["http_429"], key["http_401"], key["http_403"]) == (0, 0, 0), key
    # Every attempt counts against k0, the dead provider's too (same pool).
    assert keys_json(httpd, provider)[0]["requests"] == 2 * len(faults)
    interceptions = provider_json(httpd, "dead")["interceptions"]
    assert interceptions["transport_error"] == 2, interceptions


@pytest.mark.sanitize
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_headers_then_silence_on_a_blocking_call(httpd, mock, provider):
    """A blocking call whose upstream sent its headers, then nothing: no
    byte reached the client yet, so it still gets a clear 504."""
    start(httpd, mock, "idle-timeout=1")
    httpd.allow_errors(r"timed out")
    mock.script("k0", {"silence_after_headers_ms": 4000})
    began = time.monotonic()
    try:
        reply = call(httpd, route_of(provider), provider=provider)
    except requests.exceptions.ChunkedEncodingError:
        reply = None
    took = time.monotonic() - began
    assert took < 3.8 * SLOW, took
    assert reply is not None, "the client saw a cut response, not an error"
    assert_module_error(reply, provider, 504, "timeout")
    # Only the module's headers: none of the upstream's that came before.
    assert not {"x-request-id", "request-id", "x-ratelimit-limit-requests"} & \
        {h.lower() for h in reply.headers}, reply.headers
    assert len(httpd.log_lines(r"\[aibridge:error\].*timed out")) == 1
    assert call(httpd, route_of(provider), provider=provider).status == 200
    assert mock.keys() == ["k0", "k0"]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_slow_drip_under_idle_timeout_is_not_cut(httpd, mock, provider):
    """idle-timeout=1 and an upstream that sends a piece every 0.4 s for
    about 3 s: blocking and streamed answers arrive whole."""
    start(httpd, mock, "idle-timeout=1")
    route = route_of(provider)
    events = stream_events(route, 4)
    # Streamed: the events cut into 8 pieces; blocking: 1600 bytes in 8 pieces.
    mock.script("k0", {"events": events, "chunk_size": math.ceil(sse_size(events) / 8),
                       "chunk_delay_ms": 400},
                {"body_bytes": 1600, "chunk_size": 200, "chunk_delay_ms": 400})
    results = {}

    def run(stream):
        results[stream] = call(httpd, route, stream, provider=provider)

    threads = [threading.Thread(target=run, args=(s,)) for s in (True, False)]
    for t in threads:
        t.start()
        time.sleep(0.1)  # the stream takes k0's first script
    for t in threads:
        t.join()
    streamed, blocking = results[True], results[False]
    assert streamed.status == 200
    assert all(event != "error" for event, _ in streamed.events)
    if route == CHAT:
        assert streamed.data()[-1] == "[DONE]"
        deltas = [d["choices"][0]["delta"]["content"] for d in streamed.data()[:-1]]
    else:
        assert streamed.events[-1][0] == "message_stop"
        deltas = [d["delta"]["text"] for d in streamed.data()
                  if d["type"] == "content_block_delta"]
    assert deltas == ["t0", "t1", "t2", "t3"]
    # It dripped: ~2.8 s from the first event to the last.
    assert streamed.times[-1] - streamed.sent > 2.0
    assert blocking.status == 200 and len(blocking.body) == 1600
    assert blocking.json()["padding"]
    assert not httpd.log_lines(r"timed out|\[aibridge:error\]")


@pytest.mark.sanitize
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_error_bodies_that_are_not_json_still_fail_over(httpd, mock, provider):
    """429/401/403 with bodies that are HTML, broken JSON, empty, JSON of the
    wrong shape or larger than what is held back: every one marks its key
    by its status, and the next key answers."""
    keys = [f"e{i}" for i in range(9)] + ["ok"]
    start(httpd, mock, keys=keys)
    bodies = [
        (429, "<html><body><h1>429 Too Many Requests</h1></body></html>"),
        (401, '{"error": {"message": "bad key", "type": '),
        (403, ""),
        (429, {"error": "insufficient_quota"}),                 # a string, not an object
        (429, {"error": {"code": ["insufficient_quota"]}}),     # code not a string
        (429, [1, 2, 3]),
        (401, "x" * 300000),                                     # far over the held 64 KB
        (429, '{"error": {"code": "insufficient_quota", "x": "\xff\xfe'),
        (403, "null"),
    ]
    for key, (status, body) in zip(keys, bodies):
        mock.script(key, {"status": status, "body": body,
                          "headers": {"Content-Type": "text/html"} if "<html>" in str(body)
                          else {}})
    reply = call(httpd, route_of(provider), provider=provider)
    assert_complete(reply, route_of(provider), False)
    assert mock.keys() == keys
    state = keys_json(httpd, provider)
    for key, (status, _) in zip(state, bodies):
        if status == 429:
            assert (key["state"], key["reason"], key["http_429"]) == \
                ("cooling", "rate_limited", 1), key
            assert 55000 < key["remaining_ms"] <= 60000, key
        else:
            reason = "unauthorized" if status == 401 else "forbidden"
            assert (key["state"], key["reason"]) == ("disabled", reason), key
        assert key["last_failure_status"] == status
    assert state[-1]["state"] == "available"
    # A later request goes straight to the last key.
    assert call(httpd, route_of(provider), provider=provider).status == 200
    assert mock.keys() == keys + ["ok"]
    # One line per failover, none of them an error.
    assert len(httpd.log_lines(r"interception .* answered (429|401|403)")) == 9
    assert not httpd.log_lines(r"\[aibridge:error\]")


# Hostile 429 headers: (headers, what the cooldown becomes). cooldown=1, max-cooldown=3.
ABSURD_429 = [
    ({"Retry-After": "99999999999999999999999999999999"}, "max"),
    ({"retry-after-ms": "184467440737095516160000000"}, "max"),
    ({"x-ratelimit-reset-requests": "99999999999h", "x-ratelimit-remaining-requests": "0"},
     "max"),
    ({"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}, "max"),
    ({"anthropic-ratelimit-requests-reset": "9999-12-31T23:59:59Z",
      "anthropic-ratelimit-requests-remaining": "0"}, "max"),
    ({"Retry-After": "9" * 6000}, "max"),
    ({"Retry-After": "-5"}, "default"),
    ({"Retry-After": "garbage"}, "default"),
    ({"Retry-After": "1e9"}, "default"),
    ({"Retry-After": "0x7fffffff"}, "default"),
    ({"Retry-After": "5 5"}, "default"),
    ({"retry-after-ms": "-1"}, "default"),
    ({"retry-after-ms": "nan"}, "default"),
    ({"retry-after-ms": "inf"}, "default"),
    ({"retry-after-ms": "1e12"}, "default"),
    ({"x-ratelimit-reset-requests": "-1s"}, "default"),
    ({"x-ratelimit-reset-tokens": "soon"}, "default"),
    ({"anthropic-ratelimit-tokens-reset": "tomorrow"}, "default"),
    ({"anthropic-ratelimit-tokens-reset": "2025-13-45T99:99:99Z"}, "default"),
    ({"Retry-After": "\u00e9\u00e9"}, "default"),
]


@pytest.mark.sanitize
def test_absurd_429_headers_fall_back_or_are_clamped(httpd, mock):
    keys = [f"a{i}" for i in range(len(ABSURD_429))] + ["ok"]
    # Clamped keys first, then those on cooldown=: after 1 s the first of
    # the latter serves, after 3 s the first of the former.
    order = sorted(range(len(ABSURD_429)), key=lambda i: ABSURD_429[i][1] != "max")
    cases = [ABSURD_429[i] for i in order]
    start(httpd, mock, "cooldown=1", "max-cooldown=3", keys=keys)
    for key, (headers, _) in zip(keys, cases):
        mock.script(key, {"status": 429, "headers": headers})
    assert call(httpd, CHAT).status == 200
    assert mock.keys() == keys
    marked = time.monotonic()
    for key, (headers, expected) in zip(keys_json(httpd), cases):
        assert key["state"] == "cooling" and key["http_429"] == 1, (headers, key)
        low, high = (2000, 3000) if expected == "max" else (0, 1000)
        assert low < key["remaining_ms"] <= high, (headers, key)
    lines = httpd.log_lines(r"answered 429: cooling down for")
    assert len(lines) == len(cases)
    assert sum("cooling down for 3.000 s" in line for line in lines) == \
        sum(e == "max" for _, e in cases)
    assert sum("cooling down for 1.000 s (cooldown=)" in line for line in lines) == \
        sum(e == "default" for _, e in cases)

    first_default = keys[[e for _, e in cases].index("default")]
    assert wait_for(lambda: time.monotonic() - marked > 1.2, 5)
    assert call(httpd, CHAT).status == 200
    assert mock.keys()[-1] == first_default
    assert wait_for(lambda: time.monotonic() - marked > 3.2, 5)
    assert call(httpd, CHAT).status == 200
    assert mock.keys()[-1] == keys[0]


def read_all(response, chunk=1 << 20):
    """(bytes received, last bytes) of a response, without holding it."""
    total, tail = 0, b""
    for piece in response.iter_content(chunk_size=chunk):
        total += len(piece)
        tail = (tail + piece)[-4096:]
    return total, tail


BIG = 200 * 1024 * 1024


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming"])
def test_huge_response_streams_in_constant_memory(httpd, mock, stream):
    """200 MB from upstream: the client gets every byte and no httpd child
    ever holds much of it."""
    start(httpd, mock)
    httpd.allow_errors(r"stream ended before its final event")
    before = max(rss_mb(httpd, "VmHWM").values())
    mock.script("k0", {"body_bytes": BIG})
    # Messages streams are relayed read by read (a chat stream is re-emitted
    # event by event; its memory is the same, its pace slower).
    route = MESSAGES if stream else CHAT
    body = json.dumps(request_body(route, stream))
    with requests.post(f"{httpd.url}/ai/{'anthropic' if stream else 'openai'}{route}",
                       data=body, headers={"Content-Type": "application/json"},
                       stream=True, timeout=60 * SLOW) as r:
        assert r.status_code == 200
        peak = {}

        def sample():
            while not done.is_set():
                for pid, mb in rss_mb(httpd).items():
                    peak[pid] = max(peak.get(pid, 0), mb)
                time.sleep(0.2)

        done = threading.Event()
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            total, tail = read_all(r)
        finally:
            done.set()
            sampler.join()
    if stream:
        # The filler has no message_stop: every byte, then the module's error event.
        error = b'event: error\ndata: {"type":"error","error":{"type":"api_error",'
        assert tail[tail.rindex(b"event: error"):].startswith(error), tail[-300:]
        assert total - len(tail) + tail.rindex(b"event: error") == BIG
    else:
        assert total == BIG
        assert tail.endswith(b'x"}')
    hwm = max(rss_mb(httpd, "VmHWM").values())
    # Far below the 200 MB that went through; a blocking body's usage is
    # read (json-c) from its first 16 MB at most.
    limit = 24 if stream else 48
    assert hwm - before < limit, (before, hwm, peak)
    assert max(peak.values()) < before + limit, (before, peak)
    assert mock.keys() == ["k0"]


@pytest.mark.sanitize
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_http10_upstream_without_content_length(httpd, mock, provider):
    """An HTTP/1.0 upstream that ends its body by closing the connection:
    blocking and streamed answers, a failover through it, a cut stream."""
    start(httpd, mock)
    httpd.allow_errors(r"stream ended before its final event")
    route = route_of(provider)
    mock.script("k0", {"http10": True}, {"http10": True, "stream": True},
                {"status": 429, "http10": True, "headers": {"Retry-After": "60"}})
    mock.script("k1", {"http10": True, "stream": True},
                {"http10": True, "events": stream_events(route, 2, complete=False)})
    assert_complete(call(httpd, route, provider=provider), route, False)
    assert_complete(call(httpd, route, True, provider=provider), route, True)
    assert_complete(call(httpd, route, True, provider=provider), route, True)  # k0 429, k1
    mark = len(httpd.read_log())
    reply = call(httpd, route, True, provider=provider)
    assert reply.status == 200
    assert_stream_fault(reply, provider, "upstream", "ended before completion")
    assert len([l for l in new_log(httpd, mark) if "[aibridge:error]" in l]) == 1
    assert mock.keys() == ["k0", "k0", "k0", "k1", "k1"]
    state = keys_json(httpd, provider)
    assert (state[0]["state"], state[0]["http_429"]) == ("cooling", 1)
    assert state[1]["state"] == "available"
    # And the handles that met a closing upstream still work.
    for _ in range(3):
        assert call(httpd, route, provider=provider).status == 200


# --------------------------------------------------------------------------
# 2. Load and concurrency

PIDS_LOG = 'LogFormat "%P" pids\nCustomLog "{dir}/pids.log" pids'
WORKERS = 32  # MaxRequestWorkers of the harness's event MPM


def metric(text, name, **labels):
    """The sum of the samples of `name` that carry these labels."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def test_200_concurrent_requests_while_k0_turns_429(httpd, mock):
    """k0 answers its first 5 calls, then 429 Retry-After 60: every request
    succeeds, none calls k0 twice, only requests already in flight meet its
    429, and the shared counters of several processes and threads add up to
    exactly what the upstream saw."""
    start(httpd, mock, extra=PIDS_LOG.format(dir=httpd.dir))
    # Slow answers, so that many requests are in flight when k0 turns.
    mock.script("k0", *[{"delay_ms": 300}] * 5,
                always={"status": 429, "headers": {"Retry-After": "60"}, "delay_ms": 200})
    mock.script("k1", always={"delay_ms": 30})
    n = 200
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait(timeout=30 * SLOW)
        return call(httpd, CHAT, headers={"X-Test-Request": str(i)})

    with ThreadPoolExecutor(n) as pool:
        replies = list(pool.map(one, range(n)))
    assert [r.status for r in replies] == [200] * n
    for r in replies:
        assert_complete(r, CHAT, False)

    seen = mock.requests()
    by_request = {}
    for req in seen:
        by_request.setdefault(req["headers"]["x-test-request"], []).append(req["key"])
    assert len(by_request) == n
    paths = [tuple(keys) for keys in by_request.values()]
    assert set(paths) <= {("k0",), ("k0", "k1"), ("k1",)}, set(paths)
    assert paths.count(("k0",)) == 5
    k0 = [req["key"] for req in seen].count("k0")
    k1 = [req["key"] for req in seen].count("k1")
    assert k1 == n - 5
    # Only requests in flight when k0 was marked met its 429: at most one
    # per worker.
    assert 1 <= k0 - 5 <= WORKERS, k0

    pv = provider_json(httpd)
    keys = pv["keys"]
    assert (keys[0]["requests"], keys[0]["http_429"]) == (k0, k0 - 5), keys[0]
    assert (keys[1]["requests"], keys[1]["http_429"]) == (k1, 0), keys[1]
    assert keys[2]["requests"] == 0
    assert keys[0]["state"] == "cooling" and keys[0]["remaining_ms"] > 50000
    assert pv["interceptions"]["ok"] == n and pv["inflight"] == 0, pv
    assert pv["transitions"]["rate_limited"] == k0 - 5, pv
    assert keys[1]["tokens_input"] == 21 * k1 and keys[0]["tokens_input"] == 21 * 5
    m = httpd.get(METRICS).text
    assert metric(m, "aibridge_interceptions_total", provider="openai", outcome="ok") == n
    assert metric(m, "aibridge_failover_attempts_count", provider="openai") == n
    assert metric(m, "aibridge_failover_attempts_sum", provider="openai") == n + k0 - 5
    # The requests met more than one process.
    pids_log = os.path.join(httpd.dir, "pids.log")

    def logged():
        with open(pids_log) as f:
            return f.read().split()
    assert wait_for(lambda: len(logged()) >= n + 2, 5)
    assert len(set(logged())) >= 2, set(logged())


def stream_threads(httpd, n, route=CHAT, provider="openai"):
    """n streams started in threads: (threads, replies)."""
    replies = [None] * n

    def run(i):
        replies[i] = call(httpd, route, True, provider=provider)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, replies


def assert_whole_stream(reply, events):
    assert reply is not None
    assert reply.status == 200, reply.body
    assert reply.data()[-1] == "[DONE]"
    assert len(reply.events) == events, reply.body[-500:]
    assert all("error" not in d for d in reply.data()[:-1])


def test_graceful_restart_with_live_streams(httpd, mock):
    start(httpd, mock)
    mock.script("k0", r429(60))
    assert call(httpd, CHAT).status == 200  # k0 cooling, k1 answers
    mock.script("k1", always={"events": stream_events(CHAT, 30), "event_delay_ms": 100})
    threads, replies = stream_threads(httpd, 20)
    assert wait_for(lambda: len(mock.requests()) >= 22, 10), len(mock.requests())
    time.sleep(0.3)
    httpd.graceful()
    restarted = time.monotonic()
    for t in threads:
        t.join(timeout=30 * SLOW)
    for reply in replies:
        assert_whole_stream(reply, 31)
        assert reply.times[-1] > restarted  # it lived through the restart
    # k0 is still cooling in the new generation.
    mock.reset()
    assert call(httpd, CHAT).status == 200
    assert mock.keys() == ["k1"]
    k0 = keys_json(httpd)[0]
    assert k0["state"] == "cooling" and k0["remaining_ms"] > 50000 and k0["http_429"] == 1


def test_graceful_stop_lets_live_streams_finish(httpd, mock):
    start(httpd, mock)
    mock.script("k0", always={"events": stream_events(CHAT, 30), "event_delay_ms": 100})
    threads, replies = stream_threads(httpd, 20)
    assert wait_for(lambda: len(mock.requests()) >= 20, 10), len(mock.requests())
    # (And the connection count that test_client_disconnects... relies on sees them.)
    assert wait_for(lambda: upstream_connections(httpd, mock.port) == 20, 5), \
        upstream_connections(httpd, mock.port)
    pid = httpd.pid()
    p = subprocess.run([HTTPD, "-f", httpd.conf, "-k", "graceful-stop"], capture_output=True,
                       text=True, timeout=60 * SLOW)
    assert p.returncode == 0, p.stdout + p.stderr
    stopping = time.monotonic()
    for t in threads:
        t.join(timeout=30 * SLOW)
    for reply in replies:
        assert_whole_stream(reply, 31)
        assert reply.times[-1] > stopping
    # The parent goes once they are done, within GracefulShutdownTimeout.
    assert wait_for(lambda: not running(pid), 12), "httpd still running"
    httpd.running = False
    assert time.monotonic() - stopping < 12 * SLOW
    assert httpd.log_lines(r"caught SIGWINCH, shutting down gracefully")


def test_client_disconnects_leak_no_connection_and_no_memory(httpd, mock):
    """Rounds of 100 streams whose clients hang up after the first event:
    the upstream connections go, the gauges return to 0, the children's
    memory does not keep growing."""
    start(httpd, mock)
    mock.script("k0", always={"events": stream_events(CHAT, 100), "event_delay_ms": 100})
    body = json.dumps(request_body(CHAT, True)).encode()

    def one(_):
        sock = raw_request(httpd, "/ai/openai" + CHAT, body)
        try:
            got = b""
            while b"data:" not in got:
                piece = sock.recv(4096)
                if not piece:
                    break
                got += piece
            return b"data:" in got
        finally:
            sock.close()

    rounds = []
    for n in range(1, 5):
        with ThreadPoolExecutor(50) as pool:
            assert all(pool.map(one, range(100)))
        assert wait_for(lambda: provider_json(httpd)["inflight"] == 0, 5)
        assert wait_for(lambda: upstream_connections(httpd, mock.port) <= WORKERS, 5), \
            upstream_connections(httpd, mock.port)
        assert provider_json(httpd)["interceptions"]["client_abort"] == 100 * n
        rounds.append(rss_mb(httpd))
    assert len(httpd.log_lines(r"client went away")) == 400
    # After a first round (allocators and caches warm), no child that
    # served every round grows by more than a few MB per round.
    for pid in rounds[1]:
        if pid in rounds[-1]:
            assert rounds[-1][pid] - rounds[1][pid] < 4, rounds
    assert len(mock.requests()) == 400


# --------------------------------------------------------------------------
# 3. Bad input

def assert_invalid_request(reply, provider, status=400):
    if provider == "anthropic":
        return assert_error(reply, status, "request_too_large" if status == 413
                            else "invalid_request_error", provider="anthropic")
    return assert_error(reply, status, "invalid_request_error",
                        "request_too_large" if status == 413 else "invalid_request")


@pytest.mark.sanitize
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_nesting_100000_deep_is_400_at_once(httpd, mock, provider):
    start(httpd, mock)
    route = route_of(provider)
    for stream in (False, True):
        for opener, closer in ((b"[", b"]"), (b'{"a":', b"}")):
            body = (b'{"model":"m","stream":' + (b"true" if stream else b"false") + b',"x":'
                    + opener * 100000 + b"1" + closer * 100000 + b"}")
            began = time.monotonic()
            reply = call(httpd, route, body=body, provider=provider)
            assert time.monotonic() - began < 2 * SLOW
            assert_invalid_request(reply, provider)
    assert mock.requests() == []
    assert call(httpd, route, provider=provider).status == 200


def test_huge_header_is_httpds_own_400(httpd, mock):
    start(httpd, mock)
    for headers in ({"X-Huge": "x" * 100000},
                    {f"X-Many-{i}": "y" * 50 for i in range(300)}):
        reply = call(httpd, CHAT, headers=headers)
        assert reply.status == 400, reply.body
        assert b"<title>400 Bad Request</title>" in reply.body  # httpd's, not the module's
    assert mock.requests() == []
    # A large header within httpd's limits is forwarded as it is.
    reply = call(httpd, CHAT, headers={"X-Large": "z" * 8000})
    assert reply.status == 200
    assert mock.requests()[0]["headers"]["x-large"] == "z" * 8000


def test_oversized_chunked_body_anthropic(httpd, mock):
    start(httpd, mock, extra="<Location /ai/anthropic>\n  AIBridgeMaxBodySize 1K\n</Location>")
    head = b'{"model":"m","max_tokens":1,"messages":[],"pad":"'
    data = head + b"x" * (1025 - len(head) - 2) + b'"}'
    reply = call(httpd, MESSAGES, provider="anthropic",
                 body=(data[i:i + 100] for i in range(0, len(data), 100)))
    assert_invalid_request(reply, "anthropic", 413)
    assert mock.requests() == []


@pytest.mark.sanitize
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_wrong_content_type_and_invalid_utf8_are_forwarded(httpd, mock, provider):
    """The provider judges these: the module forwards them, byte for byte
    (a chat stream gets its include_usage added)."""
    start(httpd, mock)
    route = route_of(provider)
    bad = "\xff\xfe \xc0\xaf \xe2\x82 \\ud800 \xed\xa0\x80 \xf8\x88\x80\x80\x80".encode("latin-1")
    sent = []
    for stream in (False, True):
        raw = json.dumps(request_body(route, stream)).encode().replace(b'"Hi"', b'"' + bad + b'"')
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None,
                             "application/json; charset=latin-1"):
            reply = call(httpd, route, stream, body=raw, provider=provider,
                         headers={"Content-Type": content_type})
            assert_complete(reply, route, stream)
            sent.append((raw, content_type))
    seen = mock.requests()
    assert len(seen) == len(sent)
    for (raw, content_type), req in zip(sent, seen):
        assert req["headers"].get("content-type") == content_type
        if not (route == CHAT and b'"stream": true' in raw):
            assert int(req["headers"]["content-length"]) == len(raw)
        text = json.dumps(req["body"])
        assert "\\ufffd" in text and "\\ud800" in text
    assert not httpd.log_lines(r"\[aibridge:(error|warn)\]")


# --------------------------------------------------------------------------
# 4. Secrets and access

# Distinctive secrets: pool keys, keys clients bring (used with byok=on,
# dropped with byok=off), a cookie and an httpd password.
POOL_KEYS = ["sk-proj-RELpoolZERO-6f1d2c9a8b7e-p0aa", "sk-proj-RELpoolONE-3e8a5c1f9d2b-p1bb",
             "sk-proj-RELpoolTWO-9c4b7e2a6f1d-p2cc"]
CLAUDE_KEYS = ["sk-ant-api03-RELantZERO-5a9e3c7b1d4f-a0aa",
               "sk-ant-api03-RELantONE-8d2f6b4e9c1a-a1bb"]
CLIENT_USED = "sk-proj-RELclientUSED-7b3e9d1c5a8f-cu11"
CLIENT_DROPPED = "sk-proj-RELclientDROP-2c6a8e4f1b9d-cd22"
CLIENT_ANT = "sk-ant-RELclientANT-4f8b2d6a9e3c-ca33"
COOKIE = "RELcookie-1a2b3c4d5e6f7a8b9c0d"
PASSWORD = "RELpassword-9f8e7d6c5b4a"
SECRETS = POOL_KEYS + CLAUDE_KEYS + [CLIENT_USED, CLIENT_DROPPED, CLIENT_ANT, COOKIE, PASSWORD]


def assert_no_secret(text, where, secrets=SECRETS):
    for secret in secrets:
        middle = secret[4:-4]
        for i in range(len(middle) - 7):
            assert middle[i:i + 8] not in text, f"part of {secret[:4]}...: {where}"
    if secrets is SECRETS:
        basic = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
        assert basic not in text, where


@pytest.fixture
def htpasswd():
    """alice's password file, readable by httpd's children (www-data)."""
    folder = tempfile.mkdtemp()
    os.chmod(folder, 0o755)
    path = os.path.join(folder, "htpasswd")
    digest = base64.b64encode(hashlib.sha1(PASSWORD.encode()).digest()).decode()
    with open(path, "w") as f:
        f.write(f"alice:{{SHA}}{digest}\n")
    os.chmod(path, 0o644)
    yield path
    shutil.rmtree(folder)


def test_no_secret_anywhere_under_all_kinds_of_traffic(httpd, mock, htpasswd):
    usage = os.path.join(httpd.dir, "usage.jsonl")
    access = os.path.join(httpd.dir, "access-full.log")
    dead = free_port()
    httpd.write_config("\n".join([
        "LogLevel trace8",
        f"LoadModule status_module {MODULES_DIR}/mod_status.so",
        'LogFormat "%h %l %u %t \\"%r\\" %>s %b \\"%{Referer}i\\" \\"%{User-Agent}i\\" '
        '%{AIBRIDGE_ID}e %{AIBRIDGE_KEY}e %{AIBRIDGE_CREDENTIAL}e %{AIBRIDGE_OUTCOME}e" full',
        f'CustomLog "{access}" full',
        f'AIBridgeUsageLog "{usage}"',
        "AIBridgeMaxBodySize 64K",
        f"AIBridgeKeyPool main {' '.join(POOL_KEYS)}",
        f"AIBridgeKeyPool claude {' '.join(CLAUDE_KEYS)}",
        f"AIBridgeProvider openai openai {mock.url} pool=main cooldown=60 idle-timeout=1",
        f"AIBridgeProvider byok openai {mock.url} pool=main byok=on",
        f"AIBridgeProvider anthropic anthropic {mock.url} pool=claude byok=on",
        f"AIBridgeProvider dead openai http://127.0.0.1:{dead} pool=main",
        "<Location /ai>", "  SetHandler aibridge", "</Location>",
        "<Location /secure>", "  SetHandler aibridge", "  AuthType Basic",
        "  AuthName bridge", f'  AuthUserFile "{htpasswd}"', "  Require valid-user",
        "</Location>",
        HANDLERS,
        "<Location /server-status>", "  SetHandler server-status", "</Location>",
    ]))
    httpd.start()
    httpd.allow_errors(r"unreachable", r"connection broken", r"timed out",
                       r"failed authentication", r"AH01617", r"AH01618")
    P0, P1, P2 = POOL_KEYS
    A0, A1 = CLAUDE_KEYS
    shown = []  # every response: status line, headers, body

    def keep(reply):
        shown.append(f"{reply.status} {dict(reply.headers)} "
                     + reply.body.decode("utf-8", "replace"))
        return reply

    claims = {"Cookie": f"session={COOKIE}", "X-Forwarded-For": "6.6.6.6",
              "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
              "Forwarded": "for=6.6.6.6;host=evil.example"}

    def ai(route, stream=False, provider="openai", headers=None, **kw):
        return keep(call(httpd, route, stream, provider=provider,
                         headers={**claims, **(headers or {})}, **kw))

    dropped = {"Authorization": f"Bearer {CLIENT_DROPPED}", "X-Api-Key": CLIENT_DROPPED}
    used = {"Authorization": f"Bearer {CLIENT_USED}"}
    ant = {"x-api-key": CLIENT_ANT}

    # Blocking and streamed, with a client key that byok=off drops.
    for route in (CHAT, RESPONSES):
        for stream in (False, True):
            assert_complete(ai(route, stream, headers=dropped), route, stream)
    # Failovers: 429, 401, then the last key's 429 in a stream: exhausted.
    mock.script(P0, r429(60))
    mock.script(P1, {"status": 401})
    assert ai(CHAT, headers=dropped).status == 200
    mock.script(P2, {"status": 429, "headers": {"retry-after-ms": "30000"}})
    assert ai(CHAT, True).status == 429
    assert ai(CHAT).status == 429                       # at once, no upstream call
    assert ai(RESPONSES, True).status == 429
    # The status page, its actions (bringing the pool back) and the metrics.
    page = keep(call(httpd, STATUS, method="GET", provider="..")).body.decode()
    nonce = re.search(r'name="nonce" value="([0-9a-f]+)"', page).group(1)
    for action, key in (("clear", 0), ("enable", 1), ("clear", 2), ("clear", 9)):
        r = requests.post(httpd.url + STATUS, data={"nonce": nonce, "action": action,
                                                   "provider": "openai", "key": key},
                          allow_redirects=False, timeout=30 * SLOW)
        shown.append(f"{r.status_code} {dict(r.headers)} {r.text}")
    # BYOK: the client's key, blocking, streamed, its own 429 and 401 relayed.
    assert_complete(ai(CHAT, provider="byok", headers=used), CHAT, False)
    assert_complete(ai(CHAT, True, provider="byok", headers=used), CHAT, True)
    mock.script(CLIENT_USED, r429(5), {"status": 401})
    assert ai(CHAT, provider="byok", headers=used).status == 429
    assert ai(RESPONSES, True, provider="byok", headers=used).status == 401
    # Anthropic: the client's own key, the pool, a first-event failover, exhaustion.
    assert_complete(ai(MESSAGES, provider="anthropic", headers=ant), MESSAGES, False)
    assert_complete(ai(MESSAGES, True, provider="anthropic", headers=ant), MESSAGES, True)
    assert_complete(ai(MESSAGES, True, provider="anthropic"), MESSAGES, True)
    mock.script(A0, {"events": [{"event": "error", "data": {
        "type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}}]})
    assert_complete(ai(MESSAGES, True, provider="anthropic"), MESSAGES, True)
    mock.script(A1, {"status": 401})
    assert ai(MESSAGES, provider="anthropic").status == 429
    # Passthrough, with and without the client's keys.
    assert ai("/v1/models", method="GET", headers=dropped).status == 200
    assert ai("/v1/embeddings", body={"model": "e", "input": "x"}, headers=dropped).status == 200
    assert ai("/v1/models", method="GET", provider="byok", headers=used).status == 200
    assert ai(COUNT_TOKENS, provider="anthropic", headers=ant).status == 200
    assert ai("/v1/models", method="GET", provider="anthropic", headers=ant).status == 200
    # httpd's own authentication: its Authorization is never a key.
    for provider in ("openai", "byok"):
        r = requests.post(f"{httpd.url}/secure/{provider}{CHAT}", json=request_body(CHAT),
                          auth=("alice", PASSWORD), headers=claims, timeout=30 * SLOW)
        assert r.status_code == 200, r.text
        shown.append(f"{r.status_code} {dict(r.headers)} {r.text}")
    r = requests.post(f"{httpd.url}/secure/openai{CHAT}", json=request_body(CHAT),
                      auth=("alice", "wrong"), timeout=30 * SLOW)
    assert r.status_code == 401
    # Bad input of every kind, with keys attached.
    for body in (b"{not json", b"", b"[" * 5000 + b"]" * 5000, b"x" * 70000):
        assert ai(CHAT, body=body, headers=dropped).status in (400, 413)
    assert ai("/v1/files", method="GET", headers=used).status == 404
    assert ai(CHAT, method="GET", headers=used).status == 405
    assert ai(CHAT, provider="nope", headers=used).status == 404
    assert ai("/v1/models/%252e%252e/x", method="GET", headers=used).status == 400
    # Transport faults.
    assert ai(CHAT, provider="dead", headers=dropped).status == 502
    assert ai(CHAT, True, provider="dead", headers=dropped).status == 502
    mock.script(P0, {"drop": "before_headers"}, {"drop": "before_headers"})
    assert ai(CHAT, headers=dropped).status == 502
    upstream = mock.requests()
    mock.reset()  # a second drop, in case libcurl did not send again
    mock.script(P0, {"stream": True, "drop": "after_events", "drop_after": 2},
                {"events": stream_events(CHAT, 1, complete=False),
                 "silence_after_headers_ms": 3000})
    assert ai(CHAT, True).events[-1][1].startswith('{"error"')
    assert ai(CHAT, True).events[-1][1].startswith('{"error"')
    # A client that hangs up mid-stream.
    mock.script(P0, {"events": stream_events(CHAT, 50), "event_delay_ms": 50})
    sock = raw_request(httpd, "/ai/openai" + CHAT,
                       json.dumps(request_body(CHAT, True)).encode(),
                       headers=[f"Authorization: Bearer {CLIENT_DROPPED}"])
    got = b""
    while b"data:" not in got:
        got += sock.recv(4096)
    sock.close()
    shown.append(got.decode("utf-8", "replace"))
    # Pages that show keys by hint.
    for path in (STATUS, STATUS + "?format=json", METRICS, "/server-status",
                 "/server-status?auto", "/server-status?notable"):
        r = httpd.get(path)
        assert r.status_code == 200, path
        shown.append(f"{r.status_code} {dict(r.headers)} {r.text}")
        assert_no_secret(r.text + str(r.headers), path)
    assert wait_for(lambda: len(httpd.log_lines("client went away")) == 1, 5)

    # None of it shows a secret, nor 8 characters of a secret's middle.
    for i, text in enumerate(shown):
        assert_no_secret(text, f"response #{i}: {text[:200]}")
    time.sleep(0.2)  # the last access-log lines
    for path in (access, usage):
        with open(path, errors="replace") as f:
            text = f.read()
        assert text, path
        assert_no_secret(text, path)
    # At trace4 httpd itself lists the request headers a client sent, its
    # own credentials among them: those lines may show what the client
    # sent, never a pool key. Every other line shows nothing.
    dump = re.compile(r"\[http:trace\d\] .*http_request\.c")
    lines = httpd.read_log().splitlines()
    assert_no_secret("\n".join(l for l in lines if not dump.search(l)), "error log")
    assert_no_secret("\n".join(l for l in lines if dump.search(l)), "error log",
                     POOL_KEYS + CLAUDE_KEYS)
    # The logs did log: at trace8, with hints.
    log = httpd.read_log()
    assert "[aibridge:trace" in log or "[aibridge:info]" in log
    assert "sk-p...p0aa" in log and "sk-a...a0aa" in log

    # What reached the upstream: credentials of the pool or the client's
    # own key only; no cookie, no httpd password, no forwarding claims.
    allowed = {f"Bearer {k}" for k in POOL_KEYS + [CLIENT_USED]}
    upstream += mock.requests()
    keys = {req["key"] for req in upstream}
    assert {CLIENT_USED, CLIENT_ANT, P0, P1, P2, A0, A1} <= keys, keys
    for req in upstream:
        h = req["headers"]
        assert not {"cookie", "forwarded", "x-forwarded-for", "x-forwarded-host",
                    "x-forwarded-proto"} & set(h), h
        assert h.get("authorization") in allowed | {None}, h
        assert h.get("x-api-key") in set(CLAUDE_KEYS) | {CLIENT_ANT, None}, h
        text = json.dumps(h)
        assert CLIENT_DROPPED not in text and COOKIE not in text and "Basic" not in text


def test_require_on_every_location_is_honoured(httpd, mock):
    deny = "  Require ip 10.9.9.9"
    httpd.write_config("\n".join([
        f"LoadModule authz_host_module {MODULES_DIR}/mod_authz_host.so",
        "AIBridgeKeyPool main k0 k1",
        f"AIBridgeProvider openai openai {mock.url} pool=main",
        f"AIBridgeProvider anthropic anthropic {mock.url} pool=main",
        "<Location /ai>", "  SetHandler aibridge", deny, "</Location>",
        f"<Location {STATUS}>", "  SetHandler aibridge-status", deny, "</Location>",
        f"<Location {METRICS}>", "  SetHandler aibridge-metrics", deny, "</Location>",
    ]))
    httpd.start()
    httpd.allow_errors(r"AH01630: client denied by server configuration")
    for route, provider in ((CHAT, "openai"), (RESPONSES, "openai"), (MESSAGES, "anthropic")):
        for stream in (False, True):
            assert call(httpd, route, stream, provider=provider).status == 403
    assert call(httpd, "/v1/models", method="GET").status == 403
    assert call(httpd, COUNT_TOKENS, provider="anthropic").status == 403
    for path in (STATUS, STATUS + "?format=json", METRICS):
        assert httpd.get(path).status_code == 403
    r = requests.post(httpd.url + STATUS, data={"nonce": "0" * 32, "action": "clear",
                                               "provider": "openai", "key": "0"},
                      timeout=30 * SLOW)
    assert r.status_code == 403
    assert mock.requests() == []
    assert len(httpd.log_lines(r"AH01630")) == 12
    assert not httpd.log_lines(r"interception ")


def test_root_only_key_file(httpd, mock):
    """Keys in a root:root 0600 file in a 0700 folder: read by the parent
    before it drops privileges, at start and at a graceful restart."""
    folder = tempfile.mkdtemp()
    try:
        os.chmod(folder, 0o700)
        path = os.path.join(folder, "openai.keys")
        with open(path, "w") as f:
            f.write("# root only\nrk0\nrk1\n")
        os.chown(path, 0, 0)
        os.chmod(path, 0o600)
        # www-data, as the children run, cannot read it.
        p = subprocess.run(["cat", path], user="www-data", group="www-data", extra_groups=[],
                           capture_output=True, text=True)
        assert p.returncode != 0 and "Permission denied" in p.stderr
        httpd.write_config(bridge_config(mock.url, keys=[f"file:{path}"]))
        httpd.start()
        def uids():
            found = set()
            for pid in children(httpd):
                try:
                    with open(f"/proc/{pid}/status") as f:
                        found.add(re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1))
                except OSError:
                    pass
            return found
        # (A child just forked is root for a moment, until it switches.)
        assert wait_for(lambda: uids() and "0" not in uids(), 5), uids()
        mock.script("rk0", r429(60))
        assert call(httpd, CHAT).status == 200
        assert call(httpd, MESSAGES, provider="anthropic").status == 200
        httpd.graceful()
        assert call(httpd, CHAT).status == 200
        assert mock.keys() == ["rk0", "rk1", "rk1", "rk1"]
    finally:
        httpd.stop()  # `httpd -k stop` reads the configuration too
        shutil.rmtree(folder)
