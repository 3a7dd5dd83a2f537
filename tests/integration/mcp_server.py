"""A real MCP server for the tests: @modelcontextprotocol/server-everything
(tests/sdk/package.json) with its Streamable HTTP transport.

It serves http://127.0.0.1:<port>/mcp (it binds every interface; the port is
free and random) and answers every POST as text/event-stream. Its tools
include `echo` {"message": string} -> "Echo: <message>" and `get-sum`
{"a": number, "b": number} -> "The sum of <a> and <b> is <a+b>.". A session
it does not know gets HTTP 400, not the 404 of the spec.

    python3 tests/integration/mcp_server.py   # starts one, checks it, stops
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import requests

from harness import SLOW, TOP, free_port, running

ENTRY = os.path.join(TOP, "tests", "sdk", "node_modules", "@modelcontextprotocol",
                     "server-everything", "dist", "index.js")


class McpServer:
    """server-everything on a free port; start() waits until it answers."""

    def __init__(self, port=None, log_path=None):
        if not os.path.isfile(ENTRY):
            raise RuntimeError(f"{ENTRY} is missing: ./dev test installs it (npm ci in tests/sdk)")
        self.node = shutil.which("node")
        if not self.node:
            raise RuntimeError("node is not installed")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.log_path = log_path or tempfile.mkstemp(prefix="mcp-server-", suffix=".log")[1]
        self.proc = None

    def start(self):
        # It logs a line per request: a file, since an unread pipe would fill.
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen([self.node, ENTRY, "streamableHttp"],
                                         env={**os.environ, "PORT": str(self.port)},
                                         stdout=log, stderr=subprocess.STDOUT)
        self.wait_ready()
        return self

    def wait_ready(self):
        deadline = time.time() + 20 * SLOW
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                # Without a session it answers 400: any HTTP answer will do.
                requests.get(self.url, timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.05)
        self.stop()
        raise AssertionError("the MCP server did not start:\n" + self.read_log())

    def stop(self):
        if not self.proc:
            return
        if running(self.proc.pid):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10 * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self):
        """On the same port, with none of the old sessions."""
        self.stop()
        return self.start()

    def read_log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()


def _rpc(url, message, session=None):
    """One JSON-RPC POST; the response (None for a notification) and the
    answer's headers."""
    headers = {"Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}
    if session:
        headers["Mcp-Session-Id"] = session
        headers["MCP-Protocol-Version"] = "2025-06-18"
    r = requests.post(url, json=message, headers=headers, timeout=10)
    r.raise_for_status()
    if "id" not in message:
        return None, r.headers
    if r.headers["Content-Type"].startswith("text/event-stream"):
        for line in r.text.splitlines():
            if line.startswith("data:"):
                reply = json.loads(line[5:])
                if reply.get("id") == message["id"]:
                    return reply, r.headers
        raise AssertionError("no response in: " + r.text)
    return r.json(), r.headers


def smoke_check(server):
    """The handshake, tools/list and tools/call echo, by hand."""
    init, headers = _rpc(server.url, {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "mod_aibridge-tests", "version": "1"}}})
    assert init["result"]["protocolVersion"], init
    assert headers["Content-Type"].startswith("text/event-stream"), headers
    session = headers["Mcp-Session-Id"]
    _rpc(server.url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    tools, _ = _rpc(server.url, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, session)
    names = [t["name"] for t in tools["result"]["tools"]]
    assert "echo" in names and "get-sum" in names, names
    echo, _ = _rpc(server.url, {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                "params": {"name": "echo", "arguments": {"message": "hi"}}},
                   session)
    assert echo["result"]["content"] == [{"type": "text", "text": "Echo: hi"}], echo
    return names


if __name__ == "__main__":
    server = McpServer().start()
    try:
        tools = smoke_check(server)
        server.restart()
        smoke_check(server)
        print(f"OK: {server.url}, tools: {', '.join(tools)}")
    finally:
        server.stop()
