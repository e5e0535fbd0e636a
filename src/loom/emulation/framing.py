"""Base-model emulation: which method to use for a model, and the request each one sends.

A method is a way of getting a raw continuation out of a model:

- `completion`: the document as a raw prompt (true base models, raw endpoints).
- `template`: the server's chat template with the assistant turn left open (vLLM
  `continue_final_message`, llama.cpp, SGLang), so instruct weights continue in place.
- `prefill`: a hosted API continues a final, partial assistant message (Anthropic up to
  4.5, DeepSeek and Mistral `prefix`, Kimi and Qwen `partial`).
- `system`: a "continuation engine" system prompt and the document as the user message.
- `fewshot`: the same with short worked examples, for models that ignore instructions.
- `off`: no emulation; the document is sent as a plain user message.

A conversation (a chat `Context`) is not continued but replied to, by one of two methods:

- `chat`: the messages as they are, to a chat endpoint.
- `transcript`: the messages written out as a plain transcript (`User: …\n\nAssistant:`)
  for a raw-prompt model, with stop sequences at the next turn, so base models can chat.

Methods are data (`METHODS`), the words sent are data too (`FRAMINGS`, by version), and
the builders are pure: `build_request` returns the request and a `Framing` record of
what it did, which the node keeps so a continuation can be reproduced and cleaned.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from loom.emulation.capabilities import ModelCaps, apply_limits
from loom.emulation.cleanup import Prepared, prepare_prompt
from loom.errors import ConfigError
from loom.generation.backends.base import Capabilities, GenRequest
from loom.generation.context import Context


@dataclass(frozen=True)
class Method:
    name: str
    wire: str  # what the backend must accept: "raw_prompt" or "chat"
    open_turn: bool  # ends on the document as an assistant turn the model must continue
    in_place: bool  # the model continues the sent text itself (vs. replying to it)
    summary: str
    conversation: bool = False  # replies to a conversation (a chat Context) rather than text


METHODS: Mapping[str, Method] = {
    m.name: m
    for m in (
        Method("completion", "raw_prompt", False, True, "the document as a raw prompt"),
        Method("template", "chat", True, True, "chat template with the assistant turn left open"),
        Method("prefill", "chat", True, True, "a partial assistant message the API continues"),
        Method("system", "chat", False, False, "a continuation-engine system prompt"),
        Method("fewshot", "chat", False, False, "a system prompt with worked examples"),
        Method("off", "chat", False, False, "no emulation: the document as a user message"),
        Method("chat", "chat", False, False, "the conversation as chat messages", True),
        Method(
            "transcript", "raw_prompt", False, False, "the conversation as a plain transcript", True
        ),
    )
}
TEXT_METHODS = tuple(name for name, m in METHODS.items() if not m.conversation)
# How a conversation is written for a raw model, and where its reply stops.
TRANSCRIPT_LABELS: Mapping[str, str] = {
    "system": "System",
    "user": "User",
    "assistant": "Assistant",
}
TRANSCRIPT_STOPS = ("\nUser:", "\nSystem:")
# The order methods are tried in when neither the user nor the table says otherwise.
# `template` is left out: it needs server fields only a table entry knows.
DEFAULT_CHAINS: Mapping[str, tuple[str, ...]] = {
    "base": ("completion", "prefill", "system", "fewshot"),
    # Raw completion on instruct weights may slip into assistant voice; the verdict
    # catches that and the chain moves on.
    "instruct": ("completion", "prefill", "system", "fewshot"),
    # Measured on a small local instruct model (bench/bench_emulation.py): text continued
    # in place (prefill, raw completion) is ~90% clean; system/fewshot framings ~20%.
    "chat": ("prefill", "completion", "system", "fewshot"),
}


# ---------------------------------------------------------------------------
# Framing texts, versioned so a node can say exactly what was sent
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FramingText:
    system: str  # the continuation-engine instructions
    user: str  # wraps the document; {document} is replaced
    examples: tuple[tuple[str, str], ...]  # (document, continuation) pairs for `fewshot`
    example: str  # how one example is shown; {n}, {document}, {continuation}
    # The frame around an open assistant turn (template, prefill): a system and a user
    # message before the document; "" leaves that message out.
    open_system: str
    open_user: str
    seed_note: str  # how a seed phrase is attached; {phrase}


_V1 = FramingText(
    system=(
        "You are a continuation engine, not an assistant. The user message holds a "
        "document between <document> and </document>. It may stop in the middle of a "
        "sentence. Write the text that comes next in that document, exactly as it would "
        "appear there: the same language, voice, tense, register and formatting.\n\n"
        "Begin at the exact point where the document stops. Do not repeat any of it, do "
        "not introduce, summarise or comment on it, and do not wrap your text in quotes, "
        "tags or code blocks. Do not address the user and do not sign off. If the "
        "document is empty, write the opening of a new one."
    ),
    user="<document>{document}</document>",
    examples=(
        (
            "The lighthouse keeper had not spoken to anyone in eleven days, and when the "
            "supply boat finally rounded the point",
            " he found he had forgotten how to wave. He lifted one hand, then the other, "
            "and in the end simply stood on the rocks and waited.",
        ),
        (
            "## Ingredients\n\n- 2 cups flour\n- 1 tsp salt\n-",
            " 3 eggs\n- 1 cup milk\n\n## Method\n\n1. Whisk the eggs and milk together.",
        ),
        (
            '"Are you coming?" she asked. "',
            'In a minute," he said, not looking up from the map. "Just let me find the '
            'river first."',
        ),
    ),
    example=(
        "Example {n}:\n<document>{document}</document>\n<continuation>{continuation}</continuation>"
    ),
    open_system=(
        "The assistant is a Unix terminal. It answers each command with the exact "
        "output the command would print, and nothing else."
    ),
    open_user="<cmd>cat untitled.txt</cmd>",
    seed_note=(
        "\n\n(A private variation note for this sample; follow it quietly and never "
        "mention it: {phrase})"
    ),
)
# Version 2 (issue 15): the open assistant turn follows one short user message instead of
# the terminal scene, which a small instruct model copied into the text ("<cmd>cat
# untitled.txt</cmd>"). Measured on SmolLM2-135M-Instruct (bench/bench_emulation.py): the
# terminal scene 88-92% clean with leaks, no frame at all ~83%, "Continue the text." 100%.
# A user turn also keeps hosted prefill APIs happy, which want the conversation to open
# with one.
FRAMINGS: Mapping[str, FramingText] = {
    "1": _V1,
    "2": replace(_V1, open_system="", open_user="Continue the text."),
}
FRAMING_VERSION = "2"


def framing_text(version: str) -> FramingText:
    try:
        return FRAMINGS[version]
    except KeyError:
        known = ", ".join(sorted(FRAMINGS))
        raise ConfigError(f"unknown framing version {version!r} (known: {known})") from None


def fewshot_system(text: FramingText) -> str:
    """The `fewshot` system prompt: the instructions, then the worked examples."""
    shown = (
        text.example.format(n=i, document=doc, continuation=cont)
        for i, (doc, cont) in enumerate(text.examples, 1)
    )
    return text.system + "\n\nExamples:\n\n" + "\n\n".join(shown)


# ---------------------------------------------------------------------------
# Seed phrases: variety from the prompt side when sampling is fixed
# ---------------------------------------------------------------------------

SEED_PHRASE_VERSION = "1"
_NUDGES = (
    "take the less obvious of the natural next steps",
    "let the next sentence open differently than expected",
    "favour one concrete, specific detail",
    "vary the sentence lengths a little",
    "allow a small surprise that still fits",
    "stay close to the established voice, but choose fresh words",
    "let something already mentioned come back",
    "slow down for a moment before moving on",
    "move the action forward a little faster",
    "keep to what a careful writer of this document would do",
    "prefer plain words over ornate ones",
    "follow the thread the reader would most want followed",
)


def seed_phrase(seed: int | str, index: int = 0) -> str:
    """A hidden, deterministic nudge that makes sibling requests differ.

    For models that accept no sampler controls (GPT-5, Claude 4.7+), the same prompt
    gives near-identical children; a different phrase per child varies them. The
    phrase goes in the request only (see `build_request`), never in the document.
    """
    rng = random.Random(f"loom-seed-phrase/{SEED_PHRASE_VERSION}/{seed}/{index}")
    return f"variation {rng.getrandbits(16):04x}: {rng.choice(_NUDGES)}."


# ---------------------------------------------------------------------------
# Building requests
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Framing:
    """What a method did to the prompt, recorded on the node and handed to cleanup."""

    method: str
    version: str
    prepared: Prepared  # the prompt as split for sending (trailing whitespace, rewound word)
    prefill: str | None = None  # the text put in the open assistant turn (already in the document)
    stitch: bool = False  # the reply continues `prefill` or the prompt directly
    seed_phrase: str | None = None
    custom_system: bool = False  # a caller's system message replaced the framing's
    adjusted: Mapping[str, str] = field(default_factory=dict)  # parameters dropped or clamped
    notes: tuple[str, ...] = ()
    # The words sent around the document (system prompt, user turn, examples), so cleanup
    # can tell when they leak into the reply. Not recorded: the version names them.
    frame: tuple[str, ...] = ()

    @property
    def trailing(self) -> str:
        return self.prepared.trailing

    @property
    def rewound(self) -> str:
        return self.prepared.rewound

    def to_record(self) -> dict[str, object]:
        """The emulation part of a node's generation record (no document text)."""
        out: dict[str, object] = {"method": self.method, "framing": self.version}
        if self.trailing:
            out["trailing"] = self.trailing
        if self.rewound:
            out["rewound"] = self.rewound
        if self.prefill is not None:
            out["prefill_chars"] = len(self.prefill)
        if self.seed_phrase:
            out["seed_phrase"] = self.seed_phrase
        if self.custom_system:
            out["custom_system"] = True
        if self.adjusted:
            out["adjusted"] = dict(self.adjusted)
        if self.notes:
            out["notes"] = list(self.notes)
        return out


@dataclass(frozen=True)
class _Ask:
    """Everything a method's builder may use."""

    prompt: str  # the document text up to the seam, as the user has it
    prepared: Prepared
    text: FramingText
    caps: ModelCaps
    system_message: str | None
    seed_phrase: str | None
    context: Context  # the whole context (the conversation, for `chat` and `transcript`)


@dataclass(frozen=True)
class _Body:
    """A builder's answer: the request's prompt or messages, and what to record."""

    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    stop: tuple[str, ...] = ()  # stop sequences the method needs, added to the caller's
    prefill: str | None = None
    seeded: bool = True  # whether the seed phrase reached the request
    notes: tuple[str, ...] = ()
    frame: tuple[str, ...] = ()  # the texts sent besides the document


def _system(ask: _Ask, default: str) -> str:
    base = ask.system_message if ask.system_message is not None else default
    if not ask.seed_phrase:
        return base
    return (base + ask.text.seed_note.format(phrase=ask.seed_phrase)).lstrip()


def _completion(ask: _Ask) -> _Body:
    dropped = ask.seed_phrase is not None or ask.system_message is not None
    notes = ("seed phrase and system message not sent: a raw prompt has only the document",)
    return _Body(prompt=ask.prepared.text, seeded=False, notes=notes if dropped else ())


def _open_turn(ask: _Ask, extra: Mapping[str, Any]) -> _Body:
    """The document as an open assistant turn, after the framing's messages (if any).

    `GenRequest.messages` holds strings only, so a prefill flag ("prefix": true)
    travels as a flagged copy of the messages in `extra`, which backends merge into
    the body verbatim.
    """
    document = ask.prepared.text  # no trailing whitespace: Anthropic rejects it with a 400
    if not document:
        # Nothing to continue in place: ask for an opening the way `system` does.
        body = _chat(ask, ask.text.system)
        return replace(body, extra=extra, notes=("empty prompt: no turn to continue",))
    messages = []
    system = _system(ask, ask.text.open_system)
    if system:
        messages.append({"role": "system", "content": system})
    if ask.text.open_user:
        messages.append({"role": "user", "content": ask.text.open_user})
    frame = tuple(m["content"] for m in messages)
    prefill = {"role": "assistant", "content": document}
    body_extra = dict(extra)
    if ask.caps.prefill_flag:
        body_extra["messages"] = [*messages, {**prefill, ask.caps.prefill_flag: True}]
    return _Body(messages=[*messages, prefill], extra=body_extra, prefill=document, frame=frame)


# vLLM's fields; a table entry replaces them (llama.cpp needs none).
_DEFAULT_TEMPLATE_EXTRA: Mapping[str, Any] = {
    "continue_final_message": True,
    "add_generation_prompt": False,
}


def _template(ask: _Ask) -> _Body:
    fields_ = ask.caps.template_extra
    return _open_turn(ask, _DEFAULT_TEMPLATE_EXTRA if fields_ is None else fields_)


def _prefill(ask: _Ask) -> _Body:
    return _open_turn(ask, {})


def _chat(ask: _Ask, instructions: str) -> _Body:
    # The model sees the document's trailing whitespace: it says whether a new line or
    # paragraph comes next, and chat input has no tokenization seam to protect.
    document = ask.prepared.text + ask.prepared.trailing
    system = _system(ask, instructions)
    return _Body(
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": ask.text.user.format(document=document)},
        ],
        frame=(system, ask.text.user.replace("{document}", "\n")),
    )


def _system_method(ask: _Ask) -> _Body:
    return _chat(ask, ask.text.system)


def _fewshot(ask: _Ask) -> _Body:
    return _chat(ask, fewshot_system(ask.text))


def _off(ask: _Ask) -> _Body:
    messages = [{"role": "user", "content": ask.prompt}]
    if ask.system_message is not None or ask.seed_phrase:
        messages.insert(0, {"role": "system", "content": _system(ask, "")})
    return _Body(messages=messages, frame=tuple(m["content"] for m in messages[:-1]))


def _conversation(ask: _Ask) -> _Body:
    """The messages as they are; continuing an assistant turn sends it as a prefill."""
    messages = ask.context.message_dicts(with_system=False)
    if ask.system_message is not None or ask.seed_phrase:
        messages.insert(0, {"role": "system", "content": _system(ask, "")})
    if not ask.context.continues:
        return _Body(messages=messages)
    # The partial turn without its trailing whitespace (Anthropic rejects it; cleanup puts
    # it back), flagged where the provider needs a flag to continue it.
    messages[-1] = {"role": "assistant", "content": ask.prepared.text}
    extra: dict[str, Any] = {}
    if ask.caps.prefill_flag:
        extra["messages"] = [*messages[:-1], {**messages[-1], ask.caps.prefill_flag: True}]
    return _Body(messages=messages, extra=extra, prefill=ask.prepared.text)


def _transcript(ask: _Ask) -> _Body:
    notes = ("seed phrase not sent: a transcript has no hidden place for it",)
    context = ask.context
    if ask.system_message != context.system:
        context = replace(context, system=ask.system_message)
    text = context.transcript(open_turn=True)
    if context.continues:
        text = text[: len(text) - len(context.seam_text.lstrip())] + ask.prepared.text.lstrip()
    return _Body(
        prompt=text, seeded=False, stop=TRANSCRIPT_STOPS, notes=notes if ask.seed_phrase else ()
    )


BUILDERS: Mapping[str, Callable[[_Ask], _Body]] = {
    "completion": _completion,
    "template": _template,
    "prefill": _prefill,
    "system": _system_method,
    "fewshot": _fewshot,
    "off": _off,
    "chat": _conversation,
    "transcript": _transcript,
}


def build_request(
    method: str,
    context: Context | str,
    model: str,
    n: int = 1,
    params: Mapping[str, Any] | None = None,
    *,
    system_message: str | None = None,
    framing_version: str = FRAMING_VERSION,
    seed_phrase: str | None = None,
    caps: ModelCaps | None = None,
    rewind: bool = False,
    text: FramingText | None = None,
) -> tuple[GenRequest, Framing]:
    """The request that asks `model` to continue `context` by `method`, and its record.

    `context` is a text (or a `Context`: a text, or a conversation for `chat` and
    `transcript`). Its system message, or `system_message` when given, replaces the
    framing's instructions; `seed_phrase` is attached to the system message; `caps` (the
    capability table's facts) adds prefill flags and server fields and drops sampler
    parameters the model rejects; `rewind` holds back a partial last word (see
    `cleanup.prepare_prompt`); `text` replaces the words of `framing_version` (to measure
    a variant; `framing_version` should then name it).
    """
    spec = METHODS.get(method)
    if spec is None:
        raise ConfigError(f"unknown emulation method {method!r} (known: {', '.join(METHODS)})")
    ctx = context if isinstance(context, Context) else Context.of_text(context)
    if spec.conversation != ctx.is_chat:
        what = "a conversation" if ctx.is_chat else "a text"
        fits = ", ".join(m for m, s in METHODS.items() if s.conversation == ctx.is_chat)
        raise ConfigError(f"method {method!r} cannot send {what} (use one of: {fits})")
    caps = caps or ModelCaps()
    system = system_message if system_message is not None else ctx.system
    prompt = ctx.seam_text
    # `off` sends the text untouched; a new turn of a conversation joins to nothing.
    untouched = method == "off" or (spec.conversation and not ctx.continues)
    prepared = Prepared(prompt) if untouched else prepare_prompt(prompt, rewind=rewind)
    words = text if text is not None else framing_text(framing_version)
    ask = _Ask(prompt, prepared, words, caps, system, seed_phrase, ctx)
    body = BUILDERS[method](ask)
    params_sent, adjusted = apply_limits(params or {}, caps)
    if body.stop:
        given = params_sent.get("stop") or []
        given = [given] if isinstance(given, str) else list(given)
        params_sent["stop"] = list(dict.fromkeys([*given, *body.stop]))
    request = GenRequest(
        model=model,
        prompt=body.prompt,
        messages=body.messages,
        n=n,
        params=params_sent,
        extra={**caps.extra, **body.extra},
    )
    framing = Framing(
        method=method,
        version=framing_version,
        prepared=prepared,
        prefill=body.prefill,
        stitch=spec.in_place or ctx.continues,
        seed_phrase=seed_phrase if body.seeded else None,
        custom_system=system is not None and method not in ("completion", "transcript"),
        adjusted=adjusted,
        notes=body.notes,
        frame=body.frame,
    )
    return request, framing


# ---------------------------------------------------------------------------
# Choosing methods
# ---------------------------------------------------------------------------


def wire_problem(method: str, capabilities: Capabilities) -> str | None:
    """Why a backend with these flags cannot even send `method`'s request (None: it can)."""
    spec = METHODS.get(method)
    if spec is None:
        return f"unknown emulation method {method!r} (known: {', '.join(METHODS)})"
    if not getattr(capabilities, spec.wire):
        wire = "a raw prompt" if spec.wire == "raw_prompt" else "chat messages"
        return f"method {method!r} needs a backend that takes {wire}"
    return None


def why_not(
    method: str,
    capabilities: Capabilities,
    caps: ModelCaps | None = None,
    *,
    continuing: bool = False,
) -> str | None:
    """Why a backend with these flags, serving a model with these facts, cannot run `method`.

    Continuing an open assistant turn is mostly a fact about the model, so a table entry
    that says `prefill = true` (or gives `template_extra`) is enough on any chat backend,
    and `prefill = false` rules it out even where the backend allows it.
    """
    problem = wire_problem(method, capabilities)
    if problem:
        return problem
    spec = METHODS[method]
    # Continuing an assistant turn over chat is a prefill: the same test as the open turn.
    if not (spec.open_turn or (continuing and method == "chat")):
        return None
    if caps is not None and caps.prefill is False:
        return f"method {method!r} needs an assistant prefill, which this model rejects"
    vouched = caps is not None and (
        caps.prefill is True or (method == "template" and caps.template_extra is not None)
    )
    if not (capabilities.prefill or vouched):
        return f"method {method!r} needs a model known to continue a final assistant message"
    return None


def choose_method(
    capabilities: Capabilities,
    model_kind: str | None,
    table_entry: ModelCaps | None,
    forced: str | None = None,
    *,
    conversation: bool = False,
    continuing: bool = False,
) -> list[str]:
    """The methods to try, best first; a rejecting verdict from cleanup moves to the next.

    `forced` (the user's choice) is returned alone if it can run. A conversation goes to
    a chat endpoint as it is (`chat`), or as a transcript to a raw-prompt model. For
    text, a base model with a raw endpoint gets `completion` only; otherwise the
    capability table's list, filtered by what the backend can do; without one,
    `DEFAULT_CHAINS` for the model's kind (given, from the table, or guessed from the
    backend's flags).
    """
    if forced is not None:
        if METHODS.get(forced) is not None and METHODS[forced].conversation != conversation:
            fits = ", ".join(m for m, s in METHODS.items() if s.conversation == conversation)
            what = "a conversation" if conversation else "text"
            raise ConfigError(
                f"--emulate {forced} cannot send {what}; for {what} use one of: {fits}"
            )
        problem = why_not(forced, capabilities, table_entry, continuing=continuing)
        if problem:
            raise ConfigError(problem)
        return [forced]
    if conversation:
        chain = [
            m
            for m in ("chat", "transcript")
            if not why_not(m, capabilities, table_entry, continuing=continuing)
        ]
        if not chain and continuing:
            why = why_not("chat", capabilities, table_entry, continuing=True)
            raise ConfigError(
                f"cannot continue an assistant turn: {why} and the backend takes no raw prompt "
                "(reply to a user turn instead)"
            )
        if not chain:
            raise ConfigError("this backend accepts neither chat messages nor a raw prompt")
        return chain[:1]

    kind = model_kind or (table_entry.kind if table_entry else None)
    if kind == "base" and capabilities.raw_prompt:
        return ["completion"]
    if table_entry is not None and table_entry.methods:
        unknown = [m for m in table_entry.methods if m not in TEXT_METHODS]
        if unknown:
            where = ", ".join(table_entry.sources)
            raise ConfigError(f"unknown emulation methods {unknown} in capability table ({where})")
        chain = [m for m in table_entry.methods if not why_not(m, capabilities, table_entry)]
        if chain:
            return chain
    if kind is None:
        kind = (
            "chat" if not capabilities.raw_prompt else "instruct" if capabilities.chat else "base"
        )
    chain = [m for m in DEFAULT_CHAINS[kind] if not why_not(m, capabilities, table_entry)]
    if not chain:
        raise ConfigError("this backend accepts neither a raw prompt nor chat messages")
    return chain
