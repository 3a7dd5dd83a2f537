"""The official openai and @anthropic-ai/sdk npm clients against mod_aibridge,
through a failover."""

import json
import os
import shutil
import subprocess

import pytest

from conftest import TOP

SDK_DIR = os.path.join(TOP, "tests", "sdk")
REPLY = "Hello from the mock upstream."


@pytest.fixture
def node_sdk():
    if not os.path.isdir(os.path.join(SDK_DIR, "node_modules", "openai")):
        pytest.fail("tests/sdk/node_modules is missing: ./dev test installs it (npm ci)")
    return shutil.which("node")


def run_client(node, script, base_url):
    p = subprocess.run([node, os.path.join(SDK_DIR, script), base_url], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_openai_sdk_blocking_and_streaming_through_failover(node_sdk, bridge, mock):
    # k0 is rate-limited on the first call; every later call goes to k1,
    # whose fifth answer breaks off mid-stream.
    mock.script("k0", {"status": 429, "headers": {"Retry-After": "30"}})
    mock.script("k1", {}, {}, {}, {}, {"drop": "after_events", "drop_after": 2})
    bridge.allow_errors(r"connection broken")
    out = run_client(node_sdk, "openai_client.mjs", bridge.url + "/ai/openai/v1")
    assert out["chat"] == REPLY
    assert out["chat_stream"] == REPLY
    assert out["responses"] == REPLY
    assert out["responses_stream"] == REPLY
    # The SDK raises on the module's SSE error event instead of taking the
    # cut stream for a complete answer.
    assert out["stream_error"] and "upstream" in out["stream_error"]
    assert mock.keys() == ["k0"] + ["k1"] * 5
    assert all(r["headers"].get("authorization") != "Bearer placeholder"
               for r in mock.requests())


def test_anthropic_sdk_blocking_and_streaming_through_failover(node_sdk, bridge, mock):
    mock.script("k0", {"status": 429, "headers": {"retry-after": "30"}})
    mock.script("k1", {}, {}, {"drop": "after_events", "drop_after": 2})
    bridge.allow_errors(r"connection broken")
    out = run_client(node_sdk, "anthropic_client.mjs", bridge.url + "/ai/anthropic")
    assert out["message"] == REPLY
    assert out["stream"] == REPLY
    assert out["stream_usage"] == 9
    assert out["stream_error"] and "upstream" in out["stream_error"]
    assert mock.keys() == ["k0"] + ["k1"] * 3
    for r in mock.requests():
        assert r["key_header"] == "x-api-key" and "authorization" not in r["headers"]
        # The SDK's own anthropic-version is kept, not replaced by the default.
        assert r["headers"]["anthropic-version"] not in ("", "2023-06-01")
