"""The status page (SetHandler aibridge-status) and its actions, mod_status's
server-status section, and the Prometheus metrics (SetHandler
aibridge-metrics): what they show is compared with the traffic sent, also
when that traffic met several child processes, and no key ever appears."""

import json
import os
import re
import time

import pytest
import requests

from harness import MODULES_DIR, SLOW
from status_pages import STATUS, Metrics, act, json_key, status_json, status_page

CHAT = "/ai/openai/v1/chat/completions"
RESPONSES = "/ai/openai/v1/responses"
MESSAGES = "/ai/anthropic/v1/messages"
CHAT_BODY = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}
RESPONSES_BODY = {"model": "gpt-x", "input": "hi"}
MESSAGES_BODY = {"model": "claude-x", "max_tokens": 16,
                 "messages": [{"role": "user", "content": "hi"}]}
METRICS = "/metrics"

# Distinctive keys (hints sk-p...k0aa and so on): none of them, nor their
# middles, may ever be printed.
K = ["sk-proj-zeroSECRET0123456789-k0aa", "sk-proj-oneSECRET0123456789-k1bb",
     "sk-proj-twoSECRET0123456789-k2cc"]
A = ["sk-ant-zeroSECRET0123456789-a0aa", "sk-ant-oneSECRET0123456789-a1bb"]
HINTS = ["sk-p...k0aa", "sk-p...k1bb", "sk-p...k2cc"]
A_HINTS = ["sk-a...a0aa", "sk-a...a1bb"]
R429 = {"status": 429, "headers": {"Retry-After": "30"}}
R401 = {"status": 401}
# The mock's usage for every chat / responses answer.
INPUT_TOKENS, OUTPUT_TOKENS = 21, 9

PIDS_LOG = """LogFormat "%P %r" pids
CustomLog "{dir}/pids.log" pids"""


def config(mock, status_access="", metrics_access="", extra=""):
    return f"""
LoadModule authz_host_module {MODULES_DIR}/mod_authz_host.so
AIBridgeKeyPool main {" ".join(K)}
AIBridgeKeyPool claude {" ".join(A)}
AIBridgeProvider openai openai {mock.url} pool=main cooldown=60
AIBridgeProvider anthropic anthropic {mock.url} pool=claude cooldown=60
<Location /ai>
  SetHandler aibridge
</Location>
<Location {STATUS}>
  SetHandler aibridge-status
  {status_access}
</Location>
<Location {METRICS}>
  SetHandler aibridge-metrics
  {metrics_access}
</Location>
{extra}
"""


@pytest.fixture
def gw(httpd, mock):
    httpd.write_config(config(mock))
    httpd.start()
    return httpd


def chat(httpd, **kw):
    return httpd.post(CHAT, json=CHAT_BODY, **kw)


def never_printed(text):
    for key in K + A:
        for part in (key, key[4:-4]):
            assert part not in text, f"a key was printed:\n{text}"
    assert "SECRET" not in text, f"part of a key was printed:\n{text}"


# --------------------------------------------------------------------------
# A small Prometheus text-format (0.0.4) parser, strict about what it reads

def metrics(httpd, **kw):
    r = httpd.get(METRICS, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return r.text


# --------------------------------------------------------------------------
# Traffic with a known outcome

def traffic(httpd, mock):
    """Failovers, successes, exhaustion of both kinds; see EXPECTED."""
    httpd.allow_errors(r"every key of pool 'claude' failed authentication")
    mock.script(K[0], R429)
    mock.script(K[1], R401)
    assert chat(httpd).status_code == 200                                   # k0, k1, k2
    assert chat(httpd).status_code == 200                                   # k2
    assert httpd.post(RESPONSES, json=RESPONSES_BODY).status_code == 200    # k2
    mock.script(K[2], R429)
    assert chat(httpd).status_code == 429                                   # k2, exhausted
    assert chat(httpd).status_code == 429                                   # no attempt
    mock.script(A[0], R401)
    mock.script(A[1], R401)
    assert httpd.post(MESSAGES, json=MESSAGES_BODY).status_code == 502      # a0, a1
    assert httpd.post(MESSAGES, json=MESSAGES_BODY).status_code == 502      # no attempt
    assert mock.keys() == [K[0], K[1], K[2], K[2], K[2], K[2], A[0], A[1]]


def check_metrics(m):
    """The metrics after traffic()."""
    oa = {"provider": "openai"}
    an = {"provider": "anthropic"}
    # Interceptions by route, credential and outcome.
    total = "aibridge_interceptions_total"
    assert m.value(total, **oa, route="chat", credential="pool", outcome="ok") == 2
    assert m.value(total, **oa, route="chat", credential="pool", outcome="exhausted") == 2
    assert m.value(total, **oa, route="responses", credential="pool", outcome="ok") == 1
    assert m.value(total, **an, route="messages", credential="pool", outcome="exhausted") == 2
    assert sum(v for (n, _), v in m.samples.items() if n == total) == 7
    # Bounded by the configuration: no BYOK (byok=off), no foreign routes.
    assert {ls["credential"] for ls in m.labels(total)} == {"pool"}
    assert {ls["route"] for ls in m.labels(total) if ls["provider"] == "anthropic"} \
        == {"messages", "passthrough"}
    assert {ls["route"] for ls in m.labels(total) if ls["provider"] == "openai"} \
        == {"chat", "responses", "passthrough"}
    assert m.value("aibridge_interceptions_inflight", **oa) == 0
    assert m.value("aibridge_interceptions_inflight", **an) == 0
    # Durations: one observation per interception.
    d = "aibridge_interception_duration_seconds"
    assert m.value(d + "_count", **oa, route="chat") == 4
    assert m.value(d + "_count", **oa, route="responses") == 1
    assert m.value(d + "_count", **oa, route="passthrough") == 0
    assert m.value(d + "_count", **an, route="messages") == 2
    assert 0 < m.value(d + "_sum", **oa, route="chat") < 30 * SLOW
    # Attempts: 3, 1, 1, 1, 0 and 2, 0.
    a = "aibridge_failover_attempts"
    assert m.buckets(a, **oa) == {"1.0": 4, "2.0": 4, "3.0": 5, "4.0": 5, "5.0": 5,
                                  "10.0": 5, "25.0": 5, "+Inf": 5}
    assert m.value(a + "_sum", **oa) == 6 and m.value(a + "_count", **oa) == 5
    assert m.buckets(a, **an)["1.0"] == 1 and m.buckets(a, **an)["2.0"] == 2
    assert m.value(a + "_sum", **an) == 2 and m.value(a + "_count", **an) == 2
    # Marks and exhaustion.
    t = "aibridge_key_pool_state_transitions_total"
    assert m.value(t, **oa, reason="rate_limited") == 2
    assert m.value(t, **oa, reason="unauthorized") == 1
    assert m.value(t, **oa, reason="forbidden") == 0 and m.value(t, **oa, reason="quota") == 0
    assert m.value(t, **an, reason="unauthorized") == 2
    e = "aibridge_key_pool_exhaustions_total"
    assert m.value(e, **oa, outcome="rate_limited") == 2
    assert m.value(e, **oa, outcome="auth_failed") == 0
    assert m.value(e, **an, outcome="auth_failed") == 2
    assert m.value(e, **an, outcome="rate_limited") == 0
    # Key states, by hint.
    s = "aibridge_key_state"
    for hint, state in zip(HINTS, ["cooling", "disabled", "cooling"]):
        assert m.value(s, **oa, key=hint, state=state) == 1
        assert sum(m.find(s, **oa, key=hint)) == 1
    for hint in A_HINTS:
        assert m.value(s, **an, key=hint, state="disabled") == 1
    # Tokens: only k2 answered, two chats and one response.
    tok = "aibridge_tokens_total"
    assert m.value(tok, **oa, key=HINTS[2], type="input") == 3 * INPUT_TOKENS
    assert m.value(tok, **oa, key=HINTS[2], type="output") == 3 * OUTPUT_TOKENS
    for hint in HINTS[:2]:
        assert sum(m.find(tok, **oa, key=hint)) == 0
    assert sum(m.find(tok, **an)) == 0
    assert {ls["type"] for ls in m.labels(tok)} == {"input", "output", "cache_read", "cache_write"}


# --------------------------------------------------------------------------
# The status page

@pytest.mark.sanitize
def test_status_page_after_failovers(gw, mock):
    mock.script(K[0], R429)
    mock.script(K[1], R401)
    assert chat(gw).status_code == 200
    assert chat(gw).status_code == 200
    assert mock.keys() == [K[0], K[1], K[2], K[2]]

    doc = status_json(gw)
    assert [s["server"] for s in doc["servers"]] == ["127.0.0.1"]
    [openai] = [p for p in doc["servers"][0]["providers"] if p["name"] == "openai"]
    assert openai["type"] == "openai" and openai["pool"] == "main"
    assert openai["interceptions"]["ok"] == 2 and openai["inflight"] == 0
    assert openai["transitions"] == {"rate_limited": 1, "quota": 0, "unauthorized": 1,
                                     "forbidden": 0}
    k0, k1, k2 = openai["keys"]
    assert [k["hint"] for k in openai["keys"]] == HINTS
    assert k0["state"] == "cooling" and k0["reason"] == "rate_limited"
    assert 25000 < k0["remaining_ms"] <= 30000
    assert (k0["requests"], k0["http_429"], k0["http_401"], k0["http_403"]) == (1, 1, 0, 0)
    assert k0["last_failure_status"] == 429 and k0["last_failure"].endswith("Z")
    assert k1["state"] == "disabled" and k1["reason"] == "unauthorized"
    assert k1["remaining_ms"] is None and k1["until_reenabled"] is True
    assert (k1["requests"], k1["http_429"], k1["http_401"]) == (1, 0, 1)
    assert k1["last_failure_status"] == 401
    assert k2["state"] == "available" and k2["reason"] is None
    assert k2["requests"] == 2 and k2["last_failure"] is None
    assert (k2["tokens_input"], k2["tokens_output"]) == (2 * INPUT_TOKENS, 2 * OUTPUT_TOKENS)
    now_ms = time.time() * 1000
    assert now_ms - 60000 < k2["last_used_ms"] <= now_ms + 1000

    page = status_page(gw)
    row = page.key("openai", 0)
    assert row["state"] == "cooling"
    assert row["cells"]["hint"] == HINTS[0]
    assert row["cells"]["reason"] == "rate_limited"
    assert re.fullmatch(r"(2[6-9]|30)s", row["cells"]["remaining"]), row["cells"]
    assert (row["cells"]["requests"], row["cells"]["http429"]) == ("1", "1")
    assert row["cells"]["last-failure"].startswith("429 at ")
    [form] = row["forms"]
    assert form["method"] == "post" and form["action"] == STATUS
    assert form["fields"]["action"] == "clear" and form["fields"]["key"] == "0"
    row = page.key("openai", 1)
    assert (row["state"], row["cells"]["reason"], row["cells"]["remaining"]) == \
        ("disabled", "unauthorized", "until re-enabled")
    assert row["cells"]["http401"] == "1"
    assert [f["fields"]["action"] for f in row["forms"]] == ["enable"]
    row = page.key("openai", 2)
    assert row["state"] == "available" and row["forms"] == []
    assert (row["cells"]["tokens-in"], row["cells"]["tokens-out"]) == ("42", "18")
    assert row["cells"]["requests"] == "2" and row["cells"]["last-failure"] == "never"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z \(\d+s ago\)", row["cells"]["last-used"])
    # The other provider's keys, untouched.
    assert [page.key("anthropic", i)["state"] for i in range(2)] == ["available"] * 2
    assert len(page.nonce()) == 32

    # Only GET, HEAD and POST.
    assert gw.get(STATUS, headers={}).status_code == 200
    assert requests.head(gw.url + STATUS, timeout=30).status_code == 200
    r = requests.put(gw.url + STATUS, data="x", timeout=30)
    assert r.status_code == 405 and "POST" in r.headers["Allow"]


def test_actions_enable_and_clear(gw, mock):
    mock.script(K[0], R429)
    mock.script(K[1], R401)
    assert chat(gw).status_code == 200
    nonce = status_page(gw).nonce()

    # clear: k0's cooldown ends, the next request uses it again.
    r = act(gw, nonce, "clear", key=0)
    assert r.status_code == 303, r.text
    assert r.headers["Location"] == STATUS
    assert json_key(status_json(gw), "openai", 0)["state"] == "available"
    assert json_key(status_json(gw), "openai", 1)["state"] == "disabled"
    assert chat(gw).status_code == 200
    assert mock.keys()[-1] == K[0]
    assert gw.log_lines(r"status page: cleared the cooldown of key #1 \(sk-p\.\.\.k0aa\) of "
                        r"provider 'openai' by 127\.0\.0\.1")

    # clear does not enable a disabled key ...
    assert act(gw, nonce, "clear", key=1).status_code == 303
    assert json_key(status_json(gw), "openai", 1)["state"] == "disabled"
    # ... enable does: the next request that passes k0 lands on k1.
    r = act(gw, nonce, "enable", key=1)
    assert r.status_code == 303
    k1 = json_key(status_json(gw), "openai", 1)
    assert k1["state"] == "available" and k1["reason"] is None
    assert k1["http_401"] == 1, "counters stay"
    mock.script(K[0], R429)
    assert chat(gw).status_code == 200
    assert mock.keys()[-2:] == [K[0], K[1]]
    assert gw.log_lines(r"status page: re-enabled key #2 \(sk-p\.\.\.k1bb\) of provider 'openai'")

    # A browser's own form post: same origin, Sec-Fetch-Site same-origin.
    r = act(gw, nonce, "clear", key=0, headers={"Origin": gw.url,
                                                "Sec-Fetch-Site": "same-origin",
                                                "Referer": gw.url + STATUS})
    assert r.status_code == 303
    assert json_key(status_json(gw), "openai", 0)["state"] == "available"


@pytest.mark.sanitize
def test_actions_refused(gw, mock):
    mock.script(K[0], R429)
    mock.script(K[1], R401)
    assert chat(gw).status_code == 200
    nonce = status_page(gw).nonce()

    def unchanged():
        doc = status_json(gw)
        return (json_key(doc, "openai", 0)["state"], json_key(doc, "openai", 1)["state"])

    refused = [
        (None, {}),                                                    # no nonce
        ("0" * 32, {}),                                                # wrong nonce
        (nonce[:-1], {}),                                              # a prefix of it
        (nonce, {"Origin": "http://evil.example"}),                    # cross-site
        (nonce, {"Origin": "null"}),
        (nonce, {"Origin": gw.url.replace(str(gw.port), str(gw.port + 1))}),
        (nonce, {"Sec-Fetch-Site": "cross-site"}),
        (nonce, {"Sec-Fetch-Site": "same-site"}),
        (nonce, {"Referer": "http://evil.example/aibridge-status"}),
        (nonce, {"Origin": gw.url, "Referer": "http://evil.example/"}),
    ]
    for given, headers in refused:
        for action, key in (("enable", 1), ("clear", 0)):
            r = act(gw, given, action, key=key, headers=headers)
            assert r.status_code == 403, (given, headers, r.status_code)
            assert unchanged() == ("cooling", "disabled")
    assert gw.log_lines(r"status page: action refused, cross-site request \(Origin")
    assert gw.log_lines(r"status page: action refused, cross-site request \(Sec-Fetch-Site")
    assert gw.log_lines(r"status page: action refused, wrong nonce")
    assert gw.log_lines(r"status page: action refused, no nonce")

    # The right nonce, but nothing sensible to do.
    for action, provider, key in (("reset", "openai", 1), ("enable", "nope", 1),
                                  ("enable", "openai", 3), ("enable", "openai", -1),
                                  ("enable", "openai", "1x"), ("", "openai", 1)):
        r = act(gw, nonce, action, provider, key)
        assert r.status_code == 400, (action, provider, key)
    assert unchanged() == ("cooling", "disabled")


def test_nonce_is_per_server_and_per_start(httpd, mock):
    httpd.write_config(config(mock, extra=f"""
<VirtualHost 127.0.0.1:{httpd.port}>
  ServerName main.test
</VirtualHost>
<VirtualHost 127.0.0.1:{httpd.port}>
  ServerName b.test
  AIBridgeKeyPool vpool kv0 kv1
  AIBridgeProvider openai openai {mock.url} pool=vpool
</VirtualHost>"""))
    httpd.start()
    mock.script(K[1], R401)
    mock.script("kv0", R401)
    mock.script(K[0], R429)
    assert chat(httpd, headers={"Host": "main.test"}).status_code == 200
    assert chat(httpd, headers={"Host": "b.test"}).status_code == 200
    assert mock.keys() == [K[0], K[1], K[2], "kv0", "kv1"]

    # Each virtual host's page shows the providers that serve it: its own,
    # then those it inherits.
    main = status_json(httpd, headers={"Host": "main.test"})
    b = status_json(httpd, headers={"Host": "b.test"})
    port = httpd.port
    assert [s["server"] for s in main["servers"]] == [f"main.test:{port}"]
    assert [(p["name"], p["pool"]) for p in main["servers"][0]["providers"]] == \
        [("openai", "main"), ("anthropic", "claude")]
    assert [s["server"] for s in b["servers"]] == [f"b.test:{port}"]
    assert [(p["name"], p["pool"]) for p in b["servers"][0]["providers"]] == \
        [("openai", "vpool"), ("anthropic", "claude")]

    main_nonce = status_page(httpd, headers={"Host": "main.test"}).nonce()
    b_nonce = status_page(httpd, headers={"Host": "b.test"}).nonce()
    assert main_nonce != b_nonce
    # main.test's nonce does nothing on b.test, and the reverse.
    assert act(httpd, main_nonce, "enable", key=0, host="b.test").status_code == 403
    assert act(httpd, b_nonce, "enable", key=1, host="main.test").status_code == 403
    # b.test's action acts on b.test's own openai.
    assert act(httpd, b_nonce, "enable", key=0, host="b.test").status_code == 303
    assert json_key(status_json(httpd, headers={"Host": "b.test"}), "openai", 0)["state"] \
        == "available"
    assert json_key(status_json(httpd, headers={"Host": "main.test"}), "openai", 1)["state"] \
        == "disabled"

    # The metrics report every provider once, under the server defining it.
    m = Metrics(metrics(httpd, headers={"Host": "main.test"}))
    servers = {(ls["server"], ls["provider"]) for ls in m.labels("aibridge_interceptions_inflight")}
    assert servers == {("127.0.0.1", "openai"), ("127.0.0.1", "anthropic"),
                       (f"b.test:{port}", "openai")}
    assert m.value("aibridge_key_state", server="127.0.0.1", provider="openai", key=HINTS[1],
                   state="disabled") == 1
    assert m.value("aibridge_key_state", server=f"b.test:{port}", provider="openai", index="0",
                   state="available") == 1
    assert Metrics(metrics(httpd, headers={"Host": "b.test"})).samples == m.samples

    # A restart makes new nonces.
    httpd.graceful()
    assert status_page(httpd, headers={"Host": "main.test"}).nonce() != main_nonce
    assert act(httpd, main_nonce, "enable", key=1, host="main.test").status_code == 403


def test_require_on_location(httpd, mock):
    httpd.write_config(config(mock, status_access="Require ip 10.0.0.1",
                              metrics_access="Require ip 10.0.0.1"))
    httpd.start()
    httpd.allow_errors(r"AH01630: client denied by server configuration")
    mock.script(K[0], R429)
    assert chat(httpd).status_code == 200
    assert httpd.get(STATUS).status_code == 403
    assert httpd.get(STATUS + "?format=json").status_code == 403
    assert httpd.get(METRICS).status_code == 403
    assert act(httpd, "0" * 32, "clear", key=0).status_code == 403
    httpd.stop()

    httpd.write_config(config(mock, status_access="Require ip 127.0.0.1",
                              metrics_access="Require ip 127.0.0.1"))
    httpd.start()
    assert httpd.get(STATUS).status_code == 200
    assert httpd.get(METRICS).status_code == 200


# --------------------------------------------------------------------------
# Metrics

def test_metrics_match_traffic(gw, mock):
    # Before any traffic: every configured series, all zero.
    m = Metrics(metrics(gw))
    assert set(m.types) == {
        "aibridge_interceptions_total", "aibridge_interceptions_inflight",
        "aibridge_interception_duration_seconds", "aibridge_tokens_total", "aibridge_key_state",
        "aibridge_key_pool_state_transitions_total", "aibridge_key_pool_exhaustions_total",
        "aibridge_failover_attempts", "aibridge_tool_calls_total",
        "aibridge_tool_call_seconds_total"}
    assert m.types["aibridge_interception_duration_seconds"] == "histogram"
    assert m.types["aibridge_failover_attempts"] == "histogram"
    assert m.types["aibridge_key_state"] == "gauge"
    assert all(v == 0 for (n, ls), v in m.samples.items() if n != "aibridge_key_state")
    assert m.value("aibridge_key_state", provider="openai", key=HINTS[0], state="available") == 1
    assert len(m.samples) < 1000

    traffic(gw, mock)
    m = Metrics(metrics(gw))
    check_metrics(m)
    # The key label is the hint, the same as on the status page.
    doc = status_json(gw)
    for p in doc["servers"][0]["providers"]:
        for k in p["keys"]:
            for type_ in ("input", "output", "cache_read", "cache_write"):
                assert m.value("aibridge_tokens_total", provider=p["name"], key=k["hint"],
                               type=type_) == k["tokens_" + type_]
    assert {ls["key"] for ls in m.labels("aibridge_key_state")} == set(HINTS + A_HINTS)
    assert requests.post(gw.url + METRICS, timeout=30).status_code == 405


def test_same_numbers_in_every_child(httpd, mock):
    """prefork, one connection per child: the traffic, and each scrape, meets
    another process; all of them read the same shared memory."""
    httpd.write_config(config(mock, extra=PIDS_LOG.format(dir=httpd.dir)), mpm="prefork")
    httpd.start()
    traffic(httpd, mock)
    scrapes = [metrics(httpd) for _ in range(4)]
    pages = [status_json(httpd) for _ in range(4)]
    for text in scrapes:
        check_metrics(Metrics(text))
    assert len(set(scrapes)) == 1, "every child shows the same numbers"

    def stable(doc):
        for p in doc["servers"][0]["providers"]:
            for k in p["keys"]:
                k.pop("remaining_ms")
        return json.dumps(doc["servers"], sort_keys=True)
    assert len({stable(doc) for doc in pages}) == 1
    assert json_key(pages[0], "openai", 2)["requests"] == 4

    # Each request of the traffic and every read came to another process.
    deadline = time.time() + 5
    while True:
        with open(os.path.join(httpd.dir, "pids.log")) as f:
            pids = [line.split()[0] for line in f.read().splitlines()]
        if len(pids) >= 15 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert len(pids) == 15 and len(set(pids)) == 15, pids


# --------------------------------------------------------------------------
# mod_status

def test_server_status_section(httpd, mock):
    httpd.write_config(config(mock, extra=f"""
LoadModule status_module {MODULES_DIR}/mod_status.so
<Location /server-status>
  SetHandler server-status
</Location>"""))
    httpd.start()
    mock.script(K[0], R429)
    mock.script(K[1], R401)
    assert chat(httpd).status_code == 200

    text = httpd.get("/server-status").text
    section = text.split('<h2 id="aibridge">mod_aibridge key pools</h2>', 1)[1]
    rows = re.findall(r"<td>(\d+)</td><td><code>([^<]*)</code></td><td>(\w+)</td>", section)
    assert rows == [("1", HINTS[0], "cooling"), ("2", HINTS[1], "disabled"),
                    ("3", HINTS[2], "available"), ("1", A_HINTS[0], "available"),
                    ("2", A_HINTS[1], "available")]
    assert "until re-enabled" in section

    auto = httpd.get("/server-status?auto").text
    lines = dict(line.split(": ", 1) for line in auto.splitlines() if line.startswith("AIBridge"))
    assert lines == {"AIBridgeProviders": "2", "AIBridgeKeys": "5",
                     "AIBridgeKeysAvailable": "3", "AIBridgeKeysCooling": "1",
                     "AIBridgeKeysDisabled": "1", "AIBridgeInterceptions": "1",
                     "AIBridgeInflight": "0"}
    assert "<" not in "".join(lines.values())

    notable = httpd.get("/server-status?notable").text
    assert "<table" not in notable.split("mod_aibridge key pools", 1)[1]
    assert f"#2 <code>{HINTS[1]}</code>: disabled (unauthorized, until re-enabled)" in notable


# --------------------------------------------------------------------------
# No key, anywhere

def test_no_key_in_any_page(httpd, mock):
    httpd.write_config(config(mock, extra=f"""
LoadModule status_module {MODULES_DIR}/mod_status.so
<Location /server-status>
  SetHandler server-status
</Location>"""))
    httpd.start()
    traffic(httpd, mock)
    mock.script(K[0], R429)
    for path in (STATUS, STATUS + "?format=json", METRICS, "/server-status",
                 "/server-status?auto", "/server-status?notable"):
        r = httpd.get(path)
        assert r.status_code == 200
        never_printed(r.text)
        never_printed(str(r.headers))
    # Refused and accepted actions alike.
    nonce = status_page(httpd).nonce()
    for given in (None, "x", nonce):
        r = act(httpd, given, "enable", key=1)
        never_printed(r.text + str(r.headers))
    never_printed(httpd.read_log())
