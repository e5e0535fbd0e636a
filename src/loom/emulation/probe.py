"""`loom probe`: try every emulation method a model's server can run on a few short prompts.

Every method the backend's wire format allows is tried, not only those the capability
table vouches for (an open assistant turn on an unknown server is exactly what a probe
finds out). Before that, a model on an OpenAI-compatible server that does not say which
server it is gets asked (`loom.emulation.servers`), so a llama.cpp or vLLM server's
raw completion endpoint is tried too.

Each method continues the same prompts; cleanup judges every output (see
`loom.emulation.cleanup.Verdict`). Methods are ranked by their share of clean
outputs, then by how little cleanup had to cut, then by the default order. The
ranking is written to the per-user capability file as this model's `methods` (with
`prefill = true` when an open assistant turn worked), so later generations use it
without asking again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loom.config import ModelConfig, toml_value
from loom.errors import ConfigError
from loom.generation.engine import Branch, run_branches

PROMPTS = (
    "The lighthouse keeper climbed the stairs for the last time, and",
    "Ingredients:\n- 2 cups flour\n- 1 cup sugar\n-",
    '"Are you coming?" she asked.\n"',
)


@dataclass
class MethodScore:
    method: str
    ok: int = 0
    total: int = 0
    cut_chars: int = 0  # characters cleanup removed across outputs
    verdicts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.ok / self.total if self.total else 0.0


@dataclass
class Probe:
    scores: list[MethodScore]  # best first
    server: str | None = None  # the server recognised at the model's URL, if asked
    recorded: bool = False  # the ranking (and the server) were saved

    @property
    def winner(self) -> str | None:
        return next((s.method for s in self.scores if s.ok), None)


async def _probe(
    model: ModelConfig, prompts: tuple[str, ...], max_tokens: int
) -> list[MethodScore]:
    from loom.emulation.framing import TEXT_METHODS, wire_problem
    from loom.generation.backends import BackendPool, table_provider
    from loom.generation.cleaning import clean_outcome
    from loom.generation.context import Context
    from loom.generation.plan import capability_table, frame_branch

    pool = BackendPool()
    try:
        backend = pool.get(model)
        entry = capability_table().lookup(table_provider(model), model.model)
        methods = [
            m for m in TEXT_METHODS if m != "off" and not wire_problem(m, backend.capabilities)
        ]
        scores: list[MethodScore] = []
        for method in methods:
            score = MethodScore(method)
            for prompt in prompts:
                branch = Branch(
                    model=model,
                    params={**model.params, "max_tokens": max_tokens, "temperature": 0.7},
                )
                frame_branch(branch, method, Context.of_text(prompt), entry, None)
                [outcome] = await run_branches([branch], pool)
                score.total += 1
                if outcome.error and not outcome.text:
                    score.errors.append(outcome.error)
                    score.verdicts.append("error")
                    continue
                ok = clean_outcome(outcome)
                score.ok += ok
                score.verdicts.append(str((outcome.cleanup or {}).get("verdict", "ok")))
                score.cut_chars += max(0, len(outcome.raw_text or outcome.text) - len(outcome.text))
            scores.append(score)
        return scores
    finally:
        await pool.aclose()


def rank(scores: list[MethodScore]) -> list[MethodScore]:
    order = {s.method: i for i, s in enumerate(scores)}
    return sorted(scores, key=lambda s: (-s.share, s.cut_chars, order[s.method]))


def recognise(model: ModelConfig) -> tuple[ModelConfig, str | None]:
    """`model` with what its server offers, when it is on an OpenAI-compatible server that
    its configuration does not name; and the server's name (None if not asked or unknown)."""
    import dataclasses

    from loom.emulation import servers

    if (
        model.options.get("server")
        or model.provider not in servers.OPENAI_PROVIDERS
        or servers.hosted(model.base_url)
    ):
        return model, None
    found = servers.detect(model.base_url, model.api_key())
    if found is None:
        return model, None
    options = {**model.options, **servers.server_options(found, model.provider)}
    return dataclasses.replace(model, options=options), found


def probe(
    model: ModelConfig,
    *,
    prompts: tuple[str, ...] = PROMPTS,
    max_tokens: int = 24,
    record: bool = True,
) -> Probe:
    """Score every method `model`'s server can run; with `record`, save the ranking (and a
    recognised server, for a model configured in models.toml) for later generations."""
    model, server = recognise(model)
    scores = rank(asyncio.run(_probe(model, prompts, max_tokens)))
    if not scores:
        raise ConfigError(f"model {model.name!r}: no emulation method can run on this backend")
    result = Probe(scores, server)
    usable = [s for s in scores if s.ok]
    if record and usable:
        from loom import config
        from loom.emulation.framing import METHODS
        from loom.generation.backends import table_provider
        from loom.generation.plan import user_capabilities_file

        if server is not None and model.name in config.configured_models():
            config.update_options(model.name, model.options)
        methods = [s.method for s in usable]
        save_methods(
            user_capabilities_file(),
            table_provider(model) or "*",
            model.model,
            methods,
            prefill=True if any(METHODS[m].open_turn for m in methods) else None,
        )
        result.recorded = True
    return result


def save_methods(
    path: Path, provider: str, model_id: str, methods: list[str], *, prefill: bool | None = None
) -> None:
    """Write (or replace) this model's row in the user capability file, keeping other rows."""
    import tomllib

    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        data = {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot update: {exc}") from None
    rows = [
        r
        for r in data.get("models", [])
        if not (r.get("provider") == provider and r.get("match") == model_id)
    ]
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    row: dict[str, Any] = {"provider": provider, "match": model_id, "methods": methods}
    if prefill is not None:
        row["prefill"] = prefill  # an open assistant turn worked: vouch for it
    rows.append({**row, "notes": f"ranked by `loom probe` on {stamp}"})
    lines = [
        "# Written by `loom probe`; rows here override loom's shipped capability table.",
        "version = 1",
    ]
    for row in rows:
        lines.append("\n[[models]]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in row.items())
    from loom import files

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{path.parent}: cannot create ({files.reason(exc)})") from None
    files.write_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))
