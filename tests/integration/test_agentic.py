"""The agentic loop end to end (issue #9): tools of a real MCP server
(server-everything, tests/integration/mcp_server.py) injected into the
requests of the three bridged routes, the model's calls of them answered by
the module (MCP tools/call) and the model asked again, each iteration with
its own key walk; blocking and streaming; the client's own tools; the
iteration limit; failover inside the loop; an MCP server that is down;
allow=/deny=, AIBridgeInjectTools; the records and metrics; configuration
errors.

The mock upstream plays the model: a "tool turn" is scripted in the
provider's real shape (a blocking body, or the SSE events of a stream), the
mock's default answer ("Hello from the mock upstream.") ends the loop.
"""

import itertools
import json
import os
import re
from collections import namedtuple

import pytest
import requests

from bridging import (CHAT, COUNT_TOKENS, MESSAGES, REPLY, RESPONSES, call, log_lines,
                      log_records, r429, request_body, wait_for)
from harness import bridge_config, free_port
from mcp_server import McpServer, _rpc
from status_pages import Metrics

ROUTES = [pytest.param(CHAT, id="chat"), pytest.param(RESPONSES, id="responses"),
          pytest.param(MESSAGES, id="messages")]
STREAMS = [pytest.param(False, id="blocking"), pytest.param(True, id="streaming")]
route_param = pytest.mark.parametrize("route", ROUTES)
stream_param = pytest.mark.parametrize("stream", STREAMS)

PREFIX = "bmcp_tools_"
METRICS = "/metrics"
LIMIT_MESSAGE = "the model still called tools after {} upstream calls (AIBridgeMaxToolIterations)"
WARNING = r"MCP server 'tools': .*its tools are left out"
# The usage of every scripted tool turn; the mock's default answer has 21 in, 9 out.
TURN_IN, TURN_OUT = 100, 20
DEFAULT_IN, DEFAULT_OUT = 21, 9


def provider_of(route):
    return "anthropic" if route == MESSAGES else "openai"


# --------------------------------------------------------------------------
# The MCP server, started once

def list_tools(server):
    """The server's tools (name -> tool), by hand over JSON-RPC."""
    _, headers = _rpc(server.url, {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "test_agentic", "version": "1"}}})
    session = headers["Mcp-Session-Id"]
    _rpc(server.url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    tools, _ = _rpc(server.url, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, session)
    return {t["name"]: t for t in tools["result"]["tools"]}


@pytest.fixture(scope="session")
def mcp():
    server = McpServer().start()
    try:
        server.tools = list_tools(server)
        assert {"echo", "get-sum"} <= set(server.tools), server.tools
        yield server
    finally:
        server.stop()


def usage_path(httpd):
    return os.path.join(httpd.dir, "usage.jsonl")


@pytest.fixture
def start(httpd, mock, mcp):
    """start(keys=, mcp_options=, provider_options=, servers=, extra=, location_extra=):
    httpd with providers openai and anthropic (pool main, cooldown=60,
    mcp=tools unless provider_options says otherwise), MCP server `tools`
    (the real one, plus mcp_options), the usage log, the request variables
    of the loop in agent.log and the metrics at /metrics."""
    def start_(keys=("k0", "k1", "k2"), mcp_options="", provider_options="mcp=tools",
               servers=(), extra=""):
        providers = [f"{name} {name} {mock.url} pool=main cooldown=60 {provider_options}"
                     .rstrip() for name in ("openai", "anthropic")]
        lines = [f"AIBridgeMCPServer tools {mcp.url} {mcp_options}".rstrip(), *servers,
                 f'AIBridgeUsageLog "{usage_path(httpd)}"',
                 'LogFormat "ITER=%{AIBRIDGE_ITERATIONS}e CALLS=%{AIBRIDGE_TOOL_CALLS}e" agent',
                 f'CustomLog "{httpd.dir}/agent.log" agent',
                 f"<Location {METRICS}>", "  SetHandler aibridge-metrics", "</Location>",
                 extra]
        httpd.write_config(bridge_config(mock.url, keys=keys, providers=providers,
                                         extra="\n".join(lines)))
        httpd.start()
        return httpd
    return start_


# --------------------------------------------------------------------------
# Requests

CLIENT_SCHEMA = {"type": "object", "properties": {"word": {"type": "string"}},
                 "required": ["word"]}
CLIENT_TOOL = {
    CHAT: {"type": "function", "function": {"name": "lookup", "description": "Looks a word up",
                                            "parameters": CLIENT_SCHEMA}},
    RESPONSES: {"type": "function", "name": "lookup", "description": "Looks a word up",
                "parameters": CLIENT_SCHEMA},
    MESSAGES: {"name": "lookup", "description": "Looks a word up", "input_schema": CLIENT_SCHEMA},
}


def client_body(route, stream, client_tool=True, **more):
    body = request_body(route, stream)
    if client_tool:
        body["tools"] = [CLIENT_TOOL[route]]
    body.update(more)
    return body


def ask(httpd, route, stream, body=None, **kw):
    if body is None:
        body = client_body(route, stream)
    return call(httpd, route, stream, body=body, provider=provider_of(route), **kw)


def tool_names(route, body):
    """The names of the tools of an upstream request body, in order."""
    return [t["function"]["name"] if route == CHAT else t["name"] for t in body.get("tools", [])]


def injected_entry(route, name, tool):
    """An MCP tool as the module must inject it on `route`."""
    if route == CHAT:
        return {"type": "function", "function": {"name": name, "description": tool["description"],
                                                 "parameters": tool["inputSchema"]}}
    if route == RESPONSES:
        return {"type": "function", "name": name, "description": tool["description"],
                "parameters": tool["inputSchema"]}
    return {"name": name, "description": tool["description"], "input_schema": tool["inputSchema"]}


def assert_parallel_off(route, body):
    if route == MESSAGES:
        assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}, body
    else:
        assert body["parallel_tool_calls"] is False, body


def assert_untouched(route, sent, client):
    """The upstream got the client's body as it was: no tools added."""
    if route == CHAT and client.get("stream") and "stream_options" not in client:
        sent = {k: v for k, v in sent.items() if k != "stream_options"}  # usage asked for
    assert sent == client


# --------------------------------------------------------------------------
# The model's tool turns, in each provider's real shape

Call = namedtuple("Call", "id name args")


def calls_of(route, *named):
    """Call tuples for (name, args) pairs, with ids in the route's style."""
    prefix = "toolu_0" if route == MESSAGES else "call_0"
    return [Call(f"{prefix}{n}", name, args) for n, (name, args) in enumerate(named, 1)]


def echo(route, message="ping-42"):
    return calls_of(route, (PREFIX + "echo", {"message": message}))


def halves(text):
    return [text[:len(text) // 2], text[len(text) // 2:]]


def chat_call(c):
    return {"id": c.id, "type": "function",
            "function": {"name": c.name, "arguments": json.dumps(c.args)}}


def responses_item(c):
    return {"id": "fc_" + c.id, "type": "function_call", "status": "completed",
            "arguments": json.dumps(c.args), "call_id": c.id, "name": c.name}


def tool_use(c):
    return {"type": "tool_use", "id": c.id, "name": c.name, "input": c.args}


def chat_usage(i, o):
    return {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}


def responses_usage(i, o):
    return {"input_tokens": i, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": o,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": i + o}


def responses_message(text, status="completed"):
    return {"id": "msg_pre", "type": "message", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]
            if status == "completed" else []}


def responses_output(calls, text=None):
    return ([responses_message(text)] if text else []) + [responses_item(c) for c in calls]


def responses_object(calls, usage=True, text=None):
    return {"id": "resp_tools", "object": "response", "created_at": 1700000000,
            "status": "completed" if usage else "in_progress", "model": "gpt-4o-mini",
            "output": responses_output(calls, text) if usage else [],
            "parallel_tool_calls": False, "error": None, "incomplete_details": None,
            "usage": responses_usage(TURN_IN, TURN_OUT) if usage else None}


def turn_body(route, calls, text=None):
    if route == CHAT:
        return {"id": "chatcmpl-tools", "object": "chat.completion", "created": 1700000000,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                     "refusal": None,
                                                     "tool_calls": [chat_call(c) for c in calls]},
                             "logprobs": None, "finish_reason": "tool_calls"}],
                "usage": chat_usage(TURN_IN, TURN_OUT)}
    if route == RESPONSES:
        return responses_object(calls, text=text)
    return {"id": "msg_tools", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": ([{"type": "text", "text": text}] if text else [])
            + [tool_use(c) for c in calls], "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": TURN_IN, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": TURN_OUT}}


def turn_events(route, calls, text=None):
    if route == CHAT:
        def chunk(choices, usage=None):
            return {"data": {"id": "chatcmpl-tools", "object": "chat.completion.chunk",
                             "created": 1700000000, "model": "gpt-4o-mini", "choices": choices,
                             "usage": usage}}

        def choice(delta, finish=None):
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        events = [chunk(choice({"role": "assistant", "content": None}))]
        if text:
            events += [chunk(choice({"content": part})) for part in halves(text)]
        for n, c in enumerate(calls):
            events.append(chunk(choice({"tool_calls": [{
                "index": n, "id": c.id, "type": "function",
                "function": {"name": c.name, "arguments": ""}}]})))
            events += [chunk(choice({"tool_calls": [{"index": n, "function": {"arguments": part}}]}))
                       for part in halves(json.dumps(c.args))]
        events.append(chunk(choice({}, "tool_calls")))
        events.append(chunk([], chat_usage(TURN_IN, TURN_OUT)))
        return events + [{"data": "[DONE]"}]
    if route == RESPONSES:
        seq = itertools.count()

        def event(kind, **fields):
            return {"event": kind, "data": {"type": kind, "sequence_number": next(seq), **fields}}
        started = responses_object(calls, usage=False)
        events = [event("response.created", response=started),
                  event("response.in_progress", response=started)]
        if text:
            position = {"item_id": "msg_pre", "output_index": 0, "content_index": 0}
            part = {"type": "output_text", "text": text, "annotations": []}
            events += [event("response.output_item.added", output_index=0,
                             item=responses_message(text, "in_progress")),
                       event("response.content_part.added", **position,
                             part={**part, "text": ""}),
                       *[event("response.output_text.delta", **position, delta=piece)
                         for piece in halves(text)],
                       event("response.output_text.done", **position, text=text),
                       event("response.content_part.done", **position, part=part),
                       event("response.output_item.done", output_index=0,
                             item=responses_message(text))]
        for n, c in enumerate(calls, 1 if text else 0):
            item = responses_item(c)
            events.append(event("response.output_item.added", output_index=n,
                                item={**item, "status": "in_progress", "arguments": ""}))
            events += [event("response.function_call_arguments.delta", item_id=item["id"],
                             output_index=n, delta=part) for part in halves(item["arguments"])]
            events.append(event("response.function_call_arguments.done", item_id=item["id"],
                                output_index=n, arguments=item["arguments"]))
            events.append(event("response.output_item.done", output_index=n, item=item))
        return events + [event("response.completed",
                               response=responses_object(calls, text=text))]

    def event(kind, **fields):
        return {"event": kind, "data": {"type": kind, **fields}}
    events = [event("message_start", message={
        "id": "msg_tools", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": TURN_IN, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "output_tokens": 1}})]
    if text:
        events += [event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
                   *[event("content_block_delta", index=0,
                           delta={"type": "text_delta", "text": piece}) for piece in halves(text)],
                   event("content_block_stop", index=0)]
    for n, c in enumerate(calls, 1 if text else 0):
        events.append(event("content_block_start", index=n,
                            content_block={"type": "tool_use", "id": c.id, "name": c.name,
                                           "input": {}}))
        events += [event("content_block_delta", index=n,
                         delta={"type": "input_json_delta", "partial_json": part})
                   for part in halves(json.dumps(c.args))]
        events.append(event("content_block_stop", index=n))
    return events + [event("message_delta", delta={"stop_reason": "tool_use", "stop_sequence": None},
                           usage={"output_tokens": TURN_OUT}),
                     event("message_stop")]


def turn(route, stream, calls, text=None):
    """A mock spec: the model says `text` (if any) and calls `calls`, blocking or streamed."""
    return ({"events": turn_events(route, calls, text)} if stream
            else {"body": turn_body(route, calls, text)})


# --------------------------------------------------------------------------
# What the continuation carries

def result_text(content):
    """A tool result's content: a string, or text blocks."""
    if isinstance(content, list):
        return "\n".join(block["text"] for block in content if block.get("type") == "text")
    return content


def continuation(route, body, calls, outputs):
    """The continuation `body` ends with the original conversation, the
    assistant turn with `calls` and a result per call, in the route's form.
    outputs: [(text, is_error)]. Returns the results' texts."""
    if route == CHAT:
        msgs = body["messages"]
        assert msgs[0] == {"role": "user", "content": "Hi"}, msgs
        turns = msgs[-1 - len(calls):]
        assistant, results = turns[0], turns[1:]
        assert assistant["role"] == "assistant", msgs
        assert [(t["id"], t["type"], t["function"]["name"], json.loads(t["function"]["arguments"]))
                for t in assistant["tool_calls"]] == [(c.id, "function", c.name, c.args)
                                                      for c in calls], assistant
        assert [set(r) for r in results] == [{"role", "tool_call_id", "content"}] * len(calls)
        assert [(r["role"], r["tool_call_id"]) for r in results] == [("tool", c.id) for c in calls]
        texts = [r["content"] for r in results]
    elif route == RESPONSES:
        items = body["input"]
        assert items[0]["role"] == "user" and "Hi" in json.dumps(items[0]), items
        tail = items[-2 * len(calls):]
        made = [i for i in tail if i["type"] == "function_call"]
        answered = [i for i in tail if i["type"] == "function_call_output"]
        assert [(i["call_id"], i["name"], json.loads(i["arguments"])) for i in made] == \
            [(c.id, c.name, c.args) for c in calls], items
        assert [set(i) for i in answered] == [{"type", "call_id", "output"}] * len(calls), items
        assert [i["call_id"] for i in answered] == [c.id for c in calls]
        texts = [i["output"] for i in answered]
    else:
        msgs = body["messages"]
        assert msgs[0] == {"role": "user", "content": "Hi"}, msgs
        assistant, user = msgs[-2], msgs[-1]
        assert assistant["role"] == "assistant", msgs
        assert [b for b in assistant["content"] if b["type"] == "tool_use"] == \
            [tool_use(c) for c in calls], assistant
        assert user["role"] == "user", msgs
        assert [(b["type"], b["tool_use_id"]) for b in user["content"]] == \
            [("tool_result", c.id) for c in calls], user
        assert [bool(b.get("is_error")) for b in user["content"]] == [e for _, e in outputs], user
        texts = [result_text(b["content"]) for b in user["content"]]
    for text, (expected, is_error) in zip(texts, outputs):
        if is_error and route != MESSAGES:
            error = json.loads(text)
            assert error["error"] is True and expected in error["message"], text
        else:
            assert expected in text if is_error else text == expected, text
    return texts


# --------------------------------------------------------------------------
# What the client gets

def sse_data(reply):
    return [json.loads(d) if d != "[DONE]" else d for _, d in reply.events]


def streamed_text(route, reply):
    data = sse_data(reply)
    if route == CHAT:
        return "".join((d["choices"][0]["delta"].get("content") or "") for d in data
                       if d != "[DONE]" and d.get("choices"))
    if route == MESSAGES:
        return "".join(d["delta"]["text"] for d in data if d["type"] == "content_block_delta"
                       and d["delta"]["type"] == "text_delta")
    return "".join(d["delta"] for d in data if d["type"] == "response.output_text.delta")


def answer_text(route, answer):
    if route == CHAT:
        return answer["choices"][0]["message"]["content"]
    if route == MESSAGES:
        return "".join(b["text"] for b in answer["content"] if b["type"] == "text")
    return "".join(part["text"] for item in answer["output"] if item["type"] == "message"
                   for part in item["content"])


def event_names(reply):
    return [e for e, _ in reply.events]


def assert_one_stream(route, reply):
    """One continuous client stream: one start, one end, consistent ids."""
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    assert b"bmcp_" not in reply.body, reply.body
    data = sse_data(reply)
    names = event_names(reply)
    if route == CHAT:
        assert data.count("[DONE]") == 1 and data[-1] == "[DONE]", reply.body
        chunks = data[:-1]
        assert len({c["id"] for c in chunks}) == 1, [c["id"] for c in chunks]
        finishes = [c["choices"][0]["finish_reason"] for c in chunks
                    if c["choices"] and c["choices"][0].get("finish_reason")]
        assert len(finishes) == 1, finishes
        return finishes[0]
    if route == MESSAGES:
        assert names.count("message_start") == 1 and names[0] == "message_start", names
        assert names.count("message_stop") == 1 and names[-1] == "message_stop", names
        assert all(e == d["type"] for e, d in zip(names, data))
        deltas = [d for d in data if d["type"] == "message_delta"]
        assert len(deltas) == 1, names
        return deltas[0]
    assert names.count("response.created") == 1 and names[0] == "response.created", names
    assert names.count("response.completed") == 1 and names[-1] == "response.completed", names
    seqs = [d["sequence_number"] for d in data]
    assert seqs == list(range(len(seqs))), seqs
    completed = data[-1]["response"]
    assert completed["id"] == data[0]["response"]["id"]
    return completed


def assert_keepalive(route, reply):
    """A keep-alive frame went out while the tools ran, before the final answer."""
    first_text = reply.body.index(b"Hello")
    if route == MESSAGES:
        names = event_names(reply)
        assert "ping" in names[:names.index("content_block_start")], names
    else:
        assert re.search(rb"(?m)^: keep-alive\n\n", reply.body[:first_text]), reply.body


def assert_summed_usage(route, usage, turns=1):
    """The usage the client got: `turns` tool turns plus the final answer."""
    i, o = turns * TURN_IN + DEFAULT_IN, turns * TURN_OUT + DEFAULT_OUT
    if route == CHAT:
        assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == \
            (i, o, i + o), usage
    elif route == RESPONSES:
        assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == \
            (i, o, i + o), usage
    else:
        assert (usage["input_tokens"], usage["output_tokens"]) == (i, o), usage


def openai_error(reply):
    return reply.json()["error"]


def assert_error_body(reply, route, status, type_, code, message_part):
    """The module's own error in the provider's shape."""
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    if route == MESSAGES:
        assert body == {"type": "error", "error": {"type": type_,
                                                   "message": body["error"]["message"]}}, body
    else:
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        assert (body["error"]["type"], body["error"]["code"]) == (type_, code), body
    assert message_part in body["error"]["message"], body
    assert "bmcp_" not in body["error"]["message"]


def assert_stream_error(reply, route, type_, code, message_part):
    """The stream, begun at 200, ends with the module's error event."""
    assert reply.status == 200, reply.body
    event, data = reply.events[-1]
    error = json.loads(data)
    if route == CHAT:
        assert event is None
        assert (error["error"]["type"], error["error"]["code"]) == (type_, code), error
        message = error["error"]["message"]
    elif route == MESSAGES:
        assert event == "error"
        assert error == {"type": "error",
                         "error": {"type": type_, "message": error["error"]["message"]}}, error
        message = error["error"]["message"]
    else:
        assert event == "error"
        last = json.loads(reply.events[-2][1])["sequence_number"]
        assert error == {"type": "error", "code": code, "message": error["message"],
                         "param": None, "sequence_number": last + 1}, error
        message = error["message"]
    assert message_part in message, error
    assert b"bmcp_" not in reply.body, reply.body
    return message


# --------------------------------------------------------------------------
# Records

def records(httpd, n):
    return log_records(usage_path(httpd), n)


def agent_vars(httpd, n):
    return log_lines(os.path.join(httpd.dir, "agent.log"), n)


def tool_runs(rec):
    """(server, tool, outcome) of the record's tool_calls, checking their fields."""
    for run in rec["tool_calls"]:
        assert set(run) == {"server", "tool", "duration_ms", "outcome", "error"}, run
        assert isinstance(run["duration_ms"], int) and run["duration_ms"] >= 0, run
        assert (run["error"] is None) == (run["outcome"] == "ok"), run
    return [(r["server"], r["tool"], r["outcome"]) for r in rec["tool_calls"]]


def metrics(httpd):
    r = httpd.get(METRICS)
    assert r.status_code == 200, r.text
    return Metrics(r.text)


# ==========================================================================
# 1. One iteration

@pytest.mark.sanitize
@route_param
@stream_param
def test_one_iteration(start, mock, mcp, route, stream):
    httpd = start()
    calls = echo(route, "ping-42")
    mock.script("k0", turn(route, stream, calls))
    body = client_body(route, stream)
    if stream and route == CHAT:
        body["stream_options"] = {"include_usage": True}  # the summed usage, visible
    reply = ask(httpd, route, stream, body)
    assert reply.status == 200, reply.body

    first, second = mock.requests()  # exactly two upstream calls
    assert [first["key"], second["key"]] == ["k0", "k0"]
    assert [first["path"], second["path"]] == [route, route]
    # The first: the client's own tool, then every tool of the server, then parallel calls off.
    sent = first["body"]
    assert sent["tools"][0] == CLIENT_TOOL[route]
    injected = sent["tools"][1:]
    assert sorted(tool_names(route, {"tools": injected})) == \
        sorted(PREFIX + name for name in mcp.tools)
    [entry] = [t for t in injected if tool_names(route, {"tools": [t]}) == [PREFIX + "echo"]]
    assert entry == injected_entry(route, PREFIX + "echo", mcp.tools["echo"])
    assert_parallel_off(route, sent)
    rest = {k: v for k, v in sent.items() if k not in ("tools", "parallel_tool_calls",
                                                       "tool_choice")}
    assert rest == {k: v for k, v in body.items() if k != "tools"}
    # The second: the same tools, the tool's result in the provider's form.
    assert second["body"]["tools"] == sent["tools"]
    assert_parallel_off(route, second["body"])
    continuation(route, second["body"], calls, [("Echo: ping-42", False)])

    if not stream:
        assert reply.headers["Content-Type"] == "application/json"
        assert b"bmcp_" not in reply.body, reply.body
        answer = reply.json()
        assert answer_text(route, answer) == REPLY
        assert_summed_usage(route, answer["usage"])
        return
    end = assert_one_stream(route, reply)
    assert streamed_text(route, reply) == REPLY
    assert_keepalive(route, reply)
    if route == CHAT:
        assert end == "stop"
        [usage] = [d["usage"] for d in sse_data(reply)[:-1] if d.get("usage")]
        assert_summed_usage(route, usage)
    elif route == RESPONSES:
        assert [item["type"] for item in end["output"]] == ["message"], end
        assert_summed_usage(route, end["usage"])
    else:
        assert end["delta"]["stop_reason"] == "end_turn"
        assert_summed_usage(route, end["usage"])
        starts = [d for d in sse_data(reply) if d["type"] == "content_block_start"]
        assert [s["index"] for s in starts] == [0]


def test_a_long_tool_keeps_the_stream_alive(start, mock):
    """A tool that runs for 11 s: the stream gets a keep-alive before it and one
    10 s later, so that no proxy on the way takes the silence for a dead peer."""
    httpd = start()
    calls = calls_of(CHAT, (PREFIX + "trigger-long-running-operation",
                            {"duration": 11, "steps": 1}))
    mock.script("k0", turn(CHAT, True, calls))
    reply = ask(httpd, CHAT, True)
    assert reply.status == 200, reply.body
    before_answer = reply.body[:reply.body.index(b"Hello")]
    assert len(re.findall(rb"(?m)^: keep-alive\n\n", before_answer)) == 2, before_answer
    [rec] = records(httpd, 1)
    assert tool_runs(rec) == [("tools", "trigger-long-running-operation", "ok")]
    assert rec["tool_calls"][0]["duration_ms"] >= 11000


def test_mcp_header_values_stay_secret(monkeypatch, httpd, mock, mcp):
    """A header= value (here from env:) is never logged, even at trace8 (that it
    is sent on every MCP request is checked in tests/unit/test_mcp.c)."""
    secret = "mcp-SECRET-token-0123456789"
    providers = [f"openai openai {mock.url} pool=main cooldown=60 mcp=tools"]
    httpd.write_config(bridge_config(mock.url, providers=providers, extra="\n".join([
        f"AIBridgeMCPServer tools {mcp.url} header=X-Mcp-Token:env:AIB_TEST_MCP_TOKEN",
        f'AIBridgeUsageLog "{usage_path(httpd)}"', "LogLevel trace8"])))
    monkeypatch.setenv("AIB_TEST_MCP_TOKEN", secret)   # for the stop too
    httpd.start()
    mock.script("k0", turn(CHAT, False, echo(CHAT, "quiet")))
    reply = ask(httpd, CHAT, False)
    assert reply.status == 200, reply.body
    continuation(CHAT, mock.requests()[1]["body"], echo(CHAT, "quiet"), [("Echo: quiet", False)])
    [rec] = records(httpd, 1)
    texts = [httpd.read_log(), json.dumps(rec), reply.body.decode(),
             json.dumps(mock.requests())]
    for text in texts:
        assert secret not in text and secret[4:-4] not in text


# 2. Two iterations

@pytest.mark.sanitize
@route_param
@stream_param
def test_two_iterations(start, mock, route, stream):
    httpd = start()
    first_calls = echo(route, "one")
    second_calls = [c._replace(id=c.id + "b") for c in
                    calls_of(route, (PREFIX + "get-sum", {"a": 2, "b": 3}))]
    mock.script("k0", turn(route, stream, first_calls), turn(route, stream, second_calls))
    reply = ask(httpd, route, stream)
    assert reply.status == 200, reply.body
    seen = mock.requests()
    assert [r["key"] for r in seen] == ["k0", "k0", "k0"]
    continuation(route, seen[1]["body"], first_calls, [("Echo: one", False)])
    # The third carries both turns and both results.
    third = seen[2]["body"]
    continuation(route, third, second_calls, [("The sum of 2 and 3 is 5.", False)])
    assert "Echo: one" in json.dumps(third)
    if stream:
        assert_one_stream(route, reply)
        assert streamed_text(route, reply) == REPLY
        # A keep-alive while each turn's tools ran (the mock's answer has a ping of its own).
        if route == MESSAGES:
            assert event_names(reply).count("ping") == 3, event_names(reply)
        else:
            assert len(re.findall(rb"(?m)^: keep-alive\n\n", reply.body)) == 2, reply.body
        if route == CHAT:   # usage was not asked for: none reaches the client
            assert not any("usage" in d for d in sse_data(reply)[:-1]), reply.body
    else:
        assert b"bmcp_" not in reply.body
        assert answer_text(route, reply.json()) == REPLY
        assert_summed_usage(route, reply.json()["usage"], turns=2)


# 3. An injected tool that answers an error

@route_param
@stream_param
def test_tool_error_result(start, mock, route, stream):
    httpd = start()
    calls = calls_of(route, (PREFIX + "get-sum", {"a": "two", "b": 3}))
    mock.script("k0", turn(route, stream, calls))
    reply = ask(httpd, route, stream)
    assert reply.status == 200, reply.body
    _, second = mock.requests()
    [text] = continuation(route, second["body"], calls, [("get-sum", True)])
    assert "Echo" not in text and "The sum" not in text
    if stream:
        assert streamed_text(route, reply) == REPLY
    else:
        assert answer_text(route, reply.json()) == REPLY
    [rec] = records(httpd, 1)
    assert tool_runs(rec) == [("tools", "get-sum", "tool_error")]
    assert "get-sum" in rec["tool_calls"][0]["error"]


# 4. A client tool among the calls

@route_param
@stream_param
def test_client_tool_goes_to_client(start, mock, route, stream):
    httpd = start()
    calls = calls_of(route, (PREFIX + "echo", {"message": "side"}), ("lookup", {"word": "mod"}))
    lookup = calls[1]
    mock.script("k0", turn(route, stream, calls))
    reply = ask(httpd, route, stream)
    assert reply.status == 200, reply.body
    assert len(mock.requests()) == 1          # the client answers its own tool
    assert b"bmcp_" not in reply.body, reply.body
    if not stream:
        answer = reply.json()
        if route == CHAT:
            choice = answer["choices"][0]
            assert choice["message"]["tool_calls"] == [chat_call(lookup)], choice
            assert choice["finish_reason"] == "tool_calls"
        elif route == RESPONSES:
            assert answer["output"] == [responses_item(lookup)], answer
        else:
            assert answer["content"] == [tool_use(lookup)], answer
            assert answer["stop_reason"] == "tool_use"
    else:
        end = assert_one_stream(route, reply)
        data = sse_data(reply)
        if route == CHAT:
            assert end == "tool_calls"
            fragments = [tc for d in data[:-1] if d["choices"]
                         for tc in d["choices"][0]["delta"].get("tool_calls") or []]
            assert {tc["index"] for tc in fragments} == {0}, fragments
            assert [tc["id"] for tc in fragments if tc.get("id")] == [lookup.id]
            arguments = "".join(tc["function"].get("arguments", "") for tc in fragments)
            assert json.loads(arguments) == lookup.args
        elif route == RESPONSES:
            added = [d for d in data if d["type"] == "response.output_item.added"]
            assert [(a["output_index"], a["item"]["call_id"]) for a in added] == [(0, lookup.id)]
            assert end["output"] == [responses_item(lookup)], end
        else:
            assert end["delta"]["stop_reason"] == "tool_use"
            starts = [d for d in data if d["type"] == "content_block_start"]
            assert [(s["index"], s["content_block"]["name"]) for s in starts] == [(0, "lookup")]
            assert {d["index"] for d in data if d["type"].startswith("content_block")} == {0}
    # The injected call was run all the same.
    [rec] = records(httpd, 1)
    assert tool_runs(rec) == [("tools", "echo", "ok")]
    assert rec["iterations"] == 1


@route_param
def test_client_tool_alone_is_relayed_unchanged(start, mock, route):
    httpd = start()
    calls = calls_of(route, ("lookup", {"word": "mod"}))
    mock.script("k0", turn(route, False, calls))
    reply = ask(httpd, route, False)
    assert reply.status == 200, reply.body
    assert reply.json() == turn_body(route, calls)
    assert len(mock.requests()) == 1
    [rec] = records(httpd, 1)
    assert rec["tool_calls"] == [] and rec["iterations"] == 1


# 5. The iteration limit

@route_param
@stream_param
def test_iteration_limit(start, mock, route, stream):
    httpd = start(extra="AIBridgeMaxToolIterations 2")
    mock.script("k0", always=turn(route, stream, echo(route)))
    reply = ask(httpd, route, stream)
    message = LIMIT_MESSAGE.format(2)
    assert len(mock.requests()) == 2
    if stream:
        assert_stream_error(reply, route, "api_error", "server_error", message)
        names = event_names(reply)
        assert "message_stop" not in names and "response.completed" not in names
        assert "[DONE]" not in [d for _, d in reply.events]
    elif route == MESSAGES:
        assert_error_body(reply, route, 502, "api_error", None, message)
    else:
        assert_error_body(reply, route, 502, "api_error", "server_error", message)
    [rec] = records(httpd, 1)
    assert rec["iterations"] == 2
    assert tool_runs(rec) == [("tools", "echo", "ok")]


# 6. A continuation fails over

@route_param
@stream_param
def test_agentic_failover_to_k1(start, mock, route, stream):
    httpd = start()
    calls = echo(route, "over")
    mock.script("k0", turn(route, stream, calls), r429(5))
    reply = ask(httpd, route, stream)
    assert reply.status == 200, reply.body
    seen = mock.requests()
    assert [r["key"] for r in seen] == ["k0", "k0", "k1"]
    assert seen[2]["body"] == seen[1]["body"]       # the same continuation, on k1
    continuation(route, seen[2]["body"], calls, [("Echo: over", False)])
    if stream:
        assert_one_stream(route, reply)
        assert streamed_text(route, reply) == REPLY
    else:
        assert answer_text(route, reply.json()) == REPLY
    [rec] = records(httpd, 1)
    assert (rec["iterations"], rec["attempts"]) == (2, 3)


# 7. The pool runs out in a continuation

@pytest.mark.sanitize
@route_param
@stream_param
def test_agentic_all_keys_fail(start, mock, route, stream):
    httpd = start(keys=("k0", "k1"))
    mock.script("k0", turn(route, stream, echo(route)), r429(5))
    mock.script("k1", r429(3))
    reply = ask(httpd, route, stream)
    assert [r["key"] for r in mock.requests()] == ["k0", "k0", "k1"]
    if stream:
        assert_stream_error(reply, route, "rate_limit_error", "rate_limit_exceeded", "rate-limited")
    else:
        assert_error_body(reply, route, 429, "rate_limit_error",
                          None if route == MESSAGES else "rate_limit_exceeded",
                          "all configured keys are rate-limited (retry after 3s)")
        assert reply.headers["Retry-After"] == "3"
    [rec] = records(httpd, 1)
    assert (rec["outcome"], rec["status"], rec["iterations"]) == \
        ("exhausted", 200 if stream else 429, 2)


@route_param
@stream_param
def test_pool_out_before_the_first_answer(start, mock, route, stream):
    """Exhausted in the first iteration: the client gets the 429 as it is, stream or not."""
    httpd = start(keys=("k0", "k1"))
    mock.script("k0", r429(4))
    mock.script("k1", r429(3))
    reply = ask(httpd, route, stream)
    assert_error_body(reply, route, 429, "rate_limit_error",
                      None if route == MESSAGES else "rate_limit_exceeded",
                      "all configured keys are rate-limited (retry after 3s)")
    assert reply.headers["Retry-After"] == "3"
    [rec] = records(httpd, 1)
    assert (rec["outcome"], rec["status"], rec["iterations"]) == ("exhausted", 429, 1)


# 8. An MCP server that cannot be reached

@route_param
def test_unreachable_mcp_server(httpd, mock, route):
    providers = [f"{name} {name} {mock.url} pool=main cooldown=60 mcp=down"
                 for name in ("openai", "anthropic")]
    down = f"AIBridgeMCPServer down http://127.0.0.1:{free_port()}/mcp"
    httpd.write_config(bridge_config(mock.url, providers=providers, extra=down))
    httpd.start()
    with requests.Session() as session:   # one connection: one child's client
        for n in range(3):
            body = client_body(route, n % 2 == 1)
            reply = ask(httpd, route, n % 2 == 1, body, session=session)
            assert reply.status == 200, reply.body
            assert REPLY in (answer_text(route, reply.json()) if n % 2 == 0
                             else streamed_text(route, reply))
            assert_untouched(route, mock.requests()[-1]["body"], body)
    assert len(mock.requests()) == 3
    assert wait_for(lambda: httpd.log_lines(r"MCP server 'down': .*its tools are left out"))
    lines = httpd.log_lines(r"MCP server 'down'")
    assert len(lines) == 1, lines
    assert "[aibridge:warn]" in lines[0] and "asked again in 5 s" in lines[0], lines


# 9. allow= and deny=

@pytest.mark.parametrize("options, expected", [
    ("allow=^echo$", lambda names: ["echo"]),
    ("deny=echo", lambda names: [n for n in names if n != "echo"]),
    ("allow=^get- deny=sum$", lambda names: [n for n in names
                                             if n.startswith("get-") and n != "get-sum"]),
    ("allow=^echo$ deny=echo", lambda names: []),   # deny= wins
], ids=["allow", "deny", "allow_and_deny", "deny_wins"])
@route_param
def test_allow_and_deny(start, mock, mcp, route, options, expected):
    httpd = start(mcp_options=options)
    body = client_body(route, False)
    reply = ask(httpd, route, False, body)
    assert reply.status == 200, reply.body
    [seen] = mock.requests()
    wanted = expected(list(mcp.tools))
    assert wanted != list(mcp.tools)
    if not wanted:
        assert_untouched(route, seen["body"], body)
        return
    assert tool_names(route, seen["body"]) == ["lookup"] + [PREFIX + n for n in wanted]
    assert_parallel_off(route, seen["body"])


# 10. AIBridgeInjectTools

def test_inject_tools_none_in_a_location(start, mock):
    httpd = start(extra="<Location /ai/anthropic>\n  AIBridgeInjectTools none\n</Location>")
    body = client_body(MESSAGES, False)
    assert ask(httpd, MESSAGES, False, body).status == 200
    assert_untouched(MESSAGES, mock.requests()[-1]["body"], body)
    # Elsewhere mcp= still applies.
    assert ask(httpd, CHAT, False).status == 200
    assert PREFIX + "echo" in tool_names(CHAT, mock.requests()[-1]["body"])
    [_, rec] = records(httpd, 2)
    assert rec["iterations"] == 1


def test_inject_tools_overrides_mcp(start, mock, mcp):
    other = f"AIBridgeMCPServer other {mcp.url} allow=^get-sum$"
    httpd = start(servers=[other],
                  extra="<Location /ai/anthropic>\n  AIBridgeInjectTools other\n</Location>")
    calls = calls_of(MESSAGES, ("bmcp_other_get-sum", {"a": 2, "b": 3}))
    mock.script("k0", turn(MESSAGES, False, calls))
    reply = ask(httpd, MESSAGES, False)
    assert reply.status == 200, reply.body
    first, second = mock.requests()
    assert tool_names(MESSAGES, first["body"]) == ["lookup", "bmcp_other_get-sum"]
    continuation(MESSAGES, second["body"], calls, [("The sum of 2 and 3 is 5.", False)])
    assert answer_text(MESSAGES, reply.json()) == REPLY
    [rec] = records(httpd, 1)
    assert tool_runs(rec) == [("other", "get-sum", "ok")]
    # The openai provider keeps its mcp=tools.
    assert ask(httpd, CHAT, False).status == 200
    names = tool_names(CHAT, mock.requests()[-1]["body"])
    assert PREFIX + "echo" in names and not any(n.startswith("bmcp_other_") for n in names)


def test_inject_tools_without_mcp_option(start, mock):
    """A provider without mcp= is offered tools where AIBridgeInjectTools says so."""
    httpd = start(provider_options="",
                  extra="<Location /ai/openai>\n  AIBridgeInjectTools tools\n</Location>")
    assert ask(httpd, CHAT, False).status == 200
    assert PREFIX + "echo" in tool_names(CHAT, mock.requests()[-1]["body"])
    body = client_body(MESSAGES, False)
    assert ask(httpd, MESSAGES, False, body).status == 200
    assert_untouched(MESSAGES, mock.requests()[-1]["body"], body)
    first, second = records(httpd, 2)
    assert first["iterations"] == 1 and second["iterations"] is None


# Injection rules

@route_param
def test_tool_choice_none_is_sent_as_is(start, mock, route):
    httpd = start()
    choice = {"type": "none"} if route == MESSAGES else "none"
    body = client_body(route, False, tool_choice=choice)
    assert ask(httpd, route, False, body).status == 200
    assert_untouched(route, mock.requests()[-1]["body"], body)


def test_passthrough_route_gets_no_tools(start, mock):
    httpd = start()
    body = request_body(COUNT_TOKENS)
    reply = call(httpd, COUNT_TOKENS, body=body, provider="anthropic")
    assert reply.status == 200, reply.body
    assert mock.requests()[-1]["body"] == body


@route_param
def test_client_tool_of_the_same_name_wins(start, mock, route):
    """A client tool named like an injected one is the client's: its call goes to the client."""
    httpd = start(mcp_options="allow=^echo$")
    mine = json.loads(json.dumps(CLIENT_TOOL[route]).replace('"lookup"', '"bmcp_tools_echo"'))
    body = client_body(route, False)
    body["tools"] = [mine]
    calls = echo(route, "mine")
    mock.script("k0", turn(route, False, calls))
    reply = ask(httpd, route, False, body)
    assert reply.status == 200, reply.body
    [seen] = mock.requests()
    assert seen["body"]["tools"] == [mine]
    assert reply.json() == turn_body(route, calls)


# 11. Records and metrics

@route_param
@stream_param
def test_records_and_metrics(start, mock, route, stream):
    httpd = start()
    first = echo(route, "rec")
    second = [c._replace(id=c.id + "b") for c in
              calls_of(route, (PREFIX + "get-sum", {"a": "x", "b": 1}))]
    mock.script("k0", turn(route, stream, first), turn(route, stream, second))
    assert ask(httpd, route, stream).status == 200
    assert ask(httpd, route, stream).status == 200          # no tool call this time

    rec, plain = records(httpd, 2)
    assert rec["iterations"] == 3 and rec["attempts"] == 3 and rec["status"] == 200
    assert tool_runs(rec) == [("tools", "echo", "ok"), ("tools", "get-sum", "tool_error")]
    assert "Invalid" in rec["tool_calls"][1]["error"]
    assert rec["tools"] == [PREFIX + "echo", PREFIX + "get-sum"]
    assert (rec["input_tokens"], rec["output_tokens"]) == \
        (2 * TURN_IN + DEFAULT_IN, 2 * TURN_OUT + DEFAULT_OUT)
    assert plain["iterations"] == 1 and plain["tool_calls"] == []
    assert agent_vars(httpd, 2) == ["ITER=3 CALLS=2", "ITER=1 CALLS=0"]

    m = metrics(httpd)
    counts = {(d["tool"], d["outcome"]): m.value("aibridge_tool_calls_total", **d)
              for d in m.labels("aibridge_tool_calls_total") if d["server"] == "tools"}
    assert counts == {("echo", "ok"): 1, ("echo", "tool_error"): 0, ("echo", "failed"): 0,
                      ("get-sum", "ok"): 0, ("get-sum", "tool_error"): 1,
                      ("get-sum", "failed"): 0}
    assert m.types["aibridge_tool_calls_total"] == "counter"
    assert {d["tool"] for d in m.labels("aibridge_tool_call_seconds_total")} == {"echo", "get-sum"}


def test_metrics_count_across_requests(start, mock):
    httpd = start()
    for n in range(3):
        mock.script("k0", turn(CHAT, False, echo(CHAT, f"n{n}")))
        assert ask(httpd, CHAT, False).status == 200
    m = metrics(httpd)
    assert m.value("aibridge_tool_calls_total", server="tools", tool="echo", outcome="ok") == 3
    assert [r["iterations"] for r in records(httpd, 3)] == [2, 2, 2]


def test_no_mcp_no_iterations(httpd, mock):
    httpd.write_config(bridge_config(mock.url, extra=f'AIBridgeUsageLog "{usage_path(httpd)}"'))
    httpd.start()
    body = client_body(CHAT, False)
    assert ask(httpd, CHAT, False, body).status == 200
    assert mock.requests()[-1]["body"] == body
    [rec] = records(httpd, 1)
    assert rec["iterations"] is None and rec["tool_calls"] == []


# 12. Configuration errors

def check(httpd, mock, body):
    httpd.write_config(body)
    return httpd.check()


def base(mock, mcp_url, provider_options="mcp=tools", extra="", servers=None):
    if servers is None:
        servers = [f"AIBridgeMCPServer tools {mcp_url}"]
    providers = [f"openai openai {mock.url} pool=main {provider_options}".rstrip()]
    return "\n".join(servers) + "\n" + bridge_config(mock.url, providers=providers, extra=extra)


URL = "http://127.0.0.1:9/mcp"


def test_valid_configuration(httpd, mock):
    rc, out = check(httpd, mock, base(
        mock, URL, servers=[f"AIBridgeMCPServer tools {URL} header=Authorization:Bearer-x "
                            "allow=^e deny=x$ tools-ttl=30",
                            f"AIBridgeMCPServer other {URL}"],
        extra="AIBridgeMaxToolIterations 100\n<Location /ai/x>\n  AIBridgeInjectTools tools other"
              "\n  AIBridgeMaxToolIterations 1\n</Location>\n<Location /ai/y>\n"
              "  AIBridgeInjectTools none\n</Location>"))
    assert rc == 0 and "Syntax OK" in out, out


@pytest.mark.parametrize("provider_options, servers, extra, words", [
    ("mcp=nope", None, "", ["AIBridgeProvider openai: mcp=", "unknown MCP server 'nope'"]),
    ("mcp=tools,nope", None, "", ["mcp=", "'nope'"]),
    ("mcp=", None, "", ["AIBridgeProvider", "mcp="]),
    ("mcp=tools", None, "<Location /ai/x>\n  AIBridgeInjectTools nope\n</Location>",
     ["AIBridgeInjectTools", "unknown MCP server 'nope'"]),
    ("mcp=tools", None, "AIBridgeInjectTools tools nope", ["AIBridgeInjectTools", "'nope'"]),
    ("mcp=tools", None, "<Location /ai/x>\n  AIBridgeInjectTools Bad_Name\n</Location>",
     ["AIBridgeInjectTools", "Bad_Name"]),
    ("mcp=tools", None, "<Location /ai/x>\n  AIBridgeInjectTools\n</Location>",
     ["AIBridgeInjectTools"]),
    ("mcp=tools", None, "AIBridgeMaxToolIterations 0", ["AIBridgeMaxToolIterations", "'0'"]),
    ("mcp=tools", None, "AIBridgeMaxToolIterations 101", ["AIBridgeMaxToolIterations", "'101'"]),
    ("mcp=tools", None, "AIBridgeMaxToolIterations ten", ["AIBridgeMaxToolIterations", "'ten'"]),
    ("mcp=tools", None, "AIBridgeMaxToolIterations 5x", ["AIBridgeMaxToolIterations", "'5x'"]),
    ("mcp=tools", ["AIBridgeMCPServer tools ftp://127.0.0.1/mcp"], "",
     ["AIBridgeMCPServer", "ftp://"]),
    ("mcp=tools", ["AIBridgeMCPServer tools"], "", ["AIBridgeMCPServer"]),
    ("mcp=tools", ["AIBridgeMCPServer Tools_1 " + URL], "", ["AIBridgeMCPServer", "Tools_1"]),
    ("mcp=tools", [f"AIBridgeMCPServer tools {URL} bogus=1"], "",
     ["AIBridgeMCPServer", "unknown option 'bogus'"]),
    ("mcp=tools", [f"AIBridgeMCPServer tools {URL} allow=("], "", ["AIBridgeMCPServer", "allow="]),
    ("mcp=tools", [f"AIBridgeMCPServer tools {URL} deny=a[b"], "", ["AIBridgeMCPServer", "deny="]),
    ("mcp=tools", [f"AIBridgeMCPServer tools {URL} tools-ttl=soon"], "",
     ["AIBridgeMCPServer", "tools-ttl="]),
    ("mcp=tools", [f"AIBridgeMCPServer tools {URL} header=Accept:text/plain"], "",
     ["AIBridgeMCPServer", "header=Accept"]),
    ("mcp=tools", [f"AIBridgeMCPServer tools {URL} header=NoColon"], "",
     ["AIBridgeMCPServer", "header="]),
    ("mcp=tools", [f"AIBridgeMCPServer tools {URL} header=X-Token:env:AIB_TEST_UNSET_VAR"], "",
     ["AIBridgeMCPServer", "AIB_TEST_UNSET_VAR"]),
    ("mcp=tools", [f"AIBridgeMCPServer tools {URL}", f"AIBridgeMCPServer tools {URL}"], "",
     ["AIBridgeMCPServer", "defined twice"]),
], ids=["mcp_unknown", "mcp_second_unknown", "mcp_empty", "inject_unknown",
        "inject_unknown_server_scope", "inject_bad_name", "inject_no_args", "iterations_0",
        "iterations_101", "iterations_word", "iterations_suffix", "server_ftp_url",
        "server_no_url", "server_bad_name", "server_unknown_option", "server_bad_allow",
        "server_bad_deny", "server_bad_ttl", "server_reserved_header", "server_header_syntax",
        "server_header_env_unset", "server_twice"])
def test_configuration_errors(httpd, mock, provider_options, servers, extra, words):
    rc, out = check(httpd, mock, base(mock, URL, provider_options=provider_options, extra=extra,
                                      servers=servers))
    assert rc != 0, out
    for word in words:
        assert word in out, out
    assert "Syntax OK" not in out


# Text before the tool call: relayed when streaming, kept in the continuation

@route_param
@stream_param
def test_text_before_tool_call(start, mock, route, stream):
    httpd = start()
    calls = echo(route, "pre")
    preamble = "Let me check. "
    mock.script("k0", turn(route, stream, calls, text=preamble))
    reply = ask(httpd, route, stream)
    assert reply.status == 200, reply.body
    _, second = mock.requests()
    continuation(route, second["body"], calls, [("Echo: pre", False)])
    # The assistant turn keeps its text.
    if route == CHAT:
        assert second["body"]["messages"][1]["content"] == preamble
    elif route == RESPONSES:
        [message] = [i for i in second["body"]["input"] if i.get("type") == "message"
                     and i.get("role") == "assistant"]
        assert message["content"][0]["text"] == preamble, second["body"]["input"]
    else:
        assert second["body"]["messages"][1]["content"][0] == {"type": "text", "text": preamble}
    if not stream:
        assert answer_text(route, reply.json()) == REPLY      # the final answer only
        return
    end = assert_one_stream(route, reply)
    assert streamed_text(route, reply) == preamble + REPLY
    data = sse_data(reply)
    if route == MESSAGES:
        starts = [d for d in data if d["type"] == "content_block_start"]
        assert [(s["index"], s["content_block"]["type"]) for s in starts] == \
            [(0, "text"), (1, "text")]
        stops = [d["index"] for d in data if d["type"] == "content_block_stop"]
        assert stops == [0, 1]
    elif route == RESPONSES:
        added = [(d["output_index"], d["item"]["type"]) for d in data
                 if d["type"] == "response.output_item.added"]
        assert added == [(0, "message"), (1, "message")], added
        deltas = {d["output_index"] for d in data if d["type"] == "response.output_text.delta"}
        assert deltas == {0, 1}
        assert [item["type"] for item in end["output"]] == ["message", "message"], end
        assert end["output"][0]["content"][0]["text"] == preamble
        assert end["output"][1]["content"][0]["text"] == REPLY


# A tool that cannot run; a server that forgot the session

@pytest.fixture
def own_mcp():
    server = McpServer().start()
    yield server
    server.stop()


@route_param
def test_tool_that_cannot_run(httpd, mock, own_mcp, route):
    providers = [f"{name} {name} {mock.url} pool=main cooldown=60 mcp=tools"
                 for name in ("openai", "anthropic")]
    httpd.write_config(bridge_config(mock.url, providers=providers, extra="\n".join([
        f"AIBridgeMCPServer tools {own_mcp.url}", f'AIBridgeUsageLog "{usage_path(httpd)}"',
        f"<Location {METRICS}>", "  SetHandler aibridge-metrics", "</Location>"])))
    httpd.start()
    with requests.Session() as session:   # one child: its tool list is taken
        assert ask(httpd, route, False, session=session).status == 200
        own_mcp.stop()
        calls = echo(route, "gone")
        mock.script("k0", turn(route, False, calls))
        reply = ask(httpd, route, False, session=session)
    assert reply.status == 200, reply.body
    assert answer_text(route, reply.json()) == REPLY
    seen = mock.requests()
    assert len(seen) == 3
    assert tool_names(route, seen[1]["body"])[1:], "the listed tools are still offered"
    [text] = continuation(route, seen[2]["body"], calls, [("tools", True)])
    assert "Echo" not in text
    _, rec = records(httpd, 2)
    assert tool_runs(rec) == [("tools", "echo", "failed")]
    assert httpd.log_lines(r"\[aibridge:warn\].*MCP tool tools/echo could not run")
    assert metrics(httpd).value("aibridge_tool_calls_total", server="tools", tool="echo",
                                outcome="failed") == 1


def test_session_forgotten_by_restarted_server(httpd, mock, own_mcp):
    providers = [f"openai openai {mock.url} pool=main cooldown=60 mcp=tools"]
    httpd.write_config(bridge_config(mock.url, providers=providers, extra="\n".join([
        f"AIBridgeMCPServer tools {own_mcp.url}", f'AIBridgeUsageLog "{usage_path(httpd)}"'])))
    httpd.start()
    with requests.Session() as session:
        first = echo(CHAT, "before")
        mock.script("k0", turn(CHAT, False, first))
        assert ask(httpd, CHAT, False, session=session).status == 200
        own_mcp.restart()                 # same port, none of the old sessions
        second = echo(CHAT, "after")
        mock.script("k0", turn(CHAT, False, second))
        reply = ask(httpd, CHAT, False, session=session)
    assert reply.status == 200, reply.body
    seen = mock.requests()
    assert len(seen) == 4
    continuation(CHAT, seen[1]["body"], first, [("Echo: before", False)])
    continuation(CHAT, seen[3]["body"], second, [("Echo: after", False)])
    assert [tool_runs(r) for r in records(httpd, 2)] == [[("tools", "echo", "ok")]] * 2


# Other continuation errors, several calls in one turn, limits, tool_choice

@route_param
@stream_param
def test_continuation_server_error(start, mock, route, stream):
    httpd = start()
    mock.script("k0", turn(route, stream, echo(route)), {"status": 500})
    reply = ask(httpd, route, stream)
    assert [r["key"] for r in mock.requests()] == ["k0", "k0"]   # a 500 is not failed over
    if stream:
        assert_stream_error(reply, route, "api_error", "server_error", "Mock upstream: 500")
    else:
        assert reply.status == 500, reply.body
        assert reply.json()["error"]["message"].startswith("Mock upstream: 500")
    [rec] = records(httpd, 1)
    assert (rec["outcome"], rec["upstream_status"]) == ("upstream_error", 500)


@route_param
@stream_param
def test_two_injected_calls_in_one_turn(start, mock, route, stream):
    httpd = start()
    calls = calls_of(route, (PREFIX + "echo", {"message": "a"}),
                     (PREFIX + "get-sum", {"a": 2, "b": 3}))
    mock.script("k0", turn(route, stream, calls))
    reply = ask(httpd, route, stream)
    assert reply.status == 200, reply.body
    _, second = mock.requests()
    continuation(route, second["body"], calls,
                 [("Echo: a", False), ("The sum of 2 and 3 is 5.", False)])
    if stream:
        assert_one_stream(route, reply)
        assert streamed_text(route, reply) == REPLY
    else:
        assert answer_text(route, reply.json()) == REPLY
    [rec] = records(httpd, 1)
    assert tool_runs(rec) == [("tools", "echo", "ok"), ("tools", "get-sum", "ok")]


def test_default_limit_is_ten(start, mock):
    httpd = start()
    mock.script("k0", always=turn(CHAT, False, echo(CHAT)))
    reply = ask(httpd, CHAT, False)
    assert_error_body(reply, CHAT, 502, "api_error", "server_error", LIMIT_MESSAGE.format(10))
    assert len(mock.requests()) == 10
    [rec] = records(httpd, 1)
    assert rec["iterations"] == 10 and len(rec["tool_calls"]) == 9


def test_limit_per_location(start, mock):
    httpd = start(extra="<Location /ai/anthropic>\n  AIBridgeMaxToolIterations 1\n</Location>")
    mock.script("k0", always=turn(MESSAGES, False, echo(MESSAGES)))
    reply = ask(httpd, MESSAGES, False)
    assert_error_body(reply, MESSAGES, 502, "api_error", None, LIMIT_MESSAGE.format(1))
    assert len(mock.requests()) == 1
    [rec] = records(httpd, 1)
    assert rec["iterations"] == 1 and rec["tool_calls"] == []


@pytest.mark.parametrize("route, choice, expected", [
    (MESSAGES, {"type": "any"}, {"type": "any", "disable_parallel_tool_use": True}),
    (MESSAGES, {"type": "tool", "name": "lookup"},
     {"type": "tool", "name": "lookup", "disable_parallel_tool_use": True}),
    (CHAT, "required", "required"),
    (RESPONSES, "auto", "auto"),
], ids=["messages_any", "messages_tool", "chat_required", "responses_auto"])
def test_client_tool_choice_kept(start, mock, route, choice, expected):
    httpd = start()
    body = client_body(route, False, tool_choice=choice)
    assert ask(httpd, route, False, body).status == 200
    sent = mock.requests()[-1]["body"]
    assert sent["tool_choice"] == expected
    assert PREFIX + "echo" in tool_names(route, sent)
    if route != MESSAGES:
        assert sent["parallel_tool_calls"] is False


@pytest.mark.sanitize
@route_param
@stream_param
def test_call_of_a_tool_not_offered(start, mock, route, stream):
    """The model calls a bmcp_ name the module did not offer (here left out by
    deny=; a model may also make one up). It is no client tool: the client
    must not get it, and blocking and streaming must agree. Expected: the
    model gets an error result for it, the loop goes on to the answer."""
    httpd = start(mcp_options="deny=^echo$")
    calls = echo(route, "denied")
    mock.script("k0", turn(route, stream, calls))
    reply = ask(httpd, route, stream)
    assert reply.status == 200, reply.body
    assert b"bmcp_" not in reply.body, reply.body
    if stream:
        assert_one_stream(route, reply)
        assert streamed_text(route, reply) == REPLY
    else:
        assert answer_text(route, reply.json()) == REPLY
    seen = mock.requests()
    assert len(seen) == 2, [r["body"] for r in seen]
    continuation(route, seen[1]["body"], calls, [(PREFIX + "echo", True)])


def test_chat_stream_gives_the_role_once(start, mock):
    """Like a single completion, the continuous chat stream names the role in
    its first chunk only: a client accumulating deltas (openai-python's
    accumulate_delta concatenates strings) must not read "assistantassistant"."""
    httpd = start()
    mock.script("k0", turn(CHAT, True, echo(CHAT)))
    reply = ask(httpd, CHAT, True)
    assert_one_stream(CHAT, reply)
    roles = [d["choices"][0]["delta"]["role"] for d in sse_data(reply)[:-1]
             if d["choices"] and "role" in d["choices"][0]["delta"]]
    assert roles == ["assistant"], reply.body
