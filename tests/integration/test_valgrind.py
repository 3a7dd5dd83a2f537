"""The module under valgrind's memcheck: one httpd process (-X) serving the
core cases. Catches invalid reads/writes and uses of uninitialised memory
that the sanitizer build might not reach."""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from harness import HTTPD, SLOW, bridge_config


@pytest.fixture
def valgrind_httpd(httpd, mock):
    if not shutil.which("valgrind"):
        pytest.fail("valgrind is missing: ./dev test installs it")
    httpd.write_config(bridge_config(mock.url))
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
