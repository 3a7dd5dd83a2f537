"""AIBridgeSharedState: two httpd servers with the same key pool share key
state through a real redis-server and httpd's mod_socache_redis. A mark on
one is honoured by the other within a second; the status page's actions
propagate; Redis going away loses no request and is survived."""

import os
import re
import signal
import time

import pytest

from bridging import CHAT, call, wait_for
from harness import MODULES_DIR, SLOW, Httpd, Memcached, Redis, bridge_config
from status_pages import STATUS, act, json_key, status_json, status_page

METRICS = "/metrics"
R429 = {"status": 429, "headers": {"Retry-After": "30"}}
# mod_socache_redis logs every failed call of its own at error level.
REDIS_ERRORS = (r"scache_rd", r"AH0347[89]", r"AH03480")


def fleet_config(mock, port, extra="", cache="redis"):
    return f"""
LoadModule socache_{cache}_module {MODULES_DIR}/mod_socache_{cache}.so
AIBridgeSharedState {cache}:127.0.0.1:{port} {extra}
<Location {STATUS}>
  SetHandler aibridge-status
</Location>
<Location {METRICS}>
  SetHandler aibridge-metrics
</Location>
""" + bridge_config(mock.url)


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path / "redis")
    r.start()
    yield r
    r.kill()


def start_fleet(tmp_path, mock, port, cache="redis"):
    """Server A (prefork: every connection meets another child, so the sync
    moves between processes) and server B (event), sharing one cache."""
    mock.reset()
    servers = []
    for name, mpm in (("a", "prefork"), ("b", "event")):
        h = Httpd(tmp_path / name)
        h.write_config(fleet_config(mock, port, cache=cache), mpm=mpm)
        h.start()
        servers.append(h)
    return servers


def stop_fleet(servers):
    for h in servers:
        h.stop()
    for h in servers:
        errors = h.unexpected_errors()
        assert not errors, "unexpected errors in the error log:\n" + "\n".join(errors)
        reports = h.sanitizer_reports()
        assert not reports, "sanitizer reports:\n" + "\n".join(reports)


@pytest.fixture
def fleet(tmp_path, mock, redis):
    servers = start_fleet(tmp_path, mock, redis.port)
    yield servers
    stop_fleet(servers)


def key_state(httpd, index):
    return json_key(status_json(httpd), "openai", index)["state"]


def becomes(httpd, index, state, timeout=1):
    return wait_for(lambda: key_state(httpd, index) == state, timeout=timeout)


def synced(httpd):
    shared = status_json(httpd)["shared_state"]
    return shared["connected"] and shared["last_sync_ms"]


@pytest.mark.sanitize
def test_a_429_on_one_server_sends_the_others_straight_to_the_next_key(fleet, mock):
    a, b = fleet
    assert wait_for(lambda: synced(a) and synced(b))
    mock.script("k0", R429)
    assert call(a, CHAT).status == 200
    assert mock.keys() == ["k0", "k1"]
    assert becomes(b, 0, "cooling"), "B did not learn of A's cooldown within a second"
    mock.reset()
    for _ in range(3):
        assert call(b, CHAT).status == 200
    assert mock.keys() == ["k1", "k1", "k1"]
    # The cooldown B took over has A's deadline, not one of its own.
    until_a = json_key(status_json(a), "openai", 0)["remaining_ms"]
    until_b = json_key(status_json(b), "openai", 0)["remaining_ms"]
    assert abs(until_a - until_b) < 2000


def test_a_reenable_on_one_server_frees_the_key_on_the_others(fleet, mock):
    a, b = fleet
    mock.script("k0", {"status": 401})
    assert call(a, CHAT).status == 200
    assert becomes(b, 0, "disabled")
    r = act(b, status_page(b).nonce(), "enable", key=0)
    assert r.status_code == 303
    assert becomes(a, 0, "available"), "A did not learn of B's re-enable within a second"
    mock.reset()
    assert call(a, CHAT).status == 200
    assert mock.keys() == ["k0"]


def test_memcache_serves_a_fleet_too(tmp_path, mock):
    memcached = Memcached()
    memcached.start()
    servers = start_fleet(tmp_path, mock, memcached.port, cache="memcache")
    try:
        a, b = servers
        mock.script("k0", R429)
        assert call(a, CHAT).status == 200
        assert becomes(b, 0, "cooling")
        assert act(b, status_page(b).nonce(), "clear", key=0).status_code == 303
        assert becomes(a, 0, "available")
        assert status_json(a)["shared_state"]["cache"].startswith("memcache:")
    finally:
        stop_fleet(servers)
        memcached.kill()


def test_a_cleared_cooldown_propagates_too(fleet, mock):
    a, b = fleet
    mock.script("k1", R429)
    mock.script("k0", R429)
    assert call(b, CHAT).status == 200
    assert becomes(a, 1, "cooling")
    assert act(a, status_page(a).nonce(), "clear", key=1).status_code == 303
    assert becomes(b, 1, "available")
    assert key_state(b, 0) == "cooling"


@pytest.mark.sanitize
def test_redis_going_away_loses_no_request(fleet, mock, redis):
    a, b = fleet
    for h in fleet:
        h.allow_errors(*REDIS_ERRORS)
    assert wait_for(lambda: synced(a) and synced(b))
    redis.kill()
    started = time.monotonic()
    for i in range(40):
        assert call(fleet[i % 2], CHAT).status == 200
    assert wait_for(lambda: not status_json(a)["shared_state"]["connected"]
                    and not status_json(b)["shared_state"]["connected"])
    for _ in range(10):
        assert call(a, CHAT).status == 200 and call(b, CHAT).status == 200
    # Each server says so once, in its own words.
    for h in fleet:
        warnings = h.log_lines(r"\[aibridge:warn\].*AIBridgeSharedState: redis:127\.0\.0\.1:\d+ "
                               r"unreachable")
        assert len(warnings) == 1, warnings
    # Meanwhile A's own marks still serve A.
    mock.reset()
    mock.script("k0", R429)
    assert call(a, CHAT).status == 200
    assert call(a, CHAT).status == 200
    assert mock.keys() == ["k0", "k1", "k1"]
    assert key_state(b, 0) == "available"
    assert time.monotonic() - started < 60
    # Redis returns (empty): both resynchronise, and A's mark made while
    # it was away reaches B.
    redis.start()
    assert wait_for(lambda: synced(a) and synced(b), timeout=10)
    for h in fleet:
        assert h.log_lines(r"\[aibridge:notice\].*reachable again, key state resynchronised")
    assert becomes(b, 0, "cooling", timeout=2)


def test_a_hung_redis_delays_no_request(fleet, mock, redis):
    """Redis stopped (SIGSTOP: connections hang, no refusal): requests go on
    as fast as before; the sync thread alone waits, for RedisTimeout."""
    a, b = fleet
    for h in fleet:
        h.allow_errors(*REDIS_ERRORS)
    assert wait_for(lambda: synced(a) and synced(b))
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        for i in range(20):
            started = time.monotonic()
            assert call(fleet[i % 2], CHAT).status == 200
            # Far below RedisTimeout (5 s): no request waits for the cache.
            assert time.monotonic() - started < 2 * SLOW
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    assert wait_for(lambda: synced(a) and synced(b), timeout=15)


def test_status_page_and_metrics_show_the_shared_state(fleet):
    a, _ = fleet
    assert wait_for(lambda: synced(a))
    shared = status_json(a)["shared_state"]
    assert re.fullmatch(r"redis:127\.0\.0\.1:\d+", shared["cache"])
    assert shared["interval_ms"] == 250
    assert abs(shared["last_sync_ms"] / 1000 - time.time()) < 5
    html = a.get(STATUS).text
    assert '<strong class="connected">connected</strong>' in html
    assert "Last synchronised: 20" in html
    metrics = a.get(METRICS).text
    assert "\naibridge_shared_state_connected 1\n" in metrics
    assert re.search(r'\naibridge_shared_state_rounds_total\{outcome="ok"\} [1-9]', metrics)


def test_the_cache_never_holds_a_key(fleet, mock, redis):
    a, b = fleet
    mock.script("k0", R429)
    mock.script("k1", {"status": 401})
    assert call(a, CHAT).status == 200
    assert becomes(b, 1, "disabled")
    keys = redis.command("KEYS", "*")
    assert keys and keys.startswith("*"), keys
    assert redis.command("SAVE") == "+OK"
    dump = os.path.join(redis.dir, "dump.rdb")
    with open(dump, "rb") as f:
        data = f.read()
    assert b"aibridge:" in data
    for secret in (b"k0", b"k1", b"k2", b"main"):
        assert secret not in data.replace(b"aibridge:", b"")


@pytest.mark.parametrize("directive,message", [
    ("AIBridgeSharedState redis:127.0.0.1:1 interval=0", "interval= must be between"),
    ("AIBridgeSharedState redis:127.0.0.1:1 speed=9", "unknown option 'speed=9'"),
    ("AIBridgeSharedState", "takes a socache provider"),
    ("AIBridgeSharedState nosuch:1.2.3.4", "no socache provider 'nosuch'"),
    ("LoadModule socache_shmcb_module {modules}/mod_socache_shmcb.so\n"
     "AIBridgeSharedState shmcb", "is local to one server"),
    ("LoadModule socache_redis_module {modules}/mod_socache_redis.so\n"
     "AIBridgeSharedState redis", "AIBridgeSharedState: redis: List of server names"),
    ("<VirtualHost 127.0.0.1:80>\nAIBridgeSharedState redis:h:1\n</VirtualHost>",
     "AIBridgeSharedState cannot occur within <VirtualHost> section"),
])
def test_bad_shared_state_stops_the_configuration_test(httpd, mock, directive, message):
    httpd.write_config(bridge_config(mock.url) + "\n" + directive.format(modules=MODULES_DIR))
    code, out = httpd.check()
    assert code != 0
    assert message in out, out
