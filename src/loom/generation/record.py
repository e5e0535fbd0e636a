"""What a generated node records about how it was made (docs/schema.md, `meta.gen`).

"Every child records exactly what made it": the backend, the model asked and the one
that answered, the canonical parameters and the fields actually sent, the sampler
values in effect (including the backend's own defaults where the backend knows them,
and which values were left to the provider where it does not), the prompt's digest,
how emulation framed and cleaned it, timing, usage, and token probabilities aligned
with the node's text.
"""

from __future__ import annotations

from typing import Any

from loom.generation.backends.base import Backend, Token
from loom.generation.context import Context
from loom.generation.engine import Outcome
from loom.redact import safe_url

LOGPROB_DIGITS = 4
# The sampler settings a record accounts for: sent, defaulted by the backend, or left to
# the provider. The rest of the canonical table (penalties, DRY, XTC…) is recorded when sent.
SAMPLERS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "typical_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
)


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


def sampler_in_effect(outcome: Outcome, backend: Backend | None) -> dict[str, Any]:
    """The sampler values that shaped this output, and where the others were decided.

    `values`: what was in effect, as far as loom can know: the parameters sent (what a
    backend dropped was not in effect), over the backend's own defaults when it knows
    them (the embedded llama.cpp). `left_to_provider`: sampler settings loom did not send
    to a provider whose defaults it cannot see.
    """
    params = outcome.branch.params
    sent = {k: v for k, v in params.items() if k in SAMPLERS and k not in outcome.dropped}
    defaults = dict(backend.sampler_defaults or {}) if backend is not None else {}
    out: dict[str, Any] = {"values": {**defaults, **sent}}
    if defaults:
        out["defaults_from"] = backend.name if backend is not None else "backend"
    else:
        left = [k for k in SAMPLERS if k not in sent]
        if left:
            out["left_to_provider"] = left
    return out


def _without_secrets(fields: dict[str, Any]) -> dict[str, Any]:
    if not fields:
        return fields
    from loom.formats.secrets import drop_secrets

    cleaned, _ = drop_secrets(fields)
    return dict(cleaned)


def record(
    outcome: Outcome,
    context: Context,
    *,
    logprob_source: str = "unknown",
    backend: Backend | None = None,
) -> dict[str, Any]:
    """The node metadata for one outcome (see docs/schema.md, meta.gen and meta.logprobs)."""
    o, model = outcome, outcome.branch.model
    seen = o.branch.context or context
    base_url = o.base_url or model.base_url
    gen: dict[str, Any] = {
        "backend": o.backend or model.provider,
        "base_url": safe_url(base_url) if base_url else "",
        "model": model.name,
        "model_id": model.model,
        "reported_model": o.reported_model,
        "role": o.role,
        "params": o.branch.params,
        # Pass-through fields are the user's own: a key given that way is sent, never kept.
        "extra": _without_secrets(o.branch.extra) or None,
        "sent": _without_secrets(o.sent),
        "sampler": sampler_in_effect(o, backend),
        "prompt": seen.digest(),
        "finish_reason": o.finish_reason,
        "usage": o.usage,
        "latency_ms": None if o.ended is None else round((o.ended - o.started) * 1000),
        "ttft_ms": None
        if o.first_token_at is None
        else round((o.first_token_at - o.started) * 1000),
        "request": {"n": o.request_n, "index": o.request_index},
    }
    runtime = dict(backend.runtime or {}) if backend is not None else {}
    if runtime:
        gen["runtime"] = runtime
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
