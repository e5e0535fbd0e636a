"""Planning a generation: one `Branch` per child, then each framed for its model.

`plan_branches` turns a request into children: the parameter layers and modulation
(`loom.sampling`) for a fresh generation, or a node's recorded generation for a
regeneration. `frame` then gives every branch what its backend will be sent: the
emulation method chain (`loom.emulation`), the context trimmed to the model's window,
and the framed request. Both are pure apart from reading model configuration and the
capability table (parsed once per process and file version).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from loom.config import ModelConfig, get_model
from loom.document import Document
from loom.errors import DocumentError, InvalidOperation
from loom.generation.backends import BackendPool, number_option, table_provider
from loom.generation.context import MODES, Context, Message
from loom.generation.engine import Branch
from loom.generation.request import DEFAULT_N, EMULATION_CHOICES, MAX_N, GenerationRequest
from loom.workspace import loom_home

if TYPE_CHECKING:
    from pathlib import Path

    from loom.emulation.capabilities import CapabilityTable, ModelCaps

DEFAULT_TOP_LOGPROBS = 5
# Fields a pass-through parameter may not set: they would swap the model, the prompt or
# the number of children behind the record's back.
RESERVED_FIELDS = frozenset(
    {"model", "prompt", "messages", "n", "stream", "stream_options", "system"}
)


def user_capabilities_file() -> Path:
    """The per-user capability overrides (written by `loom probe`, editable by hand)."""
    return loom_home() / "capabilities.toml"


def capability_table() -> CapabilityTable:
    from loom.emulation.capabilities import load_table

    return load_table(user_capabilities_file())


def document_n(doc: Document) -> int:
    """How many children a generation makes when not told: the document's `defaults.n`, else 4."""
    value = doc.defaults.get("n", DEFAULT_N)
    # A hand-edited file may say "6" or 6.0; anything else is refused, not guessed at.
    whole = (
        (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, float) and value.is_integer())
        or (isinstance(value, str) and value.strip().isdecimal())
    )
    if not whole or not 1 <= int(value) <= MAX_N:
        raise InvalidOperation(
            f"the document's defaults.n must be a whole number from 1 to {MAX_N}, got {value!r}"
            " (pass -n to choose)"
        )
    return int(value)


def plan_branches(
    doc: Document | None,
    node_id: str | None,
    request: GenerationRequest,
    table: CapabilityTable,
) -> list[Branch]:
    """The children a (checked) request asks for, one Branch each, unframed."""
    from loom.sampling.modulate import ModulationSpecs, plan
    from loom.sampling.params import LayerInputs

    specs = request.modulation
    assert specs is None or isinstance(specs, ModulationSpecs)  # `checked()` parsed it
    n = request.n
    if n is None and not (specs and (specs.grid or specs.mix)):
        n = document_n(doc) if doc is not None else DEFAULT_N
    if doc is not None and node_id is not None:
        inputs = LayerInputs.from_doc(
            doc, node_id, presets=request.presets, flags=dict(request.params)
        )
    else:
        inputs = LayerInputs(presets=request.presets, flags=dict(request.params))
    chosen = [get_model(name) for name in request.models] or [get_model(None)]
    return plan(
        n,
        chosen,
        inputs,
        specs,
        rng_seed=request.rng_seed,
        model_lookup=get_model,
        caps_lookup=lambda model: table.lookup(table_provider(model), model.model),
    )


def regeneration_branches(
    doc: Document, node_id: str, request: GenerationRequest
) -> tuple[list[Branch], str | None, str]:
    """Branches re-running the generation recorded on `node_id`, its emulation method and
    its mode (text, chat, as-user).

    Each is sent the recorded parameters with the request's `params` replacing some, the
    recorded pass-through fields, to the recorded model unless the request names one.
    A record that is not what loom writes (a hand-edited file) is refused in one line.
    """
    from loom.sampling.params import validate

    target = doc.node(node_id)
    gen = target.meta.get("gen")
    if not gen:
        raise InvalidOperation(
            f"node {target.id} was not generated: nothing to re-run (use `loom gen`)"
        )
    if target.parent_id is None:
        raise InvalidOperation(f"node {target.id} is a root: it has no prompt to re-run")

    def damaged(what: str) -> DocumentError:
        return DocumentError(f"node {target.id}'s generation record is damaged: {what}")

    if not isinstance(gen, Mapping):
        raise damaged("meta.gen is not an object")
    recorded, extra = gen.get("params") or {}, gen.get("extra") or {}
    model, emulation = gen.get("model"), gen.get("emulation") or {}
    mode = gen.get("mode") or "text"
    if not isinstance(recorded, Mapping) or not isinstance(extra, Mapping):
        raise damaged("params and extra must be objects")
    if not (model is None or isinstance(model, str)) or not isinstance(emulation, Mapping):
        raise damaged("model must be a name and emulation an object")
    method = emulation.get("method")
    if method is not None and method not in EMULATION_CHOICES:
        raise damaged(f"unknown emulation method {method!r}")
    if mode not in MODES:
        raise damaged(f"unknown mode {mode!r}")
    try:
        validate(recorded)
    except InvalidOperation as exc:
        raise damaged(exc.message) from None
    params = {**recorded, **validate(dict(request.params))}
    chosen = get_model(request.models[0] if request.models else model)
    branches = [
        Branch(
            model=chosen, params=dict(params), extra=dict(extra), provenance={"regen_of": target.id}
        )
        for _ in range(request.n or 1)
    ]
    return branches, method, mode


# ---- framing: what each branch's backend is sent ---------------------------------------------


def frame(
    branches: list[Branch],
    context: Context,
    pool: BackendPool,
    table: CapabilityTable,
    *,
    emulate: str,
    rng_seed: int | None,
) -> list[str]:
    """Choose each branch's method chain and build its request; returns warnings.

    `emulate`: "auto" lets each model's capabilities decide, a method name forces it.
    """
    from loom.emulation.framing import choose_method, seed_phrase

    forced = None if emulate == "auto" else emulate
    siblings: dict[str, int] = {}
    for branch in branches:
        siblings[branch.model.name] = siblings.get(branch.model.name, 0) + 1
    seen: dict[str, int] = {}
    warnings: dict[str, None] = {}
    for branch in branches:
        model = branch.model
        backend = pool.get(model)
        caps = backend.capabilities
        if caps.logprobs and "logprobs" not in branch.params:
            # Probabilities are what make a tree worth exploring: record them unless told not to.
            branch.params["logprobs"] = min(
                DEFAULT_TOP_LOGPROBS, caps.max_top_logprobs or DEFAULT_TOP_LOGPROBS
            )
        entry = table.lookup(table_provider(model), model.model)
        branch.max_n = entry.max_n
        branch.methods = choose_method(
            caps,
            model.kind,
            entry,
            forced,
            conversation=context.is_chat,
            continuing=context.continues,
        )
        index = seen.get(model.name, 0)
        seen[model.name] = index + 1
        phrase = branch.provenance.get("seed_phrase")
        if phrase is None and entry.fixed_sampling and siblings[model.name] > 1:
            # The model ignores sampler settings: siblings differ through a hidden phrase instead.
            phrase = seed_phrase(rng_seed if rng_seed is not None else 0, index)
            branch.provenance = {**branch.provenance, "prompt_side_variety": True}
        frame_branch(branch, branch.methods[0], context, entry, phrase)
        fitted = branch.context
        if fitted is not None and (fitted.trimmed or fitted.cut):
            what = []
            if not context.is_chat:
                what.append(f"only its last {fitted.chars()} characters were sent")
            elif fitted.trimmed:
                what.append(f"its {fitted.trimmed} oldest message(s) were left out")
            if fitted.cut:
                what.append(f"the first {fitted.cut} characters of its last message were cut")
            warnings[
                f"{model.name}: the branch is longer than the model's context; {' and '.join(what)}"
            ] = None
    return list(warnings)


_FRAMING_OVERHEAD = {"completion": 8, "off": 8, "transcript": 16}  # tokens
_CHAT_OVERHEAD = 512  # chat framings and examples need more


def frame_branch(
    branch: Branch, method: str, context: Context, entry: ModelCaps, phrase: str | None
) -> None:
    """Build `branch.request` for `method`: the context fitted to the model, then framed."""
    from loom.emulation.framing import build_request

    reserved = RESERVED_FIELDS & branch.extra.keys()
    if reserved:
        raise InvalidOperation(f"pass-through parameters cannot set {', '.join(sorted(reserved))}")
    max_tokens = int(branch.params.get("max_tokens") or 256)
    overhead = _FRAMING_OVERHEAD.get(method, _CHAT_OVERHEAD)
    branch.context = fit_context(context, branch.model.context, max_tokens, overhead)
    branch.request, branch.framing = build_request(
        method, branch.context, branch.model.model, 1, branch.params, seed_phrase=phrase, caps=entry
    )


def estimate_tokens(text: str) -> float:
    """A token count erring long, without a tokenizer: ASCII at 2.5 characters a token,
    anything else a token a character."""
    ascii_chars = sum(1 for ch in text if ch.isascii()) if not text.isascii() else len(text)
    return ascii_chars * 0.4 + (len(text) - ascii_chars)


def fit_prompt(prompt: str, context: int | None, max_tokens: int, overhead: int) -> tuple[str, int]:
    """The longest tail of `prompt` that fits a `context`-token window, and how much was cut.

    Token counts are estimated (`estimate_tokens`), erring long. The cut lands after a
    whitespace so no word is split. Erring long only costs some context; erring short fails.
    """
    if not context:
        return prompt, 0
    budget = _budget(context, max_tokens, overhead)
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


def _budget(context: int, max_tokens: int, overhead: int) -> int:
    budget = context - max_tokens - overhead
    if budget <= 0:
        raise InvalidOperation(
            f"max_tokens={max_tokens} leaves no room for the prompt in the model's {context}-token context"
        )
    return budget


def fit_context(context: Context, window: int | None, max_tokens: int, overhead: int) -> Context:
    """`context` shortened to fit a `window`-token model: a text loses its head; a
    conversation its oldest turns (never the last one, whose head is cut if it alone is too
    long). The system message is always kept."""
    if not window:
        return context
    if not context.is_chat:
        text, cut = fit_prompt(context.text or "", window, max_tokens, overhead)
        return context.with_text(text, cut) if cut else context
    system = math.ceil(estimate_tokens(context.system or ""))
    budget = _budget(window, max_tokens, overhead) - system
    messages = list(context.messages)
    turn_ids = list(context.turn_ids) or [()] * len(messages)
    dropped = cut = 0
    while len(messages) > 1 and sum(estimate_tokens(m.content) for m in messages) > budget:
        messages.pop(0)
        turn_ids.pop(0)
        dropped += 1
    if messages and estimate_tokens(messages[-1].content) > budget:
        # The system message is sent too: it takes its share of the window.
        last, cut = fit_prompt(messages[-1].content, window, max_tokens, overhead + system)
        messages[-1] = Message(messages[-1].role, last)
    if not dropped and not cut:
        return context
    return context.with_messages(
        tuple(messages), tuple(turn_ids), dropped or context.trimmed, cut or context.cut
    )


def check_dropped(branches: list[Branch], pool: BackendPool, *, strict: bool) -> list[str]:
    """Every parameter that will not reach a model as asked, once each; an error with `strict`."""
    notes: dict[str, None] = {}
    for branch in branches:
        backend = pool.get(branch.model)
        request = branch.request
        dropped = dict(backend.wire_params(request).dropped) if request is not None else {}
        if branch.framing is not None:
            dropped.update(branch.framing.adjusted)
        for name, why in dropped.items():
            if name in branch.params:
                notes[f"{branch.model.name}: {name} not sent as asked ({why})"] = None
    if notes and strict:
        raise InvalidOperation("--strict: " + "; ".join(notes))
    return list(notes)


def concurrency_for(branches: list[Branch], given: int | None) -> Mapping[str, int]:
    """Requests in flight per model: the request's number, else each model's default."""
    from loom.generation.backends import default_concurrency

    return {b.model.name: given or default_concurrency(b.model) for b in branches}


def deadline_for(branches: list[Branch], given: float | None, default: float) -> float:
    """The whole call's deadline: the request's, else the longest any model asks for, else
    `default`."""
    if given is not None:
        return float(given)
    asked = [_seconds(b.model) for b in branches]
    known = [t for t in asked if t is not None]
    return max(known) if known else default


def _seconds(model: ModelConfig) -> float | None:
    value = number_option(model, "timeout", None)
    return None if value is None else float(value)
