"""A real httpd with the built module, and the mock upstream: the pieces
that the tests (conftest.py) and the ./dev run demo share.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import requests

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULE = os.environ.get("AIB_MODULE", os.path.join(TOP, ".libs", "mod_aibridge.so"))
HTTPD = os.environ.get("AIB_HTTPD", "/usr/sbin/apache2")
MODULES_DIR = "/usr/lib/apache2/modules"
MOCK = os.path.join(TOP, "tests", "mock_upstream.py")
# Under valgrind or a sanitizer every start and request is slower.
SLOW = float(os.environ.get("AIB_SLOW", "1"))
SANITIZER = bool(os.environ.get("AIB_SANITIZER"))


def sanitizer_env(workdir):
    """httpd itself is not instrumented: the ASan runtime must load first."""
    if not SANITIZER:
        return {}
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                             text=True).stdout.strip()
    return {"LD_PRELOAD": libasan,
            # httpd frees its pools at exit without unwinding everything.
            "ASAN_OPTIONS": f"detect_leaks=0:log_path={workdir}/asan",
            "UBSAN_OPTIONS": f"print_stacktrace=1:log_path={workdir}/ubsan"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running(pid):
    """Whether pid is a live process. A zombie is not: httpd has exited, and
    whoever reaps it (PID 1 in a container) may take its time."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Mock:
    """The mock upstream (tests/mock_upstream.py) and its control API."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, MOCK, "--port", "0"],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        assert line[:1] == ["LISTENING"], line
        self.port = int(line[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def reset(self):
        requests.post(f"{self.url}/_mock/reset").raise_for_status()

    def script(self, key, *responses, always=None):
        payload = {"key": key, "responses": list(responses)}
        if always is not None:
            payload["always"] = always
        requests.post(f"{self.url}/_mock/script", json=payload).raise_for_status()

    def requests(self):
        return requests.get(f"{self.url}/_mock/requests").json()

    def keys(self):
        """The keys the upstream saw, in order."""
        return [r["key"] for r in self.requests()]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)


class Redis:
    """A real redis-server (Debian's) on a free loopback port, no persistence."""

    def __init__(self, workdir):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--rdbcompression", "no", "--dir", self.dir],
            stdout=open(os.path.join(self.dir, "redis.log"), "a"), stderr=subprocess.STDOUT)
        deadline = time.time() + 20 * SLOW
        while time.time() < deadline:
            if self.command("PING") == "+PONG":
                return
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def command(self, *words):
        """One command over RESP; the first line of the answer, None when unreachable."""
        payload = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as c:
                c.sendall(payload.encode())
                return c.makefile("rb").readline().decode().rstrip("\r\n")
        except OSError:
            return None

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


class Memcached:
    """A real memcached (Debian's) on a free loopback port."""

    def __init__(self):
        self.port = free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["memcached", "-l", "127.0.0.1", "-p", str(self.port),
                                      "-U", "0", "-u", "nobody"])
        deadline = time.time() + 20 * SLOW
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("memcached did not start")

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


BASE_CONFIG = """\
ServerRoot "{dir}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{dir}/httpd.pid"
DefaultRuntimeDir "{dir}"
Mutex file:{dir} default
ErrorLog "{dir}/error.log"
LogLevel warn aibridge:info
LogFormat "%h %r %>s %{{AIBRIDGE_OUTCOME}}e" aib
CustomLog "{dir}/access.log" aib
User www-data
Group www-data
LoadModule mpm_{mpm}_module {modules}/mod_mpm_{mpm}.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule authn_core_module {modules}/mod_authn_core.so
LoadModule authn_file_module {modules}/mod_authn_file.so
LoadModule authz_user_module {modules}/mod_authz_user.so
LoadModule auth_basic_module {modules}/mod_auth_basic.so
LoadModule aibridge_module {module}
{mpm_config}
Timeout 30
KeepAlive On
GracefulShutdownTimeout 10
"""

MPM_CONFIG = {
    "event": "StartServers 2\nServerLimit 4\nThreadsPerChild 8\nMaxRequestWorkers 32\n"
             "MinSpareThreads 8\nMaxSpareThreads 32\nThreadLimit 8",
    # One connection per child: consecutive requests meet different processes.
    "prefork": "StartServers 3\nMinSpareServers 3\nMaxSpareServers 6\n"
               "MaxRequestWorkers 10\nMaxConnectionsPerChild 1",
}


class Httpd:
    def __init__(self, workdir, port=None):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf = os.path.join(self.dir, "httpd.conf")
        self.error_log = os.path.join(self.dir, "error.log")
        self.log_offset = 0
        self.allowed_errors = []
        self.running = False

    def write_config(self, body, mpm="event"):
        text = BASE_CONFIG.format(dir=self.dir, port=self.port, modules=MODULES_DIR,
                                  module=MODULE, mpm=mpm, mpm_config=MPM_CONFIG[mpm])
        with open(self.conf, "w") as f:
            f.write(text + body + "\n")

    def check(self, env=None):
        """`httpd -t`: (exit code, output)."""
        p = subprocess.run([HTTPD, "-t", "-f", self.conf], capture_output=True, text=True,
                           env=self._env(env), timeout=60 * SLOW)
        return p.returncode, p.stdout + p.stderr

    def _env(self, extra):
        env = dict(os.environ)
        env.update(sanitizer_env(self.dir))
        env.update(extra or {})
        return env

    def sanitizer_reports(self):
        reports = []
        for name in sorted(os.listdir(self.dir)):
            if name.startswith(("asan", "ubsan")):
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    reports.append(f.read())
        return reports

    def _ctl(self, signal_name, env=None):
        p = subprocess.run([HTTPD, "-f", self.conf, "-k", signal_name], capture_output=True,
                           text=True, env=self._env(env), timeout=60 * SLOW)
        assert p.returncode == 0, p.stdout + p.stderr

    def pid(self):
        try:
            with open(os.path.join(self.dir, "httpd.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def start(self, env=None):
        self._ctl("start", env)
        self.running = True
        self.wait_ready()

    def wait_ready(self):
        deadline = time.time() + 20 * SLOW
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                if self.pid():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("httpd did not start:\n" + self.read_log())

    def graceful(self, env=None):
        pid = self.pid()
        self._ctl("graceful", env)
        # The parent logs a notice once the new generation is configured.
        deadline = time.time() + 20 * SLOW
        while time.time() < deadline:
            if "resuming normal operations" in self.read_log().split("SIGUSR1")[-1]:
                break
            time.sleep(0.05)
        assert self.pid() == pid
        self.wait_ready()

    def stop(self):
        if not self.running:
            return
        pid = self.pid()
        self._ctl("stop")
        deadline = time.time() + 30 * SLOW
        while pid and time.time() < deadline and running(pid):
            time.sleep(0.05)
        self.running = False

    def read_log(self):
        try:
            with open(self.error_log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def allow_errors(self, *patterns):
        """Error-log lines matching these are expected by the running test."""
        self.allowed_errors.extend(re.compile(p) for p in patterns)

    def unexpected_errors(self):
        bad = []
        lines = self.read_log().splitlines()
        for n, line in enumerate(lines):
            if not re.search(r"\[(\w+:)?(error|crit|alert|emerg)\]", line):
                continue
            if any(p.search(line) for p in self.allowed_errors):
                continue
            # The event MPM's own race at stop: a worker ending a keep-alive
            # request meets the pollset the shutdown just closed.
            if "AH03093" in line and any("caught SIGTERM" in later for later in lines[n:]):
                continue
            bad.append(line)
        return bad

    def log_lines(self, pattern):
        return [l for l in self.read_log().splitlines() if re.search(pattern, l)]

    def post(self, path, json=None, **kw):
        kw.setdefault("timeout", 30 * SLOW)
        return requests.post(self.url + path, json=json, **kw)

    def get(self, path, **kw):
        kw.setdefault("timeout", 30 * SLOW)
        return requests.get(self.url + path, **kw)


def bridge_config(mock_url, keys=("k0", "k1", "k2"), pool="main", providers=None,
                  extra="", location="/ai"):
    """The usual set-up: one pool, an openai and an anthropic provider."""
    if providers is None:
        providers = [f"openai openai {mock_url} pool={pool} cooldown=60",
                     f"anthropic anthropic {mock_url} pool={pool} cooldown=60"]
    lines = [f"AIBridgeKeyPool {pool} " + " ".join(keys)] if keys else []
    lines += [f"AIBridgeProvider {p}" for p in providers]
    lines += [f"<Location {location}>", "  SetHandler aibridge", "</Location>", extra]
    return "\n".join(lines)
