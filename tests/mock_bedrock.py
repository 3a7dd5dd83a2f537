"""Amazon Bedrock's runtime API for the mock upstream (tests/mock_upstream.py).

    POST /model/{modelId}/invoke
    POST /model/{modelId}/invoke-with-response-stream
    POST /model/{modelId}/count-tokens

Every request's SigV4 signature is checked with botocore's SigV4Auth, an
implementation independent of the module's: the credential AKID signs with
the secret "secret-<AKID>", its session token, when sent, must be
"token-<AKID>". A bad signature or token is answered as Bedrock does (403
InvalidSignatureException / UnrecognizedClientException) and recorded with
"signature" saying why; a good one records "signature": "ok". A Bedrock API
key ("Authorization: Bearer ABSK...") is taken as it is. The request's key,
for scripts and the record, is the access key id or the API key.

Answers: the Anthropic message of the mock (the model id as its model), or
its events as AWS event-stream frames (chunk events, real CRC32s, the last
one carrying amazon-bedrock-invocationMetrics). Errors carry
x-amzn-ErrorType and {"message": ...}. CountTokens answers {"inputTokens":
INPUT_TOKENS} for a bare anthropic.* model id; for any other (an inference
profile...) a ValidationException saying it cannot count, as Bedrock does.
Its record's "invoke_body" is the InvokeModel body decoded from the
request. A script's spec may hold, besides the usual
status/headers/body/events/delay_ms, a "bedrock" object:
    error        the exception name of an error answer (default by status)
    no_usage     the Anthropic usage left out (message_start, message_delta,
                 a blocking body): only invocationMetrics or the
                 X-Amzn-Bedrock-*-Token-Count headers carry the counts
    exception    {"at": n, "type": "throttlingException", "message": ...}:
                 an exception frame instead of event n, ending the stream
    bad_crc_at   event n's message CRC is wrong
    cut_at       the stream ends in the middle of event n
"""

import base64
import json
import re
import struct
import time
import zlib
from urllib.parse import unquote, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

PATH = re.compile(r"/model/(?P<id>[^/]+)/"
                  r"(?P<action>invoke|invoke-with-response-stream|count-tokens)")
AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
                  r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[^,]+), ?"
                  r"Signature=(?P<signature>[0-9a-f]{64})$")
# The headers a signature must cover.
MUST_SIGN = {"host", "x-amz-date", "content-type"}
ERROR_BY_STATUS = {400: "ValidationException", 403: "AccessDeniedException",
                   404: "ResourceNotFoundException", 408: "ModelTimeoutException",
                   424: "ModelErrorException", 429: "ThrottlingException",
                   500: "InternalServerException", 503: "ServiceUnavailableException"}


def serves(path):
    return PATH.fullmatch(path) is not None


def secret_of(akid):
    return "secret-" + akid


def token_of(akid):
    return "token-" + akid


def check_signature(method, url, headers, body):
    """(key, region, None) when the signature is good, else (key, region, why)."""
    auth = headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        token = auth[7:].strip()
        return token, None, None if token.startswith("ABSK") else "not a Bedrock API key"
    m = AUTH.match(auth)
    if not m:
        return None, None, "no SigV4 Authorization"
    akid, region = m["akid"], m["region"]
    signed = m["signed"].split(";")
    if m["service"] != "bedrock":
        return akid, region, f"signed for service {m['service']}"
    if MUST_SIGN - set(signed):
        return akid, region, f"SignedHeaders lacks {sorted(MUST_SIGN - set(signed))}"
    sent_token = headers.get("X-Amz-Security-Token")
    if sent_token is not None and ("x-amz-security-token" not in signed
                                   or sent_token != token_of(akid)):
        return akid, region, "bad session token"
    lower = {k.lower(): v for k, v in headers.items()}
    request = AWSRequest(method=method, url=url, data=body,
                         headers={name: lower.get(name, "") for name in signed})
    request.context["timestamp"] = lower.get("x-amz-date", "")
    signer = SigV4Auth(Credentials(akid, secret_of(akid), sent_token), "bedrock", region)
    signer._modify_request_before_signing(request)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if expected != m["signature"]:
        return akid, region, "signature mismatch"
    return akid, region, None


def encode_headers(headers):
    out = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        out += struct.pack("!B", len(n)) + n + b"\x07" + struct.pack("!H", len(v)) + v
    return out


def frame(headers, payload, bad_crc=False):
    """One event-stream message: prelude, its CRC, headers, payload, message CRC."""
    head = encode_headers(headers)
    prelude = struct.pack("!II", 16 + len(head) + len(payload), len(head))
    message = prelude + struct.pack("!I", zlib.crc32(prelude)) + head + payload
    crc = zlib.crc32(message) ^ (0xFFFFFFFF if bad_crc else 0)
    return message + struct.pack("!I", crc)


def chunk_frame(event, bad_crc=False):
    data = json.dumps(event, separators=(",", ":")).encode()
    payload = json.dumps({"bytes": base64.b64encode(data).decode(), "p": "abcdefgh"}).encode()
    return frame({":event-type": "chunk", ":content-type": "application/json",
                  ":message-type": "event"}, payload, bad_crc)


def exception_frame(name, message):
    return frame({":exception-type": name, ":content-type": "application/json",
                  ":message-type": "exception"}, json.dumps({"message": message}).encode())


def without_usage(event):
    """The Anthropic event (or message) with no usage anywhere."""
    event = {k: v for k, v in event.items() if k != "usage"}
    if isinstance(event.get("message"), dict):
        event["message"] = without_usage(event["message"])
    return event


def stream_frames(mock, x, spec):
    """The answer's frames, as the spec shapes them."""
    extra = spec.get("bedrock") or {}
    events = [e["data"] for e in spec["events"]] if "events" in spec \
        else [data for _name, data in mock.messages_stream(x)]
    if extra.get("no_usage"):
        events = [without_usage(e) for e in events]
    if events and events[-1].get("type") == "message_stop":
        events[-1] = {**events[-1], "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": mock.INPUT_TOKENS, "outputTokenCount": mock.OUTPUT_TOKENS,
            "invocationLatency": 12, "firstByteLatency": 3,
            "cacheReadInputTokenCount": mock.CACHED_TOKENS,
            "cacheWriteInputTokenCount": mock.CACHE_CREATION_TOKENS}}
    exception = extra.get("exception")
    for i, event in enumerate(events):
        if exception and exception.get("at") == i:
            yield exception_frame(exception["type"], exception.get("message", "mock exception"))
            return
        data = chunk_frame(event, extra.get("bad_crc_at") == i)
        if extra.get("cut_at") == i:
            yield data[:len(data) // 2]
            return
        yield data


def send(handler, status, headers, pieces, delay_s=0.0):
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    for data in pieces:
        if delay_s:
            time.sleep(delay_s)
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
    handler.wfile.write(b"0\r\n\r\n")


def error_answer(handler, status, name, message, extra_headers=None):
    headers = {"Content-Type": "application/json",
               "x-amzn-ErrorType": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/",
               "x-amzn-RequestId": "mock-request", **(extra_headers or {})}
    send(handler, status, headers, [json.dumps({"message": message}).encode()])


def invoke_body(body):
    """The InvokeModel body a CountTokens request carries, or None."""
    try:
        return json.loads(base64.b64decode(body["input"]["invokeModel"]["body"], validate=True))
    except (KeyError, TypeError, ValueError):
        return None


def count_tokens(handler, mock, model_id, body):
    """CountTokens: only bare Anthropic model ids count, as on Bedrock."""
    if invoke_body(body) is None:
        error_answer(handler, 400, "ValidationException", "input.invokeModel.body is invalid")
    elif not model_id.startswith("anthropic."):
        error_answer(handler, 400, "ValidationException",
                     "The provided model doesn't support counting tokens.")
    else:
        send(handler, 200, {"Content-Type": "application/json"},
             [json.dumps({"inputTokens": mock.INPUT_TOKENS}).encode()])


def serve(handler, path, raw, mock):
    """Answers one Bedrock call; `mock` is tests/mock_upstream.py's module."""
    m = PATH.fullmatch(urlsplit(path).path)
    model_id = unquote(m["id"])
    streaming = m["action"] == "invoke-with-response-stream"
    url = f"http://{handler.headers.get('Host', 'localhost')}{path}"
    key, region, bad = check_signature(handler.command, url, handler.headers, raw)
    body = mock.parse_body(raw)
    n = handler.server.state.record({
        "method": handler.command, "path": urlsplit(path).path, "query": urlsplit(path).query,
        "headers": {k.lower(): v for k, v in handler.headers.items()}, "key": key,
        "key_header": "authorization", "both_key_headers": False, "body": body,
        "time": time.time(), "model_id": model_id, "region": region, "signature": bad or "ok",
        "invoke_body": invoke_body(body) if m["action"] == "count-tokens" else None,
    })
    if bad:
        name = "UnrecognizedClientException" if key and "token" in bad \
            else "InvalidSignatureException"
        error_answer(handler, 403, name, f"mock bedrock: {bad}")
        return
    spec = handler.server.state.next_spec(key) or {}
    if spec.get("delay_ms"):
        time.sleep(spec["delay_ms"] / 1000)
    status = spec.get("status", 200)
    extra = spec.get("bedrock") or {}
    x = mock.Exchange(n, handler.command, path, mock.resolve("POST", "/v1/messages")[0], {},
                      {"model": model_id})
    if status >= 400:
        error_answer(handler, status, extra.get("error", ERROR_BY_STATUS.get(status, "X")),
                     f"mock bedrock: {status}", spec.get("headers"))
        return
    if m["action"] == "count-tokens":
        count_tokens(handler, mock, model_id, body)
        return
    headers = {"x-amzn-RequestId": f"mock-{n}", **(spec.get("headers") or {})}
    if streaming:
        headers["Content-Type"] = "application/vnd.amazon.eventstream"
        headers["X-Amzn-Bedrock-Content-Type"] = "application/json"
        send(handler, status, headers, stream_frames(mock, x, spec),
             spec.get("event_delay_ms", 0) / 1000)
        return
    headers.update({"Content-Type": "application/json",
                    "X-Amzn-Bedrock-Input-Token-Count": str(mock.INPUT_TOKENS),
                    "X-Amzn-Bedrock-Output-Token-Count": str(mock.OUTPUT_TOKENS),
                    "X-Amzn-Bedrock-Cache-Read-Input-Token-Count": str(mock.CACHED_TOKENS),
                    "X-Amzn-Bedrock-Cache-Write-Input-Token-Count":
                        str(mock.CACHE_CREATION_TOKENS)})
    answer = spec["body"] if "body" in spec else mock.anthropic_message(x)
    if extra.get("no_usage"):
        answer = without_usage(answer)
    send(handler, status, headers, [json.dumps(answer).encode()])
