"""The Bedrock provider end to end: an Anthropic Messages client, httpd with
the module, and the Bedrock mock (tests/mock_bedrock.py), which checks every
SigV4 signature with botocore's own signer."""

import base64
import json
import os
import subprocess
import time

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer

from bridging import MESSAGES, REPLY, assert_complete, call, log_records, request_body
from harness import TOP, bridge_config
from mcp_server import McpServer
from status_pages import Metrics

SONNET = "anthropic.claude-sonnet-4-5-20250929-v1:0"
PROFILE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
AKID_A, AKID_B = "AKIAAAAATESTKEY00001", "ASIABBBBTESTKEY00002"
KEY_A = f"{AKID_A}:secret-{AKID_A}"
KEY_B = f"{AKID_B}:secret-{AKID_B}:token-{AKID_B}@us-west-2"
API_KEY = "ABSKdGVzdC1hcGkta2V5LTAwMDM="
KEY_C = f"bearer:{API_KEY}@eu-west-1"
MODEL_MAP = f"model-map=claude-sonnet-4-5={SONNET} model-map=fast={PROFILE}"


@pytest.fixture
def start(httpd, mock):
    """start(keys, *options, extra=""): httpd with provider br (bedrock) on the mock."""
    def start(keys=(KEY_A, KEY_B, KEY_C), *options, extra=""):
        provider = " ".join([f"br bedrock {mock.url} region=us-east-1 pool=aws cooldown=60",
                             MODEL_MAP, *options])
        usage = f'AIBridgeUsageLog "{httpd.dir}/usage.jsonl"'
        httpd.write_config(bridge_config(mock.url, keys=keys, pool="aws", providers=[provider],
                                         extra="\n".join([usage, extra])))
        httpd.start()
        return httpd
    return start


def bedrock_call(httpd, stream=False, body=None, headers=None):
    return call(httpd, MESSAGES, stream, body, headers, provider="br")


def assert_signed(mock):
    for r in mock.requests():
        assert r["signature"] == "ok", r


def test_blocking_call_rewritten_and_signed(start, mock):
    httpd = start()
    body = {**request_body(MESSAGES), "metadata": {"user_id": "u1"}, "service_tier": "auto"}
    reply = bedrock_call(httpd, body=body, headers={"anthropic-beta": "b1,b2"})
    assert_complete(reply, MESSAGES, False)
    [r] = mock.requests()
    assert r["path"] == "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    assert r["model_id"] == SONNET and r["region"] == "us-east-1" and r["key"] == AKID_A
    assert r["body"] == {"messages": body["messages"], "max_tokens": 64,
                         "anthropic_version": "bedrock-2023-05-31", "anthropic_beta": ["b1", "b2"]}
    assert "anthropic-beta" not in r["headers"] and "x-api-key" not in r["headers"]
    assert_signed(mock)


def test_stream_relayed_as_sse_with_usage(start, mock):
    httpd = start()
    reply = bedrock_call(httpd, stream=True, body={**request_body(MESSAGES, True), "model": "fast"})
    assert_complete(reply, MESSAGES, True)
    [r] = mock.requests()
    assert r["path"] == "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/" \
                        "invoke-with-response-stream"
    assert "stream" not in r["body"]
    assert_signed(mock)
    [rec] = log_records(os.path.join(httpd.dir, "usage.jsonl"), 1)
    assert rec["provider"] == "br" and rec["route"] == "messages" and rec["stream"] is True
    assert (rec["input_tokens"], rec["output_tokens"]) == (21, 9)
    assert rec["outcome"] == "ok" and rec["model"] == "fast"
    assert KEY_A.split(":")[1] not in json.dumps(rec)


def test_failover_across_keys_and_regions(start, mock):
    httpd = start()
    mock.script(AKID_A, always={"status": 429})
    mock.script(AKID_B, {"status": 429})
    assert_complete(bedrock_call(httpd, stream=True), MESSAGES, True)
    # A and B throttled: the API key of eu-west-1 answers.
    assert [(r["key"], r["region"]) for r in mock.requests()] == \
        [(AKID_A, "us-east-1"), (AKID_B, "us-west-2"), (API_KEY, None)]
    assert mock.requests()[1]["headers"]["x-amz-security-token"] == f"token-{AKID_B}"
    assert mock.requests()[2]["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert_signed(mock)
    # Both stay cooling down: the next call goes straight to the API key.
    assert_complete(bedrock_call(httpd), MESSAGES, False)
    assert mock.keys()[3:] == [API_KEY]
    log = httpd.read_log()
    for secret in (f"secret-{AKID_A}", f"token-{AKID_B}"):
        assert secret not in log


def test_metrics_show_the_provider(start, mock):
    httpd = start(extra="<Location /metrics>\n  SetHandler aibridge-metrics\n</Location>")
    mock.script(AKID_A, {"status": 429})
    assert_complete(bedrock_call(httpd, stream=True), MESSAGES, True)
    m = Metrics(requests.get(f"{httpd.url}/metrics", timeout=10).text)
    br = {"provider": "br"}
    assert m.value("aibridge_interceptions_total", **br, route="messages", outcome="ok") == 1
    assert m.value("aibridge_key_pool_state_transitions_total", **br, reason="rate_limited") == 1
    assert m.value("aibridge_failover_attempts_sum", **br) == 2
    hints = {ls["key"] for ls in m.labels("aibridge_key_state") if ls["provider"] == "br"}
    assert len(hints) == 3 and f"secret-{AKID_A}" not in str(hints)
    # A credential is named by its access key id's ends, never the secret's.
    assert f"{AKID_A[:4]}...{AKID_A[-4:]}" in hints
    tokens = {dict(ls)["type"]: v for (n, ls), v in m.samples.items()
              if n == "aibridge_tokens_total" and dict(ls)["provider"] == "br" and v}
    assert tokens == {"input": 21, "output": 9, "cache_read": 5, "cache_write": 7}


def test_first_frame_throttling_fails_over(start, mock):
    httpd = start()
    mock.script(AKID_A, {"bedrock": {"exception": {"at": 0, "type": "throttlingException"}}})
    assert_complete(bedrock_call(httpd, stream=True), MESSAGES, True)
    assert mock.keys() == [AKID_A, AKID_B]
    assert httpd.log_lines(r"key #1 .* error event: cooling down")


def test_later_exception_becomes_an_sse_error(start, mock):
    httpd = start()
    mock.script(AKID_A, {"bedrock": {"exception": {"at": 4, "type": "modelStreamErrorException",
                                                   "message": "model broke"}}})
    reply = bedrock_call(httpd, stream=True)
    assert reply.status == 200 and len(reply.events) == 5
    event, data = reply.events[-1]
    assert event == "error" and json.loads(data)["error"]["message"] == "model broke"
    assert mock.keys() == [AKID_A] and not httpd.log_lines(r"cooling down|disabled")


def test_throttled_again_soon_cools_down_longer(start, mock):
    httpd = start((KEY_A, KEY_C), "cooldown=1", "max-cooldown=3")
    mock.script(AKID_A, {"status": 429}, {"status": 429}, {"status": 429})
    assert_complete(bedrock_call(httpd), MESSAGES, False)
    for _ in range(2):
        time.sleep(mock_wait(httpd))
        assert_complete(bedrock_call(httpd), MESSAGES, False)
    lines = httpd.log_lines(r"key #1 .* answered 429: cooling down")
    assert [l.split("cooling down for ")[1].split(" s")[0] for l in lines] == \
        ["1.000", "2.000", "3.000"]
    assert mock.keys() == [AKID_A, API_KEY] * 3


def mock_wait(httpd):
    """Past the last cooldown (the log says how long), but within as long again."""
    last = httpd.log_lines(r"cooling down for ")[-1]
    return float(last.split("cooling down for ")[1].split(" s")[0]) + 0.3


def test_auth_failure_disables_the_credential(start, mock):
    httpd = start()
    mock.script(AKID_A, {"status": 403, "bedrock": {"error": "AccessDeniedException"}})
    assert_complete(bedrock_call(httpd), MESSAGES, False)
    assert_complete(bedrock_call(httpd), MESSAGES, False)
    assert mock.keys() == [AKID_A, AKID_B, AKID_B]
    assert httpd.log_lines(r"key #1 \(AKIA\.\.\..*answered 403: disabled until re-enabled")


def test_bad_secret_fails_the_signature_check(start, mock):
    httpd = start((f"{AKID_A}:wrong-secret", KEY_B))
    assert_complete(bedrock_call(httpd), MESSAGES, False)
    assert [r["signature"] for r in mock.requests()] == ["signature mismatch", "ok"]


def test_unparsable_entry_disabled_at_first_use(start, mock):
    httpd = start(("not-an-aws-credential-entry", KEY_A))
    httpd.allow_errors(r"key #1 .* is unusable")
    assert_complete(bedrock_call(httpd), MESSAGES, False)
    assert_complete(bedrock_call(httpd), MESSAGES, False)
    assert mock.keys() == [AKID_A, AKID_A]
    [line] = httpd.log_lines(r"is unusable")
    assert "disabled until re-enabled" in line and "aws-credential" not in line


def test_validation_error_relayed_in_anthropic_shape(start, mock):
    httpd = start()
    mock.script(AKID_A, {"status": 400, "bedrock": {"error": "ValidationException"}})
    reply = bedrock_call(httpd)
    assert reply.status == 400
    assert reply.json() == {"type": "error", "error": {"type": "invalid_request_error",
                                                       "message": "mock bedrock: 400"}}
    assert mock.keys() == [AKID_A]
    # Not the key's fault: the next call uses it again.
    assert_complete(bedrock_call(httpd), MESSAGES, False)
    assert mock.keys() == [AKID_A, AKID_A]


def test_model_not_ready_429_marks_nothing(start, mock):
    httpd = start()
    mock.script(AKID_A, {"status": 429, "bedrock": {"error": "ModelNotReadyException"}})
    reply = bedrock_call(httpd)
    assert reply.status == 429 and reply.json()["error"]["type"] == "overloaded_error"
    assert mock.keys() == [AKID_A]


def test_unmapped_model_refused(start, mock):
    httpd = start()
    reply = bedrock_call(httpd, body={**request_body(MESSAGES), "model": "gpt-4o"})
    assert reply.status == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and "'gpt-4o'" in error["message"]
    assert mock.requests() == []


def test_bad_crc_ends_in_an_sse_error(start, mock):
    httpd = start()
    httpd.allow_errors(r"malformed stream")
    mock.script(AKID_A, {"bedrock": {"bad_crc_at": 3}})
    reply = bedrock_call(httpd, stream=True)
    assert reply.status == 200
    assert [e for e, _ in reply.events[:3]] == ["message_start", "content_block_start", "ping"]
    event, data = reply.events[-1]
    assert event == "error" and json.loads(data)["error"]["type"] == "api_error"
    assert httpd.log_lines(r"\[aibridge:error\].*malformed stream.*CRC")
    # No key marked: the next call uses A again.
    assert_complete(bedrock_call(httpd), MESSAGES, False)
    assert mock.keys() == [AKID_A, AKID_A]


def test_models_answered_from_the_map(start, mock):
    httpd = start()
    r = requests.get(f"{httpd.url}/ai/br/v1/models", timeout=10)
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["claude-sonnet-4-5", "fast"]
    assert requests.get(f"{httpd.url}/ai/br/v1/models/fast", timeout=10).json()["id"] == "fast"
    assert mock.requests() == []


def count_tokens(httpd, model, headers=None):
    body = {"model": model, "messages": [{"role": "user", "content": "Hello"}],
            "metadata": {"user_id": "u1"}}
    return requests.post(f"{httpd.url}/ai/br/v1/messages/count_tokens", json=body,
                         headers=headers, timeout=10)


@pytest.mark.sanitize
def test_count_tokens_through_count_tokens(start, mock):
    httpd = start()
    mock.script(AKID_A, {"status": 429})
    r = count_tokens(httpd, "claude-sonnet-4-5", {"anthropic-beta": "b1"})
    assert r.status_code == 200 and r.json() == {"input_tokens": 21}
    assert r.headers["Content-Type"].startswith("application/json")
    a, b = mock.requests()
    assert (a["key"], b["key"]) == (AKID_A, AKID_B)  # failed over on the throttling
    assert b["path"] == "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens"
    # CountTokens gets the InvokeModel body (rewritten as for invoke), base64-encoded.
    assert b["invoke_body"] == {"messages": [{"role": "user", "content": "Hello"}],
                                "anthropic_version": "bedrock-2023-05-31",
                                "anthropic_beta": ["b1"], "max_tokens": 1}
    assert_signed(mock)


@pytest.mark.sanitize
def test_count_tokens_model_that_cannot_count(start, mock):
    httpd = start()
    r = count_tokens(httpd, "fast")  # an inference profile: Bedrock cannot count
    assert r.status_code == 404
    assert r.json() == {"type": "error", "error": {
        "type": "not_found_error",
        "message": "model 'fast' does not support token counting on Bedrock"}}
    # Not the key's fault: the next call uses A again.
    assert count_tokens(httpd, "claude-sonnet-4-5").json() == {"input_tokens": 21}
    assert mock.keys() == [AKID_A, AKID_A]
    r = count_tokens(httpd, "gpt-4o")
    assert r.status_code == 400 and "'gpt-4o'" in r.json()["error"]["message"]
    assert len(mock.requests()) == 2


@pytest.mark.sanitize
def test_usage_from_bedrock_counts_alone(start, mock):
    """Usage from invocationMetrics and the token-count headers, when the
    Anthropic events and body carry none."""
    httpd = start()
    mock.script(AKID_A, {"bedrock": {"no_usage": True}}, {"bedrock": {"no_usage": True}})
    reply = bedrock_call(httpd, stream=True)
    assert_complete(reply, MESSAGES, True)
    assert "usage" not in json.loads(reply.events[0][1])["message"]
    reply = bedrock_call(httpd)
    assert reply.status == 200 and "usage" not in reply.json()
    for rec in log_records(os.path.join(httpd.dir, "usage.jsonl"), 2):
        assert (rec["input_tokens"], rec["output_tokens"], rec["cache_read_tokens"],
                rec["cache_write_tokens"]) == (21, 9, 5, 7), rec


@pytest.mark.parametrize("options, message", [
    ("pool=aws default-model=x", "a bedrock provider needs region="),
    ("region=us-east-1 pool=aws", "a bedrock provider needs model-map= or default-model="),
    ("region=us-east-1 pool=aws model-map=nonsense", "model-map entry 'nonsense' is not"),
])
def test_configuration_errors_name_the_directive(httpd, options, message):
    httpd.write_config(f"AIBridgeKeyPool aws {KEY_A}\nAIBridgeProvider br bedrock {options}")
    code, out = httpd.check()
    assert code != 0
    assert "AIBridgeProvider" in out and message in out, out


def test_anthropic_sdk_through_bedrock(start, mock):
    """The official @anthropic-ai/sdk, unchanged, against the Bedrock provider."""
    httpd = start()
    httpd.allow_errors(r"malformed stream")
    mock.script(AKID_A, {"status": 429})
    mock.script(AKID_B, {}, {}, {"bedrock": {"cut_at": 3}})
    p = subprocess.run(["node", os.path.join(TOP, "tests", "sdk", "anthropic_client.mjs"),
                        httpd.url + "/ai/br"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["message"] == REPLY and out["stream"] == REPLY and out["stream_usage"] == 9
    assert out["stream_error"] and "upstream" in out["stream_error"]
    assert mock.keys() == [AKID_A] + [AKID_B] * 3
    assert_signed(mock)  # the SDK's own headers (x-stainless-...) signed as sent


def test_anthropic_sdk_count_tokens_through_bedrock(start, mock):
    """The official SDK's messages.countTokens: a count, and for a model
    Bedrock cannot count for, the SDK's own NotFoundError."""
    httpd = start()
    mock.script(AKID_A, {"status": 429})
    p = subprocess.run(["node", os.path.join(TOP, "tests", "sdk", "anthropic_count_tokens.mjs"),
                        httpd.url + "/ai/br", "claude-sonnet-4-5", "fast"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out == {"claude-sonnet-4-5": 21, "fast": {"error": "NotFoundError", "status": 404}}
    assert mock.keys() == [AKID_A, AKID_B, AKID_B]
    assert_signed(mock)  # the SDK's own headers signed as sent


def test_agentic_loop_through_bedrock(start, mock):
    server = McpServer().start()
    try:
        httpd = start((KEY_A,), "mcp=tools", extra=f"AIBridgeMCPServer tools {server.url}")
        turn = {"id": "msg_tools", "type": "message", "role": "assistant", "model": SONNET,
                "content": [{"type": "tool_use", "id": "toolu_01", "name": "bmcp_tools_echo",
                             "input": {"message": "ping-42"}}],
                "stop_reason": "tool_use", "stop_sequence": None,
                "usage": {"input_tokens": 100, "output_tokens": 20}}
        mock.script(AKID_A, {"body": turn})
        reply = bedrock_call(httpd)
    finally:
        server.stop()
    assert reply.status == 200 and reply.json()["content"][0]["text"] == REPLY
    first, second = mock.requests()
    assert first["model_id"] == second["model_id"] == SONNET
    assert "model" not in second["body"] and second["body"]["anthropic_version"]
    assert second["body"]["messages"][-1]["content"][0]["type"] == "tool_result"
    assert_signed(mock)


# --------------------------------------------------------------------------
# The mock itself: real event-stream frames and SigV4 checked by botocore.

def signed_request(mock_url, path, body, akid=AKID_A, token=None):
    request = AWSRequest(method="POST", url=mock_url + path, data=body,
                         headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(akid, f"secret-{akid}", token), "bedrock", "us-east-1").add_auth(request)
    return requests.post(mock_url + path, data=body, headers=dict(request.headers), timeout=10)


def test_mock_frames_parse_with_botocore(mock):
    mock.reset()
    path = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke-with-response-stream"
    r = signed_request(mock.url, path, b'{"max_tokens":5}', AKID_B, f"token-{AKID_B}")
    assert r.status_code == 200 and mock.requests()[0]["signature"] == "ok"
    buffer = EventStreamBuffer()
    buffer.add_data(r.content)
    events = [json.loads(base64.b64decode(json.loads(m.payload)["bytes"])) for m in buffer]
    assert [e["type"] for e in events][0] == "message_start"
    assert events[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 9
    assert "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta") \
        == REPLY

    mock.script(AKID_A, {"bedrock": {"bad_crc_at": 0}})
    buffer = EventStreamBuffer()
    buffer.add_data(signed_request(mock.url, path, b"{}").content)
    with pytest.raises(ChecksumMismatch):
        list(buffer)


def test_mock_refuses_a_bad_signature(mock):
    mock.reset()
    path = "/model/x/invoke"
    request = AWSRequest(method="POST", url=mock.url + path, data=b"{}",
                         headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(AKID_A, "not-the-secret"), "bedrock", "us-east-1").add_auth(request)
    r = requests.post(mock.url + path, data=b"{}", headers=dict(request.headers), timeout=10)
    assert r.status_code == 403
    assert r.headers["x-amzn-ErrorType"].startswith("InvalidSignatureException")
