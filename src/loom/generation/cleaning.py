"""Cleaning emulated outputs, and one more try where cleanup or the provider said no.

A chat model made to continue text answers in its own way: cleanup (loom.emulation)
turns its reply into text that continues the document and gives a verdict. A
rejected output (a preamble, a refusal, only an echo) is tried once more with the next
method of the model's chain; a request the provider refused (a prefill, a sampler
parameter) once more without what it refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from loom.generation import events as ev
from loom.generation.backends import BackendPool, table_provider
from loom.generation.backends.base import Token
from loom.generation.context import Context
from loom.generation.engine import Branch, Outcome, run_branches

if TYPE_CHECKING:
    from loom.emulation.capabilities import CapabilityTable


def clean_outcome(o: Outcome) -> bool:
    """Clean an emulated output in place; False when cleanup rejects it (preamble, refusal…).

    Runs once per outcome: `o.cleanup` records that it ran.
    """
    from loom.emulation.cleanup import clean

    if o.cleanup is not None:  # cleaned already (finished before a cancel, or a retry)
        return o.cleanup.get("verdict") == "ok" or bool(o.error)
    framing = o.branch.framing
    if framing is None or (o.error and not o.text):
        return True
    assert o.branch.context is not None
    cleaned = clean(
        o.branch.context,
        o.text,
        framing.method,
        o.finish_reason,
        prepared=framing.prepared,
        frame=framing.frame,
    )
    if cleaned.text != o.text:
        o.tokens = realign_tokens(o.tokens, o.text, cleaned.text)
        o.raw_text, o.text = o.text, cleaned.text
    o.cleanup = cleaned.to_record()
    return cleaned.ok or bool(o.error)


def drop_if_nothing_left(o: Outcome) -> None:
    """A rejected output that cleanup cut to nothing is a failed branch, never an empty child."""
    verdict = (o.cleanup or {}).get("verdict", "ok")
    if verdict != "ok" and not o.text.strip() and o.error is None:
        o.error = f"the output was rejected ({verdict}) and nothing usable was left"


SAMPLER_NAMES = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "seed",
)


def _fallback(o: Outcome) -> tuple[list[str], dict[str, Any], str] | None:
    """How to try again after a rejected output or a refused request; None when nothing will help.

    Returns the method chain to continue with, the parameters to send, and why.
    """
    methods, params = o.branch.methods, dict(o.branch.params)
    if o.error and not o.text:
        if o.error_status != 400:
            return None
        message = o.error.lower()
        if "prefill" in message or "final assistant" in message:
            from loom.emulation.framing import METHODS

            rest = [m for m in methods[1:] if not METHODS[m].open_turn]
            return (rest, params, "prefill rejected") if rest else None
        refused = [name for name in SAMPLER_NAMES if name in message and name in params]
        if refused:
            # Keep the first parameter of a refused pair ("temperature and top_p cannot both…").
            drop = refused[1:] if len(refused) > 1 and "both" in message else refused
            return (
                methods,
                {k: v for k, v in params.items() if k not in drop},
                f"{', '.join(drop)} rejected",
            )
        return None
    if len(methods) > 1:
        return methods[1:], params, f"output rejected: {(o.cleanup or {}).get('verdict')}"
    return None


async def clean_and_retry(
    outcomes: list[Outcome],
    context: Context,
    pool: BackendPool,
    table: CapabilityTable,
    *,
    concurrency: Mapping[str, int],
    events: ev.Sink = ev.ignore,
) -> None:
    """Clean every output, then try once more where the output was rejected or the request
    refused, with the next method or without the refused parameter. `outcomes` is updated
    in place: a retry's outcome replaces the first one unless it failed outright.
    `context` is what the generation continues (each retry fits it to its own framing).
    A retried child is announced by a `Retrying` event; its new stream then reports under
    the child's own index, starting with a fresh `BranchStarted`."""
    retry: list[tuple[int, tuple[list[str], dict[str, Any], str]]] = []
    for o in outcomes:
        bad = not clean_outcome(o) or (o.error is not None and not o.text)
        step = _fallback(o) if bad else None
        if step is not None:
            retry.append((o.index, step))
    if not retry:
        return
    from loom.generation.plan import frame_branch

    again: list[Branch] = []
    for i, (methods, params, _why) in retry:
        old = outcomes[i].branch
        branch = Branch(
            model=old.model,
            params=params,
            extra=dict(old.extra),
            provenance=dict(old.provenance),
            methods=methods,
            max_n=old.max_n,
        )
        entry = table.lookup(table_provider(branch.model), branch.model.model)
        phrase = old.framing.seed_phrase if old.framing else None
        frame_branch(branch, methods[0], context, entry, phrase)
        again.append(branch)
    retried = [i for i, _step in retry]
    for i, (_methods, _params, why) in retry:
        events(ev.Retrying((i,), why, 0.0, 1))
    redo: list[Outcome] = []
    await run_branches(
        again, pool, outcomes=redo, events=ev.reindexed(events, retried), concurrency=concurrency
    )
    for (i, (_methods, _params, why)), fresh in zip(retry, redo, strict=True):
        first = outcomes[i]
        clean_outcome(fresh)
        fresh.index = i
        fresh.retried_from = {
            "method": first.branch.framing.method if first.branch.framing else None,
            "reason": why,
            "verdict": (first.cleanup or {}).get("verdict"),
            "raw": first.raw_text or first.text or None,
            "error": first.error,
        }
        fresh.retried_from = {k: v for k, v in fresh.retried_from.items() if v is not None}
        if fresh.error and not fresh.text and first.text:
            continue  # the retry failed outright: the first, flagged output is still better than nothing
        outcomes[i] = fresh


def realign_tokens(tokens: list[Token], raw: str, cleaned: str) -> list[Token]:
    """Keep token probabilities aligned when cleanup only cut text from the front or the back."""
    if not tokens:
        return tokens
    start = raw.find(cleaned) if cleaned else -1
    if start < 0:
        return []  # the text was rewritten (e.g. a space inserted): offsets would lie
    end = start + len(cleaned)
    out: list[Token] = []
    pos = 0
    for tok in tokens:
        lo, hi = pos, pos + len(tok.text)
        pos = hi
        keep_lo, keep_hi = max(lo, start), min(hi, end)
        if keep_hi <= keep_lo:
            continue
        text = tok.text[keep_lo - lo : keep_hi - lo]
        out.append(Token(text, tok.logprob, tok.top if text == tok.text else []))
    return out
