"""./dev run: httpd in the foreground with mod_aibridge and a demo set-up.

With OPENAI_API_KEYS / ANTHROPIC_API_KEYS (comma-separated) set, it bridges
to the real providers; otherwise it starts the bundled mock upstream with a
pool whose first key is rate-limited, so the first request shows a failover.
Ctrl-C stops everything it started.
"""

import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "integration"))
from harness import HTTPD, TOP, Httpd, Mock  # noqa: E402

PORT = int(os.environ.get("AIB_PORT", "8080"))
# Bedrock against the mock, which checks SigV4 with the secret "secret-<AKID>"
# (tests/mock_bedrock.py): the first credential is throttled, the second
# (temporary, in us-west-2) answers.
AWS_THROTTLED = "AKIADEMOTHROTTLED001"
AWS_KEYS = (f"{AWS_THROTTLED}:secret-{AWS_THROTTLED}",
            "ASIADEMOSESSION00002:secret-ASIADEMOSESSION00002:token-ASIADEMOSESSION00002@us-west-2")
RUN_DIR = os.path.join(TOP, "run")


def provider_config(mock):
    lines = []
    openai_keys = os.environ.get("OPENAI_API_KEYS")
    anthropic_keys = os.environ.get("ANTHROPIC_API_KEYS")
    if openai_keys or anthropic_keys:
        if openai_keys:
            lines += ["AIBridgeKeyPool openai-keys env:OPENAI_API_KEYS",
                      "AIBridgeProvider openai openai pool=openai-keys"]
        if anthropic_keys:
            lines += ["AIBridgeKeyPool anthropic-keys env:ANTHROPIC_API_KEYS",
                      "AIBridgeProvider anthropic anthropic pool=anthropic-keys"]
    else:
        lines += ["AIBridgeKeyPool demo demo-key-rate-limited demo-key-good demo-key-spare",
                  f"AIBridgeProvider openai openai {mock.url} pool=demo cooldown=30",
                  f"AIBridgeProvider anthropic anthropic {mock.url} pool=demo cooldown=30",
                  f"AIBridgeProvider azure azure {mock.url} pool=demo cooldown=30 "
                  "deployment-map=gpt-4o-mini=demo-deployment",
                  "AIBridgeKeyPool demo-aws " + " ".join(AWS_KEYS),
                  f"AIBridgeProvider bedrock bedrock {mock.url} region=us-east-1 pool=demo-aws "
                  "model-map=claude-sonnet-4-5=anthropic.claude-sonnet-4-5-20250929-v1:0"]
    lines += ["<Location /ai>", "  SetHandler aibridge", "</Location>"]
    return "\n".join(lines)


def interrupted(*_):
    raise KeyboardInterrupt


def main():
    mock = None
    if not (os.environ.get("OPENAI_API_KEYS") or os.environ.get("ANTHROPIC_API_KEYS")):
        mock = Mock()
        # The first key always answers 429: every request walks past it.
        mock.script("demo-key-rate-limited",
                    always={"status": 429, "headers": {"Retry-After": "30"}})
        mock.script(AWS_THROTTLED, always={"status": 429})
    httpd = Httpd(RUN_DIR, port=PORT)
    httpd.write_config(provider_config(mock))
    code, out = httpd.check()
    if code:
        sys.exit(out)
    base = f"http://127.0.0.1:{PORT}/ai"
    # Azure OpenAI runs against the mock only: its resource URL is no default.
    azure = (f"curl -s {base}/azure/v1/chat/completions -H 'Content-Type: application/json' -d "
             """'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'"""
             "   (Azure OpenAI, deployment demo-deployment)\n") if mock else ""
    # Bedrock (Anthropic Messages in, SigV4-signed InvokeModel out): the mock only.
    bedrock_try = f"""curl -sN {base}/bedrock/v1/messages -H 'Content-Type: application/json' -d '{{"model":"claude-sonnet-4-5","max_tokens":100,"stream":true,"messages":[{{"role":"user","content":"Hello"}}]}}'
""" if mock else ""
    print(f"""
mod_aibridge is listening on http://127.0.0.1:{PORT}  (error log: {httpd.error_log}, shows each failover)
{"Upstream: the bundled mock; key 1 of the pool is rate-limited, so the first call fails over to key 2." if mock else "Upstream: the real providers, with the keys from the environment."}

Try (each is one command):

curl -s {base}/openai/v1/chat/completions -H 'Content-Type: application/json' -d '{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"Hello"}}]}}'
curl -sN {base}/openai/v1/chat/completions -H 'Content-Type: application/json' -d '{{"model":"gpt-4o-mini","stream":true,"messages":[{{"role":"user","content":"Hello"}}]}}'
curl -s {base}/openai/v1/responses -H 'Content-Type: application/json' -d '{{"model":"gpt-4o-mini","input":"Hello"}}'
curl -s {base}/anthropic/v1/messages -H 'Content-Type: application/json' -d '{{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{{"role":"user","content":"Hello"}}]}}'
curl -s {base}/openai/v1/models
{azure}{bedrock_try}SDK base URLs: OpenAI {base}/openai/v1   Anthropic {base}/anthropic   (any API key works: the pool serves)
Ctrl-C stops httpd{" and the mock" if mock else ""}.
""", flush=True)
    proc = subprocess.Popen([HTTPD, "-f", httpd.conf, "-D", "FOREGROUND"])
    # Stopped by a signal rather than Ctrl-C: stop httpd all the same.
    signal.signal(signal.SIGTERM, interrupted)
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    finally:
        if mock:
            mock.stop()


if __name__ == "__main__":
    main()
