"""The capability table: what each provider and model accepts, kept as data.

Providers change what their models accept every few months (prefill removed,
sampler parameters rejected), so those facts live in `loom/data/capabilities.toml`,
not in code. A user file in the same shape adds or corrects entries.

Every entry that matches a (provider, model id) contributes, from the least specific
to the most specific, so a provider-wide entry gives defaults and a model family
entry refines them; user entries come after all shipped ones. Specificity is the
number of literal characters in the model pattern, then an exact provider name.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from loom.errors import ConfigError

KINDS = frozenset({"base", "instruct", "chat"})
PREFILL_FLAGS = frozenset({"prefix", "partial"})


@dataclass(frozen=True)
class ModelCaps:
    """What the table says about one model. None means "the table does not know"."""

    kind: str | None = None  # base | instruct | chat
    methods: tuple[str, ...] | None = None  # emulation methods to try, in order
    prefill: bool | None = None  # accepts a final, partial assistant message
    prefill_flag: str | None = None  # flag the prefill message needs: "prefix" | "partial"
    template_extra: Mapping[str, Any] | None = None  # body fields for `template`; None: unknown
    extra: Mapping[str, Any] = field(default_factory=dict)  # body fields for every request
    temperature: bool | float | None = None  # False: rejected; a number: the only value accepted
    top_p: bool | None = None
    top_k: bool | None = None
    exclusive: tuple[
        tuple[str, ...], ...
    ] = ()  # groups of parameters only one of which may be sent
    max_n: int | None = None  # samples per request; 1: no `n`
    logprobs: bool | None = None
    max_top_logprobs: int | None = None
    seed: bool | None = None
    recommended: Mapping[str, float] = field(default_factory=dict)  # provider-advised values
    notes: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()  # the entries that contributed, least specific first

    @property
    def fixed_sampling(self) -> bool:
        """Whether siblings must differ through the prompt (a seed phrase), not sampling."""
        return self.temperature is False or isinstance(self.temperature, float)


@dataclass(frozen=True)
class Entry:
    """One row of the table: patterns and the facts they carry."""

    provider: str  # glob, "*" for any
    match: tuple[str, ...]  # model id globs, case-insensitive
    facts: Mapping[str, Any]  # ModelCaps fields this row sets
    origin: str  # "shipped" or the user file's path
    user: bool = False

    @property
    def label(self) -> str:
        return f"{self.origin}:{self.provider}/{'|'.join(self.match)}"

    def specificity(self, provider: str, model: str) -> tuple[int, int] | None:
        """How closely this row matches; None when it does not."""
        if not fnmatch.fnmatchcase(provider.lower(), self.provider.lower()):
            return None
        hits = [p for p in self.match if fnmatch.fnmatchcase(model.lower(), p.lower())]
        if not hits:
            return None
        literal = max(sum(c not in "*?[]" for c in p) for p in hits)
        return literal, int("*" not in self.provider and "?" not in self.provider)


# ---------------------------------------------------------------------------
# Parsing and validation
# ---------------------------------------------------------------------------

_FACT_FIELDS = {f.name for f in fields(ModelCaps)} - {"sources"}
_ENTRY_KEYS = _FACT_FIELDS | {"provider", "match"}


def _fail(origin: str, index: int, message: str) -> ConfigError:
    return ConfigError(f"{origin}: capability entry {index + 1}: {message}", file=origin)


def _check_fact(name: str, value: Any) -> str | None:
    """Why `value` is not valid for field `name`, or None."""
    match name:
        case "kind":
            return None if value in KINDS else f"kind must be one of {sorted(KINDS)}"
        case "methods":
            ok = isinstance(value, list) and all(isinstance(m, str) for m in value)
            return None if ok else "methods must be a list of method names"
        case "prefill" | "top_p" | "top_k" | "logprobs" | "seed":
            return None if isinstance(value, bool) else f"{name} must be true or false"
        case "prefill_flag":
            return (
                None
                if value in PREFILL_FLAGS
                else f"prefill_flag must be one of {sorted(PREFILL_FLAGS)}"
            )
        case "template_extra" | "extra":
            return None if isinstance(value, dict) else f"{name} must be a table"
        case "temperature":
            ok = isinstance(value, bool | int | float) and math.isfinite(value)
            return None if ok else "temperature must be true, false or the one accepted value"
        case "exclusive":
            ok = isinstance(value, list) and all(
                isinstance(g, list) and all(isinstance(p, str) for p in g) for g in value
            )
            return None if ok else "exclusive must be a list of lists of parameter names"
        case "max_n" | "max_top_logprobs":
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            return None if ok else f"{name} must be a whole number"
        case "recommended":
            ok = isinstance(value, dict) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()
            )
            return None if ok else "recommended must map parameter names to numbers"
        case "notes":
            ok = isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(n, str) for n in value)
            )
            return None if ok else "notes must be text or a list of texts"
    return f"unknown field {name!r}"


def _normalize(name: str, value: Any) -> Any:
    """TOML values as ModelCaps stores them."""
    match name:
        case "methods":
            return tuple(value)
        case "exclusive":
            return tuple(tuple(g) for g in value)
        case "notes":
            return (value,) if isinstance(value, str) else tuple(value)
        case "temperature" if not isinstance(value, bool):
            return float(value)
        case "recommended":
            return {k: float(v) for k, v in value.items()}
    return value


def parse_entries(data: Mapping[str, Any], origin: str, *, user: bool = False) -> tuple[Entry, ...]:
    """Validate a parsed TOML table (`[[models]]` rows) into entries."""
    unknown_top = set(data) - {"version", "models"}
    if unknown_top:
        raise ConfigError(f"{origin}: unknown top-level keys {sorted(unknown_top)}", file=origin)
    if data.get("version", 1) != 1:
        raise ConfigError(f"{origin}: unsupported table version {data['version']!r}", file=origin)
    rows = data.get("models", [])
    if not isinstance(rows, list):
        raise ConfigError(f"{origin}: `models` must be an array of tables", file=origin)
    out: list[Entry] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise _fail(origin, i, "must be a table")
        unknown = set(row) - _ENTRY_KEYS
        if unknown:
            raise _fail(origin, i, f"unknown fields {sorted(unknown)}")
        provider, match = row.get("provider", "*"), row.get("match")
        if isinstance(match, str):
            match = [match]
        if not isinstance(provider, str) or not provider:
            raise _fail(origin, i, "provider must be a name or a glob")
        if not isinstance(match, list) or not match or not all(isinstance(m, str) for m in match):
            raise _fail(origin, i, "match must be a model id glob or a list of them")
        facts: dict[str, Any] = {}
        for name, value in row.items():
            if name in ("provider", "match"):
                continue
            problem = _check_fact(name, value)
            if problem:
                raise _fail(origin, i, problem)
            facts[name] = _normalize(name, value)
        out.append(Entry(provider, tuple(match), facts, origin, user))
    return tuple(out)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


@functools.cache
def shipped_entries() -> tuple[Entry, ...]:
    """The table shipped with loom, parsed once on first use."""
    text = (resources.files("loom") / "data" / "capabilities.toml").read_text("utf-8")
    return parse_entries(tomllib.loads(text), "shipped")


def read_entries(path: str | Path) -> tuple[Entry, ...]:
    """A user's override file; a missing file is simply no overrides."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return ()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}", file=str(path)) from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}", file=str(path)) from e
    return parse_entries(data, str(path), user=True)


@dataclass(frozen=True)
class CapabilityTable:
    entries: tuple[Entry, ...]

    def matching(self, provider: str, model: str) -> list[Entry]:
        """Entries that apply, least specific first (so later ones win)."""
        ranked = []
        for order, entry in enumerate(self.entries):
            spec = entry.specificity(provider, model)
            if spec is not None:
                ranked.append(((entry.user, *spec, order), entry))
        return [e for _, e in sorted(ranked, key=lambda r: r[0])]

    def lookup(self, provider: str, model: str) -> ModelCaps:
        return merge(self.matching(provider, model))


def load_table(override: str | Path | None = None) -> CapabilityTable:
    """The shipped table, with the entries of a user file (same shape) after it."""
    extra = read_entries(override) if override is not None else ()
    return CapabilityTable(shipped_entries() + extra)


def lookup(provider: str, model: str, *, override: str | Path | None = None) -> ModelCaps:
    """What the table knows about `model` served by `provider`.

    Reads `override` on every call; keep a `load_table` result for many lookups.
    """
    return load_table(override).lookup(provider, model)


def merge(entries: Sequence[Entry]) -> ModelCaps:
    """Fold entries in order: scalars and lists replace, tables merge key by key."""
    caps = ModelCaps()
    for entry in entries:
        changes: dict[str, Any] = {}
        for name, value in entry.facts.items():
            if name in ("template_extra", "extra", "recommended"):
                changes[name] = {**(getattr(caps, name) or {}), **value}
            elif name == "notes":
                changes[name] = caps.notes + value
            else:
                changes[name] = value
        caps = replace(caps, **changes, sources=(*caps.sources, entry.label))
    return caps


# ---------------------------------------------------------------------------
# Using the facts
# ---------------------------------------------------------------------------


def apply_limits(
    params: Mapping[str, Any], caps: ModelCaps
) -> tuple[dict[str, Any], dict[str, str]]:
    """Drop or clamp the sampler parameters the model rejects; say why for each."""
    out = dict(params)
    why: dict[str, str] = {}

    def drop(name: str, reason: str) -> None:
        if name in out:
            del out[name]
            why[name] = reason

    t = caps.temperature
    if t is False:
        drop("temperature", "rejected by this model")
    elif isinstance(t, float) and out.get("temperature", t) != t:
        drop("temperature", f"this model accepts only temperature={t:g}")
    for name in ("top_p", "top_k", "seed"):
        if getattr(caps, name) is False:
            drop(name, "rejected by this model")
    if caps.logprobs is False:
        drop("logprobs", "not returned by this model")
    limit = caps.max_top_logprobs
    if limit is not None and isinstance(out.get("logprobs"), int) and out["logprobs"] > limit:
        out["logprobs"] = limit
        why["logprobs"] = f"clamped to {limit}"
    for group in caps.exclusive:
        present = [p for p in group if p in out]
        for name in present[1:]:
            drop(name, f"cannot be sent together with {present[0]}")
    return out, why
