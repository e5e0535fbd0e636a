"""`agenerate`: the one generation core every front end stands on, and `generate`, its sync twin.

One call does the whole flow: read the document once, build the `Context` the node
continues, plan the children (parameter layers, modulation), frame each for its model
(emulation), run them concurrently under one deadline while events stream out, clean
and retry rejected outputs, then write the children in one undoable step under the
writer lock, on a fresh read so edits made meanwhile by other commands are kept. The
document is not locked while models run (that can take minutes). If the node was
deleted or edited meanwhile, the texts become roots that say where they came from; if
the write itself fails, they go to a recovery file (`loom recover`).

Cancelling the task (Ctrl-C, SIGTERM, a UI's Escape) keeps every finished branch: they
are written before the cancellation propagates.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loom import ops, store
from loom.document import Document, Node
from loom.errors import BackendError, Interrupted, LoomError, StorageError, UsageError
from loom.generation import events as ev
from loom.generation.backends import BackendPool, provider
from loom.generation.backends.base import Backend
from loom.generation.cleaning import clean_and_retry, clean_outcome, drop_if_nothing_left
from loom.generation.context import Context, context_for
from loom.generation.engine import Outcome, run_branches
from loom.generation.plan import (
    capability_table,
    check_dropped,
    concurrency_for,
    deadline_for,
    frame,
    plan_branches,
    regeneration_branches,
)
from loom.generation.record import record
from loom.generation.request import DEFAULT_TIMEOUT, GenerationRequest
from loom.journal import transaction

Target = Document | str | os.PathLike[str] | None
SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


@dataclass
class Generation:
    """What a generation produced: the nodes written, every outcome, and what went wrong."""

    parent: str | None = None
    nodes: list[Node] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: bool = False
    signal: int | None = None  # what interrupted a synchronous run (SIGINT, SIGTERM, SIGHUP)
    warnings: list[str] = field(default_factory=list)  # dropped parameters, trimming… once each
    cursor: str | None = None  # the document's cursor after the write
    deadline: float | None = None  # seconds the whole call was allowed
    recovery: Path | None = None  # where the texts went when the write failed
    write_error: LoomError | None = None
    context: Context | None = None

    @property
    def kept(self) -> list[Outcome]:
        """The outcomes that became (or, without a document, would become) nodes."""
        return [o for o in self.outcomes if o.kept]

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error and not o.incomplete]

    def error_summary(self) -> str | None:
        failed = [o for o in self.outcomes if o.error and o.error != "cancelled"]
        if not failed:
            return None
        cut = [o for o in failed if o.incomplete and o.text]
        lost = [o for o in failed if not (o.incomplete and o.text)]
        total = len(self.outcomes)
        parts: list[str] = []
        if lost:
            parts.append(
                "generation failed"
                if len(lost) == total
                else f"{len(lost)} of {total} branch(es) failed"
            )
        if cut:
            parts.append(f"{len(cut)} of {total} branch(es) cut off (text kept, marked incomplete)")
        reasons = list(dict.fromkeys(o.error for o in failed if o.error))
        return f"{'; '.join(parts)}: {'; '.join(reasons[:3])}"

    def check(self) -> None:
        """Raise one error if the write failed, the run was interrupted, or a branch failed.

        The finished branches were saved first: `details["nodes"]` holds them as the JSON
        contract's node objects (brief, as in every list: `loom.payloads`), so a caller
        that only reads the error still learns what was made.
        """
        from loom import payloads

        created = [payloads.node(n, payloads.BRIEF) for n in self.nodes]
        if self.write_error is not None:
            raise self.write_error
        if self.interrupted:
            by = SIGNAL_NAMES.get(signal.Signals(self.signal), "") if self.signal else ""
            error = Interrupted(
                f"interrupted{f' by {by}' if by else ''}: {len(created)} branch(es) kept",
                nodes=created,
            )
            if self.signal and self.signal != signal.SIGINT:
                error.exit_code = 128 + self.signal
            raise error
        summary = self.error_summary()
        if summary:
            raise BackendError(summary, nodes=created)


@dataclass
class _Prepared:
    """What planning produced from the document, so the document itself can be let go."""

    node_id: str | None
    context: Context
    anchor_text: str | None  # the node's full text, to check it is unchanged at write time
    document_id: str
    emulate: str


async def agenerate(
    target: Target,
    request: GenerationRequest | None = None,
    events: ev.Sink | None = None,
    *,
    backends: BackendPool | Mapping[str, Backend] | None = None,
    into: Generation | None = None,
) -> Generation:
    """Generate the children `request` asks for and write them into `target`.

    target: a document file (read once, written under its lock), a `Document` in memory
        (children added to it; saving it is the caller's), or None with `request.context`
        (nothing is written: the texts are in `result.outcomes`).
    events: a callable receiving `loom.generation.events` values as the generation runs.
    backends: a `BackendPool` to reuse across generations (the caller closes it), or
        backends by model name; by default they are made and closed here.
    into: the `Generation` to fill in place, so a caller painting the streams can read
        each outcome's framing (the emulation method) while it runs.

    Returns the `Generation`; `result.check()` raises if anything failed. Cancelling the
    awaiting task writes the finished branches first, then raises CancelledError.
    """
    result = Generation() if into is None else into
    await _run(target, request or GenerationRequest(), events or ev.ignore, result, backends)
    return result


def generate(
    target: Target,
    request: GenerationRequest | None = None,
    events: ev.Sink | None = None,
    *,
    backends: BackendPool | Mapping[str, Backend] | None = None,
) -> Generation:
    """`agenerate` for synchronous callers: runs its own event loop.

    In the main thread, Ctrl-C, SIGTERM and SIGHUP stop the generation the same way: the
    finished branches are written and the result says `interrupted` (and which signal).
    """
    refuse_running_loop("loom.generate", "await loom.agenerate(...)")
    result = Generation()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop(signum: int) -> None:
            result.signal = result.signal or signum
            task.cancel()

        def on_signal(signum: int, _frame: object) -> None:
            loop.call_soon_threadsafe(stop, signum)

        # SIGINT too: asyncio's own handler raises KeyboardInterrupt on a second Ctrl-C,
        # abandoning the write of the finished branches half-reported. The handlers are put
        # back exactly as they were (asyncio's remove_signal_handler would reset them).
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                before = signal.getsignal(signum)
                signal.signal(signum, on_signal)
                previous[signum] = signal.SIG_DFL if before is None else before
        try:
            await _run(
                target, request or GenerationRequest(), events or ev.ignore, result, backends
            )
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    with asyncio.Runner() as runner:
        try:
            runner.run(main())
        except (KeyboardInterrupt, asyncio.CancelledError):
            result.interrupted = True
            result.signal = result.signal or signal.SIGINT
    return result


def refuse_running_loop(name: str, instead: str) -> None:
    """A synchronous entry point runs its own event loop: called inside one, say what to use."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise UsageError(f"{name} cannot run inside an event loop: use `{instead}`")


# ---- the flow -----------------------------------------------------------------------------


async def _run(
    target: Target,
    request: GenerationRequest,
    sink: ev.Sink,
    result: Generation,
    backends: BackendPool | Mapping[str, Backend] | None,
) -> None:
    request = request.checked()
    path: Path | None = None
    doc: Document | None
    if target is None or isinstance(target, Document):
        doc = target
    else:
        path = Path(target)
        doc = store.load(path)
    table = capability_table()
    prepared, branches = _prepare(doc, request, table)
    result.parent, result.context = prepared.node_id, prepared.context
    if path is not None:
        doc = None  # the write reads the file afresh under the lock: hold one copy at a time
    pool = backends if isinstance(backends, BackendPool) else BackendPool(backends)
    cancelled = False
    try:
        try:
            cancelled = await _generate(result, prepared, branches, pool, table, request, sink)
        finally:
            # Whatever stopped the run, the branches that finished are written.
            if result.outcomes:
                cancelled |= await _keep_and_write(result, prepared, path, doc, pool, request)
            sink(ev.Written(tuple(n.id for n in result.nodes), result.interrupted))
    finally:
        if not isinstance(backends, BackendPool):
            closing = asyncio.ensure_future(pool.aclose())
            cancelled |= await _finish(closing)
    if cancelled:
        raise asyncio.CancelledError


async def _generate(
    result: Generation,
    prepared: _Prepared,
    branches: list[Any],
    pool: BackendPool,
    table: Any,
    request: GenerationRequest,
    sink: ev.Sink,
) -> bool:
    """Frame, run under the deadline, clean and retry; True if cancelled (outcomes settled)."""
    try:
        warnings = frame(
            branches,
            prepared.context,
            pool,
            table,
            emulate=prepared.emulate,
            rng_seed=request.rng_seed,
        )
        notes = _context_notes(prepared.context, request.mode)
        result.warnings = list(
            dict.fromkeys(
                [*notes, *warnings, *check_dropped(branches, pool, strict=request.strict)]
            )
        )
        sink(ev.Planned(tuple(b.model.name for b in branches)))
        for warning in result.warnings:
            sink(ev.Note(warning))
        concurrency = concurrency_for(branches, request.concurrency)
        result.deadline = deadline_for(branches, request.timeout, DEFAULT_TIMEOUT)
        try:
            async with asyncio.timeout(result.deadline):
                await run_branches(
                    branches, pool, outcomes=result.outcomes, events=sink, concurrency=concurrency
                )
                await clean_and_retry(
                    result.outcomes,
                    prepared.context,
                    pool,
                    table,
                    concurrency=concurrency,
                    events=sink,
                )
        except TimeoutError:
            _settle(result, _deadline_message(result.deadline, request.timeout))
    except asyncio.CancelledError:
        result.interrupted = True
        _settle(result, "cancelled")
        return True
    return False


def _prepare(
    doc: Document | None, request: GenerationRequest, table: Any
) -> tuple[_Prepared, list[Any]]:
    """Resolve the node, build its context and plan its children (no backend is touched)."""
    emulate = request.emulate
    if doc is None:
        if request.context is None:
            raise UsageError("nothing to continue: give a document, or a context to send")
        return _Prepared(None, request.context, None, "", emulate), plan_branches(
            None, None, request, table
        )
    if request.regenerate is not None:
        node = doc.resolve(request.regenerate)
        branches, method, mode = regeneration_branches(doc, node.id, request)
        if emulate == "auto" and method:
            emulate = method
        parent = node.parent_id
        assert parent is not None  # regeneration_branches refuses roots
        return (
            _Prepared(
                parent, context_for(doc, parent, mode), doc.full_text(parent), doc.id, emulate
            ),
            branches,
        )
    node = doc.resolve(request.node)
    if request.context is not None:
        context, anchor = request.context, None
    else:
        context, anchor = context_for(doc, node.id, request.mode), doc.full_text(node.id)
    return _Prepared(node.id, context, anchor, doc.id, emulate), plan_branches(
        doc, node.id, request, table
    )


def _context_notes(context: Context, mode: str) -> list[str]:
    """What a person should know about how their branch was sent."""
    if mode == "chat" and context.preamble:
        return [
            f"the branch's first {context.preamble} node(s) have no chat role: their text was "
            "sent as the start of the first user message"
        ]
    return []


def _deadline_message(deadline: float | None, asked: float | None) -> str:
    how = "--timeout" if asked is not None else "--timeout, or the model's timeout option"
    return f"no answer within the {deadline:g} s deadline for the whole call (change it with {how})"


def _settle(result: Generation, message: str) -> None:
    """Branches stopped by a deadline or a cancel: say why, keep what they streamed."""
    import time

    for o in result.outcomes:
        if o.ended is None or o.error == "cancelled":
            o.ended = o.ended or time.monotonic()
            o.error = message
            o.incomplete = bool(o.text)


async def _finish(work: Any) -> bool:
    """Run `work` to its end even if this task is cancelled meanwhile; True if it was.

    The work's own outcome (a result or an exception) stays in the returned-to caller's
    hands: read it from the task.
    """
    task = work if isinstance(work, asyncio.Future) else asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


async def _keep_and_write(
    result: Generation,
    prepared: _Prepared,
    path: Path | None,
    doc: Document | None,
    pool: BackendPool,
    request: GenerationRequest,
) -> bool:
    """Clean what finished, decide what is kept, write it; True if cancelled meanwhile."""
    for o in result.outcomes:
        if o.done and o.text:
            clean_outcome(o)  # already cleaned after a full run; needed after a cancel
        drop_if_nothing_left(o)
        o.kept = _keep(o, request.keep_partial)
    kept = result.kept
    if not kept or (path is None and doc is None):
        return False  # nothing to write into: the texts are in the outcomes
    metas = [
        record(
            o,
            prepared.context,
            logprob_source=provider(o.branch.model.provider).logprobs,
            backend=pool.get(o.branch.model),
        )
        for o in kept
    ]
    if prepared.context.is_chat:
        for meta in metas:
            meta["gen"]["mode"] = request.mode if request.mode != "text" else "chat"
    texts = [o.text for o in kept]
    kind = "assistant" if prepared.context.is_chat else "model"
    if path is None:
        if doc is not None:
            result.nodes, result.cursor = _write(doc, prepared, texts, metas, kind, request.cursor)
        return False
    write = asyncio.to_thread(_write_file, path, prepared, texts, metas, kind, request.cursor)
    task = asyncio.ensure_future(write)
    cancelled = await _finish(task)
    try:
        result.nodes, result.cursor = task.result()
    except LoomError as exc:
        _recover(result, exc, path, prepared, texts, metas, kind)
    return cancelled


def _keep(o: Outcome, keep_partial: bool) -> bool:
    if not o.text.strip() and not o.ok:
        return False
    if o.ok:
        return True
    # Cut off by the provider or by the deadline: paid-for text, kept and marked incomplete.
    return keep_partial or (o.incomplete and o.error is not None and o.error != "cancelled")


def _write_file(
    path: Path,
    prepared: _Prepared,
    texts: list[str],
    metas: list[dict[str, Any]],
    kind: str,
    cursor: str,
) -> tuple[list[Node], str | None]:
    with store.editing(path) as doc:
        return _write(doc, prepared, texts, metas, kind, cursor)


def _write(
    doc: Document,
    prepared: _Prepared,
    texts: list[str],
    metas: list[dict[str, Any]],
    kind: str,
    cursor: str,
) -> tuple[list[Node], str | None]:
    """Add the children in one undoable step; orphans when the node was deleted or changed."""
    parent = prepared.node_id
    alive = parent is not None and parent in doc.nodes and not doc.is_archived(parent)
    anchor = parent if alive else None
    if anchor is not None and prepared.anchor_text not in (None, doc.full_text(anchor)):
        anchor = None  # edited in place meanwhile: the children would not continue it
    written: list[Node] = []
    with transaction(doc, "gen", f"generate {len(texts)} child(ren) of {parent}"):
        for text, meta in zip(texts, metas, strict=True):
            if anchor is None and parent is not None:
                meta["orphan_of"] = parent
                text = (prepared.anchor_text or "") + text
            written.append(
                ops.add_child(doc, anchor, text, kind=kind, meta=meta, move_cursor=False)
            )
        if written and cursor != "stay":
            ops.goto(doc, (written[0] if cursor == "first" else written[-1]).id)
    return written, doc.cursor_id


def _recover(
    result: Generation,
    error: LoomError,
    path: Path,
    prepared: _Prepared,
    texts: list[str],
    metas: list[dict[str, Any]],
    kind: str,
) -> None:
    """The write failed: keep the texts in a recovery file and say how to bring them back."""
    from loom.generation import recovery

    nodes = [{"text": t, "kind": kind, "meta": m} for t, m in zip(texts, metas, strict=True)]
    try:
        saved = recovery.save(
            store.real(path),
            prepared.document_id,
            prepared.node_id,
            prepared.anchor_text or "",
            nodes,
        )
    except LoomError as second:
        # Nowhere to put them: the texts go into the error itself, so a terminal still shows them.
        import json

        result.write_error = StorageError(
            f"{error.message}; the generated texts could not be saved anywhere either "
            f"({second.message}); here they are: {json.dumps(texts, ensure_ascii=False)}",
            texts=texts,
        )
        return
    result.recovery = saved
    result.write_error = type(error)(
        f"{error.message}; the {len(texts)} generated text(s) are kept in {saved} "
        f"(add them with `loom recover -f {path}`)",
        recovery=str(saved),
    )
    result.write_error.exit_code = error.exit_code
