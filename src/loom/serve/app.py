"""The ASGI application behind `loom serve`: routes, generation, streaming, disconnects.

A plain ASGI callable (no framework: four routes), run by uvicorn. Each completion
request becomes one `loom.agenerate` call per prompt, with `Context.of_text(prompt)`
(or the conversation) and the server's `BackendPool`, so the embedded model loads once
and emulation, cleanup and parameter adapters apply as in `loom gen`. A watcher waits
for the client to hang up and cancels the generation, which closes the upstream
requests. Streams carry text cleaned as it comes (`loom.emulation.live`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from loom.errors import (
    AmbiguousId,
    BadInput,
    ConfigError,
    InvalidOperation,
    LoomError,
    NotFound,
    UsageError,
)
from loom.generation import events as ev
from loom.generation.backends import BackendPool
from loom.generation.context import Context
from loom.generation.core import Generation, agenerate
from loom.generation.engine import Outcome
from loom.generation.request import GenerationRequest
from loom.serve import protocol as api
from loom.serve.protocol import ApiError, Ask

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 16 * 1024 * 1024  # bytes: a long prompt fits many times over
CLIENT_ERRORS = (UsageError, BadInput, InvalidOperation, NotFound, AmbiguousId)


@dataclass
class Service:
    """What the server holds for its life: served models, the backend pool, the record."""

    models: Sequence[str]
    default: str
    record: Path | None = None
    api_key: str | None = None
    timeout: float | None = None
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr))
    pool: BackendPool = field(default_factory=BackendPool)
    # Generations still running (a client that left does not wait for its own to end).
    running: set[asyncio.Task[Generation]] = field(default_factory=set)

    def request(self, ask: Ask, context: Context) -> GenerationRequest:
        return GenerationRequest(
            n=ask.n,
            models=(ask.model,),
            params=dict(ask.params),
            presets=ask.presets,
            emulate=ask.emulate,
            mode="chat" if context.is_chat else "text",
            context=context,
            timeout=self.timeout,
        )

    async def generate(
        self, ask: Ask, context: Context, sink: ev.Sink, into: Generation
    ) -> Generation:
        request = self.request(ask, context)
        target = None
        if self.record is not None:
            from loom.serve.recording import record_prompt

            node = await asyncio.to_thread(
                record_prompt, self.record, context, endpoint=ask.endpoint, model=ask.model
            )
            request = dataclasses.replace(request, node=node)
            target = self.record
        result = await agenerate(target, request, sink, backends=self.pool, into=into)
        if result.write_error is not None:
            self.log(f"loom serve: recording failed: {result.write_error.message}")
        return result

    async def aclose(self) -> None:
        for task in list(self.running):
            task.cancel()
        if self.running:
            await asyncio.wait(self.running, timeout=10)
        await self.pool.aclose()


class App:
    """The ASGI callable."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        reply = _Reply(send)
        try:
            await self._route(scope, receive, reply)
        except ApiError as error:
            await reply.error(error)
        except Exception as exc:  # a bug: the client gets a 500, the log the details
            self.service.log(f"loom serve: internal error: {type(exc).__name__}: {exc}")
            await reply.error(
                ApiError(
                    500, "internal error in loom serve (see the server's log)", type="server_error"
                )
            )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.service.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, scope: Scope, receive: Receive, reply: _Reply) -> None:
        method, path = scope["method"], scope["path"].rstrip("/")
        routes = {
            "/v1/completions": ("POST", api.parse_completion),
            "/v1/chat/completions": ("POST", api.parse_chat),
            "/v1/models": ("GET", None),
        }
        model = path.removeprefix("/v1/models/") if path.startswith("/v1/models/") else None
        if path not in routes and model is None:
            raise ApiError(404, f"no route {method} {path or '/'} (loom serves /v1/completions, "
                           "/v1/chat/completions and /v1/models)", code="unknown_url")  # fmt: skip
        allowed = "GET" if model is not None else routes[path][0]
        if method != allowed:
            raise ApiError(405, f"{path} takes {allowed}, not {method}", code="method_not_allowed")
        self._authorize(scope)
        if allowed == "GET":
            await reply.json(200, self._models(model))
            return
        parse = routes[path][1]
        assert parse is not None
        body = await _read_json(receive, scope)
        ask = parse(body, self.service.models, self.service.default)
        run = _Run(self.service, ask, receive)
        if ask.stream:
            await run.stream(reply)
        else:
            await run.answer(reply)

    def _authorize(self, scope: Scope) -> None:
        key = self.service.api_key
        if key is None:
            return
        given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), key):
            raise ApiError(
                401,
                "missing or incorrect API key: send `Authorization: Bearer KEY`",
                code="invalid_api_key",
            )

    def _models(self, name: str | None) -> dict[str, Any]:
        def card(model: str) -> dict[str, Any]:
            return {"id": model, "object": "model", "created": 0, "owned_by": "loom"}

        if name is None:
            return {"object": "list", "data": [card(m) for m in self.service.models]}
        if name not in self.service.models:
            raise ApiError(404, f"The model {name!r} does not exist on this server",
                           param="model", code="model_not_found")  # fmt: skip
        return card(name)


# ---- one request ------------------------------------------------------------------------------


class _ClientGone(Exception):
    pass


class _Run:
    """One completion request: a generation per prompt, answered whole or streamed."""

    def __init__(self, service: Service, ask: Ask, receive: Receive) -> None:
        self.service = service
        self.ask = ask
        self.receive = receive
        self.rid = f"{'chatcmpl' if ask.endpoint == api.CHAT else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.results = [Generation() for _ in ask.contexts]
        self.tasks: list[asyncio.Task[Generation]] = []
        self.planned = 0

    def start(self, sinks: Sequence[ev.Sink]) -> None:
        for context, result, sink in zip(self.ask.contexts, self.results, sinks, strict=True):
            task = asyncio.ensure_future(self.service.generate(self.ask, context, sink, result))
            self.service.running.add(task)
            task.add_done_callback(self.service.running.discard)
            self.tasks.append(task)

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()

    async def until_done_or_gone(self, done: Awaitable[Any]) -> None:
        """Wait for `done`; if the client hangs up first, cancel the generations."""
        work = asyncio.ensure_future(done)
        watcher = asyncio.ensure_future(_disconnected(self.receive))
        try:
            finished, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self.cancel()
            raise
        finally:
            watcher.cancel()
        if work not in finished:
            work.cancel()
            self.cancel()
            raise _ClientGone

    async def finished(self) -> list[Generation]:
        """The results; the first pre-generation error (bad parameters, unusable model) raised."""
        await asyncio.wait(self.tasks)
        for task in self.tasks:
            if task.cancelled():
                raise ApiError(503, "the server is shutting down", type="server_error")
            error = task.exception()
            if error is not None:
                self.cancel()
                raise _api_error(error)
        return self.results

    # -- a whole answer ---------------------------------------------------------------------

    async def answer(self, reply: _Reply) -> None:
        self.start([ev.ignore] * len(self.ask.contexts))
        try:
            await self.until_done_or_gone(asyncio.wait(self.tasks))
        except _ClientGone:
            return
        results = await self.finished()
        choices: list[dict[str, Any]] = []
        for context, result in zip(self.ask.contexts, results, strict=True):
            kept = result.kept
            if not kept:
                raise _failure(result)
            for o in kept:
                text = self._text(context, o.text)
                probs = self._logprobs(context, o)
                finish = api.finish_reason(o.finish_reason, incomplete=o.incomplete)
                choices.append(api.choice(self.ask.endpoint, len(choices), text, finish, probs))
        body = api.envelope(self.ask.endpoint, self.rid, self.created, self.ask.model, chunk=False)
        body["choices"] = choices
        body["usage"] = _usage(results)
        await reply.json(200, body)

    # -- a stream ---------------------------------------------------------------------------

    async def stream(self, reply: _Reply) -> None:
        from loom.emulation.live import LiveText

        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        n, endpoint = self.ask.n, self.ask.endpoint
        lives: list[dict[int, LiveText]] = [{} for _ in self.ask.contexts]
        ready = asyncio.Event()

        def live(p: int, i: int) -> LiveText:
            if i not in lives[p]:
                outcomes = self.results[p].outcomes
                branch = outcomes[i].branch if i < len(outcomes) else None
                lives[p][i] = LiveText(
                    branch.framing if branch else None, branch.context if branch else None
                )
            return lives[p][i]

        def sink_for(p: int) -> ev.Sink:
            def sink(event: ev.Event) -> None:
                if isinstance(event, ev.Planned):
                    self.planned += 1
                    if self.planned == len(self.ask.contexts):
                        ready.set()
                elif isinstance(event, ev.TextDelta):
                    text = live(p, event.index).feed(event.text)
                    if text:
                        queue.put_nowait(self._chunk(p * n + event.index, text))

            return sink

        self.start([sink_for(p) for p in range(len(self.ask.contexts))])
        all_done = asyncio.ensure_future(asyncio.wait(self.tasks))
        all_done.add_done_callback(lambda _: ready.set())
        try:
            await self.until_done_or_gone(ready.wait())
        except _ClientGone:
            return
        if all_done.done():
            await self.finished()  # failed before any request: answered with an HTTP error
        await reply.start_stream()
        for p, context in enumerate(self.ask.contexts):
            for i in range(n):
                if endpoint == api.CHAT:
                    await reply.send(self._chunk(p * n + i, "", first=True))
                elif self.ask.echo and context.text:
                    await reply.send(self._chunk(p * n + i, context.text))
        all_done.add_done_callback(lambda _: queue.put_nowait(None))

        async def pump() -> None:
            while (item := await queue.get()) is not None:
                await reply.send(item)

        try:
            await self.until_done_or_gone(pump())
        except _ClientGone:
            return
        try:
            results = await self.finished()
        except ApiError as error:
            await reply.send(_event(error.body()))
            await reply.send(b"data: [DONE]\n\n")
            await reply.end()
            return
        failed = None
        for p, result in enumerate(results):
            if not result.kept:
                failed = failed or _failure(result)
                continue
            for o in result.outcomes:
                index = p * n + o.index
                if not o.kept:  # one branch failed, others did not: it ends here
                    await reply.send(self._chunk(index, "", finish="error"))
                    continue
                rest = live(p, o.index).finish(o.text)
                probs = self._logprobs(self.ask.contexts[p], o)
                finish = api.finish_reason(o.finish_reason, incomplete=o.incomplete)
                await reply.send(self._chunk(index, rest, finish=finish, probs=probs))
        if failed is not None:
            await reply.send(_event(failed.body()))
        if self.ask.include_usage:
            body = api.envelope(endpoint, self.rid, self.created, self.ask.model, chunk=True)
            await reply.send(_event({**body, "choices": [], "usage": _usage(results)}))
        await reply.send(b"data: [DONE]\n\n")
        await reply.end()

    def _chunk(
        self,
        index: int,
        text: str,
        *,
        finish: str | None = None,
        probs: dict[str, Any] | None = None,
        first: bool = False,
    ) -> bytes:
        body = api.envelope(self.ask.endpoint, self.rid, self.created, self.ask.model, chunk=True)
        body["choices"] = [
            api.choice(self.ask.endpoint, index, text, finish, probs, delta=True, first=first)
        ]
        return _event(body)

    def _text(self, context: Context, text: str) -> str:
        return (context.text or "") + text if self.ask.echo else text

    def _logprobs(self, context: Context, o: Outcome) -> dict[str, Any] | None:
        if self.ask.logprobs is None or "".join(t.text for t in o.tokens) != o.text:
            return None  # not asked, or cleanup changed the text: offsets would lie
        return api.logprobs(
            self.ask.endpoint, o.tokens, self.ask.logprobs, offset=len(context.text or "")
        )


# ---- helpers -------------------------------------------------------------------------------


class _Reply:
    """The response side of one HTTP exchange."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def json(self, status: int, body: Any) -> None:
        data = orjson.dumps(body)
        await self._start(status, b"application/json", len(data))
        await self._send({"type": "http.response.body", "body": data})

    async def error(self, error: ApiError) -> None:
        if self.started:
            return  # the stream already said it (or the client left)
        await self.json(error.status, error.body())

    async def start_stream(self) -> None:
        await self._start(200, b"text/event-stream; charset=utf-8", None)

    async def send(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self) -> None:
        await self._send({"type": "http.response.body", "body": b""})

    async def _start(self, status: int, content_type: bytes, length: int | None) -> None:
        headers = [(b"content-type", content_type), (b"cache-control", b"no-cache")]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": headers})


def _event(body: Any) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def _read_json(receive: Receive, scope: Scope) -> Any:
    declared = dict(scope["headers"]).get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise ApiError(413, f"the request body is larger than {MAX_BODY // 2**20} MiB")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, f"the request body is larger than {MAX_BODY // 2**20} MiB")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _api_error(error: BaseException) -> ApiError:
    """An error raised before any model was asked, in OpenAI's shape."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, CLIENT_ERRORS):
        return ApiError(400, error.message)
    if isinstance(error, ConfigError):
        return ApiError(503, error.message, type="server_error", code="model_unavailable")
    if isinstance(error, LoomError):
        return ApiError(500, error.message, type="server_error")
    raise error


def _failure(result: Generation) -> ApiError:
    """Every branch failed: the provider's refusal, its rate limit, or an upstream failure."""
    message = result.error_summary() or "the model returned nothing"
    statuses = {o.error_status for o in result.outcomes if o.error_status}
    if any((o.error or "").startswith("no answer within") for o in result.outcomes):
        return ApiError(504, message, type="timeout", code="upstream_timeout")
    if 429 in statuses:
        return ApiError(429, message, type="rate_limit_error", code="rate_limit_exceeded")
    if 400 in statuses:
        return ApiError(400, message, code="upstream_refused")
    return ApiError(502, message, type="upstream_error", code="upstream_error")


def _usage(results: Sequence[Generation]) -> dict[str, int]:
    """Tokens as the providers counted them (a request shared by n choices counted once)."""
    prompt = completion = 0
    for result in results:
        for o in result.kept:
            u = o.usage or {}
            if u.get("shared_by") and o.request_index:
                continue
            prompt += int(u.get("prompt_tokens") or u.get("input_tokens") or 0)
            completion += int(u.get("completion_tokens") or u.get("output_tokens") or len(o.tokens))
    return api.usage(prompt, completion)
