"""A real HTTP server speaking the OpenAI (completions, chat) and Anthropic Messages wire formats.

For tests and benchmarks: backends talk to it over a socket exactly as they would to
a provider, so retries, streaming, timeouts and error bodies are exercised for real.

    with FakeProvider(latency=0.2) as fake:
        fake.script(Reply(["a", "b"]), Fail(429, retry_after="1"), Reply("c"))
        backend = OpenAICompletions(fake.openai_url, api_key="sk-test", model="m")
        ...
        assert fake.requests[0].body["n"] == 2

Each HTTP request consumes the next scripted item (Reply, Fail, Drop, Hang); with the
script empty it gets a Reply whose texts come from `generator(request, index)`. Error
bodies use each provider's real shape and, where known, its real wording.
"""

from __future__ import annotations

import contextlib
import http.server
import random
import re
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import orjson

try:
    import pytest
except ImportError:  # usable from benchmarks without pytest
    pytest = None  # type: ignore[assignment]

__all__ = [
    "ANTHROPIC_PREFILL_REJECTED",
    "ANTHROPIC_PREFILL_WHITESPACE",
    "ANTHROPIC_TEMPERATURE_AND_TOP_P",
    "ANTHROPIC_TEMPERATURE_DEPRECATED",
    "Drop",
    "Fail",
    "FakeProvider",
    "Hang",
    "Recorded",
    "Reply",
    "anthropic_error",
    "openai_error",
    "tokenize",
]

# Anthropic's own texts (from real 400 responses).
ANTHROPIC_PREFILL_REJECTED = (
    "This model does not support assistant message prefill. "
    "The conversation must end with a user message."
)
ANTHROPIC_PREFILL_WHITESPACE = (
    "messages: final assistant content cannot end with trailing whitespace"
)
ANTHROPIC_TEMPERATURE_DEPRECATED = "`temperature` is deprecated for this model."
ANTHROPIC_TEMPERATURE_AND_TOP_P = (
    "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
)

# Top-level fields the Messages API accepts; anything else is "Extra inputs are not permitted".
_ANTHROPIC_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "stream",
        "metadata",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
    }
)

_OPENAI_DEFAULTS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to sample from this model.", "invalid_request_error", None),
    404: (
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    429: (
        "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}
_ANTHROPIC_DEFAULTS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    503: ("overloaded_error", "Overloaded"),
    529: ("overloaded_error", "Overloaded"),
}


def openai_error(
    message: str, type: str = "invalid_request_error", param: str | None = None, code: Any = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def anthropic_error(message: str, type: str = "invalid_request_error") -> dict[str, Any]:
    return {"type": "error", "error": {"type": type, "message": message}}


def tokenize(text: str) -> list[str]:
    """Words with their leading whitespace: close enough to BPE for stream shapes."""
    return re.findall(r"\s*\S+|\s+", text)


def _logprob(token: str) -> float:
    return -round(0.05 * (1 + zlib.crc32(token.encode()) % 40), 4)


def _mask(key: str) -> str:
    # OpenAI echoes a masked key in its 401 message; so does this.
    return key[:3] + "*" * 4 + key[-4:] if len(key) > 8 else "****"


# ---------------------------------------------------------------------------
# The script


@dataclass
class Reply:
    """A successful answer.

    texts: one per choice (a single string serves every choice); missing ones come
        from the server's generator.
    cut_after: streamed only — send this many content events, then drop the connection
        (or, with clean_cut, end the body properly but without finishing).
    malformed_after: send this many content events, then an event of broken JSON
        (not streamed: the whole body is broken JSON).
    error_after: streamed only — this many content events, then an in-band error event.
    """

    texts: Sequence[str] | str | None = None
    finish_reason: str | None = None
    model: str | None = None
    cut_after: int | None = None
    clean_cut: bool = False
    malformed_after: int | None = None
    error_after: int | None = None
    error_type: str = "overloaded_error"
    chunk_delay: float | None = None


@dataclass
class Fail:
    """An HTTP error: the provider's usual body for `status` unless `body` is given."""

    status: int
    message: str | None = None
    body: Any = None
    retry_after: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Drop:
    """Close the connection without answering."""


@dataclass
class Hang:
    """Say nothing for `seconds` (past the client's read timeout), then close."""

    seconds: float = 5.0


ScriptItem = Reply | Fail | Drop | Hang


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None
    raw: bytes
    time: float  # time.monotonic() when it arrived
    client: tuple[str, int] | None = None  # the client's address: one per connection


_VOCABULARY = "the river bends past stone and reed while lanterns drift over salt water in rain"
_WORDS = _VOCABULARY.split()


def default_generator(request: Recorded, index: int) -> str:
    """Deterministic text per (input, seed, branch index): six words, each with its space."""
    body = request.body if isinstance(request.body, dict) else {}
    key = f"{body.get('prompt')}|{body.get('messages')}|{body.get('seed')}|{index}"
    rng = random.Random(key)  # str seeds are hashed stably, unlike hash()
    return "".join(" " + rng.choice(_WORDS) for _ in range(6))


# ---------------------------------------------------------------------------
# The server


class FakeProvider:
    """A threaded HTTP server on 127.0.0.1 (ephemeral port). Use as a context manager.

    latency: seconds before the first byte of every answer.
    chunk_delay: seconds between streamed events.
    api_key: when set, requests must carry it (Bearer for OpenAI, x-api-key for Anthropic).
    reported_model: the model named in answers (default: the requested one).
    logprobs_shape: "legacy" for OpenAI's completions shape on /completions, or "chat"
        for the `content[]` shape there too (what llama.cpp sends).
    anthropic_prefill: False rejects a final assistant message, as models from 4.6 on do.
    anthropic_sampling: "all", "exclusive" (temperature and top_p not together) or
        "none" (temperature rejected), as newer Claude models behave.
    owned_by: what `GET /v1/models` says owns the model ("llamacpp" plays llama.cpp's
        server). That lookup is kept in `lookups`, apart from the generation `requests`.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        chunk_delay: float = 0.0,
        api_key: str | None = None,
        reported_model: str | None = None,
        generator: Callable[[Recorded, int], str] = default_generator,
        logprobs_shape: str = "legacy",
        anthropic_prefill: bool = True,
        anthropic_sampling: str = "all",
        owned_by: str = "openai",
    ) -> None:
        self.latency = latency
        self.chunk_delay = chunk_delay
        self.api_key = api_key
        self.reported_model = reported_model
        self.generator = generator
        self.logprobs_shape = logprobs_shape
        self.anthropic_prefill = anthropic_prefill
        self.anthropic_sampling = anthropic_sampling
        self.owned_by = owned_by
        self.lookups: list[str] = []  # paths of GET requests (model lists), oldest first
        self.linger = 0.0  # seconds a finished stream stays open before its body ends
        self._script: deque[ScriptItem] = deque()
        self._requests: list[Recorded] = []
        self._lock = threading.Lock()
        self.in_flight = 0  # requests being answered now
        self.max_in_flight = 0  # the most answered at once (concurrency seen by the server)
        self.answered = 0  # replies sent to the end
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ids = 0

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> FakeProvider:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes hanging and delayed handlers
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeProvider is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def openai_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_url(self) -> str:
        return self.url

    # -- script and records ---------------------------------------------------

    def script(self, *items: ScriptItem) -> None:
        """Queue answers; each HTTP request (that passes validation) takes the next one."""
        with self._lock:
            self._script.extend(items)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    @property
    def last(self) -> Recorded:
        with self._lock:
            return self._requests[-1]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._script.clear()
            self.max_in_flight = self.in_flight

    def _record(self, item: Recorded) -> int:
        with self._lock:
            self._requests.append(item)
            self._ids += 1
            return self._ids

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _next(self) -> ScriptItem:
        with self._lock:
            return self._script.popleft() if self._script else Reply()

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a hanging handler must not hold up stop()
    request_queue_size = 128  # n=16 concurrent connects must not overflow the backlog

    def __init__(self, address: tuple[str, int], handler: type, fake: FakeProvider) -> None:
        self.fake = fake
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hang up on purpose in fault tests (timeouts, cuts); that is not news.
        pass


class _Disconnect(Exception):
    pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small SSE writes must not wait 40 ms each
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing ---------------------------------------------------------------

    @property
    def fake(self) -> FakeProvider:
        return self.server.fake

    def _send_json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def _start_stream(self, headers: Mapping[str, str]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end_stream(self) -> None:
        if self.fake.linger:  # a server slow to end the body after the last event
            self.wfile.flush()
            self.fake._stopping.wait(self.fake.linger)
        self.wfile.write(b"0\r\n\r\n")

    def _drop(self) -> NoReturn:
        self.close_connection = True
        with contextlib.suppress(OSError):  # already gone
            self.connection.shutdown(socket.SHUT_RDWR)
        raise _Disconnect

    # -- requests ---------------------------------------------------------------

    def _lookup(self, path: str) -> None:
        """`GET /v1/models`, as the server `owned_by` names answers it; anything else 404."""
        with self.fake._lock:
            self.fake.lookups.append(path)
        if path != "/v1/models":
            self._send_json(404, openai_error(f"Unknown request URL: GET {path}"))
            return
        model = {"id": "chat-1", "object": "model", "owned_by": self.fake.owned_by}
        self._send_json(200, {"object": "list", "data": [model]})

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = self.path.split("?", 1)[0]
        if self.command == "GET":
            self._lookup(path)
            return
        request = Recorded(
            self.command, path, headers, body, raw, time.monotonic(), self.client_address[:2]
        )
        number = self.fake._record(request)
        routes = {
            "/v1/completions": "completions",
            "/v1/chat/completions": "chat",
            "/v1/messages": "anthropic",
        }
        kind = routes.get(path)
        self.fake._enter()
        try:
            if kind is None or self.command != "POST":
                self._send_json(404, openai_error(f"Unknown request URL: {self.command} {path}"))
                return
            if not isinstance(body, dict):
                self._fail(kind, Fail(400, "We could not parse the JSON body of your request."))
                return
            rejection = self._validate(kind, headers, body)
            if rejection is not None:
                self._fail(kind, rejection)
                return
            item = self.fake._next()
            if isinstance(item, Hang):
                self.fake._sleep(item.seconds)
                self._drop()
            self.fake._sleep(self.fake.latency)
            if isinstance(item, Drop):
                self._drop()
            elif isinstance(item, Fail):
                self._fail(kind, item)
            else:
                self._reply(kind, request, body, item, number)
                with self.fake._lock:
                    self.fake.answered += 1
        except (_Disconnect, BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.fake._leave()

    def _validate(self, kind: str, headers: dict[str, str], body: dict[str, Any]) -> Fail | None:
        key = self.fake.api_key
        if kind == "anthropic":
            if "anthropic-version" not in headers:
                return Fail(400, "anthropic-version: header is required")
            if key is not None and headers.get("x-api-key") != key:
                return Fail(401, "invalid x-api-key")
            return self._validate_anthropic(body)
        if key is not None:
            auth = headers.get("authorization", "")
            if not auth:
                return Fail(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                )
            if auth != f"Bearer {key}":
                given = auth.removeprefix("Bearer ")
                return Fail(
                    401,
                    f"Incorrect API key provided: {_mask(given)}. You can find your API key "
                    "at https://platform.openai.com/account/api-keys.",
                )
        if "model" not in body:
            return Fail(400, "you must provide a model parameter")
        if kind == "completions" and "prompt" not in body:
            return Fail(400, "'prompt' is a required property")
        if kind == "chat" and not body.get("messages"):
            return Fail(400, "'messages' is a required property")
        if "stream_options" in body and not body.get("stream"):
            return Fail(
                400, "The 'stream_options' parameter is only allowed when 'stream' is enabled."
            )
        return None

    def _validate_anthropic(self, body: dict[str, Any]) -> Fail | None:
        for name in body:
            if name not in _ANTHROPIC_FIELDS:
                return Fail(400, f"{name}: Extra inputs are not permitted")
        if "max_tokens" not in body:
            return Fail(400, "max_tokens: Field required")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return Fail(400, "messages: Field required")
        for message in messages:
            if message.get("role") not in ("user", "assistant"):
                return Fail(
                    400,
                    f'messages: Unexpected role "{message.get("role")}". The Messages API accepts '
                    'a top-level `system` parameter, not "system" as an input message role.',
                )
        final = messages[-1]
        if final.get("role") == "assistant":
            if not self.fake.anthropic_prefill:
                return Fail(400, ANTHROPIC_PREFILL_REJECTED)
            content = final.get("content")
            if isinstance(content, str) and content != content.rstrip():
                return Fail(400, ANTHROPIC_PREFILL_WHITESPACE)
        sampling = self.fake.anthropic_sampling
        if sampling == "none" and "temperature" in body:
            return Fail(400, ANTHROPIC_TEMPERATURE_DEPRECATED)
        if sampling == "exclusive" and "temperature" in body and "top_p" in body:
            return Fail(400, ANTHROPIC_TEMPERATURE_AND_TOP_P)
        temperature = body.get("temperature", 0)
        if not isinstance(temperature, int | float) or not 0 <= temperature <= 1:
            return Fail(400, "temperature: Input should be less than or equal to 1")
        return None

    def _fail(self, kind: str, fail: Fail) -> None:
        body = fail.body
        if body is None:
            if kind == "anthropic":
                type_, message = _ANTHROPIC_DEFAULTS.get(fail.status, ("api_error", "Error"))
                body = anthropic_error(fail.message or message, type_)
                body["request_id"] = "req_fake"
            else:
                message, type_, code = _OPENAI_DEFAULTS.get(
                    fail.status, ("Error.", "server_error", None)
                )
                body = openai_error(fail.message or message, type_, None, code)
        headers = {"request-id" if kind == "anthropic" else "x-request-id": "req_fake"}
        headers.update(fail.headers)
        if fail.retry_after is not None:
            headers["retry-after"] = fail.retry_after
        self._send_json(fail.status, body, headers)

    # -- answers ------------------------------------------------------------------

    def _reply(
        self, kind: str, request: Recorded, body: dict[str, Any], reply: Reply, number: int
    ) -> None:
        n = 1 if kind == "anthropic" else int(body.get("n") or 1)
        texts = reply.texts
        given = [texts] * n if isinstance(texts, str) else list(texts or [])
        outputs: list[tuple[list[str], str, str | None]] = []
        for i in range(n):
            text = given[i] if i < len(given) else self.fake.generator(request, i)
            outputs.append(self._limit(kind, body, text, reply.finish_reason))
        model = reply.model or self.fake.reported_model or str(body.get("model"))
        rid = f"req_fake_{number}"
        if reply.malformed_after is not None and not body.get("stream"):
            self._send_json(200, b'{"id": "broken", "choices": [{"index": 0, "te')
            return
        if kind == "anthropic":
            self._anthropic(request, body, reply, outputs[0], model, rid)
        else:
            self._openai(kind, request, body, reply, outputs, model, rid)

    def _limit(
        self, kind: str, body: dict[str, Any], text: str, finish: str | None
    ) -> tuple[list[str], str, str | None]:
        """(tokens, finish reason, matched stop sequence) after stop and max_tokens."""
        stops = body.get("stop_sequences" if kind == "anthropic" else "stop") or []
        stops = [stops] if isinstance(stops, str) else list(stops)
        matched: str | None = None
        cut = len(text)
        for stop in stops:
            at = text.find(stop)
            if stop and 0 <= at < cut:
                cut, matched = at, stop
        tokens = tokenize(text[:cut])
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        reason = "stop"
        if isinstance(limit, int) and len(tokens) > limit:
            tokens, reason, matched = tokens[:limit], "length", None
        if kind == "anthropic":
            reason = {"stop": "stop_sequence" if matched else "end_turn", "length": "max_tokens"}[
                reason
            ]
        return tokens, finish or reason, matched

    def _pause(self, reply: Reply) -> None:
        delay = self.fake.chunk_delay if reply.chunk_delay is None else reply.chunk_delay
        self.fake._sleep(delay)

    def _fault(self, reply: Reply, sent: int) -> str | None:
        """Which fault, if any, fires after `sent` content events."""
        if reply.cut_after is not None and sent >= reply.cut_after:
            return "cut"
        if reply.malformed_after is not None and sent >= reply.malformed_after:
            return "malformed"
        if reply.error_after is not None and sent >= reply.error_after:
            return "error"
        return None

    def _cut(self, reply: Reply) -> None:
        if reply.clean_cut:
            self._end_stream()
            self.close_connection = True
            raise _Disconnect
        self._drop()

    # OpenAI ---------------------------------------------------------------------

    def _logprobs(self, kind: str, body: dict[str, Any], token: str, offset: int) -> Any:
        if kind == "chat":
            if not body.get("logprobs"):
                return None
            k = int(body.get("top_logprobs") or 0)
        else:
            if body.get("logprobs") is None:
                return None
            k = int(body["logprobs"])
        lp = _logprob(token)
        alts = [(token, lp)] + [(f"{token}~{j}", round(lp - 0.5 * j, 4)) for j in range(1, k)]
        alts = alts[:k]
        if kind == "chat" or self.fake.logprobs_shape == "chat":
            return {
                "content": [
                    {
                        "token": token,
                        "logprob": lp,
                        "bytes": list(token.encode()),
                        "top_logprobs": [
                            {"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in alts
                        ],
                    }
                ],
                "refusal": None,
            }
        return {
            "tokens": [token],
            "token_logprobs": [lp],
            "top_logprobs": [dict(alts)],
            "text_offset": [offset],
        }

    def _openai_choice(
        self,
        kind: str,
        body: dict[str, Any],
        index: int,
        tokens: list[str],
        finish: str | None,
        *,
        streamed: bool,
    ) -> dict[str, Any]:
        text = "".join(tokens)
        lps = [self._logprobs(kind, body, t, 0) for t in tokens]
        merged: Any = None
        if lps and lps[0] is not None:
            if "content" in lps[0]:
                merged = {"content": [e for lp in lps for e in lp["content"]], "refusal": None}
            else:
                merged = {
                    key: [v for lp in lps for v in lp[key]]
                    for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset")
                }
        if kind == "chat":
            key = "delta" if streamed else "message"
            return {
                "index": index,
                key: {"role": "assistant", "content": text},
                "logprobs": merged,
                "finish_reason": finish,
            }
        return {"index": index, "text": text, "logprobs": merged, "finish_reason": finish}

    def _usage(self, body: dict[str, Any], total: int) -> dict[str, int]:
        source = body.get("prompt") or body.get("messages") or ""
        prompt = len(tokenize(source if isinstance(source, str) else str(source)))
        return {"prompt_tokens": prompt, "completion_tokens": total, "total_tokens": prompt + total}

    def _openai(
        self,
        kind: str,
        request: Recorded,
        body: dict[str, Any],
        reply: Reply,
        outputs: list[tuple[list[str], str, str | None]],
        model: str,
        rid: str,
    ) -> None:
        obj = "chat.completion" if kind == "chat" else "text_completion"
        base = {"id": f"cmpl-{rid}", "created": int(time.time()), "model": model}
        total = sum(len(tokens) for tokens, _, _ in outputs)
        if not body.get("stream"):
            choices = [
                self._openai_choice(kind, body, i, tokens, finish, streamed=False)
                for i, (tokens, finish, _) in enumerate(outputs)
            ]
            self._send_json(
                200,
                {**base, "object": obj, "choices": choices, "usage": self._usage(body, total)},
                {"x-request-id": rid},
            )
            return
        self._start_stream({"x-request-id": rid})
        obj += ".chunk" if kind == "chat" else ""

        def event(payload: Any) -> None:
            self._chunk(b"data: " + orjson.dumps(payload) + b"\n\n")

        if kind == "chat":  # the role comes first, alone, as OpenAI sends it
            for i in range(len(outputs)):
                delta = {"index": i, "delta": {"role": "assistant", "content": ""}}
                event({**base, "object": obj, "choices": [{**delta, "finish_reason": None}]})
        sent = 0
        offsets = [0] * len(outputs)
        for step in range(max((len(t) for t, _, _ in outputs), default=0)):
            for i, (tokens, _, _) in enumerate(outputs):
                if step >= len(tokens):
                    continue
                fault = self._fault(reply, sent)
                if fault is not None:
                    self._openai_fault(fault, reply)
                    return
                token = tokens[step]
                choice = self._openai_choice(kind, body, i, [token], None, streamed=True)
                if choice.get("logprobs") and "text_offset" in choice["logprobs"]:
                    choice["logprobs"]["text_offset"] = [offsets[i]]
                offsets[i] += len(token)
                event({**base, "object": obj, "choices": [choice]})
                sent += 1
                self._pause(reply)
        fault = self._fault(reply, sent)
        if fault is not None:
            self._openai_fault(fault, reply)
            return
        for i, (_, finish, _) in enumerate(outputs):
            choice = self._openai_choice(kind, body, i, [], finish, streamed=True)
            if kind == "chat":
                choice["delta"] = {}
            event({**base, "object": obj, "choices": [choice]})
        if (body.get("stream_options") or {}).get("include_usage"):
            event({**base, "object": obj, "choices": [], "usage": self._usage(body, total)})
        self._chunk(b"data: [DONE]\n\n")
        self._end_stream()

    def _openai_fault(self, fault: str, reply: Reply) -> None:
        if fault == "cut":
            self._cut(reply)
        elif fault == "malformed":
            self._chunk(b'data: {"choices": [{"index": 0, "te\n\n')
            self._end_stream()
        else:
            message = (
                "The server is overloaded." if reply.error_type.startswith("over") else "Error"
            )
            payload = openai_error(message, reply.error_type)
            self._chunk(b"data: " + orjson.dumps(payload) + b"\n\n")
            self._end_stream()

    # Anthropic ------------------------------------------------------------------

    def _anthropic(
        self,
        request: Recorded,
        body: dict[str, Any],
        reply: Reply,
        output: tuple[list[str], str, str | None],
        model: str,
        rid: str,
    ) -> None:
        tokens, stop_reason, stop_sequence = output
        source = str(body.get("system") or "") + str(body.get("messages"))
        usage_in = len(tokenize(source))
        message: dict[str, Any] = {
            "id": f"msg_{rid}",
            "type": "message",
            "role": "assistant",
            "model": model,
        }
        if not body.get("stream"):
            self._send_json(
                200,
                {
                    **message,
                    "content": [{"type": "text", "text": "".join(tokens)}],
                    "stop_reason": stop_reason,
                    "stop_sequence": stop_sequence,
                    "usage": {"input_tokens": usage_in, "output_tokens": len(tokens)},
                },
                {"request-id": rid},
            )
            return
        self._start_stream({"request-id": rid})

        def event(name: str, payload: dict[str, Any]) -> None:
            data = orjson.dumps({"type": name, **payload})
            self._chunk(b"event: " + name.encode() + b"\ndata: " + data + b"\n\n")

        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": usage_in, "output_tokens": 1},
        }
        event("message_start", {"message": start})
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        event("ping", {})
        for sent, token in enumerate([*tokens, None]):
            fault = self._fault(reply, sent)
            if fault is not None:
                self._anthropic_fault(fault, reply, event)
                return
            if token is None:
                break
            event(
                "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": token}}
            )
            self._pause(reply)
        event("content_block_stop", {"index": 0})
        event(
            "message_delta",
            {
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": {"output_tokens": len(tokens)},
            },
        )
        event("message_stop", {})
        self._end_stream()

    def _anthropic_fault(
        self, fault: str, reply: Reply, event: Callable[[str, dict[str, Any]], None]
    ) -> None:
        if fault == "cut":
            self._cut(reply)
        elif fault == "malformed":
            self._chunk(
                b'event: content_block_delta\ndata: {"type": "content_block_delta", "de\n\n'
            )
            self._end_stream()
        else:
            message = (
                "Overloaded" if reply.error_type == "overloaded_error" else "Internal server error"
            )
            event("error", {"error": {"type": reply.error_type, "message": message}})
            self._end_stream()


if pytest is not None:

    @pytest.fixture
    def fake_provider() -> Iterator[FakeProvider]:
        """A running FakeProvider, stopped after the test."""
        with FakeProvider() as server:
            yield server
