"""`generate()`: N continuations of a node, written back as its children.

The document is read once for the prompt and not locked while models run (a
generation can take minutes); the children are then written under the lock on a
fresh read, so edits made meanwhile by other commands are kept. If the node was
deleted in the meantime, the texts are not thrown away: they become new roots
that say where they came from.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loom import ops, store
from loom.config import ModelConfig, get_model
from loom.document import Node
from loom.errors import BackendError, InvalidOperation
from loom.generate.backends.base import Backend
from loom.generate.engine import Branch, Events, Outcome, record, run_branches

CURSOR_CHOICES = ("stay", "first", "last")
DEFAULT_TOP_LOGPROBS = 5


@dataclass
class Generation:
    """What a generation produced: the nodes written, every outcome, and whether it was interrupted."""

    parent: str
    nodes: list[Node] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error and not o.incomplete]

    def error_summary(self) -> str | None:
        failed = [o for o in self.outcomes if o.error]
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


def plain_branches(models: Sequence[ModelConfig], n: int, params: dict[str, Any]) -> list[Branch]:
    """`n` children from each model, with the model's defaults under the given parameters."""
    if n < 1:
        raise InvalidOperation("-n must be at least 1")
    return [Branch(model=m, params={**m.params, **params}) for m in models for _ in range(n)]


def generate(
    path: str | os.PathLike[str],
    node: str | None = None,
    *,
    n: int = 1,
    models: Sequence[str] | None = None,
    params: dict[str, Any] | None = None,
    branches: Sequence[Branch] | None = None,
    events: Events | None = None,
    keep_partial: bool = False,
    concurrency: int = 8,
    cursor: str = "stay",
    backends: dict[str, Backend] | None = None,
) -> Generation:
    """Generate continuations of `node` (default: the cursor) in the document at `path`.

    `branches` (from modulation) overrides `n`/`models`/`params`. Finished branches
    are always kept; cut-off ones only with `keep_partial` (marked incomplete).
    """
    if cursor not in CURSOR_CHOICES:
        raise InvalidOperation(f"cursor must be one of {', '.join(CURSOR_CHOICES)}")
    doc = store.load(path)
    target = doc.resolve(node)
    prompt = doc.full_text(target.id)
    if branches is None:
        chosen = [get_model(name) for name in (models or [None])]  # type: ignore[list-item]
        branches = plain_branches(chosen, n, {**doc.defaults.get("params", {}), **(params or {})})
    result = Generation(parent=target.id)
    try:
        asyncio.run(_run(prompt, branches, result, events, concurrency, doc.system, backends))
    except KeyboardInterrupt:
        result.interrupted = True
    result.nodes = _write(
        path, target.id, prompt, result.outcomes, keep_partial=keep_partial or False, cursor=cursor
    )
    return result


async def _run(
    prompt: str,
    branches: Sequence[Branch],
    result: Generation,
    events: Events | None,
    concurrency: int,
    system: str | None,
    given: dict[str, Backend] | None,
) -> None:
    from loom.generate.factory import make_backend

    backends: dict[str, Backend] = dict(given or {})
    made: list[Backend] = []
    try:
        for branch in branches:
            if branch.model.name not in backends:
                backend = make_backend(branch.model)
                backends[branch.model.name] = backend
                made.append(backend)
        for branch in branches:
            caps = backends[branch.model.name].capabilities
            if caps.logprobs and "logprobs" not in branch.params:
                # Probabilities are what make a tree worth exploring: record them unless told not to.
                branch.params["logprobs"] = min(
                    DEFAULT_TOP_LOGPROBS, caps.max_top_logprobs or DEFAULT_TOP_LOGPROBS
                )
        await run_branches(
            prompt,
            branches,
            backends,
            outcomes=result.outcomes,
            events=events,
            concurrency=concurrency,
            system=system,
        )
    finally:
        for backend in made:
            with contextlib.suppress(Exception):  # closing must never hide the generation's outcome
                await backend.aclose()


def _keep(o: Outcome, keep_partial: bool) -> bool:
    if not o.text and not o.ok:
        return False
    if o.ok:
        return True
    return keep_partial or (o.incomplete and o.error is not None and o.error != "cancelled")


def _write(
    path: str | os.PathLike[str],
    parent: str,
    prompt: str,
    outcomes: list[Outcome],
    *,
    keep_partial: bool,
    cursor: str,
) -> list[Node]:
    kept = [o for o in outcomes if _keep(o, keep_partial)]
    if not kept:
        return []
    written: list[Node] = []
    with store.editing(path) as doc:
        anchor: str | None = parent if parent in doc.nodes and not doc.is_archived(parent) else None
        for o in kept:
            meta = record(o, prompt, logprob_source=_logprob_source(o))
            if anchor is None:
                meta["orphan_of"] = parent  # the node was deleted while we generated
            text = o.text if anchor is not None else prompt + o.text
            written.append(
                ops.add_child(doc, anchor, text, kind="model", meta=meta, move_cursor=False)
            )
        if written and cursor != "stay":
            ops.goto(doc, (written[0] if cursor == "first" else written[-1]).id)
    return written


def _logprob_source(o: Outcome) -> str:
    if o.backend == "embedded":
        from loom.generate.backends.embedded import LOGPROBS_KIND

        return LOGPROBS_KIND
    return "post-sampling" if o.backend in ("openai", "openai-chat") else "unknown"


def check(result: Generation) -> None:
    """Raise one BackendError if any branch failed (after the successes were saved)."""
    summary = result.error_summary()
    if summary:
        raise BackendError(summary, created=[n.id for n in result.nodes])
