"""The foundation: configuration checking, and the key pool's shared state
across processes, graceful restarts and restarts."""

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import bridge_config
from harness import HTTPD, SLOW

CHAT = "/ai/openai/v1/chat/completions"
MESSAGES = "/ai/anthropic/v1/messages"
CHAT_BODY = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES_BODY = {"model": "claude-x", "max_tokens": 16,
                 "messages": [{"role": "user", "content": "hi"}]}

# Distinctive keys: none of them, nor their middle, may ever be printed.
SECRET = "sk-secret-XYZ0123456789abcdefghijklmnwxyz"
SECRET_HINT = "sk-s...wxyz"
OTHER_SECRET = "sk-secret-XYZ9876543210zyxwvutsrqponm4321"
# A key that looks like a pool name, so that forgetting the pool name is no
# syntax error of its own.
NAMELIKE_SECRET = "sk-proj-Secret_XYZ0123456789abcdefghijklmn"


def chat(httpd, **kw):
    return httpd.post(CHAT, json=CHAT_BODY, **kw)


def never_printed(output, *keys):
    for key in keys:
        for part in (key, key[4:-4]):
            assert part not in output, f"a key was printed:\n{output}"


def wait_lines(path, n, timeout=5):
    """The first n lines of a log file httpd writes after answering."""
    deadline = time.time() + timeout
    while True:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            lines = []
        if len(lines) >= n or time.time() > deadline:
            return lines
        time.sleep(0.02)


# --------------------------------------------------------------------------
# 1. Configuration checking

POOL = f"AIBridgeKeyPool main {SECRET} {OTHER_SECRET}"


def provider(options="pool=main", name="openai", kind="openai", url="{url}"):
    return f"AIBridgeProvider {name} {kind} {url} {options}".rstrip()


# (id, configuration, fragments the message must contain, environment).
# {url} is the mock upstream, {dir} the test's directory (a directory, not a file).
BAD_CONFIGS = [
    ("unknown-type", [POOL, provider(kind="openia")],
     ["AIBridgeProvider", "unknown provider type 'openia'"], None),
    ("unknown-option", [POOL, provider("pool=main colddown=5")],
     ["AIBridgeProvider", "unknown option 'colddown'"], None),
    ("option-without-value", [POOL, provider("pool=main =5")],
     ["AIBridgeProvider", "'=5' is not option=value"], None),
    ("base-url-scheme", [POOL, provider(url="ftp://example.com/v1")],
     ["AIBridgeProvider", "base URL 'ftp://example.com/v1' is not an http:// or https:// URL"], None),
    ("base-url-no-host", [POOL, provider(url="http://")],
     ["AIBridgeProvider", "base URL 'http://' is not an http:// or https:// URL"], None),
    ("base-url-query", [POOL, provider(url="https://api.example.com/v1?x=1")],
     ["AIBridgeProvider", "base URL 'https://api.example.com/v1?x=1' is not an http:// or "
      "https:// URL"], None),
    ("proxy-scheme", [POOL, provider("pool=main proxy=socks9://proxy:1080")],
     ["AIBridgeProvider", "proxy= 'socks9://proxy:1080' is not an http:// or https:// URL"], None),
    ("proxy-garbage", [POOL, provider("pool=main proxy=proxy")],
     ["AIBridgeProvider", "proxy= 'proxy' is not an http:// or https:// URL"], None),
    ("unknown-pool", [POOL, provider("pool=mian")],
     ["AIBridgeProvider openai: unknown pool 'mian'"], None),
    ("pool-of-other-vhost", [provider("pool=main"), "<VirtualHost 127.0.0.1:*>",
                             "ServerName b.test", POOL, "</VirtualHost>"],
     ["AIBridgeProvider openai: unknown pool 'main'"], None),
    ("pool-without-source", ["AIBridgeKeyPool main", provider()],
     ["AIBridgeKeyPool", "takes a pool name and at least one key source"], None),
    ("pool-name-invalid", ["AIBridgeKeyPool Main k0", provider("pool=main")],
     ["AIBridgeKeyPool", "pool name 'Main' must match [a-z0-9]+(-[a-z0-9]+)*"], None),
    # Keys in the wrong place are still keys: shown masked, if at all.
    ("pool-name-forgotten", [f"AIBridgeKeyPool {NAMELIKE_SECRET} {SECRET}", provider()],
     ["AIBridgeKeyPool", "pool name 'sk-p...klmn' must match"], None),
    ("key-as-base-url", [POOL, provider(url=NAMELIKE_SECRET)],
     ["AIBridgeProvider", "base URL 'sk-p...klmn' is not an http:// or https:// URL"], None),
    ("key-as-type", [POOL, provider(kind=NAMELIKE_SECRET)],
     ["AIBridgeProvider", "unknown provider type 'sk-p...klmn'"], None),
    ("key-as-option", [POOL, provider(f"pool=main {NAMELIKE_SECRET}")],
     ["AIBridgeProvider", "'sk-p...klmn' is not option=value"], None),
    ("key-as-pool-option", [POOL, provider(f"pool={NAMELIKE_SECRET}")],
     ["AIBridgeProvider", "pool='sk-p...klmn': pool names are"], None),
    ("empty-key-literal", [f'AIBridgeKeyPool main "" {SECRET}', provider()],
     ["AIBridgeKeyPool", "key #1 of pool 'main' is empty"], None),
    ("empty-key-env", [f"AIBridgeKeyPool main {SECRET} env:AIB_TEST_KEYS", provider()],
     ["AIBridgeKeyPool", "env:AIB_TEST_KEYS holds no key"], {"AIB_TEST_KEYS": " ,, , "}),
    ("empty-env", ["AIBridgeKeyPool main env:AIB_TEST_KEYS", provider()],
     ["AIBridgeKeyPool", "env:AIB_TEST_KEYS holds no key"], {"AIB_TEST_KEYS": ""}),
    ("empty-source-prefix", ["AIBridgeKeyPool main file:", provider()],
     ["AIBridgeKeyPool", "file: needs a path"], None),
    ("duplicate-key", [f"AIBridgeKeyPool main {SECRET} k1 {SECRET}", provider()],
     ["AIBridgeKeyPool", f"key #3 ({SECRET_HINT}) of pool 'main' duplicates key #1"], None),
    ("duplicate-key-other-line", [POOL, f"AIBridgeKeyPool main k2 {OTHER_SECRET}", provider()],
     ["AIBridgeKeyPool", "key #4 (sk-s...4321) of pool 'main' duplicates key #2"], None),
    ("duplicate-key-env", [f"AIBridgeKeyPool main {SECRET} env:AIB_TEST_KEYS", provider()],
     ["AIBridgeKeyPool", f"env:AIB_TEST_KEYS: key #3 ({SECRET_HINT}) of pool 'main' "
      "duplicates key #1"], {"AIB_TEST_KEYS": f"k1, {SECRET}"}),
    # httpd hands a directive at most 64 arguments and drops the rest.
    ("too-many-arguments", ["AIBridgeKeyPool main " + " ".join(f"key{i}" for i in range(70)),
                            provider()],
     ["AIBridgeKeyPool", "more than 64"], None),
    ("missing-key-file", [f"AIBridgeKeyPool main {SECRET} file:{{dir}}/no-such-keys.txt",
                          provider()],
     ["AIBridgeKeyPool", "file:{dir}/no-such-keys.txt: cannot read"], None),
    ("key-file-is-directory", [f"AIBridgeKeyPool main {SECRET} file:{{dir}}", provider()],
     ["AIBridgeKeyPool", "file:{dir}: cannot read"], None),
    ("unset-env", [f"AIBridgeKeyPool main {SECRET} env:AIB_UNSET_VARIABLE", provider()],
     ["AIBridgeKeyPool", "env:AIB_UNSET_VARIABLE: environment variable is not set"], None),
    *[(f"provider-name-{name}", [POOL, provider(name=name)],
       ["AIBridgeProvider", f"provider name '{name}' must match [a-z0-9]+(-[a-z0-9]+)*"], None)
      for name in ("Open_AI", "-x", "x-", "a--b", "open.ai")],
    ("provider-name-missing", ["AIBridgeProvider openai"],
     ["AIBridgeProvider", "takes a name, a type and options"], None),
    ("duplicate-provider", [POOL, provider(), provider("pool=main cooldown=5")],
     ["AIBridgeProvider", "provider 'openai' is defined twice in this server"], None),
    ("duplicate-provider-vhost", [POOL, "<VirtualHost 127.0.0.1:*>", "ServerName b.test",
                                  provider(), provider(kind="anthropic"), "</VirtualHost>"],
     ["AIBridgeProvider", "provider 'openai' is defined twice in this server"], None),
    *[(f"time-{option}", [POOL, provider(f"pool=main {option}={value}")],
       ["AIBridgeProvider", f"{option}={value}: must be a non-negative number of seconds"], None)
      for option, value in (("cooldown", "-1"), ("timeout", "abc"), ("max-cooldown", "1e3"),
                            ("disable-for", "inf"), ("idle-timeout", ""),
                            ("connect-timeout", "1.2.3"))],
    ("cooldown-over-max", [POOL, provider("pool=main cooldown=100 max-cooldown=10")],
     ["AIBridgeProvider", "cooldown= is longer than max-cooldown="], None),
    ("failover-garbage", [POOL, provider("pool=main failover=abc")],
     ["AIBridgeProvider", "failover= takes HTTP statuses 100-599, not 'abc'"], None),
    ("failover-range", [POOL, provider("pool=main failover=429,600")],
     ["AIBridgeProvider", "failover= takes HTTP statuses 100-599, not '600'"], None),
    ("failover-empty", [POOL, provider("pool=main failover=,")],
     ["AIBridgeProvider", "failover= needs at least one HTTP status"], None),
    ("byok-maybe", [POOL, provider("pool=main byok=maybe")],
     ["AIBridgeProvider", "byok=maybe: must be on or off"], None),
    ("no-pool-no-byok", [POOL, provider("cooldown=5")],
     ["AIBridgeProvider", "provider 'openai' has neither pool= nor byok=on"], None),
    ("byok-off-only", [POOL, provider("byok=off")],
     ["AIBridgeProvider", "has neither pool= nor byok=on"], None),
    ("pool-option-invalid", [POOL, provider("pool=Main")],
     ["AIBridgeProvider", "pool='Main': pool names are [a-z0-9]+(-[a-z0-9]+)*"], None),
    ("ca-file-missing", [POOL, provider("pool=main ca-file={dir}/no-ca.pem")],
     ["AIBridgeProvider", "ca-file={dir}/no-ca.pem: not a readable file"], None),
    *[(f"max-body-{value}", [POOL, provider(), f"AIBridgeMaxBodySize {value}"],
       ["AIBridgeMaxBodySize", f"'{value}' is not a size"], None)
      for value in ("lots", "10X", "-5", "0", "1M2")],
    ("max-body-in-location", [POOL, provider(), "<Location /ai>", "AIBridgeMaxBodySize big",
                              "</Location>"],
     ["AIBridgeMaxBodySize", "'big' is not a size"], None),
    ("pool-in-location", ["<Location /ai>", POOL, "</Location>", provider()],
     ["AIBridgeKeyPool not allowed in <Location> context"], None),
    ("provider-in-location", [POOL, "<Location /ai>", provider(), "</Location>"],
     ["AIBridgeProvider not allowed in <Location> context"], None),
]


@pytest.mark.parametrize("lines,fragments,env", [c[1:] for c in BAD_CONFIGS],
                         ids=[c[0] for c in BAD_CONFIGS])
def test_bad_configuration_is_refused(httpd, mock, lines, fragments, env):
    body = "\n".join(lines).replace("{url}", mock.url).replace("{dir}", httpd.dir)
    httpd.write_config(body)
    rc, out = httpd.check(env=env)
    assert rc != 0, out
    for fragment in fragments:
        assert fragment.replace("{dir}", httpd.dir) in out, out
    assert "Syntax OK" not in out
    never_printed(out, SECRET, OTHER_SECRET, NAMELIKE_SECRET)


@pytest.mark.sanitize
def test_valid_complex_configuration(monkeypatch, httpd, mock):
    keys_file = os.path.join(httpd.dir, "keys.txt")
    with open(keys_file, "w") as f:
        f.write("# production keys\n\n   kf0\t\n# rotated 2024-01\nkf1\n\n")
    env = {"AIB_TEST_KEYS": "ke0, ke1 ke2,ke3"}
    monkeypatch.delenv("AIB_TEST_KEYS", raising=False)
    httpd.write_config("\n".join([
        f"AIBridgeKeyPool main file:{keys_file} env:AIB_TEST_KEYS",
        "AIBridgeKeyPool main kl0",
        "AIBridgeKeyPool spare ks0",
        f"AIBridgeProvider openai openai {mock.url}/ pool=main cooldown=30 max-cooldown=600 "
        "disable-for=0.5 failover=429,401,403,529 timeout=60 connect-timeout=2.5 idle-timeout=30",
        f"AIBridgeProvider anthropic anthropic {mock.url} pool=main",
        f"AIBridgeProvider own-keys openai {mock.url} byok=on",
        f"AIBridgeProvider mixed openai {mock.url} pool=spare byok=on proxy=http://127.0.0.1:9",
        "AIBridgeMaxBodySize 4M",
        "<Location /ai>", "  SetHandler aibridge", "  AIBridgeMaxBodySize 512k", "</Location>",
        # The first virtual host is the default: it inherits everything.
        f"<VirtualHost 127.0.0.1:{httpd.port}>", "  ServerName main.test", "</VirtualHost>",
        f"<VirtualHost 127.0.0.1:{httpd.port}>", "  ServerName b.test",
        "  AIBridgeKeyPool vpool kv0 kv1",
        # The same name as in the main server: this host's own.
        f"  AIBridgeProvider openai openai {mock.url} pool=vpool",
        f"  AIBridgeProvider extra openai {mock.url} pool=main",
        "</VirtualHost>",
    ]))
    rc, out = httpd.check()
    assert rc != 0 and "env:AIB_TEST_KEYS: environment variable is not set" in out, out
    rc, out = httpd.check(env=env)
    assert rc == 0 and "Syntax OK" in out, out

    # And the keys are what the sources say, in order. (`httpd -k stop`
    # reads the configuration too: the variable stays set until then.)
    monkeypatch.setenv("AIB_TEST_KEYS", env["AIB_TEST_KEYS"])
    httpd.start()
    main_keys = ["kf0", "kf1", "ke0", "ke1", "ke2", "ke3", "kl0"]
    for key in main_keys[:-1]:
        mock.script(key, always={"status": 429, "headers": {"Retry-After": "30"}})
    assert chat(httpd).status_code == 200
    assert mock.keys() == main_keys

    mock.reset()
    assert chat(httpd, headers={"Host": "b.test"}).status_code == 200
    assert httpd.post("/ai/extra/v1/chat/completions", json=CHAT_BODY,
                      headers={"Host": "b.test"}).status_code == 200
    r = httpd.post(MESSAGES, json=MESSAGES_BODY, headers={"Host": "b.test"})
    assert r.status_code == 200
    # b.test's own openai, then its inherited ones on the shared pool
    # (whose first six keys are cooling).
    assert mock.keys() == ["kv0", "kl0", "kl0"]


# --------------------------------------------------------------------------
# 2. One key pool for every process

PIDS_LOG = """LogFormat "%P %{{AIBRIDGE_OUTCOME}}e" pids
CustomLog "{dir}/pids.log" pids"""


@pytest.mark.sanitize
def test_prefork_children_share_key_state(httpd, mock):
    """A 429 seen by one child keeps every later child away from the key."""
    httpd.write_config(bridge_config(mock.url, extra=PIDS_LOG.format(dir=httpd.dir)),
                       mpm="prefork")
    httpd.start()
    mock.script("k0", always={"status": 429, "headers": {"Retry-After": "30"}})
    for _ in range(5):
        assert chat(httpd).status_code == 200
    assert mock.keys() == ["k0", "k1", "k1", "k1", "k1", "k1"]
    # Every request came to another process (one connection per child).
    pids = [line.split()[0] for line in wait_lines(os.path.join(httpd.dir, "pids.log"), 5)]
    assert len(pids) == 5 and len(set(pids)) == 5, pids
    # The cooldown also holds for the other provider on the same pool.
    assert httpd.post(MESSAGES, json=MESSAGES_BODY).status_code == 200
    assert mock.keys()[-1] == "k1"


def test_event_processes_share_key_state_under_concurrency(httpd, mock):
    httpd.write_config(bridge_config(mock.url, extra=PIDS_LOG.format(dir=httpd.dir)))
    httpd.start()
    pids_log = os.path.join(httpd.dir, "pids.log")
    mock.script("k0", always={"status": 429, "headers": {"Retry-After": "30"}})
    with ThreadPoolExecutor(16) as pool:
        def wave():
            return [r.status_code for r in pool.map(lambda _: chat(httpd), range(16))]

        # The first wave may meet k0 a few times before it is marked ...
        assert wave() == [200] * 16
        first = mock.keys()
        assert first.count("k1") == 16 and set(first) == {"k0", "k1"}
        # ... no later request does, in either process (StartServers 2).
        for n in range(2, 12):
            assert wave() == [200] * 16
            later = {line.split()[0] for line in wait_lines(pids_log, 16 * n)[16:]}
            if n >= 3 and len(later) >= 2:
                break
    assert len(later) >= 2, later
    assert mock.keys()[len(first):] == ["k1"] * 16 * (n - 1)


# --------------------------------------------------------------------------
# 3. Graceful restarts keep the state; a stop does not

def keys_file_config(httpd, mock, keys):
    path = os.path.join(httpd.dir, "keys.txt")
    with open(path, "w") as f:
        f.write("\n".join(keys) + "\n")
    return bridge_config(mock.url, keys=[f"file:{path}"], extra="LogLevel warn aibridge:debug")


@pytest.mark.sanitize
def test_graceful_restart_keeps_key_state(httpd, mock):
    httpd.write_config(keys_file_config(httpd, mock, ["k0", "k1", "k2"]))
    httpd.start()
    mock.script("k0", {"status": 429, "headers": {"Retry-After": "60"}})
    mock.script("k1", {"status": 401})
    assert chat(httpd).status_code == 200
    assert mock.keys() == ["k0", "k1", "k2"]

    # Same configuration: k0 still cooling, k1 still disabled.
    httpd.graceful()
    mock.reset()
    assert chat(httpd).status_code == 200
    assert mock.keys() == ["k2"]

    # k1 removed, k3 added: k0 keeps cooling, k3 starts available.
    httpd.write_config(keys_file_config(httpd, mock, ["k0", "k3", "k2"]))
    httpd.graceful()
    mock.reset()
    assert chat(httpd).status_code == 200
    assert mock.keys() == ["k3"]

    # k1 back: its old state is gone.
    httpd.write_config(keys_file_config(httpd, mock, ["k0", "k1", "k2", "k3"]))
    httpd.graceful()
    mock.reset()
    assert chat(httpd).status_code == 200
    assert mock.keys() == ["k1"]

    # Far more keys than the segment has room for: a new segment, same state.
    many = ["k0", "k1", "k2", "k3"] + [f"k{i}" for i in range(4, 200)]
    httpd.write_config(keys_file_config(httpd, mock, many))
    httpd.graceful()
    assert httpd.log_lines(r"key store: 200 keys in \d+ slots")
    mock.reset()
    mock.script("k1", {"status": 429, "headers": {"Retry-After": "60"}})
    assert chat(httpd).status_code == 200
    assert chat(httpd).status_code == 200
    # k0 cooling from before the growth, k1 marked in the new segment.
    assert mock.keys() == ["k1", "k2", "k2"]

    # A stop forgets everything.
    httpd.stop()
    httpd.start()
    mock.reset()
    assert chat(httpd).status_code == 200
    assert mock.keys() == ["k0"]


# --------------------------------------------------------------------------
# 4. Disabled keys

def test_disabled_key_returns_after_disable_for(httpd, mock):
    httpd.write_config("\n".join([
        "AIBridgeKeyPool brief a0 a1",
        "AIBridgeKeyPool long b0 b1",
        f"AIBridgeProvider brief openai {mock.url} pool=brief disable-for=1",
        f"AIBridgeProvider long openai {mock.url} pool=long",
        "<Location /ai>", "  SetHandler aibridge", "</Location>",
    ]))
    httpd.start()
    mock.script("a0", {"status": 401})
    mock.script("b0", {"status": 403})
    for name in ("brief", "long"):
        for _ in range(2):
            r = httpd.post(f"/ai/{name}/v1/chat/completions", json=CHAT_BODY)
            assert r.status_code == 200
    assert mock.keys() == ["a0", "a1", "a1", "b0", "b1", "b1"]
    time.sleep(1.3)
    mock.reset()
    for name in ("brief", "long"):
        assert httpd.post(f"/ai/{name}/v1/chat/completions", json=CHAT_BODY).status_code == 200
    assert mock.keys() == ["a0", "b1"]
    assert httpd.log_lines(r"key #1 \(\.\.\.\) of pool 'brief' answered 401: disabled for 1 s")
    assert httpd.log_lines(r"key #1 \(\.\.\.\) of pool 'long' answered 403: "
                           r"disabled until re-enabled")


# --------------------------------------------------------------------------
# 5. A key file gone before a graceful restart

def test_vanished_key_file_fails_the_restart_cleanly(httpd, mock):
    httpd.write_config(keys_file_config(httpd, mock, ["k0", "k1"]))
    keys_file = os.path.join(httpd.dir, "keys.txt")
    httpd.start()
    mock.script("k0", {"status": 429, "headers": {"Retry-After": "60"}})
    assert chat(httpd).status_code == 200
    os.unlink(keys_file)
    try:
        rc, out = httpd.check()
        assert rc != 0
        assert f"AIBridgeKeyPool: pool 'main': file:{keys_file}: cannot read" in out, out
        # `httpd -k graceful` checks first and leaves the running server alone.
        pid = httpd.pid()
        p = subprocess.run([HTTPD, "-f", httpd.conf, "-k", "graceful"], capture_output=True,
                           text=True, env=httpd._env(None), timeout=60 * SLOW)
        assert p.returncode != 0 and keys_file in p.stdout + p.stderr
        time.sleep(0.5)
        assert httpd.pid() == pid
        assert "SIGUSR1" not in httpd.read_log()
        mock.reset()
        assert chat(httpd).status_code == 200
        assert mock.keys() == ["k1"]
    finally:
        # Back in place (`httpd -k stop` reads the configuration too).
        with open(keys_file, "w") as f:
            f.write("k0\nk1\n")

    # The next graceful restart works, k0 still cooling.
    httpd.graceful()
    mock.reset()
    assert chat(httpd).status_code == 200
    assert mock.keys() == ["k1"]


# --------------------------------------------------------------------------
# 6. Keys stay out of the logs

LONG_KEYS = [f"sk-proj-{c * 32}{d * 4}" for c, d in zip("ABCD", "1234")]


def test_keys_never_logged(httpd, mock):
    httpd.write_config(bridge_config(mock.url, keys=LONG_KEYS,
                                     extra="LogLevel debug aibridge:trace8"))
    httpd.start()
    a, b, c, d = LONG_KEYS
    mock.script(a, {"status": 429, "headers": {"Retry-After": "60"}})
    mock.script(b, {"status": 401})
    mock.script(c, {"status": 403})
    mock.script(d, {}, {}, {"status": 400}, {"status": 401})
    responses = [chat(httpd),                                             # a, b, c, d
                 httpd.post(MESSAGES, json={**MESSAGES_BODY, "stream": True}),  # d
                 chat(httpd),                                             # d: 400, relayed
                 chat(httpd),                                             # d: 401, a cooling
                 chat(httpd)]                                             # a still cooling
    assert [r.status_code for r in responses] == [200, 200, 400, 429, 429]
    assert mock.keys() == [a, b, c, d, d, d, d]

    log = httpd.read_log()
    with open(os.path.join(httpd.dir, "access.log")) as f:
        log += f.read()
    shown = log + "".join(str(r.headers) + r.text for r in responses)
    for key in LONG_KEYS:
        assert key[4:-4] not in shown
    for hint in ("sk-p...1111", "sk-p...2222", "sk-p...3333", "sk-p...4444"):
        assert hint in log
