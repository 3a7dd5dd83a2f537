"""./dev soak: minutes of mixed traffic against one httpd.

Blocking calls and streams of every route, passthrough, bad input, clients
that hang up, an unreachable provider, and meanwhile an upstream that keeps
failing in new ways (429s with short cooldowns, 401s, error events as the
first event, streams cut or gone silent, HTTP/1.0 answers). Every answer
must be well formed, the children's memory must level off, the counters in
shared memory must add up to the traffic, and the error log must show no
lost worker and no error nobody expected.

Skipped unless AIB_SOAK=1; AIB_SOAK_SECONDS sets the length (default 180).
"""

import json
import os
import random
import threading
import time

import pytest
import requests

from bridging import CHAT, MESSAGES, RESPONSES, request_body, stream_events
from harness import SLOW, free_port
from test_reliability import (LOST_WORKER, METRICS, STATUS, children, metric, provider_json,
                              raw_request, rss_mb, start)

pytestmark = [pytest.mark.soak,
              pytest.mark.skipif(os.environ.get("AIB_SOAK") != "1",
                                 reason="a soak run: AIB_SOAK=1 (./dev soak)")]

SECONDS = float(os.environ.get("AIB_SOAK_SECONDS", "180"))
CLIENTS = 6
# The chaos below scripts a stream of one route's shape for whichever
# request meets it next: any route's final event ends a stream well.
FINAL_EVENTS = {"response.completed", "response.failed", "response.incomplete", "message_stop"}


def events_of(body):
    """(event, data) of each SSE frame."""
    out = []
    for frame in body.decode("utf-8", "replace").split("\n\n"):
        event, data = None, []
        for line in frame.split("\n"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
        if data:
            out.append((event, "\n".join(data)))
    return out


def check_answer(r, route, stream):
    """A well-formed answer: JSON, or a stream that ends with its final
    event or an error event. Returns a short description of the outcome."""
    ctype = r.headers.get("Content-Type", "")
    if r.status_code >= 400:
        assert r.status_code in (400, 429, 500, 502, 504), (r.status_code, r.text[:300])
        assert "error" in r.json(), r.text[:300]
        return str(r.status_code)
    assert r.status_code == 200, r.text[:300]
    if ctype.startswith("text/event-stream"):
        events = events_of(r.content)
        assert events, r.content[:300]
        event, data = events[-1]
        if data == "[DONE]" or event in FINAL_EVENTS:
            return "stream"
        assert event == "error" or '"error"' in data, (route, stream, r.content[-500:])
        return "stream-error"
    json.loads(r.content)
    return "json"


def test_soak(httpd, mock):
    dead = free_port()
    start(httpd, mock, "idle-timeout=1", "disable-for=1", "cooldown=1",
          keys=("k0", "k1", "k2", "k3"),
          providers=[f"dead openai http://127.0.0.1:{dead} pool=main"])
    httpd.allow_errors(r"unreachable", r"connection broken", r"timed out",
                       r"ended before its final event", r"failed authentication")
    deadline = time.monotonic() + SECONDS
    stop = threading.Event()
    sent = {"openai": 0, "anthropic": 0, "dead": 0}
    outcomes = {}
    failures = []
    lock = threading.Lock()

    def count(provider, outcome):
        with lock:
            sent[provider] += 1
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

    def bridge(provider, route, stream, body=None):
        if body is None:
            body = json.dumps(request_body(route, stream)).encode()
        r = requests.post(f"{httpd.url}/ai/{provider}{route}", data=body,
                          headers={"Content-Type": "application/json"}, timeout=30 * SLOW)
        return r

    def abort(provider, route):
        body = json.dumps(request_body(route, True)).encode()
        sock = raw_request(httpd, f"/ai/{provider}{route}", body)
        try:
            sock.recv(random.choice((1, 200, 4096)))
        finally:
            sock.close()

    def client(n):
        rnd = random.Random(n)
        while not stop.is_set() and time.monotonic() < deadline:
            kind = rnd.randrange(12)
            provider = "anthropic" if kind % 3 == 2 else "openai"
            route = MESSAGES if provider == "anthropic" else rnd.choice((CHAT, RESPONSES))
            stream = bool(kind % 2)
            try:
                if kind == 9:
                    abort(provider, route)
                    count(provider, "abort")
                elif kind == 10:
                    r = bridge(provider, route, stream, body=b'{"model": "m", "x": [[[')
                    assert r.status_code == 400, r.text
                    count(provider, "400")
                elif kind == 11:
                    r = bridge("dead", CHAT, stream)
                    assert r.status_code == 502, r.text
                    count("dead", "502")
                elif kind == 8:
                    r = requests.get(f"{httpd.url}/ai/openai/v1/models", timeout=30 * SLOW)
                    assert r.status_code in (200, 429, 500, 502, 504), r.text
                    count("openai", "passthrough")
                else:
                    r = bridge(provider, route, stream)
                    count(provider, check_answer(r, route, stream))
            except Exception as e:  # noqa: BLE001 - collected and reported below
                failures.append(f"{provider} {route} stream={stream}: {e!r}")
                stop.set()

    def chaos():
        """The upstream's misbehaviour, a new kind every 50 ms."""
        rnd = random.Random(99)
        resets = time.monotonic()
        while not stop.is_set() and time.monotonic() < deadline:
            key = rnd.choice(("k0", "k0", "k1", "k2"))
            route = rnd.choice((CHAT, RESPONSES, MESSAGES))
            spec = rnd.choice([
                {"status": 429, "headers": {"retry-after-ms": str(rnd.randrange(200, 1500))}},
                {"status": 429, "headers": {"Retry-After": "garbage"}},
                {"status": 429, "body": "<html>busy</html>"},
                {"status": 401},
                {"status": 403, "body": "{broken"},
                {"status": 500},
                {"stream": True, "drop": "after_events", "drop_after": 2},
                {"events": stream_events(route, 3, complete=False),
                 "silence_after_headers_ms": 1500},
                {"events": stream_events(route, 20), "event_delay_ms": 20},
                {"events": [{"data": {"error": {"message": "slow", "type": "requests",
                                                "code": "rate_limit_exceeded"}}}]},
                {"events": [{"event": "error", "data": {
                    "type": "error", "error": {"type": "rate_limit_error", "message": "x"}}}]},
                {"http10": True},
                {"body_bytes": 300000, "chunk_size": 65536},
            ])
            try:
                mock.script(key, spec)
                if time.monotonic() - resets > 30:
                    mock.reset()  # the record would only grow
                    resets = time.monotonic()
            except requests.RequestException as e:
                failures.append(f"mock: {e!r}")
            time.sleep(0.05)

    def scrape():
        while not stop.is_set() and time.monotonic() < deadline:
            for path in (STATUS, STATUS + "?format=json", METRICS):
                r = httpd.get(path)
                if r.status_code != 200:
                    failures.append(f"{path}: {r.status_code}")
            time.sleep(1)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    threads += [threading.Thread(target=chaos), threading.Thread(target=scrape)]
    for t in threads:
        t.start()
    # The children's memory: after a fifth of the run (warm), and at its end.
    warm_at = time.monotonic() + SECONDS / 5
    warm = None
    samples = []
    try:
        while time.monotonic() < deadline and not stop.is_set():
            time.sleep(1)
            if warm is None and time.monotonic() >= warm_at:
                warm = rss_mb(httpd)
            samples.append(sum(rss_mb(httpd).values()))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60 * SLOW)
    assert not failures, "\n".join(failures[:20])
    total = sum(sent.values())
    assert total > SECONDS * 5, sent  # it did run
    print(f"\nsoak: {SECONDS:.0f} s, {total} requests, outcomes {outcomes}")

    # Every interception counted once, none still in flight.
    time.sleep(1)
    for name, n in sent.items():
        pv = provider_json(httpd, name)
        assert pv["inflight"] == 0, pv
        assert sum(pv["interceptions"].values()) == n, (name, n, pv["interceptions"])
    m = httpd.get(METRICS).text
    assert metric(m, "aibridge_interceptions_total") == total
    transitions = metric(m, "aibridge_key_pool_state_transitions_total")
    print(f"soak: {transitions:.0f} keys marked, "
          f"{metric(m, 'aibridge_key_pool_exhaustions_total'):.0f} exhaustions")
    assert transitions > SECONDS / 2  # it did fail over
    # Memory levelled off: no child that lived through the run grew by more
    # than a little since it was warm.
    end = rss_mb(httpd)
    grown = {pid: end[pid] - warm[pid] for pid in warm if pid in end}
    print(f"soak: children's RSS (MB) warm {warm}, end {end}")
    print("soak: total RSS (MB) every 10 s:", [round(v, 1) for v in samples[::10]])
    assert grown and max(grown.values()) < 16, grown
    assert max(rss_mb(httpd, "VmHWM").values()) < 128
    assert len(children(httpd)) >= 1
    lost = [line for line in httpd.read_log().splitlines() if LOST_WORKER.search(line)]
    assert not lost, lost
