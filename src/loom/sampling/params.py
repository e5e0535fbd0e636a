"""Canonical sampler parameters: one table, validation, and layered resolution with provenance.

Every parameter loom knows is a row of `PARAMS` (type, valid range, neutral value, one
line of help). Backends map these canonical names to their wire fields; anything a
backend needs that loom has no name for travels namespaced, `FAMILY.FIELD` (e.g.
`llamacpp.cache_prompt = false`, `openai.reasoning_effort = "none"`), and reaches only
backends of that family as `extra` body fields (`split_passthrough`).

A generation's parameters come from layers, lowest first::

    builtin < model < user < preset:<name>… < document < sticky:<node id>… < flags

`resolve()` folds them and remembers which layer set each value (`Resolved.source`)
and which ones it overrode (`Resolved.explain()`). A `None` value in a layer unsets
the parameter ("do not send it"), which lower layers cannot then bring back.

Sticky overrides live on nodes at `meta.sticky_params` and apply to the node and its
whole subtree; the nearest ancestor wins. Document defaults live at
`defaults.params` in the document header.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from loom.errors import InvalidOperation, UsageError

if TYPE_CHECKING:
    from loom.config import ModelConfig
    from loom.document import Document, Node

__all__ = [
    "ALIASES",
    "BUILTIN",
    "FAMILIES",
    "PARAMS",
    "STICKY_KEY",
    "ExplainRow",
    "LayerInputs",
    "Param",
    "Resolved",
    "backend_families",
    "canonical_name",
    "clear_sticky",
    "format_explain",
    "layers_for",
    "parse_assignments",
    "resolve",
    "set_sticky",
    "split_passthrough",
    "sticky_layers",
    "validate",
]

Kind = Literal["float", "int", "bool", "count_or_flag", "strings", "bias"]
Layer = tuple[str, Mapping[str, Any]]

STICKY_KEY = "sticky_params"  # node meta key of sticky overrides


@dataclass(frozen=True)
class Param:
    """One canonical sampler parameter."""

    name: str
    kind: Kind
    group: str
    description: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the range excludes `low` itself
    neutral: Any = None  # the value that leaves the distribution alone (None: no such value)
    request: bool = False  # shapes the request (n), never sent as a sampler field

    @property
    def numeric(self) -> bool:
        return self.kind in ("float", "int")

    def expectation(self) -> str:
        """What a valid value looks like, for error messages."""
        match self.kind:
            case "bool":
                return "true or false"
            case "strings":
                return 'a string or a list of strings (JSON, e.g. ["\\n", "###"])'
            case "bias":
                return "a map of token to bias from -100 to 100 (JSON, or TOKEN:BIAS,…)"
            case "count_or_flag":
                return f"true, false or a whole number {self._range()}"
        noun = "a whole number" if self.kind == "int" else "a number"
        return f"{noun} {self._range()}"

    def _range(self) -> str:
        lo, hi = _num(self.low), _num(self.high)
        if self.low is not None and self.high is not None:
            return f"above {lo} up to {hi}" if self.low_open else f"from {lo} to {hi}"
        if self.low is not None:
            return f"above {lo}" if self.low_open else f"≥ {lo}"
        if self.high is not None:
            return f"≤ {hi}"
        return ""

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def clamp(self, value: float) -> float:
        """The nearest valid value (for jitter that strays past a bound)."""
        if self.low is not None:
            floor = math.nextafter(self.low, math.inf) if self.low_open else self.low
            value = max(value, floor)
        if self.high is not None:
            value = min(value, self.high)
        return value


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


_P = Param
# The one canonical parameter set. Ranges are loom's: a backend may accept less (OpenAI's
# temperature ends at 2) and reports what it dropped or clamped.
PARAMS: Mapping[str, Param] = {
    p.name: p
    for p in (
        _P("temperature", "float", "temperature", "randomness: 0 is greedy, 1 the model's own distribution", 0, 5, neutral=1.0),
        _P("dynatemp_range", "float", "temperature", "dynamic temperature: temperature ± this, following the entropy (llama.cpp)", 0, 5, neutral=0.0),
        _P("dynatemp_exponent", "float", "temperature", "how steeply dynamic temperature follows the entropy (llama.cpp)", 0, 10, neutral=1.0),
        _P("top_p", "float", "truncation", "nucleus: keep the fewest tokens whose probabilities sum to p", 0, 1, neutral=1.0),
        _P("top_k", "int", "truncation", "keep the k likeliest tokens; 0 = off", 0, None, neutral=0),
        _P("min_p", "float", "truncation", "drop tokens less likely than p × the likeliest one's probability", 0, 1, neutral=0.0),
        _P("typical_p", "float", "truncation", "locally typical sampling: keep tokens near the expected surprise", 0, 1, neutral=1.0),
        _P("top_n_sigma", "float", "truncation", "keep tokens within n standard deviations of the top logit; -1 = off (llama.cpp)", -1, 100, neutral=-1.0),
        _P("xtc_probability", "float", "truncation", "exclude top choices: chance per token of removing the likeliest tokens (llama.cpp)", 0, 1, neutral=0.0),
        _P("xtc_threshold", "float", "truncation", "XTC removes all but the least likely of the tokens above this probability (llama.cpp)", 0, 1),
        _P("min_keep", "int", "truncation", "keep at least this many tokens after truncation (llama.cpp)", 0, None),
        _P("presence_penalty", "float", "repetition", "penalise every token that already appeared", -2, 2, neutral=0.0),
        _P("frequency_penalty", "float", "repetition", "penalise tokens by how often they already appeared", -2, 2, neutral=0.0),
        _P("repetition_penalty", "float", "repetition", "divide the logits of recently seen tokens; 1 = off", 0, 10, low_open=True, neutral=1.0),
        _P("repeat_last_n", "int", "repetition", "how many recent tokens the penalties look at; -1 = the context, 0 = off (llama.cpp)", -1, None),
        _P("dry_multiplier", "float", "repetition", "DRY: strength of the penalty on repeated sequences; 0 = off (llama.cpp)", 0, 100, neutral=0.0),
        _P("dry_base", "float", "repetition", "DRY: how fast the penalty grows with the repeat's length (llama.cpp)", 1, 10),
        _P("dry_allowed_length", "int", "repetition", "DRY: repeats up to this many tokens go unpenalised (llama.cpp)", 0, None),
        _P("dry_penalty_last_n", "int", "repetition", "DRY: how many recent tokens it scans; -1 = the context (llama.cpp)", -1, None),
        _P("dry_sequence_breakers", "strings", "repetition", "DRY: strings that end a repeated sequence (llama.cpp)"),
        _P("mirostat", "int", "mirostat", "aim at a fixed surprise instead of truncating: 0 off, 1 Mirostat, 2 Mirostat 2.0", 0, 2, neutral=0),
        _P("mirostat_tau", "float", "mirostat", "Mirostat's target surprise; higher is more varied", 0, 20),
        _P("mirostat_eta", "float", "mirostat", "Mirostat's learning rate", 0, 1),
        _P("logit_bias", "bias", "bias", "add a bias to token ids: -100 bans a token, 100 forces it"),
        _P("seed", "int", "sampling", "sampling seed, for repeatable output where the backend honours it", 0, None),
        _P("max_tokens", "int", "length", "the most tokens to generate per branch", 1, None),
        _P("stop", "strings", "length", "stop at any of these strings (they are not kept in the text)"),
        _P("ignore_eos", "bool", "length", "keep going past the end-of-text token (llama.cpp)", neutral=False),
        _P("logprobs", "count_or_flag", "output", "record token log-probabilities: how many alternatives per token", 0, 100),
        _P("n", "int", "request", "how many children to generate (a request setting, not a sampler)", 1, 256, request=True),
    )
}  # fmt: skip

# Names other tools use, accepted on input and stored canonically.
ALIASES: Mapping[str, str] = {
    "temp": "temperature",
    "repeat_penalty": "repetition_penalty",
    "rep_pen": "repetition_penalty",
    "max_new_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "n_predict": "max_tokens",
    "num_predict": "max_tokens",
    "stop_sequences": "stop",
    "top_logprobs": "logprobs",
    "n_probs": "logprobs",
}

# loom's own defaults, the lowest layer. Without a length, OpenAI-style servers stop
# after 16 tokens and llama.cpp never stops; 256 matches the Anthropic backend's default.
BUILTIN: Mapping[str, Any] = {"max_tokens": 256}

# Backend families pass-through keys are commonly addressed to (others are allowed).
FAMILIES = (
    "openai",
    "openai-chat",
    "anthropic",
    "embedded",
    "llamacpp",
    "vllm",
    "sglang",
    "ollama",
    "tabbyapi",
    "together",
    "openrouter",
    "deepseek",
    "mistral",
)

_NAMESPACE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_UNSET = frozenset({"none", "null", "unset"})
_TRUE = frozenset({"true", "yes", "on"})
_FALSE = frozenset({"false", "no", "off"})


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def canonical_name(key: str) -> str:
    """The canonical spelling of a parameter name: aliases resolved, `top-p` → `top_p`.

    Namespaced keys (`family.field`) keep their spelling. Raises InvalidOperation for an
    unknown name, suggesting the closest known one.
    """
    key = key.strip()
    if "." in key:
        namespace, _, name = key.partition(".")
        if not _NAMESPACE.fullmatch(namespace) or not name:
            raise InvalidOperation(
                f"bad pass-through key {key!r}: expected BACKEND.FIELD, e.g. llamacpp.cache_prompt"
            )
        namespace = namespace.lower()
        if namespace not in FAMILIES:
            # Open-ended, but a near miss is a typo that would be silently never sent.
            close = difflib.get_close_matches(namespace, [*FAMILIES, *PARAMS], n=1, cutoff=0.75)
            if close:
                raise InvalidOperation(
                    f"unknown backend or parameter {namespace!r} in {key!r} (did you mean {close[0]}?)"
                )
        return f"{namespace}.{name}"
    name = key.lower().replace("-", "_")
    name = ALIASES.get(name, name)
    if name in PARAMS:
        return name
    close = difflib.get_close_matches(name, [*PARAMS, *ALIASES], n=1)
    hint = f" (did you mean {ALIASES.get(close[0], close[0])}?)" if close else ""
    raise InvalidOperation(
        f"unknown parameter {key!r}{hint}; backend-only settings go as BACKEND.FIELD, "
        "e.g. llamacpp.cache_prompt"
    )


def validate(params: Mapping[str, Any]) -> dict[str, Any]:
    """Check and coerce parameters; returns them with canonical names and typed values.

    Strings from a command line are converted by the parameter's type ("0.7" → 0.7,
    "40" → 40, "true" → True; a stop string gets its `\\n`-style escapes decoded, and
    a JSON list gives several). "none", "null" or "unset" give None: the parameter is
    unset. A nested table under a non-parameter key (as TOML writes
    `llamacpp.cache_prompt = false`) becomes namespaced keys. Errors are one line
    naming the parameter and what it accepts.
    """
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for raw_key, value in _flatten(params):
        key = canonical_name(raw_key)
        if key in spelled:
            raise InvalidOperation(f"{key} is given twice (as {spelled[key]!r} and {raw_key!r})")
        spelled[key] = raw_key
        out[key] = _passthrough_value(key, value) if "." in key else _coerce(PARAMS[key], value)
    return out


def _flatten(params: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    for key, value in params.items():
        if not isinstance(key, str):
            raise InvalidOperation(f"parameter names are text, got {key!r}")
        bare = key.strip().lower().replace("-", "_")
        if isinstance(value, Mapping) and "." not in key and ALIASES.get(bare, bare) not in PARAMS:
            for sub, sub_value in value.items():
                yield f"{key.strip()}.{sub}", sub_value
        else:
            yield key, value


def _passthrough_value(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.lower() in _UNSET:
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for convert in (int, float):
        try:
            number = convert(text)
        except ValueError:
            continue
        if math.isfinite(number):
            return number
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise InvalidOperation(f"{key} looks like JSON but is not valid: {value!r}") from None
    return value


def _fail(param: Param, value: Any) -> InvalidOperation:
    return InvalidOperation(f"{param.name} must be {param.expectation()} (got {value!r})")


def _coerce(param: Param, value: Any) -> Any:
    if value is None or (isinstance(value, str) and value.strip().lower() in _UNSET):
        return None
    match param.kind:
        case "float" | "int":
            return _number(param, value)
        case "bool":
            return _bool(param, value)
        case "count_or_flag":
            # "1" is a count here, not a flag: only words and booleans are flags.
            flag = parse_flag(value) if isinstance(value, bool | str) else None
            return flag if flag is not None else _number(param, value)
        case "strings":
            return _strings(param, value)
        case "bias":
            return _bias(param, value)
    raise AssertionError(param.kind)  # pragma: no cover


def parse_flag(value: Any) -> bool | None:
    """True or False from a bool or its words (true/yes/on, false/no/off); None otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        return True if word in _TRUE else False if word in _FALSE else None
    return None


def _bool(param: Param, value: Any) -> bool:
    flag = parse_flag(value)
    if flag is None and isinstance(value, int | str) and str(value).strip() in ("0", "1"):
        flag = str(value).strip() == "1"
    if flag is None:
        raise _fail(param, value)
    return flag


def _number(param: Param, value: Any) -> int | float:
    if isinstance(value, bool):
        raise _fail(param, value)
    number: float
    if isinstance(value, int | float):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _fail(param, value) from None
    else:
        raise _fail(param, value)
    if not math.isfinite(number) or not param.contains(number):
        raise _fail(param, value)
    if param.kind == "float":
        return float(number)
    if isinstance(number, float) and not number.is_integer():
        raise _fail(param, value)
    return int(number)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}


def decode_escapes(text: str) -> str:
    r"""`\n`, `\t`, `\r`, `\\` typed on a command line, as the characters they stand for."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), text)


def _strings(param: Param, value: Any) -> list[str]:
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise _fail(param, value) from None
        else:
            value = [decode_escapes(value)]
    if not isinstance(value, list | tuple) or not all(isinstance(s, str) and s for s in value):
        raise _fail(param, value)
    return list(value)


def _bias(param: Param, value: Any) -> dict[str, float]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise _fail(param, value) from None
        else:
            pairs = [item.rpartition(":") for item in text.split(",") if item.strip()]
            if not pairs or any(not sep or not tok.strip() for tok, sep, _ in pairs):
                raise _fail(param, value)
            value = {tok.strip(): bias for tok, _, bias in pairs}
    if not isinstance(value, Mapping):
        raise _fail(param, value)
    out: dict[str, float] = {}
    for token, bias in value.items():
        try:
            number = float(bias)
        except (TypeError, ValueError):
            raise _fail(param, value) from None
        if isinstance(bias, bool) or not -100 <= number <= 100:
            raise _fail(param, value)
        out[str(token)] = number
    return out


def parse_assignments(items: Iterable[str], *, flag: str = "--param") -> dict[str, str]:
    """`KEY=VALUE` strings (as typed after a flag) into a dict, values still text.

    Each name and value is checked here, where it was typed: an unknown parameter or a
    value of the wrong type is a usage error (exit 2) naming the flag.
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"bad {flag} {item!r}: expected KEY=VALUE, e.g. temperature=0.8")
        try:
            validate({key.strip(): value})
        except InvalidOperation as exc:
            raise UsageError(f"bad {flag} {item!r}: {exc.message}") from None
        out[key.strip()] = value
    return out


# ---------------------------------------------------------------------------
# Pass-through to one backend family
# ---------------------------------------------------------------------------


def backend_families(model: ModelConfig) -> tuple[str, ...]:
    """The namespaces whose pass-through keys reach `model`'s backend.

    The provider's own families, plus `options.family` (a name or list) for an
    OpenAI-compatible server that is really vLLM, llama.cpp, Ollama…
    """
    from loom.generation.backends import PROVIDERS

    declared = model.options.get("family", ())
    extra = (declared,) if isinstance(declared, str) else tuple(declared)
    known = PROVIDERS.get(model.provider)
    own = known.families if known is not None else (model.provider,)
    return tuple(dict.fromkeys((*own, *extra)))


def split_passthrough(
    params: Mapping[str, Any], backend_family: str | Collection[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(canonical parameters, extra body fields for this backend family).

    `family.field` keys become `field` in extra when `family` is (one of) the given
    family names and are left out otherwise; unset (None) values are left out.
    """
    families = {backend_family} if isinstance(backend_family, str) else set(backend_family)
    canonical: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        namespace, dot, name = key.partition(".")
        if not dot:
            canonical[key] = value
        elif namespace in families:
            extra[name] = value
    return canonical, extra


# ---------------------------------------------------------------------------
# Layered resolution
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExplainRow:
    """Which layer set a parameter, and the layers it overrode (nearest first)."""

    param: str
    value: Any  # None: unset by `layer`
    layer: str
    overridden: tuple[tuple[str, Any], ...] = ()
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "param": self.param,
            "value": self.value,
            "layer": self.layer,
            "overridden": [{"layer": name, "value": value} for name, value in self.overridden],
        }


@dataclass(frozen=True)
class Resolved:
    """Parameters folded from layers, with the layer each value came from."""

    values: dict[str, Any]  # set parameters only (unset ones are absent)
    source: dict[str, str]  # param -> the layer that set its value
    trail: dict[str, tuple[tuple[str, Any], ...]] = field(default_factory=dict)  # lowest first
    layers: tuple[str, ...] = ()

    def explain(self) -> list[ExplainRow]:
        """One row per parameter any layer mentioned, in table order, pass-through last."""
        order = {name: i for i, name in enumerate(PARAMS)}
        rows = []
        for param in sorted(self.trail, key=lambda p: (order.get(p, len(order)), p)):
            *earlier, (layer, value) = self.trail[param]
            spec = PARAMS.get(param)
            rows.append(
                ExplainRow(
                    param,
                    value,
                    layer,
                    tuple(reversed(earlier)),
                    spec.description if spec else "passed through to the backend as is",
                )
            )
        return rows


def resolve(layers: Sequence[Layer]) -> Resolved:
    """Fold layers (lowest first); later layers win. Each layer is validated on the way.

    Errors name the layer: "preset:creative: temperature must be … (got 9)".
    """
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    trail: dict[str, list[tuple[str, Any]]] = {}
    for name, params in layers:
        try:
            checked = validate(params)
        except InvalidOperation as exc:
            raise InvalidOperation(f"{name}: {exc.message}") from None
        for key, value in checked.items():
            trail.setdefault(key, []).append((name, value))
            if value is None:
                values.pop(key, None)
                source.pop(key, None)
            else:
                values[key] = value
                source[key] = name
    return Resolved(
        values, source, {k: tuple(v) for k, v in trail.items()}, tuple(n for n, _ in layers)
    )


def format_explain(rows: Iterable[ExplainRow]) -> str:
    """A plain table: parameter, value, layer, and what it overrode."""
    lines = []
    for row in rows:
        value = "(unset)" if row.value is None else json.dumps(row.value, ensure_ascii=False)
        over = ", ".join(
            f"{layer}={json.dumps(v, ensure_ascii=False)}" for layer, v in row.overridden
        )
        lines.append(
            f"{row.param:<20} {value:<12} {row.layer}" + (f"  (over {over})" if over else "")
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Gathering the layers of one generation
# ---------------------------------------------------------------------------

PresetParams = Callable[[str], Mapping[str, Any]]


def sticky_layers(doc: Document, node_id: str) -> list[tuple[str, dict[str, Any]]]:
    """`(sticky:<id>, overrides)` for the node and its ancestors that have any, root first."""
    out = []
    for ancestor in doc.path_ids(node_id):
        sticky = doc.nodes[ancestor].get("meta", {}).get(STICKY_KEY)
        if isinstance(sticky, Mapping) and sticky:
            out.append((f"sticky:{ancestor}", dict(sticky)))
    return out


@dataclass(frozen=True)
class LayerInputs:
    """Everything but the model and presets' contents that a generation's layers need.

    Built once per command (`from_doc`), then `layers(model)` for each model, since the
    model layer (and a modulation's extra presets) differ between children.
    """

    user: Mapping[str, Any] = field(default_factory=dict)
    presets: tuple[str, ...] = ()
    document: Mapping[str, Any] = field(default_factory=dict)
    sticky: tuple[tuple[str, Mapping[str, Any]], ...] = ()  # (layer name, overrides), root first
    flags: Mapping[str, Any] = field(default_factory=dict)
    depth: int = 0  # of the node being continued (roots are 0), for schedules

    @classmethod
    def from_doc(
        cls,
        doc: Document,
        node_id: str,
        *,
        presets: Sequence[str] = (),
        flags: Mapping[str, Any] | None = None,
        user_params: Mapping[str, Any] | None = None,
    ) -> LayerInputs:
        doc.node(node_id)
        document = doc.defaults.get("params", {})
        if not isinstance(document, Mapping):
            raise InvalidOperation("the document's defaults.params must be a table of parameters")
        return cls(
            user=dict(user_params or {}),
            presets=tuple(presets),
            document=dict(document),
            sticky=tuple(sticky_layers(doc, node_id)),
            flags=dict(flags or {}),
            depth=len(doc.path_ids(node_id)) - 1,
        )

    def layers(
        self,
        model: ModelConfig | None = None,
        *,
        extra_presets: Sequence[str] = (),
        preset_params: PresetParams | None = None,
        recommended: Mapping[str, Any] | None = None,
    ) -> list[Layer]:
        """The layers in order. `recommended` (the capability table's advice) sits under
        the model's own params in the model layer; `extra_presets` come after `presets`."""
        names = (*self.presets, *extra_presets)
        if names and preset_params is None:
            from loom.sampling.presets import load_presets  # presets import this module

            preset_params = load_presets().params
        model_params = {**(recommended or {}), **(model.params if model else {})}
        out: list[Layer] = [
            ("builtin", dict(BUILTIN)),
            ("model", model_params),
            ("user", self.user),
        ]
        out += [(f"preset:{name}", preset_params(name)) for name in names if preset_params]
        out.append(("document", self.document))
        out += list(self.sticky)
        out.append(("flags", self.flags))
        return out


def layers_for(
    doc: Document,
    node_id: str,
    model: ModelConfig | None,
    presets: Sequence[str] = (),
    flags: Mapping[str, Any] | None = None,
    user_params: Mapping[str, Any] | None = None,
) -> list[Layer]:
    """The layers for generating under `node_id` with `model`, lowest first."""
    inputs = LayerInputs.from_doc(
        doc, node_id, presets=presets, flags=flags, user_params=user_params
    )
    return inputs.layers(model)


# ---------------------------------------------------------------------------
# Sticky overrides (journaled, so undoable)
# ---------------------------------------------------------------------------


def set_sticky(doc: Document, node_id: str, params: Mapping[str, Any]) -> Node:
    """Add or change sticky overrides on a node; they apply to its whole subtree.

    A None value is kept: it unsets the parameter for the subtree.
    """
    from loom import ops
    from loom.redact import has_secret, secret_key

    for name, value in params.items():
        if ("." in name and secret_key(name.rpartition(".")[2])) or (
            isinstance(value, str) and has_secret(value)
        ):
            raise UsageError(
                f"{name} would keep a credential in the document, which never holds one "
                "(give a model its key through its key_env variable)"
            )
    current = dict(doc.node(node_id).meta.get(STICKY_KEY) or {})
    updated = {**current, **validate(params)}
    if updated == current:
        return doc.node(node_id)
    return ops.set_meta(doc, node_id, STICKY_KEY, updated or None)


def clear_sticky(doc: Document, node_id: str, keys: Iterable[str] | None = None) -> Node:
    """Remove some sticky overrides from a node (all of them when `keys` is None)."""
    from loom import ops

    current = dict(doc.node(node_id).meta.get(STICKY_KEY) or {})
    try:
        drop = set(current) if keys is None else {canonical_name(k) for k in keys}
    except InvalidOperation as exc:  # names the caller typed (`params --unset`)
        raise UsageError(exc.message) from None
    updated = {k: v for k, v in current.items() if k not in drop}
    if updated == current:
        return doc.node(node_id)
    return ops.set_meta(doc, node_id, STICKY_KEY, updated or None)
