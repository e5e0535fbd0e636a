"""Run N branches: plan requests, run them concurrently, stream, and record what made each child.

The engine knows nothing of terminals or files. It takes the prompt and a list
of planned children (`Branch`), groups children with identical requests into one
call with `n` where the backend allows it, runs the calls concurrently under a
cap, reports progress through an `Events` callback object, and returns one
`Outcome` per child. `record()` turns an outcome into the node metadata that
docs/schema.md describes. Outcomes are filled in place as chunks arrive, so a
caller interrupted half-way still holds every finished branch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from loom.config import ModelConfig
from loom.errors import BackendError, LoomError, StreamCut
from loom.generation import prompt_digest
from loom.generation.backends.base import Backend, Chunk, GenRequest, Token
from loom.redact import safe_url

LOGPROB_DIGITS = 4


@dataclass
class Branch:
    """One child to produce: which model, with which canonical parameters, and why (modulation)."""

    model: ModelConfig
    params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)  # modulator, index, preset… (recorded)
    # Set by emulation (loom.generation.weave): the framed request, its record, and the
    # methods still to try if cleanup rejects the output.
    request: GenRequest | None = None
    framing: Any = None  # an emulate.Framing
    methods: list[str] = field(default_factory=list)
    # The tail of the prompt actually continued, when the whole did not fit the model's
    # context; `trimmed` counts the characters left out at the front.
    prompt: str | None = None
    trimmed: int = 0

    def group_key(self) -> tuple[Any, ...]:
        import orjson

        request_key = None
        if self.request is not None:
            request_key = orjson.dumps(
                {"p": self.request.prompt, "m": self.request.messages, "x": self.request.extra},
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

    @property
    def done(self) -> bool:
        return self.ended is not None

    @property
    def ok(self) -> bool:
        return self.done and self.error is None and not self.incomplete


class Events:
    """Progress callbacks; override what you need. Called on the event loop."""

    def started(self, outcome: Outcome) -> None:
        pass

    def text(self, outcome: Outcome, delta: str) -> None:
        pass

    def finished(self, outcome: Outcome) -> None:
        pass


BackendFactory = Callable[[ModelConfig], Backend]


def plan_requests(
    branches: Sequence[Branch], backends: dict[str, Backend], max_n: int = 16
) -> list[list[int]]:
    """Group children into requests: identical requests share one call with `n` when allowed."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    singles: list[list[int]] = []
    for i, branch in enumerate(branches):
        backend = backends[branch.model.name]
        if backend.capabilities.n:
            groups.setdefault(branch.group_key(), []).append(i)
        else:
            singles.append([i])
    planned: list[list[int]] = []
    for members in groups.values():
        planned.extend(members[k : k + max_n] for k in range(0, len(members), max_n))
    return planned + singles


def build_request(prompt: str, branch: Branch, n: int, *, system: str | None = None) -> GenRequest:
    """The request for a branch: emulation's framing if it set one, else a raw prompt or plain chat."""
    if branch.request is not None:
        req = branch.request  # framed by emulation: what the model rejects is already left out
        return GenRequest(
            model=req.model,
            prompt=req.prompt,
            messages=req.messages,
            n=n,
            params=dict(req.params),
            extra={**req.extra, **branch.extra},
        )
    model = branch.model
    if model.kind == "base":
        return GenRequest(
            model=model.model,
            prompt=prompt,
            n=n,
            params=dict(branch.params),
            extra=dict(branch.extra),
        )
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    return GenRequest(
        model=model.model,
        messages=messages,
        n=n,
        params=dict(branch.params),
        extra=dict(branch.extra),
    )


async def run_branches(
    prompt: str,
    branches: Sequence[Branch],
    backends: dict[str, Backend],
    *,
    outcomes: list[Outcome] | None = None,
    events: Events | None = None,
    concurrency: int = 8,
    system: str | None = None,
    max_n: int = 16,
) -> list[Outcome]:
    """Produce every branch. `outcomes`, if given, is filled in place (for interrupted callers)."""
    events = events or Events()
    results = outcomes if outcomes is not None else []
    results[:] = [Outcome(i, b) for i, b in enumerate(branches)]
    gate = asyncio.Semaphore(max(1, concurrency))

    async def run_one(members: list[int]) -> None:
        first = branches[members[0]]
        backend = backends[first.model.name]
        request = build_request(prompt, first, len(members), system=system)
        wire = backend.wire_params(request)
        async with gate:
            start = time.monotonic()
            for k, i in enumerate(members):
                o = results[i]
                # What was posted: the mapped parameters plus backend pass-through fields.
                o.started, o.dropped = start, dict(wire.dropped)
                o.sent = {**wire.body, **request.extra}
                o.backend, o.base_url = backend.name, backend.base_url
                o.request_n, o.request_index = len(members), k
                events.started(o)
            try:
                # aclosing: an early exit closes the HTTP response now, not at loop shutdown.
                async with contextlib.aclosing(backend.stream(request)) as chunks:
                    async for chunk in chunks:
                        _absorb(chunk, members, results, events)
                for i in members:
                    o = results[i]
                    if o.ended is None:  # a branch the backend never closed
                        o.ended, o.incomplete = time.monotonic(), True
                        o.error = (
                            o.error
                            or "the provider ended the response without finishing this branch"
                        )
                        events.finished(o)
            except StreamCut as exc:
                _fail(members, results, events, exc.message, incomplete=True)
            except LoomError as exc:
                _fail(
                    members,
                    results,
                    events,
                    exc.message,
                    incomplete=False,
                    status=getattr(exc, "status", None),
                )
            except asyncio.CancelledError:
                _fail(members, results, events, "cancelled", incomplete=True)
                raise
            except Exception as exc:  # a backend bug must not cost the other branches their text
                _fail(
                    members,
                    results,
                    events,
                    f"internal error in {backend.name}: {type(exc).__name__}: {exc}",
                    incomplete=False,
                )

    await asyncio.gather(*(run_one(m) for m in plan_requests(branches, backends, max_n)))
    return results


def _absorb(chunk: Chunk, members: list[int], results: list[Outcome], events: Events) -> None:
    if not 0 <= chunk.index < len(members):
        return  # a choice index we did not ask for: ignore rather than misattribute
    o = results[members[chunk.index]]
    if chunk.text:
        if o.first_token_at is None:
            o.first_token_at = time.monotonic()
        o.text += chunk.text
        events.text(o, chunk.text)
    if chunk.tokens:
        o.tokens.extend(chunk.tokens)
    if chunk.model:
        o.reported_model = chunk.model
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
        events.finished(o)


def _fail(
    members: list[int],
    results: list[Outcome],
    events: Events,
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
            events.finished(o)


def compact_logprobs(tokens: list[Token], source: str) -> dict[str, Any] | None:
    if not tokens:
        return None
    r = LOGPROB_DIGITS
    out: dict[str, Any] = {
        "source": source,
        "tokens": [t.text for t in tokens],
        "lp": [round(t.logprob, r) for t in tokens],
    }
    if any(t.top for t in tokens):
        out["top"] = [[[alt, round(lp, r)] for alt, lp in t.top] for t in tokens]
    return out


def record(outcome: Outcome, prompt: str, *, logprob_source: str = "post") -> dict[str, Any]:
    """The node metadata for one outcome (see docs/schema.md, meta.gen and meta.logprobs)."""
    o, model = outcome, outcome.branch.model
    gen: dict[str, Any] = {
        "backend": o.backend or model.provider,
        "base_url": safe_url(o.base_url or model.base_url)
        if (o.base_url or model.base_url)
        else "",
        "model": model.name,
        "model_id": model.model,
        "reported_model": o.reported_model,
        "params": o.branch.params,
        "extra": o.branch.extra or None,
        "sent": o.sent,
        "prompt": {
            **prompt_digest(o.branch.prompt or prompt),
            **({"trimmed": o.branch.trimmed} if o.branch.trimmed else {}),
        },
        "finish_reason": o.finish_reason,
        "usage": o.usage,
        "latency_ms": None if o.ended is None else round((o.ended - o.started) * 1000),
        "ttft_ms": None
        if o.first_token_at is None
        else round((o.first_token_at - o.started) * 1000),
        "request": {"n": o.request_n, "index": o.request_index},
    }
    if o.dropped:
        gen["dropped"] = o.dropped
    if o.branch.provenance:
        gen["modulation"] = o.branch.provenance
    if o.branch.framing is not None:
        emulation: dict[str, Any] = dict(o.branch.framing.to_record())
        if o.cleanup:
            emulation["cleanup"] = o.cleanup
        if o.retried_from:
            emulation["retried_from"] = o.retried_from
        gen["emulation"] = emulation
    if o.error:
        gen["error"] = o.error
    meta: dict[str, Any] = {"gen": {k: v for k, v in gen.items() if v is not None}}
    probs = compact_logprobs(o.tokens, logprob_source)
    if probs and "".join(probs["tokens"]) == o.text:
        meta["logprobs"] = probs  # only when aligned with the text, so offsets stay meaningful
    if o.incomplete:
        meta["incomplete"] = True
    return meta


def raise_if_all_failed(outcomes: Sequence[Outcome]) -> None:
    """One clear error when nothing came back at all."""
    if outcomes and all(o.error and not o.text for o in outcomes):
        messages = list(dict.fromkeys(o.error for o in outcomes if o.error))
        raise BackendError(messages[0] if len(messages) == 1 else "; ".join(messages[:3]))
