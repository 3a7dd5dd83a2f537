"""What the provider suites (test_openai.py, test_anthropic.py) share.

One request through the bridge read to its end (SSE parsed event by event
as it arrives), the mock's default answers and the module's errors checked
in each provider's shape, scripted streams, and the key-failover table that
every bridged or passthrough route must honour.
"""

import datetime
import json
import time
from dataclasses import dataclass, field

import requests

from harness import SLOW, bridge_config

CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"
REPLY = "Hello from the mock upstream."
INPUT_TOKENS = 21  # the mock's fixed count


# --------------------------------------------------------------------------
# Requests

def request_body(route, stream=False):
    """A minimal valid body for a bridged route (or count_tokens)."""
    if route in (MESSAGES, COUNT_TOKENS):
        body = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hi"}]}
        if route == MESSAGES:
            body["max_tokens"] = 64
    else:
        body = {"model": "gpt-4o-mini"}
        if route == CHAT:
            body["messages"] = [{"role": "user", "content": "Hi"}]
        else:
            body["input"] = "Hi"
    if stream:
        body["stream"] = True
    return body


def client_key_headers(provider, key):
    """How a client of `provider` sends its own key (BYOK)."""
    return {"x-api-key": key} if provider == "anthropic" else {"Authorization": f"Bearer {key}"}


@dataclass
class Reply:
    status: int
    headers: requests.structures.CaseInsensitiveDict
    body: bytes
    events: list = field(default_factory=list)  # [(event or None, data)] of an SSE body
    times: list = field(default_factory=list)   # monotonic arrival time of each event
    sent: float = 0.0                           # monotonic time the request left

    def json(self):
        return json.loads(self.body)

    def data(self):
        """The events' data, parsed where it is JSON."""
        out = []
        for _, data in self.events:
            try:
                out.append(json.loads(data))
            except ValueError:
                out.append(data)
        return out


def call(httpd, route=CHAT, stream=False, body=None, headers=None, method="POST",
         provider="openai", session=None):
    """One request through the bridge, read to its end; SSE bodies are parsed
    event by event as they arrive."""
    if body is None and method == "POST":
        body = request_body(route, stream)
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(headers or {})}
    sent = time.monotonic()
    r = (session or requests).request(method, f"{httpd.url}/ai/{provider}{route}", data=body,
                                      headers=headers, stream=True, timeout=30 * SLOW)
    reply = Reply(r.status_code, r.headers, b"", sent=sent)
    sse = r.headers.get("Content-Type", "").startswith("text/event-stream")
    buffer = b""
    # Each HTTP chunk is handed over as it arrives (urllib3's read_chunked).
    for chunk in r.iter_content(chunk_size=None):
        reply.body += chunk
        buffer += chunk
        while sse and b"\n\n" in buffer:
            frame, buffer = buffer.split(b"\n\n", 1)
            event, data = None, []
            for line in frame.decode().split("\n"):
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
            if data:
                reply.events.append((event, "\n".join(data)))
                reply.times.append(time.monotonic())
    r.close()
    return reply


# --------------------------------------------------------------------------
# Answers and errors

def assert_error(reply, status, type_, code=None, message=None, provider="openai"):
    """The module's own error in the provider's shape: OpenAI's
    {"error":{"message","type","param","code"}}, Anthropic's
    {"type":"error","error":{"type","message"}} (which has no code)."""
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    error = body["error"]
    if provider == "anthropic":
        assert code is None, "Anthropic errors have no code"
        assert body["type"] == "error" and set(body) == {"type", "error"}, body
        assert set(error) == {"type", "message"}, error
        assert error["type"] == type_, error
    else:
        assert error["type"] == type_ and error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    if message is not None:
        assert error["message"] == message
    return error


def assert_complete(reply, route, stream):
    """The mock's default answer, blocking or streamed, reached the client whole."""
    assert reply.status == 200, reply.body
    assert "Set-Cookie" not in reply.headers
    if not stream:
        assert reply.headers["Content-Type"] == "application/json"
        answer = reply.json()
        if route == COUNT_TOKENS:
            assert answer == {"input_tokens": INPUT_TOKENS}
            return
        text = (answer["choices"][0]["message"]["content"] if route == CHAT
                else answer["content"][0]["text"] if route == MESSAGES
                else answer["output"][0]["content"][0]["text"])
        assert text == REPLY
        return
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    assert reply.headers["Cache-Control"] == "no-cache"
    assert "Content-Length" not in reply.headers
    data = reply.data()
    if route == CHAT:
        assert data[-1] == "[DONE]"
        text = "".join(d["choices"][0]["delta"].get("content", "") for d in data[:-1]
                       if d["choices"])
    elif route == MESSAGES:
        assert reply.events[0][0] == "message_start"
        assert reply.events[-1][0] == "message_stop"
        assert all(event == d["type"] for (event, _), d in zip(reply.events, data))
        text = "".join(d["delta"]["text"] for d in data if d["type"] == "content_block_delta")
    else:
        assert reply.events[-1][0] == "response.completed"
        text = "".join(d["delta"] for d in data if d["type"] == "response.output_text.delta")
    assert text == REPLY


def stream_events(route, n, complete=True):
    """Mock `events` for a stream of n text deltas, with or without its final event."""
    if route == CHAT:
        events = [{"data": {"id": "c", "object": "chat.completion.chunk",
                            "choices": [{"index": 0, "delta": {"content": f"t{i}"}}]}}
                  for i in range(n)]
        return events + ([{"data": "[DONE]"}] if complete else [])
    if route == MESSAGES:
        def event(kind, **fields):
            return {"event": kind, "data": {"type": kind, **fields}}
        events = [event("message_start", message={"id": "msg_s", "type": "message",
                                                  "role": "assistant", "content": []}),
                  event("content_block_start", index=0,
                        content_block={"type": "text", "text": ""})]
        events += [event("content_block_delta", index=0,
                         delta={"type": "text_delta", "text": f"t{i}"}) for i in range(n)]
        events += [event("content_block_stop", index=0),
                   event("message_delta", delta={"stop_reason": "end_turn"},
                         usage={"output_tokens": n})]
        return events + ([event("message_stop")] if complete else [])
    kinds = ["response.created"] + ["response.output_text.delta"] * n
    kinds += ["response.completed"] if complete else []
    return [{"event": kind, "data": {"type": kind, "sequence_number": seq, "delta": f"t{seq}"}}
            for seq, kind in enumerate(kinds)]


def wire(events):
    """Mock `events` as the client's (event, data) pairs: relayed unchanged."""
    return [(e.get("event"), e["data"] if isinstance(e["data"], str)
             else json.dumps(e["data"], separators=(",", ":"))) for e in events]


def assert_stream_error(reply, route, code, message_part=""):
    """The last event is the module's error event, in the route's format
    (`code` is the error type on Anthropic's Messages)."""
    event, data = reply.events[-1]
    error = json.loads(data)
    if route == CHAT:
        assert event is None
        assert error["error"]["type"] == "api_error" and error["error"]["code"] == code, error
        assert message_part in error["error"]["message"]
    elif route == MESSAGES:
        assert event == "error"
        assert error == {"type": "error",
                         "error": {"type": code, "message": error["error"]["message"]}}, error
        assert message_part in error["error"]["message"]
    else:
        assert event == "error"
        last = json.loads(reply.events[-2][1])["sequence_number"]
        assert error == {"type": "error", "code": code, "message": error["message"],
                         "param": None, "sequence_number": last + 1}
        assert message_part in error["message"]


# --------------------------------------------------------------------------
# Set-up and scripts

def starter(httpd, mock, provider):
    """The `start` fixture's function: start(*options, providers=[...], extra="")
    runs httpd with provider `provider` (type and name alike; pool main:
    k0 k1 k2, cooldown=60, plus `options`) and more providers."""
    def start(*options, providers=(), extra=""):
        main = " ".join([f"{provider} {provider} {mock.url} pool=main cooldown=60", *options])
        httpd.write_config(bridge_config(mock.url, providers=[main, *providers], extra=extra))
        httpd.start()
        return httpd
    return start


def r429(retry_after):
    return {"status": 429, "headers": {"Retry-After": str(retry_after)}}


def rfc3339_in(seconds):
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------
# Failover: one table for every provider and route

EXHAUSTED_429 = {"message": "all configured keys are rate-limited (retry after 3s)",
                 "type": "rate_limit_error", "code": "rate_limit_exceeded"}
EXHAUSTED_AUTH = {"message": "all configured keys failed authentication",
                  "type": "api_error", "code": "server_error"}


@dataclass
class Scenario:
    scripts: dict            # key -> mock specs
    status: int              # what the client gets
    keys: list               # keys upstream saw
    then_status: int         # a second request, with no client key ...
    then_keys: list          # ... and the keys seen after it
    error: dict = None       # the module's own error (message, type, OpenAI's code)
    retry_after: str = None  # Retry-After header given to the client
    client_key: str = None   # BYOK: the client's own key, sent the provider's way


SCENARIOS = {
    "single_valid_key": Scenario({}, 200, ["k0"], 200, ["k0", "k0"]),
    # k0 is cooling: the second request goes straight to k1.
    "failover_after_429": Scenario({"k0": [r429(5)]}, 200, ["k0", "k1"], 200, ["k0", "k1", "k1"]),
    "failover_after_401": Scenario({"k0": [{"status": 401}]}, 200, ["k0", "k1"],
                                   200, ["k0", "k1", "k1"]),
    "failover_after_403": Scenario({"k0": [{"status": 403}]}, 200, ["k0", "k1"],
                                   200, ["k0", "k1", "k1"]),
    # The second request is answered at once, without an upstream call.
    "all_keys_rate_limited": Scenario({"k0": [r429(5)], "k1": [r429(3)], "k2": [r429(10)]},
                                      429, ["k0", "k1", "k2"], 429, ["k0", "k1", "k2"],
                                      error=EXHAUSTED_429, retry_after="3"),
    "all_keys_unauthorized": Scenario({k: [{"status": 401}] for k in ("k0", "k1", "k2")},
                                      502, ["k0", "k1", "k2"], 502, ["k0", "k1", "k2"],
                                      error=EXHAUSTED_AUTH),
    "server_error_no_failover": Scenario({"k0": [{"status": 500}]}, 500, ["k0"],
                                         200, ["k0", "k0"]),
    # The client's own key: one attempt, relayed as it is, the pool untouched.
    "byok_no_failover": Scenario({"user-key": [r429(5)]}, 429, ["user-key"],
                                 200, ["user-key", "k0"], retry_after="5",
                                 client_key="user-key"),
}


def run_failover_scenario(start, mock, name, route, stream, provider="openai"):
    """SCENARIOS[name] on `route` of `provider` (byok=on), then a second request."""
    sc = SCENARIOS[name]
    httpd = start("byok=on")
    httpd.allow_errors(r"every key of pool 'main' failed authentication")
    for key, specs in sc.scripts.items():
        mock.script(key, *specs)
    headers = client_key_headers(provider, sc.client_key) if sc.client_key else {}
    code = (lambda error: None) if provider == "anthropic" else (lambda error: error["code"])

    reply = call(httpd, route, stream, headers=headers, provider=provider)
    assert reply.status == sc.status, reply.body
    assert mock.keys() == sc.keys
    assert reply.headers.get("Retry-After") == sc.retry_after
    if sc.status == 200:
        assert_complete(reply, route, stream)
    elif sc.error:
        assert_error(reply, sc.status, sc.error["type"], code(sc.error), sc.error["message"],
                     provider=provider)
    else:  # the upstream's own error, relayed
        assert reply.json()["error"]["message"].startswith(f"Mock upstream: {sc.status}")

    then = call(httpd, route, stream, provider=provider)
    assert then.status == sc.then_status, then.body
    assert mock.keys() == sc.then_keys
    if sc.error:
        assert_error(then, sc.then_status, sc.error["type"], code(sc.error), provider=provider)
        if sc.retry_after:
            assert 1 <= int(then.headers["Retry-After"]) <= 3
    return httpd


def wait_for(predicate, timeout=5):
    """Polls `predicate` until it holds or `timeout` seconds (scaled by SLOW) pass."""
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def read_lines(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except OSError:
        return []


def log_lines(path, n):
    """The lines of a log once it has n (a pipe writes a little later), and no more."""
    wait_for(lambda: len(read_lines(path)) >= n)
    time.sleep(0.05)
    lines = read_lines(path)
    assert len(lines) == n, lines
    return lines


def log_records(path, n):
    """The JSON records of a usage log (AIBridgeUsageLog) once it has n."""
    return [json.loads(line) for line in log_lines(path, n)]
