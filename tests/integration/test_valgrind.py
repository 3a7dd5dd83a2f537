"""The module under valgrind's memcheck: one httpd process (-X) serving the
core cases. Catches invalid reads/writes and uses of uninitialised memory
that the sanitizer build might not reach."""

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from harness import HTTPD, MODULES_DIR, SLOW, Redis, bridge_config
from mcp_server import McpServer


def run_under_valgrind(httpd, config):
    if not shutil.which("valgrind"):
        pytest.fail("valgrind is missing: ./dev test installs it")
    httpd.write_config(config)
    log = os.path.join(httpd.dir, "valgrind.log")
    proc = subprocess.Popen(["valgrind", "--tool=memcheck", "--error-exitcode=99",
                             "--track-origins=yes", f"--log-file={log}",
                             HTTPD, "-X", "-f", httpd.conf])
    httpd.running = True
    httpd.wait_ready()
    yield httpd
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    with open(log) as f:
        report = f.read()
    summary = re.findall(r"ERROR SUMMARY: (\d+) errors", report)
    assert summary and summary[-1] == "0", report
    httpd.running = False


@pytest.fixture
def valgrind_httpd(httpd, mock):
    yield from run_under_valgrind(httpd, bridge_config(mock.url))


def test_core_cases_under_valgrind(valgrind_httpd, mock):
    h = valgrind_httpd
    timeout = 60 * SLOW
    mock.script("k0", {"status": 429, "headers": {"Retry-After": "30"}})
    r = h.post("/ai/openai/v1/chat/completions", json={"model": "m"}, timeout=timeout)
    assert r.status_code == 200
    r = h.post("/ai/openai/v1/responses", json={"model": "m", "stream": True}, timeout=timeout)
    assert r.status_code == 200 and "response.completed" in r.text
    r = h.post("/ai/anthropic/v1/messages", json={"model": "m", "stream": True}, timeout=timeout)
    assert "message_stop" in r.text
    mock.script("k1", {"drop": "after_events", "drop_after": 2})
    h.allow_errors("connection broken")
    r = h.post("/ai/openai/v1/chat/completions", json={"model": "m", "stream": True},
               timeout=timeout)
    assert '"error"' in r.text
    r = h.post("/ai/openai/v1/chat/completions", data=b"{not json", timeout=timeout)
    assert r.status_code == 400
    assert h.get("/ai/openai/v1/nowhere", timeout=timeout).status_code == 404
    time.sleep(0.5)


def tool_call_chat(name, arguments):
    return {"id": "chatcmpl-v", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None, "tool_calls": [{
                    "id": "call_v", "type": "function",
                    "function": {"name": name, "arguments": arguments}}]}}]}


def tool_use_events(name, arguments):
    def ev(data):
        return {"event": data["type"], "data": json.dumps(data)}
    return [ev({"type": "message_start", "message": {
                "id": "msg_v", "type": "message", "role": "assistant", "model": "m",
                "content": [], "stop_reason": None, "usage": {"input_tokens": 3,
                                                             "output_tokens": 1}}}),
            ev({"type": "content_block_start", "index": 0, "content_block": {
                "type": "tool_use", "id": "toolu_v", "name": name, "input": {}}}),
            ev({"type": "content_block_delta", "index": 0, "delta": {
                "type": "input_json_delta", "partial_json": arguments}}),
            ev({"type": "content_block_stop", "index": 0}),
            ev({"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 4}}),
            ev({"type": "message_stop"})]


@pytest.fixture
def fleet_agent_httpd(httpd, mock, tmp_path):
    redis = Redis(tmp_path / "redis")
    redis.start()
    mcp = McpServer().start()
    config = f"""
LoadModule socache_redis_module {MODULES_DIR}/mod_socache_redis.so
AIBridgeSharedState redis:127.0.0.1:{redis.port} interval=0.1
AIBridgeMCPServer tools {mcp.url} allow=^(echo|get-sum)$
""" + bridge_config(mock.url, providers=[
        f"openai openai {mock.url} pool=main cooldown=60 mcp=tools",
        f"anthropic anthropic {mock.url} pool=main cooldown=60 mcp=tools"])
    try:
        yield from run_under_valgrind(httpd, config)
    finally:
        mcp.stop()
        redis.kill()


def test_shared_state_and_agentic_loop_under_valgrind(fleet_agent_httpd, mock):
    """The sync thread, the MCP client and both loops (blocking, streaming)."""
    h = fleet_agent_httpd
    timeout = 60 * SLOW
    mock.script("k0", {"status": 429, "headers": {"Retry-After": "30"}})
    mock.script("k1", {"status": 200, "body": tool_call_chat("bmcp_tools_echo",
                                                             '{"message":"v"}')})
    r = h.post("/ai/openai/v1/chat/completions",
               json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
               timeout=timeout)
    assert r.status_code == 200 and "Hello from the mock upstream." in r.text
    assert mock.keys() == ["k0", "k1", "k1"]
    mock.script("k1", {"status": 200, "events": tool_use_events("bmcp_tools_get-sum",
                                                                '{"a":2,"b":3}')})
    r = h.post("/ai/anthropic/v1/messages", json={
        "model": "m", "max_tokens": 9, "stream": True,
        "messages": [{"role": "user", "content": "hi"}]}, timeout=timeout)
    assert r.status_code == 200 and "message_stop" in r.text and "bmcp_" not in r.text
    bodies = [json.dumps(q["body"]) for q in mock.requests()]
    assert "Echo: v" in bodies[2]
    assert "The sum of 2 and 3 is 5." in bodies[4]
    time.sleep(1)   # sync rounds write k0's cooldown to Redis
