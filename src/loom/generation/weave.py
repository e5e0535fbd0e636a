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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from loom import ops, store
from loom.config import ModelConfig, get_model
from loom.document import Document, Node
from loom.errors import BackendError, Interrupted, InvalidOperation
from loom.generation.backends.base import Backend, Token
from loom.generation.engine import Branch, Events, Outcome, record, run_branches
from loom.journal import transaction
from loom.workspace import loom_home

if TYPE_CHECKING:
    from loom.sampling.modulate import ModulationSpecs

CURSOR_CHOICES = ("stay", "first", "last")
DEFAULT_TOP_LOGPROBS = 5
DEFAULT_N = 4  # children per model when neither the caller nor the document says
MAX_N = 256


@dataclass
class Generation:
    """What a generation produced: the nodes written, every outcome, and whether it was interrupted."""

    parent: str
    nodes: list[Node] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)  # parameters dropped or changed, once each

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


def generate(
    path: str | os.PathLike[str],
    node: str | None = None,
    *,
    n: int | None = 1,
    models: Sequence[str] | None = None,
    params: dict[str, Any] | None = None,
    branches: Sequence[Branch] | None = None,
    events: Events | None = None,
    keep_partial: bool = False,
    concurrency: int = 8,
    cursor: str = "stay",
    backends: dict[str, Backend] | None = None,
    emulate: str = "auto",
    rng_seed: int | None = None,
    strict: bool = False,
) -> Generation:
    """Generate continuations of `node` (default: the cursor) in the document at `path`.

    Without `branches` (from `plan_generation`), they are planned by it from `n`
    (None: the document's), `models` (names) and `params`. Finished branches are
    always kept; cut-off ones only with `keep_partial` (marked incomplete).
    `emulate` forces a base-model emulation method ("auto" lets each model's
    capabilities decide; "off" sends the prompt untouched). Parameters a backend or
    model will not take are dropped with a warning, or refused before any request
    with `strict`.
    """
    if cursor not in CURSOR_CHOICES:
        raise InvalidOperation(f"cursor must be one of {', '.join(CURSOR_CHOICES)}")
    doc = store.load(path)
    target = doc.resolve(node)
    prompt = doc.full_text(target.id)
    if branches is None:
        branches = plan_generation(doc, target.id, n, models or (), params, rng_seed=rng_seed)
    result = Generation(parent=target.id)
    job = _Plan(prompt, list(branches), events, concurrency, emulate, rng_seed, strict, doc.system)
    try:
        asyncio.run(_run(job, result, backends))
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        # Whatever else went wrong, the branches that finished are written.
        result.nodes = _write(
            path, target.id, prompt, result.outcomes, keep_partial=keep_partial, cursor=cursor
        )
        if any("orphan_of" in n.meta for n in result.nodes):
            result.warnings.append(
                f"node {target.id} was deleted or edited while generating: the new nodes are roots "
                "holding the whole text they continue (meta.orphan_of)"
            )
    return result


def document_n(doc: Document) -> int:
    """How many children a generation makes when not told: the document's `defaults.n`, else 4."""
    value = doc.defaults.get("n", DEFAULT_N)
    # A hand-edited file may say "6" or 6.0; anything else is refused, not guessed at.
    whole = (
        (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, float) and value.is_integer())
        or (isinstance(value, str) and value.strip().isdigit())
    )
    if not whole or not 1 <= int(value) <= MAX_N:
        raise InvalidOperation(
            f"the document's defaults.n must be a whole number from 1 to {MAX_N}, got {value!r}"
            " (pass -n to choose)"
        )
    return int(value)


def plan_generation(
    doc: Document,
    node_id: str,
    n: int | None = None,
    models: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
    modulation: ModulationSpecs | None = None,
    *,
    presets: Sequence[str] = (),
    rng_seed: int | None = None,
) -> list[Branch]:
    """The branches generating from `node_id` runs, one per child.

    n: children per model (None: `document_n`; with a grid or a mix, the layers'
        `n` if any, else one per grid cell or mix entry).
    models: model names (none: the default model).
    flags: parameters in the top layer, values typed or as text (`{"temperature": "0.8"}`),
        `family.key` names passing through to one backend.
    modulation: how the parameters vary across the children (`ModulationSpecs.parse`).
    presets: presets layered under the document's defaults, later ones winning.
    rng_seed: seed for jitter and random presets.
    """
    from loom.emulation.capabilities import load_table
    from loom.sampling.modulate import plan
    from loom.sampling.params import LayerInputs

    if n is None and not (modulation and (modulation.grid or modulation.mix)):
        n = document_n(doc)
    inputs = LayerInputs.from_doc(doc, node_id, presets=presets, flags=flags)
    table = load_table(user_capabilities_file())
    chosen = [get_model(name) for name in models] if models else [get_model(None)]
    return plan(
        n,
        chosen,
        inputs,
        modulation,
        rng_seed=rng_seed,
        model_lookup=get_model,
        caps_lookup=lambda model: table.lookup(table_provider(model), model.model),
    )


def regenerate(
    path: str | os.PathLike[str],
    node: str,
    *,
    n: int = 1,
    overrides: Mapping[str, Any] | None = None,
    model: str | None = None,
    emulate: str = "auto",
    cursor: str = "stay",
) -> Generation:
    """Re-run the generation that made `node`: `n` new siblings of it.

    Each is sent the recorded parameters with `overrides` replacing some, the
    recorded pass-through fields, to the recorded model unless `model` names
    another, framed by the recorded emulation method unless `emulate` names one.
    """
    from loom.sampling.params import validate

    doc = store.load(path)
    target = doc.resolve(node)
    gen = target.meta.get("gen")
    if not gen:
        raise InvalidOperation(
            f"node {target.id} was not generated: nothing to re-run (use `loom gen`)"
        )
    if target.parent_id is None:
        raise InvalidOperation(f"node {target.id} is a root: it has no prompt to re-run")
    if n < 1:
        raise InvalidOperation(f"n must be at least 1, got {n}")
    params = {**gen.get("params", {}), **validate(overrides or {})}
    chosen = get_model(model or gen.get("model"))
    extra = dict(gen.get("extra") or {})
    branches = [
        Branch(
            model=chosen, params=dict(params), extra=dict(extra), provenance={"regen_of": target.id}
        )
        for _ in range(n)
    ]
    method = (gen.get("emulation") or {}).get("method")
    return generate(
        path,
        target.parent_id,
        branches=branches,
        cursor=cursor,
        emulate=method if emulate == "auto" and method else emulate,
    )


@dataclass
class _Plan:
    prompt: str
    branches: list[Branch]
    events: Events | None
    concurrency: int
    emulate: str
    rng_seed: int | None
    strict: bool = False
    system: str | None = None  # the document's system message, used in place of the framing's


async def _run(plan: _Plan, result: Generation, given: dict[str, Backend] | None) -> None:
    from loom.generation.factory import make_backend

    backends: dict[str, Backend] = dict(given or {})
    made: list[Backend] = []
    try:
        for branch in plan.branches:
            if branch.model.name not in backends:
                backend = make_backend(branch.model)
                backends[branch.model.name] = backend
                made.append(backend)
        for branch in plan.branches:
            caps = backends[branch.model.name].capabilities
            if caps.logprobs and "logprobs" not in branch.params:
                # Probabilities are what make a tree worth exploring: record them unless told not to.
                branch.params["logprobs"] = min(
                    DEFAULT_TOP_LOGPROBS, caps.max_top_logprobs or DEFAULT_TOP_LOGPROBS
                )
        _frame_all(plan, backends)
        result.warnings = _check_dropped(plan, backends)
        for model_name, cut in {
            b.model.name: b.trimmed for b in plan.branches if b.trimmed
        }.items():
            result.warnings.append(
                f"{model_name}: the branch is longer than the model's context; "
                f"only its last {len(plan.prompt) - cut} characters were sent"
            )
        await run_branches(
            plan.prompt,
            plan.branches,
            backends,
            outcomes=result.outcomes,
            events=plan.events,
            concurrency=plan.concurrency,
        )
        await _clean_and_retry(plan, result, backends)
    finally:
        for backend in made:
            with contextlib.suppress(Exception):  # closing must never hide the generation's outcome
                await backend.aclose()


# ---- emulation: frame each request by its method, clean what comes back -----------------------

_HOSTS = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "api.deepseek.com": "deepseek",
    "openrouter.ai": "openrouter",
    "api.together.xyz": "together",
    "api.mistral.ai": "mistral",
    "api.moonshot": "moonshot",
    "dashscope": "dashscope",
}


def table_provider(model: ModelConfig) -> str:
    """The capability table's name for who serves `model` (options.server overrides the guess)."""
    if model.options.get("server"):
        return str(model.options["server"])
    if model.provider in ("embedded", "anthropic"):
        return model.provider
    host = urlsplit(model.base_url).hostname or ""
    return next((name for needle, name in _HOSTS.items() if needle in host), "")


def _frame_all(plan: _Plan, backends: dict[str, Backend]) -> None:
    from loom.emulation.capabilities import load_table
    from loom.emulation.framing import choose_method, seed_phrase

    table = load_table(user_capabilities_file())
    forced = None if plan.emulate == "auto" else plan.emulate
    siblings: dict[str, int] = {}
    for branch in plan.branches:
        siblings[branch.model.name] = siblings.get(branch.model.name, 0) + 1
    seen: dict[str, int] = {}
    for branch in plan.branches:
        model = branch.model
        entry = table.lookup(table_provider(model), model.model)
        branch.methods = choose_method(backends[model.name].capabilities, model.kind, entry, forced)
        index = seen.get(model.name, 0)
        seen[model.name] = index + 1
        phrase = branch.provenance.get("seed_phrase")
        if phrase is None and entry.fixed_sampling and siblings[model.name] > 1:
            # The model ignores sampler settings: siblings differ through a hidden phrase instead.
            phrase = seed_phrase(plan.rng_seed if plan.rng_seed is not None else 0, index)
            branch.provenance = {**branch.provenance, "prompt_side_variety": True}
        _frame(branch, branch.methods[0], plan.prompt, entry, phrase, plan.system)


def _check_dropped(plan: _Plan, backends: dict[str, Backend]) -> list[str]:
    """Every parameter that will not reach a model as asked, once each; an error with `strict`."""
    notes: dict[str, None] = {}
    for branch in plan.branches:
        backend = backends[branch.model.name]
        request = branch.request
        dropped = dict(backend.wire_params(request).dropped) if request is not None else {}
        if branch.framing is not None:
            dropped.update(branch.framing.adjusted)
        for name, why in dropped.items():
            if name in branch.params:
                notes[f"{branch.model.name}: {name} not sent as asked ({why})"] = None
    if notes and plan.strict:
        raise InvalidOperation("--strict: " + "; ".join(notes))
    return list(notes)


def fit_prompt(prompt: str, context: int | None, max_tokens: int, overhead: int) -> tuple[str, int]:
    """The longest tail of `prompt` that fits a `context`-token window, and how much was cut.

    Token counts are estimated without a tokenizer, erring long: ASCII at 2.5
    characters a token, anything else a token a character. The cut lands after a
    whitespace so no word is split. Erring long only costs some context; erring short fails.
    """
    if not context:
        return prompt, 0
    budget = context - max_tokens - overhead
    if budget <= 0:
        raise InvalidOperation(
            f"max_tokens={max_tokens} leaves no room for the prompt in the model's {context}-token context"
        )
    cost, start = 0.0, len(prompt)
    while start > 0:
        cost += 0.4 if prompt[start - 1].isascii() else 1.0
        if cost > budget:
            break
        start -= 1
    if start == 0:
        return prompt, 0
    space = next(
        (i for i in range(start, min(len(prompt), start + 64)) if prompt[i].isspace()), None
    )
    if space is not None:
        start = space + 1
    return prompt[start:], start


_FRAMING_OVERHEAD = {"completion": 8, "off": 8}  # tokens; chat framings and examples need more
_CHAT_OVERHEAD = 512


def _frame(
    branch: Branch, method: str, prompt: str, entry: Any, phrase: str | None, system: str | None
) -> None:
    from loom.emulation.framing import build_request

    max_tokens = int(branch.params.get("max_tokens") or 256)
    overhead = _FRAMING_OVERHEAD.get(method, _CHAT_OVERHEAD)
    prompt, branch.trimmed = fit_prompt(prompt, branch.model.context, max_tokens, overhead)
    branch.prompt = prompt if branch.trimmed else None
    request, framing = build_request(
        method,
        prompt,
        branch.model.model,
        1,
        branch.params,
        system_message=system,
        seed_phrase=phrase,
        caps=entry,
    )
    reserved = RESERVED_FIELDS & branch.extra.keys()
    if reserved:
        # A pass-through field must not swap the model or multiply the cost behind the record's back.
        raise InvalidOperation(f"pass-through parameters cannot set {', '.join(sorted(reserved))}")
    branch.request, branch.framing = request, framing


def clean_outcome(o: Outcome, prompt: str) -> bool:
    """Clean an emulated output in place; False when cleanup rejects it (preamble, refusal…)."""
    from loom.emulation.cleanup import clean

    framing = o.branch.framing
    if framing is None or (o.error and not o.text):
        return True
    cleaned = clean(prompt, o.text, framing.method, o.finish_reason, prepared=framing.prepared)
    if cleaned.text != o.text:
        o.tokens = realign_tokens(o.tokens, o.text, cleaned.text)
        o.raw_text, o.text = o.text, cleaned.text
    o.cleanup = cleaned.to_record()
    return cleaned.ok or bool(o.error)


RESERVED_FIELDS = frozenset(
    {"model", "prompt", "messages", "n", "stream", "stream_options", "system"}
)
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


async def _clean_and_retry(plan: _Plan, result: Generation, backends: dict[str, Backend]) -> None:
    """Clean every output, then try once more where the output was rejected or the request refused."""
    retry: list[tuple[int, tuple[list[str], dict[str, Any], str]]] = []
    for o in result.outcomes:
        bad = not clean_outcome(o, o.branch.prompt or plan.prompt) or (
            o.error is not None and not o.text
        )
        step = _fallback(o) if bad else None
        if step is not None:
            retry.append((o.index, step))
    if not retry:
        return
    from loom.emulation.capabilities import load_table

    table = load_table(user_capabilities_file())
    again: list[Branch] = []
    for i, (methods, params, _why) in retry:
        old = result.outcomes[i].branch
        branch = Branch(
            model=old.model,
            params=params,
            extra=dict(old.extra),
            provenance=dict(old.provenance),
            methods=methods,
        )
        entry = table.lookup(table_provider(branch.model), branch.model.model)
        phrase = old.framing.seed_phrase if old.framing else None
        _frame(branch, methods[0], plan.prompt, entry, phrase, plan.system)
        again.append(branch)
    redo: list[Outcome] = []
    await run_branches(
        plan.prompt, again, backends, outcomes=redo, events=None, concurrency=plan.concurrency
    )
    for (i, (_methods, _params, why)), fresh in zip(retry, redo, strict=True):
        first = result.outcomes[i]
        clean_outcome(fresh, fresh.branch.prompt or plan.prompt)
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
        result.outcomes[i] = fresh


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


def user_capabilities_file() -> Path:
    """The per-user capability overrides (written by `loom probe`, editable by hand)."""
    return loom_home() / "capabilities.toml"


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
    with (
        store.editing(path) as doc,
        transaction(doc, "gen", f"generate {len(kept)} child(ren) of {parent}"),
    ):
        alive = parent in doc.nodes and not doc.is_archived(parent)
        # Deleted, or its text edited in place meanwhile: the children would not continue it.
        anchor: str | None = parent if alive and doc.full_text(parent) == prompt else None
        for o in kept:
            meta = record(o, prompt, logprob_source=_logprob_source(o))
            if anchor is None:
                meta["orphan_of"] = parent
            text = o.text if anchor is not None else prompt + o.text
            written.append(
                ops.add_child(doc, anchor, text, kind="model", meta=meta, move_cursor=False)
            )
        if written and cursor != "stay":
            ops.goto(doc, (written[0] if cursor == "first" else written[-1]).id)
    return written


def _logprob_source(o: Outcome) -> str:
    if o.backend == "embedded":
        from loom.generation.backends.embedded import LOGPROBS_KIND

        return LOGPROBS_KIND
    return "post-sampling" if o.backend in ("openai", "openai-chat") else "unknown"


def check(result: Generation) -> None:
    """Raise one error if the generation was interrupted or any branch failed.

    Called after the finished branches were saved: `details["created"]` holds them
    as node objects, so a caller that only reads the error still learns what was made.
    """
    created = [n.to_dict() for n in result.nodes]
    if result.interrupted:
        raise Interrupted(f"interrupted: {len(created)} branch(es) kept", created=created)
    summary = result.error_summary()
    if summary:
        raise BackendError(summary, created=created)
