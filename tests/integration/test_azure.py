"""Azure OpenAI end to end (issue #15): a real httpd with the module, the mock
upstream playing Azure (tests/mock_azure.py).

Clients speak OpenAI to /ai/<provider>/v1/...; upstream the module speaks
Azure: the deployments shape (/openai/deployments/<d>/chat/completions,
/openai/responses, ?api-version=) and the v1 shape (a base URL ending in
/openai/v1), deployment-map=, api-key and bearer: credentials, BYOK, 429
cooldowns from retry-after-ms / Retry-After / x-ratelimit-reset-*, the
content filter relayed unmarked, 401 disabling a key, the usage log and
metrics, configuration errors, the agentic loop and the openai npm client.
"""

import json
import os
import sys

import pytest
import requests

from bridging import (CHAT, REPLY, RESPONSES, assert_complete, call, log_records,
                      request_body)
from harness import TOP, bridge_config
from status_pages import Metrics, json_key, status_json
from test_agentic import answer_text, continuation, echo, mcp, turn  # noqa: F401 (fixture)
from test_sdk import node_sdk, run_client  # noqa: F401 (fixture)

sys.path.insert(0, os.path.join(TOP, "tests"))
import mock_azure  # noqa: E402  (what the mock's Azure refuses, and how)

DEFAULT_VERSION = "api-version=2025-04-01-preview"
STATUS = "/aibridge-status"
METRICS = "/metrics"

route_param = pytest.mark.parametrize("route", [CHAT, RESPONSES], ids=["chat", "responses"])
stream_param = pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming"])


def usage_path(httpd):
    return os.path.join(httpd.dir, "usage.jsonl")


@pytest.fixture
def start(httpd, mock):
    """start(*options, base="", keys=..., providers=[...], extra=""): httpd with
    provider 'azure' (base URL: the mock + `base`; pool main, cooldown=60,
    plus `options`), the status page, the metrics and the usage log."""
    def start_(*options, base="", keys=("k0", "k1", "k2"), providers=(), extra=""):
        main = " ".join([f"azure azure {mock.url}{base} pool=main cooldown=60", *options])
        lines = [f"<Location {STATUS}>", "  SetHandler aibridge-status", "</Location>",
                 f"<Location {METRICS}>", "  SetHandler aibridge-metrics", "</Location>",
                 f'AIBridgeUsageLog "{usage_path(httpd)}"', extra]
        httpd.write_config(bridge_config(mock.url, keys=keys, providers=[main, *providers],
                                         extra="\n".join(lines)))
        httpd.start()
        return httpd
    return start_


def ask(httpd, route=CHAT, stream=False, body=None, **kw):
    return call(httpd, route, stream, body=body, provider="azure", **kw)


def azure_key(doc, index):
    return json_key(doc, "azure", index)


def upstream(mock):
    """(path, query, credential header) of each upstream request."""
    return [(r["path"], r["query"], r["key_header"]) for r in mock.requests()]


# --------------------------------------------------------------------------
# The mock plays Azure: what it refuses

def test_mock_refuses_like_azure(mock):
    mock.reset()
    chat = f"{mock.url}/openai/deployments/d/chat/completions"
    body = request_body(CHAT)
    r = requests.post(chat, json=body, headers={"api-key": "k"}, timeout=10)
    assert (r.status_code, r.json()["error"]["message"]) == (404, "Resource not found")
    r = requests.post(chat + "?" + DEFAULT_VERSION, json=body, timeout=10)
    assert r.status_code == 401
    r = requests.post(chat + "?" + DEFAULT_VERSION, json=body, headers={"api-key": "k"},
                      timeout=10)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == REPLY
    r = requests.post(f"{mock.url}/openai/v1/chat/completions?api-version=2024-10-21",
                      json=body, headers={"api-key": "k"}, timeout=10)
    assert r.status_code == 400
    mock.script("k", {"status": 429})
    r = requests.post(chat + "?" + DEFAULT_VERSION, json=body, headers={"api-key": "k"},
                      timeout=10)
    assert r.status_code == 429
    assert (r.headers["retry-after-ms"], r.headers["retry-after"]) == ("6500", "7")


# --------------------------------------------------------------------------
# Both URL shapes

@pytest.mark.sanitize
@route_param
@stream_param
def test_deployments_shape(start, mock, route, stream):
    httpd = start()
    reply = ask(httpd, route, stream)
    assert_complete(reply, route, stream)
    path = ("/openai/deployments/gpt-4o-mini/chat/completions" if route == CHAT
            else "/openai/responses")
    assert upstream(mock) == [(path, DEFAULT_VERSION, "api-key")]
    [seen] = mock.requests()
    assert seen["key"] == "k0" and "authorization" not in seen["headers"]
    assert seen["body"]["model"] == "gpt-4o-mini"


@route_param
@stream_param
def test_v1_shape(start, mock, route, stream):
    httpd = start(base="/openai/v1")
    reply = ask(httpd, route, stream)
    assert_complete(reply, route, stream)
    assert upstream(mock) == [("/openai/v1" + route[3:], "", "api-key")]


def test_passthrough_routes(start, mock):
    httpd = start(providers=[f"azure-v1 azure {mock.url}/openai/v1 pool=main"])
    assert ask(httpd, "/v1/models?limit=2", method="GET").status == 200
    assert ask(httpd, "/v1/models/gpt-4o", method="GET").json()["id"] == "gpt-4o"
    assert call(httpd, "/v1/models", method="GET", provider="azure-v1").status == 200
    assert ask(httpd, "/v1/responses/resp_7", method="GET").json()["id"] == "resp_7"
    assert upstream(mock) == [("/openai/models", DEFAULT_VERSION + "&limit=2", "api-key"),
                              ("/openai/models/gpt-4o", DEFAULT_VERSION, "api-key"),
                              ("/openai/v1/models", "", "api-key"),
                              ("/openai/responses/resp_7", DEFAULT_VERSION, "api-key")]
    # Azure's URLs have no place for these without a deployment.
    assert ask(httpd, "/v1/embeddings", body={"model": "m", "input": "x"}).status == 404


def test_api_version_option(start, mock):
    httpd = start("api-version=2024-10-21")
    assert ask(httpd).status == 200
    assert mock.requests()[0]["query"] == "api-version=2024-10-21"


@pytest.mark.sanitize
@pytest.mark.parametrize("base", ["", "/openai/v1"], ids=["deployments", "v1"])
def test_deployment_map(start, mock, base):
    httpd = start("deployment-map=gpt-4o-mini=eu/mini", "deployment-map=gpt-4.1=big",
                  base=base)
    assert_complete(ask(httpd, CHAT), CHAT, False)
    assert_complete(ask(httpd, RESPONSES, True), RESPONSES, True)
    unmapped = request_body(CHAT)
    unmapped["model"] = "o3"
    assert ask(httpd, CHAT, body=unmapped).status == 200
    chat, responses, other = mock.requests()
    if base:
        # The v1 API reads the deployment from the body alone.
        assert [r["path"] for r in (chat, responses, other)] == \
            ["/openai/v1/chat/completions", "/openai/v1/responses", "/openai/v1/chat/completions"]
        assert chat["body"]["model"] == "eu/mini"
    else:
        # The deployment, URL-escaped, in the path; the body as the client sent it.
        assert chat["path"] == "/openai/deployments/eu%2fmini/chat/completions"
        assert chat["body"]["model"] == "gpt-4o-mini"
        assert responses["path"] == "/openai/responses"
        assert other["path"] == "/openai/deployments/o3/chat/completions"
    assert responses["body"]["model"] == "eu/mini"
    assert responses["body"]["stream"] is True
    assert other["body"]["model"] == "o3"


# --------------------------------------------------------------------------
# Credentials

@pytest.mark.sanitize
def test_bearer_entries(start, mock):
    token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.entra-payload.signature42"
    httpd = start(keys=(f"bearer:{token}", "k1"))
    mock.script(token, {"status": 429})
    reply = ask(httpd, CHAT, True)
    assert_complete(reply, CHAT, True)
    first, second = mock.requests()
    assert (first["key"], first["key_header"]) == (token, "authorization")
    assert first["headers"]["authorization"] == f"Bearer {token}"
    assert "api-key" not in first["headers"]
    assert (second["key"], second["key_header"]) == ("k1", "api-key")
    assert "authorization" not in second["headers"]
    # The token shows no more than any key's hint shows.
    doc = status_json(httpd)
    assert azure_key(doc, 0)["hint"] == "bear...re42"
    assert token[4:-4] not in httpd.read_log() + json.dumps(doc)


def test_byok(start, mock):
    httpd = start("byok=on")
    assert ask(httpd, headers={"api-key": "client-key"}).status == 200
    assert ask(httpd, headers={"Authorization": "Bearer client-token"}).status == 200
    assert ask(httpd).status == 200
    sent = [(r["key"], r["key_header"], r["both_key_headers"]) for r in mock.requests()]
    assert sent == [("client-key", "api-key", False), ("client-token", "authorization", False),
                    ("k0", "api-key", False)]


def test_client_credentials_never_go_with_the_pool_key(start, mock):
    httpd = start(keys=("k0", "bearer:tok-1"))
    mock.script("k0", {"status": 401})
    headers = {"api-key": "client-junk", "Authorization": "Bearer client-junk"}
    assert ask(httpd, headers=headers).status == 200
    first, second = mock.requests()
    assert (first["key"], first["both_key_headers"]) == ("k0", False)
    assert (second["key"], second["both_key_headers"]) == ("tok-1", False)


# --------------------------------------------------------------------------
# Failover, cooldowns, faults

@stream_param
def test_failover_on_429_with_retry_after_ms(start, mock, stream):
    httpd = start()
    mock.script("k0", {"status": 429})
    reply = ask(httpd, CHAT, stream)
    assert_complete(reply, CHAT, stream)
    assert mock.keys() == ["k0", "k1"]
    k0 = azure_key(status_json(httpd), 0)
    assert (k0["state"], k0["reason"]) == ("cooling", "rate_limited")
    # retry-after-ms (6.5 s) wins over Retry-After (7 s).
    assert 5000 < k0["remaining_ms"] <= 6500
    assert httpd.log_lines(r"provider 'azure': key #1 .* answered 429: cooling down for "
                           r"6\.500 s \(retry-after-ms\)")
    assert ask(httpd, CHAT, stream).status == 200
    assert mock.keys() == ["k0", "k1", "k1"]


@pytest.mark.parametrize("headers, seconds, source", [
    ({"retry-after-ms": None}, 7, "Retry-After"),
    ({"retry-after-ms": None, "retry-after": None, "x-ratelimit-reset-requests": "2m0s",
      "x-ratelimit-remaining-requests": "0"}, 120, "x-ratelimit-reset"),
], ids=["retry-after", "x-ratelimit-reset"])
def test_cooldown_sources(start, mock, headers, seconds, source):
    httpd = start()
    mock.script("k0", {"status": 429, "headers": headers})
    assert ask(httpd).status == 200
    remaining = azure_key(status_json(httpd), 0)["remaining_ms"]
    assert (seconds - 2) * 1000 < remaining <= seconds * 1000
    assert httpd.log_lines(rf"cooling down for {seconds}\.000 s \({source}\)")


@pytest.mark.parametrize("failover", ["", "failover=429,401,403,400"],
                         ids=["default", "400-fails-over"])
@stream_param
def test_content_filter_is_relayed_unmarked(start, mock, failover, stream):
    httpd = start(*[o for o in [failover] if o])
    body = request_body(CHAT, stream)
    body["messages"][0]["content"] = mock_azure.CONTENT_FILTER_TRIGGER
    reply = ask(httpd, CHAT, stream, body=body)
    assert reply.status == 400, reply.body
    error = reply.json()["error"]
    assert error["code"] == "content_filter"
    assert error["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert mock.keys() == ["k0"]
    assert all(azure_key(status_json(httpd), i)["state"] == "available" for i in range(3))


def test_401_disables_the_key(start, mock):
    httpd = start()
    httpd.allow_errors(r"every key of pool 'main' failed authentication")
    mock.script("k0", {"status": 401})
    assert ask(httpd).status == 200
    assert mock.keys() == ["k0", "k1"]
    k0 = azure_key(status_json(httpd), 0)
    assert (k0["state"], k0["reason"], k0["until_reenabled"]) == \
        ("disabled", "unauthorized", True)
    assert ask(httpd).status == 200
    assert mock.keys() == ["k0", "k1", "k1"]


def test_exhausted_pool_answers_in_openai_shape(start, mock):
    httpd = start()
    for key in ("k0", "k1", "k2"):
        mock.script(key, {"status": 429})
    reply = ask(httpd)
    assert reply.status == 429
    assert reply.json()["error"]["code"] == "rate_limit_exceeded"
    assert reply.headers["Retry-After"] == "7"


# --------------------------------------------------------------------------
# Usage log and metrics

@stream_param
def test_usage_log_and_metrics(start, mock, stream):
    httpd = start()
    mock.script("k0", {"status": 429})
    assert_complete(ask(httpd, CHAT, stream), CHAT, stream)
    [rec] = log_records(usage_path(httpd), 1)
    assert {k: rec[k] for k in ("provider", "route", "model", "stream", "attempts", "outcome",
                                "input_tokens", "output_tokens", "cache_read_tokens",
                                "reasoning_tokens")} == {
        "provider": "azure", "route": "chat", "model": "gpt-4o-mini", "stream": stream,
        "attempts": 2, "outcome": "ok", "input_tokens": 21, "output_tokens": 9,
        "cache_read_tokens": 5, "reasoning_tokens": 3}
    m = Metrics(httpd.get(METRICS).text)
    assert m.value("aibridge_interceptions_total", provider="azure", route="chat",
                   credential="pool", outcome="ok") == 1
    assert m.value("aibridge_key_pool_state_transitions_total", provider="azure",
                   reason="rate_limited") == 1
    assert m.value("aibridge_tokens_total", provider="azure", index="1", type="input") == 21


# --------------------------------------------------------------------------
# Configuration errors

@pytest.mark.parametrize("provider, words", [
    ("az azure pool=main", ["provider 'az' of type azure needs its base URL"]),
    ("az azure {url}/openai pool=main", ["ends in /openai"]),
    ("az azure {url} pool=main api-version=2024-10-21&x", ["api-version=2024-10-21&x"]),
    ("az azure {url}/openai/v1 pool=main api-version=2024-10-21",
     ["api-version= does not apply"]),
    ("az azure {url} pool=main deployment-map=gpt-4o", ["deployment-map=gpt-4o: takes"]),
    ("az azure {url} pool=main deployment-map=a=b deployment-map=a=c",
     ["model 'a' is mapped twice"]),
    ("az azure {url} pool=main region=eu", ["unknown option 'region'"]),
], ids=["no-base-url", "openai-suffix", "api-version", "v1-api-version", "map-form",
        "map-twice", "unknown"])
def test_configuration_errors(httpd, mock, provider, words):
    httpd.write_config(bridge_config(mock.url, providers=[provider.format(url=mock.url)]))
    code, output = httpd.check()
    assert code != 0
    assert "AIBridgeProvider" in output
    for word in words:
        assert word in output, output


# --------------------------------------------------------------------------
# The agentic loop, through Azure

def test_agentic_loop(start, mock, mcp):  # noqa: F811 (the fixture)
    httpd = start("mcp=tools", extra=f"AIBridgeMCPServer tools {mcp.url}")
    calls = echo(CHAT, "ping-azure")
    mock.script("k0", turn(CHAT, False, calls))
    reply = ask(httpd, CHAT)
    assert reply.status == 200, reply.body
    assert answer_text(CHAT, reply.json()) == REPLY
    first, second = mock.requests()
    assert [r["path"] for r in (first, second)] == \
        ["/openai/deployments/gpt-4o-mini/chat/completions"] * 2
    assert [r["query"] for r in (first, second)] == [DEFAULT_VERSION] * 2
    continuation(CHAT, second["body"], calls, [("Echo: ping-azure", False)])
    [rec] = log_records(usage_path(httpd), 1)
    assert (rec["provider"], rec["input_tokens"]) == ("azure", 100 + 21)


# --------------------------------------------------------------------------
# The official openai npm client, through Azure

def test_openai_sdk_through_azure(node_sdk, start, mock):  # noqa: F811 (the fixture)
    """The script test_sdk.py runs against OpenAI, unchanged: Azure's 429 on
    the first call, a stream that breaks off on the fifth."""
    httpd = start()
    mock.script("k0", {"status": 429})
    mock.script("k1", *[{}] * 4, {"drop": "after_events", "drop_after": 2})
    httpd.allow_errors(r"connection broken")
    out = run_client(node_sdk, "openai_client.mjs", httpd.url + "/ai/azure/v1")
    error = out.pop("stream_error")
    assert out == dict.fromkeys(["chat", "chat_stream", "responses", "responses_stream"], REPLY)
    assert "upstream" in error
    seen = mock.requests()
    assert [(r["key"], r["key_header"], r["query"]) for r in seen] == \
        [("k0", "api-key", DEFAULT_VERSION)] + [("k1", "api-key", DEFAULT_VERSION)] * 5
    assert not any("authorization" in r["headers"] for r in seen)


def test_azure_beside_openai(start, mock):
    """The same mock, the same pool: each provider speaks its own upstream."""
    httpd = start(providers=[f"openai openai {mock.url} pool=main"])
    assert ask(httpd).status == 200
    assert call(httpd, CHAT).status == 200
    assert upstream(mock) == [("/openai/deployments/gpt-4o-mini/chat/completions",
                               DEFAULT_VERSION, "api-key"),
                              (CHAT, "", "authorization")]


def test_unknown_type_lists_azure(httpd, mock):
    httpd.write_config(bridge_config(mock.url, providers=["x gemini pool=main"]))
    code, output = httpd.check()
    assert code != 0
    assert "unknown provider type 'gemini' (openai, anthropic, azure, bedrock)" in output, output
