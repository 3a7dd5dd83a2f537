"""Observability end to end: the request variables (for LogFormat), the usage
log (AIBridgeUsageLog: files, pipes, several processes, virtual hosts), the
token usage read from every route, blocking and streamed (with the usage a
chat stream is asked for on the client's behalf and taken back), and the
error-log lines of failover with their interception id. No key is ever
written to any of these logs.
"""

import base64
import concurrent.futures
import datetime
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile

import pytest
import requests

from bridging import (wait_for, CHAT, COUNT_TOKENS, MESSAGES, RESPONSES, assert_complete, call,
                      client_key_headers, log_lines, log_records as records, r429, read_lines,
                      request_body)
from harness import SLOW, TOP, bridge_config, free_port

# Distinctive keys: none of them, nor their middles, may reach a log.
KEYS = ("sk-pool-zero-SECRET-5d1f9a7c33e0-k0aa", "sk-pool-one-SECRET-8b2e4c6d10f7-k1bb",
        "sk-pool-two-SECRET-2a9c7e5b3d1f-k2cc")
TOOLS_KEY = "sk-pool-tools-SECRET-6e4a2c8f0b9d-ktdd"
CLIENT_KEY = "sk-client-own-SECRET-9f8e7d6c5b4a-cl99"


def hint(key):
    """The module's masked hint of a key of 20 characters or more."""
    return f"{key[:4]}...{key[-4:]}"


HINTS = [hint(k) for k in KEYS]

VARS = ["AIBRIDGE_ID", "AIBRIDGE_PROVIDER", "AIBRIDGE_ROUTE", "AIBRIDGE_MODEL",
        "AIBRIDGE_STREAM", "AIBRIDGE_CREDENTIAL", "AIBRIDGE_KEY", "AIBRIDGE_ATTEMPTS",
        "AIBRIDGE_OUTCOME", "AIBRIDGE_INPUT_TOKENS", "AIBRIDGE_OUTPUT_TOKENS",
        "AIBRIDGE_CACHE_READ_TOKENS", "AIBRIDGE_CACHE_WRITE_TOKENS",
        "AIBRIDGE_REASONING_TOKENS", "AIBRIDGE_TTFB_MS"]
# Tab-separated NAME=value pairs (mod_log_config turns \t into a tab), and
# the process that logged the request.
VARS_FORMAT = 'LogFormat "PID=%P\\t' + "\\t".join(f"{v}=%{{{v}}}e" for v in VARS) + '" vars'

FIELDS = {"id", "start", "end", "duration_ms", "ttfb_ms", "user", "client", "provider", "route",
          "model", "stream", "credential", "key", "keys_tried", "attempts", "outcome", "status",
          "upstream_status", "input_tokens", "output_tokens", "cache_read_tokens",
          "cache_write_tokens", "reasoning_tokens", "bytes_in", "bytes_out", "tools",
          "iterations", "tool_calls"}
TOKEN_FIELDS = ["input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                "reasoning_tokens"]
TOKEN_VARS = ["AIBRIDGE_INPUT_TOKENS", "AIBRIDGE_OUTPUT_TOKENS", "AIBRIDGE_CACHE_READ_TOKENS",
              "AIBRIDGE_CACHE_WRITE_TOKENS", "AIBRIDGE_REASONING_TOKENS"]
# The mock's usage: input, output, cache read, cache write, reasoning.
OPENAI_TOKENS = (21, 9, 5, 0, 3)
ANTHROPIC_TOKENS = (21, 9, 5, 7, 0)
NO_TOKENS = (0, 0, 0, 0, 0)
ROUTE_NAMES = {CHAT: "chat", RESPONSES: "responses", MESSAGES: "messages"}
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


# --------------------------------------------------------------------------
# Helpers


def variables(httpd, n):
    """The request variables of the n requests logged so far (access-log lines
    are written after the response went out)."""
    lines = log_lines(os.path.join(httpd.dir, "vars.log"), n)
    return [dict(pair.split("=", 1) for pair in line.split("\t")) for line in lines]


def usage_path(httpd):
    return os.path.join(httpd.dir, "usage.jsonl")


def one(httpd):
    """(variables, usage record) of the only request so far."""
    [v] = variables(httpd, 1)
    [rec] = records(usage_path(httpd), 1)
    assert rec["id"] == v["AIBRIDGE_ID"]
    return v, rec


def tokens(rec):
    return tuple(rec[f] for f in TOKEN_FIELDS)


def var_tokens(v):
    return tuple(int(v[name]) for name in TOKEN_VARS)


def parse_time(text):
    assert TIME.fullmatch(text), text
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)


@pytest.fixture
def start(httpd, mock):
    """start(*options, usage_log=..., providers=[...], extra="", mpm="event"):
    httpd with providers openai and anthropic (pool main: KEYS, cooldown=60,
    plus `options`), the request variables logged to vars.log and, unless
    usage_log is None, AIBridgeUsageLog usage.jsonl."""
    def start(*options, usage_log="", providers=(), extra="", mpm="event", keys=KEYS):
        if usage_log == "":
            usage_log = f'"{usage_path(httpd)}"'
        main = [" ".join([f"{name} {name} {mock.url} pool=main cooldown=60", *options])
                for name in ("openai", "anthropic")]
        observe = [VARS_FORMAT, f'CustomLog "{httpd.dir}/vars.log" vars']
        if usage_log is not None:
            observe.append(f"AIBridgeUsageLog {usage_log}")
        httpd.write_config(bridge_config(mock.url, keys=keys, providers=[*main, *providers],
                                         extra="\n".join([*observe, extra])), mpm=mpm)
        httpd.start()
        return httpd
    return start


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


def body_length(route, stream=False):
    return len(json.dumps(request_body(route, stream)).encode())


# --------------------------------------------------------------------------
# Request variables and the record

@pytest.mark.sanitize
def test_variables_and_record_of_a_chat(start, mock):
    httpd = start()
    reply = call(httpd, CHAT)
    assert_complete(reply, CHAT, False)
    v, rec = one(httpd)
    assert re.fullmatch(r"[0-9a-f]{16}", v["AIBRIDGE_ID"]), v
    assert int(v["AIBRIDGE_TTFB_MS"]) >= 0
    expected = {"AIBRIDGE_PROVIDER": "openai", "AIBRIDGE_ROUTE": "chat",
                "AIBRIDGE_MODEL": "gpt-4o-mini", "AIBRIDGE_STREAM": "false",
                "AIBRIDGE_CREDENTIAL": "pool", "AIBRIDGE_KEY": HINTS[0],
                "AIBRIDGE_ATTEMPTS": "1", "AIBRIDGE_OUTCOME": "ok",
                "AIBRIDGE_INPUT_TOKENS": "21", "AIBRIDGE_OUTPUT_TOKENS": "9",
                "AIBRIDGE_CACHE_READ_TOKENS": "5", "AIBRIDGE_CACHE_WRITE_TOKENS": "0",
                "AIBRIDGE_REASONING_TOKENS": "3"}
    assert {k: v[k] for k in expected} == expected

    assert set(rec) == FIELDS, set(rec) ^ FIELDS
    for name in TOKEN_FIELDS + ["duration_ms", "ttfb_ms", "attempts", "status",
                                "upstream_status", "bytes_in", "bytes_out"]:
        assert type(rec[name]) is int, (name, rec[name])
    begun, ended = parse_time(rec["start"]), parse_time(rec["end"])
    now = datetime.datetime.now(datetime.timezone.utc)
    assert now - datetime.timedelta(seconds=60) < begun <= ended <= now
    assert (ended - begun) / datetime.timedelta(milliseconds=1) == rec["duration_ms"]
    assert 0 <= rec["ttfb_ms"] <= rec["duration_ms"]
    assert rec["ttfb_ms"] == int(v["AIBRIDGE_TTFB_MS"])
    assert {k: rec[k] for k in FIELDS - {"id", "start", "end", "duration_ms", "ttfb_ms"}} == {
        "user": None, "client": "127.0.0.1", "provider": "openai", "route": "chat",
        "model": "gpt-4o-mini", "stream": False, "credential": "pool", "key": HINTS[0],
        "keys_tried": [HINTS[0]], "attempts": 1, "outcome": "ok", "status": 200,
        "upstream_status": 200, "input_tokens": 21, "output_tokens": 9,
        "cache_read_tokens": 5, "cache_write_tokens": 0, "reasoning_tokens": 3,
        "bytes_in": body_length(CHAT), "bytes_out": len(reply.body), "tools": [],
        "iterations": None, "tool_calls": []}


def test_variables_after_failover(start, mock):
    httpd = start()
    mock.script(KEYS[0], r429(5))
    mock.script(KEYS[1], {"status": 401})
    reply = call(httpd, MESSAGES, stream=True, provider="anthropic")
    assert_complete(reply, MESSAGES, True)
    v, rec = one(httpd)
    assert (v["AIBRIDGE_PROVIDER"], v["AIBRIDGE_ROUTE"], v["AIBRIDGE_STREAM"]) == \
        ("anthropic", "messages", "true")
    assert (v["AIBRIDGE_KEY"], v["AIBRIDGE_ATTEMPTS"]) == (HINTS[2], "3")
    assert (rec["key"], rec["keys_tried"], rec["attempts"]) == (HINTS[2], HINTS, 3)
    assert (rec["status"], rec["upstream_status"], rec["model"]) == \
        (200, 200, "claude-sonnet-4-5")
    # Every line about the interception carries its id.
    lines = httpd.log_lines(r"interception ")
    assert len(lines) == 2 and all(f"interception {rec['id']}: " in l for l in lines), lines


def test_ttfb_and_duration(start, mock):
    httpd = start()
    # Headers after 300 ms, then events 200 ms apart.
    mock.script(KEYS[0], {"delay_ms": 300, "events": [
        {"event": "message_start", "data": {"type": "message_start", "message": {
            "id": "m", "type": "message", "role": "assistant", "content": [],
            "usage": {"input_tokens": 4, "output_tokens": 1}}}},
        {"event": "message_delta", "delay_ms": 200, "data": {
            "type": "message_delta", "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 2}}},
        {"event": "message_stop", "delay_ms": 200, "data": {"type": "message_stop"}}]})
    assert call(httpd, MESSAGES, stream=True, provider="anthropic").status == 200
    v, rec = one(httpd)
    assert 280 <= rec["ttfb_ms"] < 600, rec
    assert rec["duration_ms"] >= rec["ttfb_ms"] + 380, rec
    assert tokens(rec) == (4, 2, 0, 0, 0)


def test_byok_credential(start, mock):
    httpd = start("byok=on")
    reply = call(httpd, CHAT, headers=client_key_headers("openai", CLIENT_KEY))
    assert reply.status == 200
    assert mock.keys() == [CLIENT_KEY]
    v, rec = one(httpd)
    assert (v["AIBRIDGE_CREDENTIAL"], v["AIBRIDGE_KEY"], v["AIBRIDGE_ATTEMPTS"]) == \
        ("byok", "byok", "1")
    assert (rec["credential"], rec["key"], rec["keys_tried"]) == ("byok", "byok", ["byok"])


def abort_stream(httpd, mock):
    """A client that leaves a chat stream after its first event."""
    mock.script(KEYS[0], {"events": [{"data": {"choices": [{"index": 0, "delta": {
        "content": f"t{i}"}}]}} for i in range(40)] + [{"data": "[DONE]"}],
        "event_delay_ms": 100})
    body = json.dumps(request_body(CHAT, stream=True)).encode()
    with socket.create_connection(("127.0.0.1", httpd.port), timeout=10) as sock:
        sock.sendall(b"POST /ai/openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        received = b""
        while b"data:" not in received:
            received += sock.recv(4096)


# outcome -> (how to produce it, status, upstream_status, hints of the keys tried)
OUTCOMES = {
    "ok": (lambda h, m: call(h, CHAT), 200, 200, HINTS[:1]),
    "upstream_error": (lambda h, m: (m.script(KEYS[0], {"status": 500}), call(h, CHAT)),
                       500, 500, HINTS[:1]),
    "exhausted": (lambda h, m: ([m.script(k, r429(5)) for k in KEYS], call(h, CHAT)),
                  429, 429, HINTS),
    "transport_error": (lambda h, m: call(h, CHAT, provider="dead"), 502, None, HINTS[:1]),
    "client_abort": (abort_stream, 200, 200, HINTS[:1]),
    "rejected": (lambda h, m: call(h, CHAT, body=b"{not json"), 400, None, []),
}


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_outcome(start, mock, outcome):
    produce, status, upstream_status, tried = OUTCOMES[outcome]
    httpd = start(providers=[f"dead openai http://127.0.0.1:{free_port()} pool=main"])
    httpd.allow_errors(r"unreachable")
    produce(httpd, mock)
    v, rec = one(httpd)
    assert v["AIBRIDGE_OUTCOME"] == rec["outcome"] == outcome
    assert (rec["status"], rec["upstream_status"], rec["keys_tried"]) == \
        (status, upstream_status, tried)
    assert int(v["AIBRIDGE_ATTEMPTS"]) == rec["attempts"] == len(tried)
    assert v["AIBRIDGE_KEY"] == (tried[-1] if tried else "-")
    assert rec["key"] == (tried[-1] if tried else None)
    assert var_tokens(v) == tokens(rec)
    if outcome == "rejected":
        assert (rec["model"], v["AIBRIDGE_MODEL"]) == (None, "-")
    else:
        assert rec["model"] == v["AIBRIDGE_MODEL"] == "gpt-4o-mini"


def test_rejections_are_recorded(start, mock):
    httpd = start()
    call(httpd, CHAT, provider="nope")
    call(httpd, "/v1/files", method="GET")
    unknown, route = records(usage_path(httpd), 2)
    assert (unknown["provider"], unknown["route"], unknown["outcome"], unknown["status"]) == \
        (None, None, "rejected", 404)
    assert (route["provider"], route["route"], route["outcome"], route["status"]) == \
        ("openai", None, "rejected", 404)
    assert all(r["attempts"] == 0 and r["keys_tried"] == [] for r in (unknown, route))
    assert mock.requests() == []


# --------------------------------------------------------------------------
# Token usage from every route

@pytest.mark.parametrize("provider, route, stream, expected", [
    pytest.param("openai", CHAT, False, OPENAI_TOKENS, id="chat-blocking"),
    pytest.param("openai", CHAT, True, OPENAI_TOKENS, id="chat-streaming"),
    pytest.param("openai", RESPONSES, False, OPENAI_TOKENS, id="responses-blocking"),
    pytest.param("openai", RESPONSES, True, OPENAI_TOKENS, id="responses-streaming"),
    pytest.param("anthropic", MESSAGES, False, ANTHROPIC_TOKENS, id="messages-blocking"),
    pytest.param("anthropic", MESSAGES, True, ANTHROPIC_TOKENS, id="messages-streaming"),
])
def test_tokens_of_every_route(start, mock, provider, route, stream, expected):
    httpd = start()
    reply = call(httpd, route, stream, provider=provider)
    assert_complete(reply, route, stream)
    v, rec = one(httpd)
    assert tokens(rec) == var_tokens(v) == expected
    assert (rec["route"], rec["stream"], rec["tools"]) == (ROUTE_NAMES[route], stream, [])


@pytest.mark.parametrize("provider, method, path", [
    ("openai", "POST", "/v1/embeddings"),   # the mock's answer has a usage
    ("openai", "GET", "/v1/models"),
    ("anthropic", "POST", COUNT_TOKENS),    # {"input_tokens": 21}
])
def test_passthrough_records_no_tokens(start, mock, provider, method, path):
    httpd = start()
    body = request_body(COUNT_TOKENS) if path == COUNT_TOKENS else \
        {"model": "text-embedding-3-small", "input": "Hi"} if method == "POST" else None
    assert call(httpd, path, method=method, body=body, provider=provider).status == 200
    v, rec = one(httpd)
    assert (rec["route"], rec["outcome"], rec["tools"]) == ("passthrough", "ok", [])
    assert tokens(rec) == var_tokens(v) == NO_TOKENS


@pytest.mark.sanitize
def test_chat_stream_usage_is_asked_for_and_taken_back(start, mock):
    httpd = start()
    reply = call(httpd, CHAT, stream=True)
    assert_complete(reply, CHAT, True)
    # Upstream was asked for usage ...
    [seen] = mock.requests()
    assert seen["body"] == {**request_body(CHAT, True), "stream_options": {"include_usage": True}}
    # ... and the client sees the stream it asked for: no usage-only chunk, no
    # "usage":null on the others.
    data = reply.data()
    assert len(data) == 8 and data[-1] == "[DONE]"
    assert all("usage" not in chunk and chunk["choices"] for chunk in data[:-1]), data
    assert b'"usage"' not in reply.body
    v, rec = one(httpd)
    assert tokens(rec) == var_tokens(v) == OPENAI_TOKENS
    assert rec["bytes_out"] == len(reply.body)


def test_chat_stream_usage_asked_by_the_client_is_untouched(start, mock):
    httpd = start()
    body = {**request_body(CHAT, True), "stream_options": {"include_usage": True}}
    reply = call(httpd, CHAT, body=body)
    [seen] = mock.requests()
    assert seen["body"] == body
    data = reply.data()
    assert len(data) == 9 and data[-1] == "[DONE]"
    assert all(chunk["usage"] is None for chunk in data[:-2])
    assert data[-2]["choices"] == [] and data[-2]["usage"]["total_tokens"] == 30
    _, rec = one(httpd)
    assert tokens(rec) == OPENAI_TOKENS


def test_stripped_stream_keeps_upstream_timing(start, mock):
    httpd = start()
    chunks = [{"id": "c", "object": "chat.completion.chunk", "usage": None,
               "choices": [{"index": 0, "delta": {"content": f"t{i}"}}]} for i in range(5)]
    usage = {"id": "c", "object": "chat.completion.chunk", "choices": [],
             "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}}
    mock.script(KEYS[0], {"events": [{"data": c} for c in chunks + [usage]]
                          + [{"data": "[DONE]"}], "event_delay_ms": 200})
    reply = call(httpd, CHAT, stream=True)
    assert reply.status == 200
    expected = [json.dumps({k: v for k, v in c.items() if k != "usage"}, separators=(",", ":"))
                for c in chunks] + ["[DONE]"]
    assert [data for _, data in reply.events] == expected
    gaps = [b - a for a, b in zip(reply.times, reply.times[1:])]
    assert all(gap >= 0.12 for gap in gaps), gaps
    assert reply.times[0] - reply.sent < 0.6, reply.times[0] - reply.sent
    _, rec = one(httpd)
    assert tokens(rec) == (11, 5, 0, 0, 0)


# --------------------------------------------------------------------------
# Tool calls

def chat_tool_calls(names):
    return [{"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": "{}"}}
            for i, n in enumerate(names)]


def chat_with_tools(names):
    return {"id": "chatcmpl-t", "object": "chat.completion", "model": "m", "choices": [{
        "index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None, "tool_calls": chat_tool_calls(names)}}],
        "usage": {"prompt_tokens": 21, "completion_tokens": 9}}


def chat_chunk(delta, finish=None):
    return {"data": {"id": "c", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish}]}}


def messages_event(kind, **fields):
    return {"event": kind, "data": {"type": kind, **fields}}


def responses_event(kind, seq, **fields):
    return {"event": kind, "data": {"type": kind, "sequence_number": seq, **fields}}


FUNCTION_CALL = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "lookup",
                 "arguments": "{}", "status": "completed"}
RESPONSES_USAGE = {"input_tokens": 21, "output_tokens": 9}
TOOL_SCRIPTS = {
    "chat-blocking": ("openai", CHAT, False, {"body": chat_with_tools(["get_weather", "get_time"])},
                      ["get_weather", "get_time"]),
    "chat-streaming": ("openai", CHAT, True, {"events": [
        chat_chunk({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_0",
                    "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
        chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
        chat_chunk({"tool_calls": [{"index": 1, "id": "call_1", "type": "function",
                                    "function": {"name": "get_time", "arguments": "{}"}}]}),
        chat_chunk({}, "tool_calls"),
        {"data": {"id": "c", "object": "chat.completion.chunk", "choices": [],
                  "usage": {"prompt_tokens": 21, "completion_tokens": 9}}},
        {"data": "[DONE]"}]}, ["get_weather", "get_time"]),
    "responses-blocking": ("openai", RESPONSES, False, {"body": {
        "id": "resp_t", "object": "response", "status": "completed",
        "output": [FUNCTION_CALL], "usage": RESPONSES_USAGE}}, ["lookup"]),
    # The name comes once, from output_item.added, not again from response.completed.
    "responses-streaming": ("openai", RESPONSES, True, {"events": [
        responses_event("response.created", 0, response={"id": "resp_t", "output": []}),
        responses_event("response.output_item.added", 1, output_index=0,
                        item={**FUNCTION_CALL, "arguments": "", "status": "in_progress"}),
        responses_event("response.function_call_arguments.delta", 2, item_id="fc_1",
                        output_index=0, delta="{}"),
        responses_event("response.output_item.done", 3, output_index=0, item=FUNCTION_CALL),
        responses_event("response.completed", 4, response={
            "id": "resp_t", "status": "completed", "output": [FUNCTION_CALL],
            "usage": RESPONSES_USAGE})]}, ["lookup"]),
    "messages-blocking": ("anthropic", MESSAGES, False, {"body": {
        "id": "msg_t", "type": "message", "role": "assistant", "stop_reason": "tool_use",
        "content": [{"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {}},
                    {"type": "tool_use", "id": "toolu_2", "name": "fetch", "input": {}}],
        "usage": {"input_tokens": 21, "output_tokens": 9}}}, ["search", "fetch"]),
    "messages-streaming": ("anthropic", MESSAGES, True, {"events": [
        messages_event("message_start", message={
            "id": "msg_t", "type": "message", "role": "assistant", "content": [],
            "usage": {"input_tokens": 21, "output_tokens": 1}}),
        messages_event("content_block_start", index=0, content_block={
            "type": "tool_use", "id": "toolu_1", "name": "search", "input": {}}),
        messages_event("content_block_delta", index=0,
                       delta={"type": "input_json_delta", "partial_json": "{}"}),
        messages_event("content_block_stop", index=0),
        messages_event("message_delta", delta={"stop_reason": "tool_use"},
                       usage={"output_tokens": 9}),
        messages_event("message_stop")]}, ["search"]),
}


@pytest.mark.parametrize("case", TOOL_SCRIPTS)
def test_tool_call_names(start, mock, case):
    provider, route, stream, spec, names = TOOL_SCRIPTS[case]
    httpd = start()
    mock.script(KEYS[0], spec)
    assert call(httpd, route, stream, provider=provider).status == 200
    _, rec = one(httpd)
    assert rec["tools"] == names
    assert (rec["input_tokens"], rec["output_tokens"]) == (21, 9)


# --------------------------------------------------------------------------
# The usage log: user, pipes, virtual hosts, several processes

def test_record_names_the_httpd_user(start, mock, htpasswd):
    httpd = start(extra=f"""
<Location /ai>
  AuthType Basic
  AuthName bridge
  AuthUserFile "{htpasswd}"
  Require valid-user
</Location>""")
    url = f"{httpd.url}/ai/openai{CHAT}"
    r = requests.post(url, json=request_body(CHAT), auth=("alice", "secret"), timeout=10)
    assert r.status_code == 200
    [rec] = records(usage_path(httpd), 1)
    assert (rec["user"], rec["client"], rec["credential"]) == ("alice", "127.0.0.1", "pool")


ROTATELOGS = "/usr/bin/rotatelogs"


@pytest.mark.parametrize("logger", ["cat", "rotatelogs"])
def test_piped_usage_log(httpd, start, mock, logger):
    if logger == "rotatelogs" and not os.access(ROTATELOGS, os.X_OK):
        pytest.skip(f"no {ROTATELOGS}")
    if logger == "cat":
        command, pattern = f"$/bin/cat >> {httpd.dir}/piped.jsonl", "piped.jsonl"
    else:
        # -f: the file exists from the start; its name ends in the period's start.
        command, pattern = f"{ROTATELOGS} -f {httpd.dir}/rotated.jsonl 86400", "rotated.jsonl.*"
    start(usage_log=f'"|{command}"')
    assert call(httpd, CHAT, stream=True).status == 200
    assert call(httpd, MESSAGES, stream=True, provider="anthropic").status == 200
    assert wait_for(lambda: glob.glob(os.path.join(httpd.dir, pattern)))
    [path] = glob.glob(os.path.join(httpd.dir, pattern))
    chat, messages = sorted(records(path, 2), key=lambda r: r["route"])
    assert {r["id"] for r in (chat, messages)} == {v["AIBRIDGE_ID"] for v in variables(httpd, 2)}
    assert tokens(chat) == OPENAI_TOKENS and tokens(messages) == ANTHROPIC_TOKENS
    assert not os.path.exists(usage_path(httpd))


def test_virtual_hosts_share_the_main_servers_log(httpd, start, mock):
    # A host without any directive of ours, one with a provider of its own,
    # and one with its own log.
    bare, merged, own = free_port(), free_port(), free_port()
    start(extra=f"""
Listen 127.0.0.1:{bare}
Listen 127.0.0.1:{merged}
Listen 127.0.0.1:{own}
<VirtualHost 127.0.0.1:{bare}>
  ServerName bare.test
</VirtualHost>
<VirtualHost 127.0.0.1:{merged}>
  ServerName merged.test
  AIBridgeProvider local openai {mock.url} pool=main
</VirtualHost>
<VirtualHost 127.0.0.1:{own}>
  ServerName own.test
  AIBridgeUsageLog "{httpd.dir}/own.jsonl"
</VirtualHost>""")
    for port, provider in ((httpd.port, "openai"), (bare, "openai"), (merged, "local"),
                           (merged, "openai"), (own, "openai")):
        r = requests.post(f"http://127.0.0.1:{port}/ai/{provider}{CHAT}",
                          json=request_body(CHAT), timeout=10 * SLOW)
        assert r.status_code == 200
    main = records(usage_path(httpd), 4)
    [mine] = records(os.path.join(httpd.dir, "own.jsonl"), 1)
    assert {r["id"] for r in main + [mine]} == {v["AIBRIDGE_ID"] for v in variables(httpd, 5)}
    assert sorted(r["provider"] for r in main) == ["local", "openai", "openai", "openai"]
    assert all(tokens(r) == OPENAI_TOKENS for r in main + [mine])


# Sixteen processes from the start, each serving many connections (the
# suite's prefork set-up forks a process per connection, one a second at first).
PREFORK = """StartServers 16
MinSpareServers 16
MaxSpareServers 16
MaxRequestWorkers 16
MaxConnectionsPerChild 0"""


@pytest.mark.parametrize("kind", ["file", "pipe"])
def test_concurrent_long_lines_stay_whole(httpd, start, mock, kind):
    # 50 requests at once in 16 processes, 34 of them with lines far longer
    # than PIPE_BUF (4096): a pipe write that long is not atomic, and while
    # it waits for room any other line could land inside it. The pipe's
    # reader sleeps a second first, so that writers do wait on a full pipe.
    path = usage_path(httpd)
    usage_log = f'"{path}"' if kind == "file" else f'"|$sleep 1; exec /bin/cat >> {path}"'
    tools = [f"tool_{i:03d}_" + "n" * 60 for i in range(150)]
    start(usage_log=usage_log, mpm="prefork", providers=[f"tooly openai {mock.url} pool=tools"],
          extra=f"AIBridgeKeyPool tools {TOOLS_KEY}\n{PREFORK}")
    mock.script(TOOLS_KEY, always={"body": chat_with_tools(tools)})
    httpd.allow_errors(r"server reached MaxRequestWorkers")

    def request(i):
        if i % 3 == 1:   # a long list of tool names
            return call(httpd, CHAT, provider="tooly").status, None
        model = f"model-{i:02d}" + ("-" + "m" * 10000 if i % 3 == 0 else "")
        stream = bool(i % 2)
        return call(httpd, CHAT, body={**request_body(CHAT, stream), "model": model}).status, model

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        results = list(pool.map(request, range(50)))
    assert all(status == 200 for status, _ in results), results
    recs = records(path, 50)   # every line is one whole JSON object
    models = [model for _, model in results if model]
    assert sorted(r["model"] for r in recs if r["provider"] == "openai") == sorted(models)
    tooly = [r for r in recs if r["provider"] == "tooly"]
    assert len(tooly) == 17 and all(r["tools"] == tools for r in tooly)
    assert sum(len(line) >= 4096 for line in read_lines(path)) == 34
    assert len({r["id"] for r in recs}) == 50
    assert len({v["PID"] for v in variables(httpd, 50)}) > 1


# --------------------------------------------------------------------------
# Error-log lines

def test_marks_and_exhaustion_are_logged_with_the_id(start, mock):
    httpd = start()
    mock.script(KEYS[0], r429(5))
    mock.script(KEYS[1], {"status": 401})
    mock.script(KEYS[2], r429(3))
    assert call(httpd, CHAT).status == 429
    [v] = variables(httpd, 1)
    prefix = rf"interception {v['AIBRIDGE_ID']}: provider 'openai': "
    expected = [
        ("info", rf"key #1 \({re.escape(HINTS[0])}\) of pool 'main' answered 429: "
                 r"cooling down for 5\.000 s \(Retry-After\), trying the next key"),
        ("warn", rf"key #2 \({re.escape(HINTS[1])}\) of pool 'main' answered 401: "
                 r"disabled until re-enabled, trying the next key"),
        ("info", rf"key #3 \({re.escape(HINTS[2])}\) of pool 'main' answered 429: "
                 r"cooling down for 3\.000 s \(Retry-After\), trying the next key"),
        ("warn", r"every key of pool 'main' is rate-limited, retry after [1-3] s"),
    ]
    lines = httpd.log_lines(r"\[aibridge:")
    assert len(lines) == len(expected), lines
    for line, (level, message) in zip(lines, expected):
        assert re.search(rf"\[aibridge:{level}\] .*\[client 127\.0\.0\.1:\d+\] "
                         rf"{prefix}{message}$", line), line


@pytest.mark.parametrize("level, info_shown", [("warn aibridge:debug", True),
                                               ("debug aibridge:warn", False)])
def test_per_module_log_level(start, mock, level, info_shown):
    httpd = start(extra=f"LogLevel {level}")
    mock.script(KEYS[0], r429(5))
    mock.script(KEYS[1], {"status": 401})
    assert call(httpd, CHAT).status == 200
    [v] = variables(httpd, 1)
    id_ = v["AIBRIDGE_ID"]
    assert bool(httpd.log_lines(rf"\[aibridge:info\] .*interception {id_}: .*cooling down")) \
        == info_shown
    assert httpd.log_lines(rf"\[aibridge:warn\] .*interception {id_}: .*disabled until")


# --------------------------------------------------------------------------
# The shipped LogFormat, and no key in any log

def shipped_log_format():
    with open(os.path.join(TOP, "conf", "aibridge.conf")) as f:
        inside = f.read().split("<IfModule aibridge_module>", 1)[1].split("</IfModule>", 1)[0]
    [line] = [l.strip() for l in inside.splitlines()
              if re.fullmatch(r"\s*LogFormat\s.*\saibridge\s*", l)]
    return line


def test_conf_ships_a_log_format_with_every_variable():
    line = shipped_log_format()
    assert [v for v in VARS if f"%{{{v}}}e" not in line] == []


def test_keys_never_reach_a_log(httpd, start, mock):
    start("byok=on", extra=f'{shipped_log_format()}\nCustomLog "{httpd.dir}/aibridge.log" aibridge')
    mock.script(KEYS[0], r429(5))
    mock.script(KEYS[1], {"status": 401})
    mock.script(CLIENT_KEY, {"status": 401}, {"status": 200})
    assert call(httpd, CHAT).status == 200
    assert call(httpd, RESPONSES, stream=True).status == 200
    assert call(httpd, CHAT, headers=client_key_headers("openai", CLIENT_KEY)).status == 401
    assert call(httpd, MESSAGES, headers=client_key_headers("anthropic", CLIENT_KEY),
                provider="anthropic").status == 200
    assert call(httpd, "/v1/models", method="GET").status == 200
    records(usage_path(httpd), 5)
    variables(httpd, 5)
    shipped = read_lines(os.path.join(httpd.dir, "aibridge.log"))
    assert len(shipped) == 5
    assert f"credential=pool key={HINTS[2]} attempts=3 outcome=ok" in shipped[0]
    assert "credential=byok key=byok attempts=1 outcome=upstream_error" in shipped[2]
    assert "in=21 out=9 cache_read=5 cache_write=7 reasoning=0" in shipped[3]
    texts = {name: "\n".join(read_lines(os.path.join(httpd.dir, name)))
             for name in ("aibridge.log", "vars.log", "access.log", "usage.jsonl", "error.log")}
    for key in KEYS + (CLIENT_KEY,):
        for name, text in texts.items():
            assert key[4:-4] not in text, (key, name)
