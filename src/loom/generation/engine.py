"""Run N branches: group requests, run them concurrently, stream, fill one outcome per child.

The engine knows nothing of terminals, files or emulation. It takes planned children
(`Branch`, each with its framed request), groups children with identical requests
into one call with `n` where the backend and the model allow it, runs the calls
concurrently under a cap per model, reports progress as events
(`loom.generation.events`), and fills one `Outcome` per child in place as chunks
arrive, so a caller interrupted half-way still holds every finished branch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loom.config import ModelConfig
from loom.errors import LoomError, StreamCut
from loom.generation import events as ev
from loom.generation.backends.base import Backend, Chunk, GenRequest, Token

if TYPE_CHECKING:
    from loom.emulation.framing import Framing
    from loom.generation.backends import BackendPool
    from loom.generation.context import Context

MAX_N = 16  # samples per request when neither the backend nor the model says less


@dataclass
class Branch:
    """One child to produce: which model, with which canonical parameters, and why (modulation)."""

    model: ModelConfig
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)  # modulator, index, preset… (recorded)
    # Set when the branch is framed (loom.generation.plan): what it continues (after trimming
    # to the model's window), the request that asks for it, how emulation framed it, the
    # methods still to try if cleanup rejects the output, and the model's limit on `n`.
    context: Context | None = None
    request: GenRequest | None = None
    framing: Framing | None = None
    methods: list[str] = field(default_factory=list)
    max_n: int | None = None

    def group_key(self) -> tuple[Any, ...]:
        import orjson

        request_key = None
        if self.request is not None:
            request_key = orjson.dumps(
                {
                    "p": self.request.prompt,
                    "m": self.request.messages,
                    "x": self.request.extra,
                    "w": self.request.params,
                },
                option=orjson.OPT_SORT_KEYS,
            )
        return (
            self.model.name,
            orjson.dumps(self.params, option=orjson.OPT_SORT_KEYS),
            orjson.dumps(self.extra, option=orjson.OPT_SORT_KEYS),
            request_key,
        )


@dataclass
class Outcome:
    """What came back for one child; filled in while it streams."""

    index: int
    branch: Branch
    text: str = ""
    tokens: list[Token] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    reported_model: str | None = None
    sent: dict[str, Any] = field(default_factory=dict)  # the wire parameters actually sent
    dropped: dict[str, str] = field(default_factory=dict)
    backend: str = ""
    base_url: str = ""
    started: float = 0.0
    first_token_at: float | None = None
    ended: float | None = None
    error: str | None = None
    error_status: int | None = None  # the provider's HTTP status, when it refused
    incomplete: bool = False
    request_n: int = 1
    request_index: int = 0
    raw_text: str | None = None  # the model's text before cleanup, when cleanup changed it
    cleanup: dict[str, Any] | None = None  # verdict and operations (emulated output)
    retried_from: dict[str, Any] | None = None  # the first method and its verdict, after a retry
    kept: bool = False  # becomes a node (decided when the generation ends)
    role: str | None = None  # the role the provider said the reply speaks in

    @property
    def done(self) -> bool:
        return self.ended is not None

    @property
    def ok(self) -> bool:
        return self.done and self.error is None and not self.incomplete


def _backend(backends: BackendPool | Mapping[str, Backend], model: ModelConfig) -> Backend:
    if isinstance(backends, Mapping):
        return backends[model.name]
    return backends.get(model)


def plan_requests(
    branches: Sequence[Branch], backends: BackendPool | Mapping[str, Backend]
) -> list[list[int]]:
    """Group children into requests: identical requests share one call with `n` when allowed
    (by the backend, and by the model's `max_n` from the capability table)."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    singles: list[list[int]] = []
    limits: dict[tuple[Any, ...], int] = {}
    for i, branch in enumerate(branches):
        limit = min(branch.max_n or MAX_N, MAX_N)
        if _backend(backends, branch.model).capabilities.n and limit > 1:
            key = branch.group_key()
            groups.setdefault(key, []).append(i)
            limits[key] = limit
        else:
            singles.append([i])
    planned: list[list[int]] = []
    for key, members in groups.items():
        size = limits[key]
        planned.extend(members[k : k + size] for k in range(0, len(members), size))
    return planned + singles


def _request(branch: Branch, n: int) -> GenRequest:
    req = branch.request
    if req is None:
        raise ValueError("a branch must be framed (given a request) before it runs")
    return GenRequest(
        model=req.model,
        prompt=req.prompt,
        messages=req.messages,
        n=n,
        params=dict(req.params),
        extra={**req.extra, **branch.extra},
    )


async def run_branches(
    branches: Sequence[Branch],
    backends: BackendPool | Mapping[str, Backend],
    *,
    outcomes: list[Outcome] | None = None,
    events: ev.Sink | None = None,
    concurrency: int | Mapping[str, int] = 8,
) -> list[Outcome]:
    """Produce every branch. `outcomes`, if given, is filled in place (for interrupted callers).

    `concurrency`: requests in flight, for every model or per model name.
    """
    sink = events or ev.ignore
    results = outcomes if outcomes is not None else []
    results[:] = [Outcome(i, b) for i, b in enumerate(branches)]
    gates: dict[str, asyncio.Semaphore] = {}

    def gate(model: ModelConfig) -> asyncio.Semaphore:
        if model.name not in gates:
            limit = concurrency if isinstance(concurrency, int) else concurrency.get(model.name, 8)
            gates[model.name] = asyncio.Semaphore(max(1, limit))
        return gates[model.name]

    async def run_one(members: list[int]) -> None:
        first = branches[members[0]]
        backend = _backend(backends, first.model)
        request = _request(first, len(members))
        wire = backend.wire_params(request)
        async with gate(first.model):
            ev.current_request.set((sink, tuple(members)))
            start = time.monotonic()
            for k, i in enumerate(members):
                o = results[i]
                # What was posted: the mapped parameters plus backend pass-through fields.
                o.started, o.dropped = start, dict(wire.dropped)
                o.sent = {**wire.body, **request.extra}
                o.backend, o.base_url = backend.name, backend.base_url
                o.request_n, o.request_index = len(members), k
                sink(ev.BranchStarted(i, first.model.name, len(members)))
            try:
                # aclosing: an early exit closes the HTTP response now, not at loop shutdown.
                async with contextlib.aclosing(backend.stream(request)) as chunks:
                    async for chunk in chunks:
                        _absorb(chunk, members, results, sink)
                for i in members:
                    o = results[i]
                    if o.ended is None:  # a branch the backend never closed
                        o.ended, o.incomplete = time.monotonic(), True
                        o.error = (
                            o.error
                            or "the provider ended the response without finishing this branch"
                        )
                        _finished(o, sink)
            except StreamCut as exc:
                _fail(members, results, sink, exc.message, incomplete=True)
            except LoomError as exc:
                _fail(
                    members,
                    results,
                    sink,
                    exc.message,
                    incomplete=False,
                    status=getattr(exc, "status", None),
                )
            except asyncio.CancelledError:
                _fail(members, results, sink, "cancelled", incomplete=True)
                raise
            except Exception as exc:  # a backend bug must not cost the other branches their text
                _fail(
                    members,
                    results,
                    sink,
                    f"internal error in {backend.name}: {type(exc).__name__}: {exc}",
                    incomplete=False,
                )

    await asyncio.gather(*(run_one(m) for m in plan_requests(branches, backends)))
    return results


def _finished(o: Outcome, sink: ev.Sink) -> None:
    sink(ev.BranchFinished(o.index, o.text, o.finish_reason, o.error, o.incomplete))


def _absorb(chunk: Chunk, members: list[int], results: list[Outcome], sink: ev.Sink) -> None:
    if not 0 <= chunk.index < len(members):
        return  # a choice index we did not ask for: ignore rather than misattribute
    o = results[members[chunk.index]]
    if chunk.text:
        if o.first_token_at is None:
            o.first_token_at = time.monotonic()
        o.text += chunk.text
        sink(ev.TextDelta(o.index, chunk.text))
    if chunk.tokens:
        o.tokens.extend(chunk.tokens)
    if chunk.model:
        o.reported_model = chunk.model
    if chunk.role:
        o.role = chunk.role
    if chunk.usage:
        if chunk.usage_scope == "request" and len(members) > 1:
            # One request served several branches: its usage covers all of them.
            for i in members:
                results[i].usage = {**chunk.usage, "shared_by": len(members)}
        else:
            o.usage = chunk.usage
    if chunk.finish_reason and o.ended is None:
        o.finish_reason = chunk.finish_reason
        o.ended = time.monotonic()
        _finished(o, sink)


def _fail(
    members: list[int],
    results: list[Outcome],
    sink: ev.Sink,
    message: str,
    *,
    incomplete: bool,
    status: int | None = None,
) -> None:
    for i in members:
        o = results[i]
        if o.ended is None:
            o.ended = time.monotonic()
            o.error = message
            o.error_status = status
            o.incomplete = incomplete or bool(o.text)
            _finished(o, sink)
