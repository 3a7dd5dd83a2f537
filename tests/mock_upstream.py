#!/usr/bin/env python3
"""Mock OpenAI / Anthropic upstream for mod_aibridge integration tests
(Azure OpenAI's URLs too: tests/mock_azure.py).

    python3 tests/mock_upstream.py --port 0 [--host 127.0.0.1] [--verbose]

Prints "LISTENING <port>" once bound, then serves until SIGTERM or SIGINT.
Standard library only.

Without a script every route answers like the real API (see ROUTES). Tests
steer it through the control API, whose requests are never recorded:

    POST /_mock/reset     forget all scripts and recorded requests
    POST /_mock/script    {"key": "<key>" | "*", "responses": [spec, ...],
                           "always": spec}
    GET  /_mock/requests  the recorded upstream requests, in arrival order

A request's key is taken from "Authorization: Bearer <key>" or "x-api-key"
(the route's native header wins when both are sent). Its spec is the next
one queued for that key, else that key's "always", else the next one queued
for "*", else "*"'s "always", else none (default behaviour). SPEC_FIELDS
lists what a spec may say; Handler.respond() shows how each field acts.
"""

import argparse
import itertools
import json
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional
from urllib.parse import urlsplit

import mock_azure
import mock_bedrock  # Bedrock's routes (tests/mock_bedrock.py)

OPENAI = "openai"
ANTHROPIC = "anthropic"

# The canned answer, streamed as these deltas.
REPLY_DELTAS = ["Hello", " from", " the", " mock", " upstream."]
REPLY_TEXT = "".join(REPLY_DELTAS)

# Fixed, pairwise different token counts, so tests can tell the fields apart.
INPUT_TOKENS = 21
CACHED_TOKENS = 5          # OpenAI cached_tokens / Anthropic cache_read_input_tokens
CACHE_CREATION_TOKENS = 7  # Anthropic only
OUTPUT_TOKENS = 9
REASONING_TOKENS = 3       # OpenAI only

FILLER_FRAME_BYTES = 4096       # SSE frame size for body_bytes streams
FILLER_PIECE_BYTES = 64 * 1024  # generation step for body_bytes JSON

SPEC_FIELDS = {
    "status", "headers", "body", "delay_ms", "stream", "events",
    "event_delay_ms", "drop", "drop_after", "silence_after_headers_ms",
    "http10", "body_bytes", "chunk_size", "chunk_delay_ms", "bedrock",
}
INTEGER_FIELDS = {"status", "drop_after", "body_bytes", "chunk_size"}
DELAY_FIELDS = {"delay_ms", "event_delay_ms", "silence_after_headers_ms", "chunk_delay_ms"}
EVENT_FIELDS = {"event", "data", "delay_ms"}
DROP_MODES = {"before_headers", "after_events"}


@dataclass
class Exchange:
    """One upstream request, as the body builders need it."""
    n: int          # request number: ids and request-id headers derive from it
    method: str
    path: str
    route: "Route"
    params: dict    # named groups of the route's path pattern
    request: dict   # the JSON request body when it is an object, else {}

    @property
    def model(self):
        return str(self.request.get("model") or "mock-model")

    @property
    def request_id(self):
        return f"req_{self.n}"


# --------------------------------------------------------------------------
# OpenAI Chat Completions

def chat_usage():
    return {
        "prompt_tokens": INPUT_TOKENS,
        "completion_tokens": OUTPUT_TOKENS,
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
        "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS},
        "completion_tokens_details": {"reasoning_tokens": REASONING_TOKENS},
    }


def chat_completion(x):
    return {
        "id": f"chatcmpl-mock{x.n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": x.model,
        "system_fingerprint": "fp_mock",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": REPLY_TEXT, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": chat_usage(),
    }


def chat_chunk(x, choices, usage=None):
    chunk = {
        "id": f"chatcmpl-mock{x.n}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": x.model,
        "system_fingerprint": "fp_mock",
        "choices": choices,
    }
    # With include_usage the real API puts "usage": null on every chunk.
    if (x.request.get("stream_options") or {}).get("include_usage"):
        chunk["usage"] = usage
    return chunk


def chat_choice(delta, finish_reason=None):
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def chat_delta(x, text, _seq):
    return None, chat_chunk(x, [chat_choice({"content": text})])


def chat_stream(x):
    frames = [(None, chat_chunk(x, [chat_choice({"role": "assistant", "content": ""})]))]
    frames += [chat_delta(x, text, i) for i, text in enumerate(REPLY_DELTAS)]
    frames.append((None, chat_chunk(x, [chat_choice({}, "stop")])))
    if (x.request.get("stream_options") or {}).get("include_usage"):
        frames.append((None, chat_chunk(x, [], chat_usage())))
    frames.append((None, "[DONE]"))
    return frames


# --------------------------------------------------------------------------
# OpenAI Responses

def responses_usage():
    return {
        "input_tokens": INPUT_TOKENS,
        "input_tokens_details": {"cached_tokens": CACHED_TOKENS},
        "output_tokens": OUTPUT_TOKENS,
        "output_tokens_details": {"reasoning_tokens": REASONING_TOKENS},
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
    }


def responses_message(x, status, content):
    return {"id": f"msg_mock{x.n}", "type": "message", "status": status,
            "role": "assistant", "content": content}


def output_text(text):
    return {"type": "output_text", "text": text, "annotations": []}


def response_object(x, response_id=None, completed=True):
    return {
        "id": response_id or f"resp_mock{x.n}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed" if completed else "in_progress",
        "model": x.model,
        "output": [responses_message(x, "completed", [output_text(REPLY_TEXT)])] if completed else [],
        "usage": responses_usage() if completed else None,
        "error": None,
        "incomplete_details": None,
        "previous_response_id": x.request.get("previous_response_id"),
        "metadata": {},
    }


def retrieved_response(x):
    return response_object(x, response_id=x.params["id"])


def responses_event(event_type, seq, **fields):
    return event_type, {"type": event_type, "sequence_number": seq, **fields}


def text_position(x):
    return {"item_id": f"msg_mock{x.n}", "output_index": 0, "content_index": 0}


def responses_delta(x, text, seq):
    return responses_event("response.output_text.delta", seq, **text_position(x), delta=text)


def responses_stream(x):
    started = response_object(x, completed=False)
    events = [
        ("response.created", {"response": started}),
        ("response.in_progress", {"response": started}),
        ("response.output_item.added",
         {"output_index": 0, "item": responses_message(x, "in_progress", [])}),
        ("response.content_part.added", {**text_position(x), "part": output_text("")}),
        *[("response.output_text.delta", {**text_position(x), "delta": text})
          for text in REPLY_DELTAS],
        ("response.output_text.done", {**text_position(x), "text": REPLY_TEXT}),
        ("response.content_part.done", {**text_position(x), "part": output_text(REPLY_TEXT)}),
        ("response.output_item.done",
         {"output_index": 0,
          "item": responses_message(x, "completed", [output_text(REPLY_TEXT)])}),
        ("response.completed", {"response": response_object(x)}),
    ]
    return [responses_event(name, seq, **fields) for seq, (name, fields) in enumerate(events)]


# --------------------------------------------------------------------------
# Anthropic Messages

def anthropic_message(x, streaming_start=False):
    return {
        "id": f"msg_mock{x.n}",
        "type": "message",
        "role": "assistant",
        "model": x.model,
        "content": [] if streaming_start else [{"type": "text", "text": REPLY_TEXT}],
        "stop_reason": None if streaming_start else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": INPUT_TOKENS,
            "cache_creation_input_tokens": CACHE_CREATION_TOKENS,
            "cache_read_input_tokens": CACHED_TOKENS,
            "output_tokens": 1 if streaming_start else OUTPUT_TOKENS,
        },
    }


def anthropic_event(event_type, **fields):
    return event_type, {"type": event_type, **fields}


def messages_delta(_x, text, _seq):
    return anthropic_event("content_block_delta", index=0,
                           delta={"type": "text_delta", "text": text})


def messages_stream(x):
    return [
        anthropic_event("message_start", message=anthropic_message(x, streaming_start=True)),
        anthropic_event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        anthropic_event("ping"),
        *[messages_delta(x, text, i) for i, text in enumerate(REPLY_DELTAS)],
        anthropic_event("content_block_stop", index=0),
        anthropic_event("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None},
                        usage={"output_tokens": OUTPUT_TOKENS}),
        anthropic_event("message_stop"),
    ]


def count_tokens(_x):
    return {"input_tokens": INPUT_TOKENS}


# --------------------------------------------------------------------------
# Smaller OpenAI endpoints

MODEL_IDS = ["gpt-4o-mini", "gpt-4.1", "text-embedding-3-small"]


def model_object(model_id):
    return {"id": model_id, "object": "model", "created": 1700000000, "owned_by": "openai"}


def model_list(_x):
    return {"object": "list", "data": [model_object(m) for m in MODEL_IDS]}


def model_retrieve(x):
    return model_object(x.params["id"])


def inputs_of(x):
    """The request's "input" as a list (it may be one string or a list)."""
    value = x.request.get("input", "")
    return value if isinstance(value, list) else [value]


def embeddings(x):
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, 0.4]}
                 for i, _ in enumerate(inputs_of(x))],
        "model": x.model,
        "usage": {"prompt_tokens": INPUT_TOKENS, "total_tokens": INPUT_TOKENS},
    }


def moderations(x):
    return {
        "id": f"modr-mock{x.n}",
        "model": str(x.request.get("model") or "omni-moderation-latest"),
        "results": [{"flagged": False, "categories": {}, "category_scores": {}}
                    for _ in inputs_of(x)],
    }


def conversations(x):
    conversation_id = x.params.get("id") or f"conv_mock{x.n}"
    if (x.params.get("rest") or "").startswith("/items"):
        return {"object": "list", "data": [], "first_id": None, "last_id": None,
                "has_more": False}
    if x.method == "DELETE":
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}
    return {"id": conversation_id, "object": "conversation", "created_at": int(time.time()),
            "metadata": x.request.get("metadata") or {}}


def not_found(_x):
    return {}  # only for a script answering an unknown path with a 2xx


# --------------------------------------------------------------------------
# Routing

@dataclass(frozen=True)
class Route:
    provider: str
    success: Callable[[Exchange], object]  # the 2xx body
    stream: Optional[Callable] = None      # default SSE frames, for routes that stream
    delta: Optional[Callable] = None       # (x, text, seq) -> one text frame, for body_bytes
    status: int = 200


ROUTES = [
    ({"POST"}, r"/v1/chat/completions", Route(OPENAI, chat_completion, chat_stream, chat_delta)),
    ({"POST"}, r"/v1/responses",
     Route(OPENAI, response_object, responses_stream, responses_delta)),
    ({"GET"}, r"/v1/responses/(?P<id>[^/]+)", Route(OPENAI, retrieved_response)),
    ({"POST"}, r"/v1/messages", Route(ANTHROPIC, anthropic_message, messages_stream, messages_delta)),
    ({"POST"}, r"/v1/messages/count_tokens", Route(ANTHROPIC, count_tokens)),
    ({"GET"}, r"/v1/models", Route(OPENAI, model_list)),
    ({"GET"}, r"/v1/models/(?P<id>.+)", Route(OPENAI, model_retrieve)),
    ({"POST"}, r"/v1/embeddings", Route(OPENAI, embeddings)),
    ({"POST"}, r"/v1/moderations", Route(OPENAI, moderations)),
    ({"GET", "POST", "DELETE"}, r"/v1/conversations(?:/(?P<id>[^/]+)(?P<rest>/.*)?)?",
     Route(OPENAI, conversations)),
]
ROUTES += mock_azure.routes(sys.modules[__name__])
NOT_FOUND = Route(OPENAI, not_found, status=404)


def resolve(method, path):
    for methods, pattern, route in ROUTES:
        match = re.fullmatch(pattern, path)
        if match and method in methods:
            return route, {k: v for k, v in match.groupdict().items() if v is not None}
    return NOT_FOUND, {}


# --------------------------------------------------------------------------
# Error bodies

OPENAI_ERRORS = {  # status -> (type, code)
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_denied", None),
    404: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
}
ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_body(x, status):
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Overloaded" if status == 529 else "Error"
    message = f"Mock upstream: {status} {phrase} ({x.method} {x.path})"
    if x.route.provider == ANTHROPIC:
        default = "api_error" if status >= 500 else "invalid_request_error"
        return {"type": "error",
                "error": {"type": ANTHROPIC_ERRORS.get(status, default), "message": message},
                "request_id": x.request_id}
    default = ("server_error", None) if status >= 500 else ("invalid_request_error", None)
    error_type, code = OPENAI_ERRORS.get(status, default)
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def default_body(x, status):
    return error_body(x, status) if status >= 400 else x.route.success(x)


# --------------------------------------------------------------------------
# Body encoding. A body is an iterable of (delay_seconds, bytes) pieces: the
# writer sleeps, then sends and flushes the piece, so timing is preserved.

def json_bytes(value):
    return json.dumps(value, separators=(",", ":")).encode()


def sse_frame(event, data):
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    lines = [f"event: {event}"] if event else []
    lines += [f"data: {line}" for line in text.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def sse_padding(size):
    """`size` bytes that SSE parsers ignore: a comment, or blank lines if too short."""
    return b":" + b"x" * (size - 3) + b"\n\n" if size >= 3 else b"\n" * size


def frame_pieces(frames, default_delay_ms):
    """(event, data, delay_ms or None) frames as pieces; default_delay_ms goes between frames."""
    for i, (event, data, delay_ms) in enumerate(frames):
        if delay_ms is None:
            delay_ms = default_delay_ms if i else 0
        yield delay_ms / 1000, sse_frame(event, data)


def filler_sse(x, total):
    """Text-delta frames in the route's own format adding up to exactly `total` bytes."""
    delta = x.route.delta or (lambda _x, text, _seq: (None, {"padding": text}))
    sent = seq = 0
    while sent < total:
        size = min(FILLER_FRAME_BYTES, total - sent)
        overhead = len(sse_frame(*delta(x, "", seq)))
        frame = sse_frame(*delta(x, "x" * (size - overhead), seq)) if size > overhead \
            else sse_padding(size)
        sent, seq = sent + len(frame), seq + 1
        yield 0.0, frame


def filler_json(base, total):
    """`base` plus a "padding" string making the JSON exactly `total` bytes (when it fits).

    Returns (length, pieces); the padding is generated piecewise, never held whole."""
    mark = "@@padding@@"
    head, tail = json_bytes({**base, "padding": mark}).split(mark.encode(), 1)
    pad = max(0, total - len(head) - len(tail))

    def pieces():
        yield 0.0, head
        for offset in range(0, pad, FILLER_PIECE_BYTES):
            yield 0.0, b"x" * min(FILLER_PIECE_BYTES, pad - offset)
        yield 0.0, tail

    return len(head) + pad + len(tail), pieces()


def paced(pieces, chunk_size, chunk_delay_ms):
    """Re-slice pieces into chunk_size bytes with chunk_delay_ms between them (slow drips)."""
    if not chunk_size and not chunk_delay_ms:
        yield from pieces
        return
    gap, first = (chunk_delay_ms or 0) / 1000, True
    for delay, data in pieces:
        step = chunk_size or len(data) or 1
        for offset in range(0, len(data), step):
            yield (delay if offset == 0 else 0.0) + (0.0 if first else gap), data[offset:offset + step]
            first = False


def spec_frames(spec):
    return [(e.get("event"), e.get("data", ""), e.get("delay_ms")) for e in spec.get("events", [])]


def event_name(body):
    """Anthropic and Responses events are named after their data's "type"."""
    return body.get("type") if isinstance(body, dict) and isinstance(body.get("type"), str) else None


def sse_body(x, spec, status):
    if spec.get("body_bytes") is not None:
        return filler_sse(x, spec["body_bytes"])
    if "events" in spec:
        frames = spec_frames(spec)
    elif "body" in spec or status >= 400 or not x.route.stream:
        body = spec["body"] if "body" in spec else default_body(x, status)
        frames = [(event_name(body), body, None)]
    else:
        frames = [(event, data, None) for event, data in x.route.stream(x)]
    return frame_pieces(frames, spec.get("event_delay_ms", 0))


def json_body(x, spec, status):
    """(Content-Length, pieces) of a non-streamed body."""
    body = spec["body"] if "body" in spec else default_body(x, status)
    if spec.get("body_bytes") is not None:
        return filler_json(body if isinstance(body, dict) else {}, spec["body_bytes"])
    data = body.encode() if isinstance(body, str) else json_bytes(body)
    return len(data), [(0.0, data)]


def wants_stream(x, spec, status):
    if "stream" in spec:
        return bool(spec["stream"])
    if "events" in spec:
        return True
    return (status < 400 and "body" not in spec and x.route.stream is not None
            and x.request.get("stream") is True)


def response_headers(x, spec, streaming):
    """Default headers, then the spec's (same name replaces, null removes)."""
    headers = {"content-type": ("Content-Type",
                                "text/event-stream" if streaming else "application/json")}
    if streaming:
        headers["cache-control"] = ("Cache-Control", "no-cache")
    if x.route.provider == ANTHROPIC:
        headers["request-id"] = ("request-id", x.request_id)
    else:
        headers["x-request-id"] = ("x-request-id", x.request_id)
        # No x-ratelimit-reset-* by default: on a 429 they would decide the
        # module's cooldown; tests that want them script them.
        for name, value in (("x-ratelimit-limit-requests", "10000"),
                            ("x-ratelimit-remaining-requests", "9999"),
                            ("x-ratelimit-limit-tokens", "200000"),
                            ("x-ratelimit-remaining-tokens", "199000")):
            headers[name] = (name, value)
    headers["set-cookie"] = ("Set-Cookie", "upstream=1")  # the module must strip it
    for name, value in (spec.get("headers") or {}).items():
        if value is None:
            headers.pop(name.lower(), None)
        else:
            headers[name.lower()] = (name, str(value))
    return list(headers.values())


# --------------------------------------------------------------------------
# Requests: key, body, script validation

def request_key(headers, provider):
    """(key, header that carried it, whether both key headers were sent)."""
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    found = {"authorization": token.strip() if scheme.lower() == "bearer" else "",
             "x-api-key": headers.get("x-api-key", "").strip()}
    both = "Authorization" in headers and "x-api-key" in headers
    order = ("x-api-key", "authorization") if provider == ANTHROPIC else ("authorization", "x-api-key")
    for name in order:
        if found[name]:
            return found[name], name, both
    return None, None, both


def parse_body(raw):
    """Parsed JSON, else the raw text, None when empty."""
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def check_spec(spec):
    if not isinstance(spec, dict):
        raise ValueError("a response spec must be an object")
    unknown = set(spec) - SPEC_FIELDS
    if unknown:
        raise ValueError(f"unknown spec fields: {sorted(unknown)}")
    for field in set(spec) & (INTEGER_FIELDS | DELAY_FIELDS):
        kinds = int if field in INTEGER_FIELDS else (int, float)
        if not isinstance(spec[field], kinds) or isinstance(spec[field], bool):
            raise ValueError(f"{field} must be a number" + (" (integer)" if kinds is int else ""))
    if spec.get("drop") is not None and spec["drop"] not in DROP_MODES:
        raise ValueError(f"drop must be one of {sorted(DROP_MODES)}")
    for event in spec.get("events", []):
        if not isinstance(event, dict) or set(event) - EVENT_FIELDS:
            raise ValueError(f"events are objects with fields {sorted(EVENT_FIELDS)}")
    return spec


def parse_script(payload):
    """(key, responses, always) of a /_mock/script body; ValueError when malformed."""
    if not isinstance(payload, dict) or not isinstance(payload.get("key"), str):
        raise ValueError('a script needs a string "key"')
    responses = payload.get("responses", [])
    if not isinstance(responses, list):
        raise ValueError('"responses" must be a list')
    always = payload.get("always")
    return (payload["key"], [check_spec(s) for s in responses],
            check_spec(always) if always is not None else None)


class MockState:
    """Scripts and the request record, shared by all handler threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)  # not reset: request ids stay unique
        self.reset()

    def reset(self):
        with self._lock:
            self._queues = {}
            self._always = {}
            self._requests = []

    def add_script(self, key, responses, always):
        """Appends to the key's queue; returns its new length."""
        with self._lock:
            queue = self._queues.setdefault(key, deque())
            queue.extend(responses)
            if always is not None:
                self._always[key] = always
            return len(queue)

    def next_spec(self, key):
        with self._lock:
            for candidate in ([key] if key is not None else []) + ["*"]:
                queue = self._queues.get(candidate)
                if queue:
                    return queue.popleft()
                if candidate in self._always:
                    return self._always[candidate]
            return None

    def record(self, entry):
        """Stores a request; returns its number."""
        with self._lock:
            self._requests.append(entry)
            return next(self._numbers)

    def requests(self):
        with self._lock:
            return list(self._requests)


# --------------------------------------------------------------------------
# HTTP

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # small SSE frames must leave at once

    def do_request(self):
        url = urlsplit(self.path)
        raw = self.read_body()
        if url.path.startswith("/_mock/"):
            self.control(url.path, raw)
            return
        if mock_bedrock.serves(url.path):
            mock_bedrock.serve(self, self.path, raw, sys.modules[__name__])
            return
        route, params = resolve(self.command, url.path)
        azure = route.provider == mock_azure.AZURE
        key, key_header, both = (mock_azure.request_key(self.headers) if azure
                                 else request_key(self.headers, route.provider))
        body = parse_body(raw)
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        n = self.server.state.record({
            "method": self.command, "path": url.path, "query": url.query,
            "headers": headers, "key": key, "key_header": key_header,
            "both_key_headers": both, "body": body, "time": time.time(),
        })
        x = Exchange(n, self.command, url.path, route, params,
                     body if isinstance(body, dict) else {})
        spec = self.server.state.next_spec(key) or {}
        self.respond(x, mock_azure.answer(x, url.query, key, spec) if azure else spec)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_request

    def read_body(self):
        # httpd may send request bodies chunked (proxy-sendchunked).
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.read_chunked()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def read_chunked(self):
        parts = []
        while True:
            line = self.rfile.readline()
            if not line:
                raise ConnectionAbortedError("client closed inside a chunked body")
            size = int(line.split(b";")[0], 16)
            if size == 0:
                break
            parts.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(parts)

    def control(self, path, raw):
        state = self.server.state
        if (self.command, path) == ("POST", "/_mock/reset"):
            state.reset()
            self.send_json(200, {"ok": True})
        elif (self.command, path) == ("POST", "/_mock/script"):
            try:
                key, responses, always = parse_script(json.loads(raw or b"null"))
            except ValueError as e:
                self.send_json(400, {"error": str(e)})
                return
            queued = state.add_script(key, responses, always)
            self.send_json(200, {"ok": True, "key": key, "queued": queued})
        elif (self.command, path) == ("GET", "/_mock/requests"):
            self.send_json(200, state.requests())
        else:
            self.send_json(404, {"error": f"no control endpoint {self.command} {path}"})

    def send_json(self, status, value):
        data = json_bytes(value)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def respond(self, x, spec):
        if spec.get("delay_ms"):
            time.sleep(spec["delay_ms"] / 1000)
        if spec.get("drop") == "before_headers":
            self.reset_connection()
            return
        status = spec.get("status", x.route.status)
        streaming = wants_stream(x, spec, status)
        length, pieces = (None, sse_body(x, spec, status)) if streaming else json_body(x, spec, status)
        framing = "raw" if spec.get("http10") else "chunked" if streaming else "length"
        self.send_head(status, response_headers(x, spec, streaming), framing, length)
        chunked = framing == "chunked"

        if spec.get("silence_after_headers_ms") is not None:
            # A hung upstream: only the scripted events, then nothing, then FIN.
            self.send_pieces(frame_pieces(spec_frames(spec), spec.get("event_delay_ms", 0)), chunked)
            time.sleep(spec["silence_after_headers_ms"] / 1000)
            self.close_connection = True
            return
        dropping = spec.get("drop") == "after_events"
        if dropping:
            pieces = itertools.islice(pieces, spec.get("drop_after"))  # None: all of them
        self.send_pieces(paced(pieces, spec.get("chunk_size"), spec.get("chunk_delay_ms")), chunked)
        if dropping:
            self.reset_connection()
        elif chunked:
            self.wfile.write(b"0\r\n\r\n")

    def send_head(self, status, headers, framing, length):
        if framing == "raw":
            self.protocol_version = "HTTP/1.0"  # status line; the body ends at close
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        elif framing == "length":
            self.send_header("Content-Length", str(length))
        else:
            self.send_header("Connection", "close")  # also sets close_connection
        self.end_headers()

    def send_pieces(self, pieces, chunked):
        # wfile is unbuffered: every write goes out at once.
        for delay, data in pieces:
            if delay > 0:
                time.sleep(delay)
            if data:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)

    def reset_connection(self):
        """Close with a TCP RST (SO_LINGER 0) instead of a FIN, like a crashed upstream."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # its makefile() reference would keep the socket open
        self.connection.close()

    def version_string(self):
        return "mock-upstream"

    def log_message(self, format, *args):
        if self.server.verbose:
            super().log_message(format, *args)


class MockServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # tests open hundreds of connections at once

    def __init__(self, address, verbose):
        super().__init__(address, Handler)
        self.state = MockState()
        self.verbose = verbose

    def handle_error(self, request, client_address):
        # Clients hanging up mid-response is part of the tests, not a fault.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    server = MockServer((args.host, args.port), args.verbose)
    # Blocked before any thread starts, so that only sigwait() below takes them.
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"LISTENING {server.server_address[1]}", flush=True)
    signal.sigwait(signals)
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    main()
