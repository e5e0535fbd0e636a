"""Modulation: from one generation's parameter layers to one `Branch` per child.

Siblings that differ on purpose are how a loom explores: this module spreads,
crosses, jitters, mixes and schedules sampler parameters across the children of one
generation, and records on each child exactly what it did. The CLI parses its flags
into `ModulationSpecs` (`ModulationSpecs.parse`) and calls `plan`.

Flag syntax (several assignments may share one flag, separated by spaces):

  --sweep PARAM=START:END[:log]    spread each group's children evenly from START to END,
                                   ends included (1 child: the midpoint); `log` spaces
                                   them geometrically. Several sweeps move together.
  --grid PARAM=V1,V2[,…]           the Cartesian product of all grid axes; a JSON list
                                   (`stop=["\\n","\\n\\n"]`) gives values containing commas.
  --per-cell K                     K children per grid cell.
  --jitter PARAM=CENTRE±SPREAD     a uniform draw per child in CENTRE±SPREAD (`+-` works
                                   too), clamped to the parameter's range. `PARAM=±SPREAD`
                                   jitters around the value otherwise in effect.
  --mix [COUNT@]TARGET[,…]         split children across models and/or presets. TARGET is
                                   MODEL, MODEL:PRESET[+PRESET…], or PRESET[+PRESET…]
                                   (on the first -m model).
  --schedule PARAM=FROM->TO@DEPTH  follow the depth of the node being continued: FROM at
             PARAM=FROM->TO@D0:D1  depth 0 (or D0), TO at DEPTH (or D1), linear between,
                                   held past either end. E.g. temperature=1.2->0.7@8 cools
                                   a story down over its first 8 levels.
  --random-preset                  a different preset per child, dealt from a shuffled
                                   deck of the drawable presets (see presets.toml `random`).

Counting rules. Without --mix every model in `models` is a group of N children; with
--mix each entry is a group: a COUNT is that entry's size, entries without one share
what N leaves (evenly, the remainder to the first ones), and N is ignored when every
entry has a count. A grid splits each group's N across its cells (evenly, remainder to
the first cells; N below the number of cells is an error); --per-cell K makes every
group cells × K instead; with neither N nor K given, each cell gets one child. Sweeps
and jitters run within each cell, so every model and every cell sees the whole range.

Order of application for one child: the resolved layers (with the mix entry's and the
random draw's presets in the preset slot), then schedule, grid cell, sweep, jitter.
A parameter may be set by one of schedule / grid / sweep / centred jitter; a relative
jitter (`±SPREAD`) may sit on top of any of them.

Everything is deterministic given `rng_seed`; without one, a seed is drawn once and
recorded on every child that used randomness, so any plan can be replayed. With no
modulation the children of a model are identical, so the engine sends them as one
request with `n`.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loom.config import ModelConfig
from loom.emulation.capabilities import ModelCaps
from loom.emulation.framing import seed_phrase
from loom.errors import InvalidOperation, LoomError, UsageError
from loom.generation.engine import Branch
from loom.sampling.params import (
    PARAMS,
    LayerInputs,
    Param,
    backend_families,
    canonical_name,
    resolve,
    split_passthrough,
    validate,
)
from loom.sampling.presets import PresetBook, load_presets

__all__ = [
    "Grid",
    "Jitter",
    "MixEntry",
    "ModulationSpecs",
    "Schedule",
    "Sweep",
    "needs_prompt_side_variety",
    "parse_grid",
    "parse_jitter",
    "parse_mix",
    "parse_schedule",
    "parse_sweep",
    "plan",
    "seed_phrase",
]

# Where one flag value holds several assignments: split at spaces before `name=`.
_NEXT_ASSIGNMENT = re.compile(r"\s+(?=[A-Za-z_][\w.-]*\s*=)")
_DIGITS = 6  # modulated floats are rounded: 0.8, not 0.8000000000000002
_JITTER_DIGITS = 4  # a random draw needs no more precision than a sampler can feel


def _bad(flag: str, spec: str, why: str) -> UsageError:
    # A spec is what someone typed after a flag: a bad one is a usage error (exit 2).
    return UsageError(f"bad {flag} {spec!r}: {why}")


def _assignments(flag: str, text: str, example: str) -> list[tuple[str, str, str]]:
    """(assignment text, name, value) for each `name=value` in one flag value."""
    out = []
    for part in _NEXT_ASSIGNMENT.split(text.strip()):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise _bad(flag, part or text, f"expected {example}")
        out.append((part, name.strip(), value.strip()))
    return out


def _param(flag: str, spec: str, name: str, *, numeric: bool = True) -> Param:
    try:
        key = canonical_name(name)
    except InvalidOperation as exc:
        raise _bad(flag, spec, exc.message.split(";")[0]) from None
    param = PARAMS.get(key)
    if param is None or param.request:
        raise _bad(flag, spec, f"{name} is not a sampler parameter loom can vary")
    if numeric and not param.numeric:
        raise _bad(flag, spec, f"{param.name} is not numeric")
    return param


def _value(flag: str, spec: str, param: Param, text: Any) -> Any:
    try:
        return validate({param.name: text})[param.name]
    except InvalidOperation as exc:
        raise _bad(flag, spec, exc.message) from None


def _number(flag: str, spec: str, param: Param, text: str) -> float:
    value = _value(flag, spec, param, text)
    if value is None:
        raise _bad(flag, spec, f"{param.name} needs a number here")
    return float(value)


def _tidy(param: Param, value: float, lo: float, hi: float, digits: int = _DIGITS) -> float | int:
    """A modulated value as sent: rounded (whole for integer parameters), within [lo, hi]."""
    value = min(max(round(value, digits), lo), hi)
    if param.kind == "int":
        return int(min(max(round(value), math.ceil(lo)), math.floor(hi)))
    return value + 0.0  # no -0.0


# ---------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sweep:
    """`--sweep PARAM=START:END[:log]`: evenly spaced values, ends included."""

    param: str
    start: float
    end: float
    log: bool = False
    spec: str = ""

    def value(self, position: int, count: int) -> float | int:
        """The value for child `position` of `count` (one child: the midpoint)."""
        if count < 1 or not 0 <= position < count:
            raise ValueError(f"position {position} of {count}")
        param = PARAMS[self.param]
        t = 0.5 if count == 1 else position / (count - 1)
        if t in (0, 1):  # the ends exactly as given
            end = self.start if t == 0 else self.end
            return int(end) if param.kind == "int" else end
        if self.log:
            raw = math.exp(math.log(self.start) + t * (math.log(self.end) - math.log(self.start)))
        else:
            raw = self.start + t * (self.end - self.start)
        lo, hi = sorted((self.start, self.end))
        return _tidy(param, raw, lo, hi)


@dataclass(frozen=True)
class Grid:
    """`--grid PARAM=V1,V2,…`: one axis of the Cartesian product."""

    param: str
    values: tuple[Any, ...]
    spec: str = ""


@dataclass(frozen=True)
class Jitter:
    """`--jitter PARAM=CENTRE±SPREAD` (or `±SPREAD` around the value in effect)."""

    param: str
    spread: float
    center: float | None = None
    spec: str = ""

    def draw(self, center: float, rng: random.Random) -> float | int:
        param = PARAMS[self.param]
        lo, hi = param.clamp(center - self.spread), param.clamp(center + self.spread)
        draw = rng.uniform(center - self.spread, center + self.spread)
        return _tidy(param, draw, lo, hi, _JITTER_DIGITS)


@dataclass(frozen=True)
class MixEntry:
    """`[COUNT@]TARGET` of `--mix`; TARGET is resolved against models and presets in `plan`."""

    target: str
    count: int | None = None
    spec: str = ""


@dataclass(frozen=True)
class Schedule:
    """`--schedule PARAM=FROM->TO@[D0:]D1`: a value that follows the node's depth."""

    param: str
    start: float
    end: float
    to_depth: int
    from_depth: int = 0
    spec: str = ""

    def value(self, depth: int) -> float | int:
        span = self.to_depth - self.from_depth
        t = min(max((depth - self.from_depth) / span, 0.0), 1.0)
        raw = self.start + t * (self.end - self.start)
        lo, hi = sorted((self.start, self.end))
        return _tidy(PARAMS[self.param], raw, lo, hi)


def parse_sweep(text: str) -> tuple[Sweep, ...]:
    """`temperature=0.6:1.4`, `temperature=0.5:2:log`, several separated by spaces."""
    out = []
    for spec, name, value in _assignments("--sweep", text, "PARAM=START:END[:log]"):
        param = _param("--sweep", spec, name)
        parts = [p.strip() for p in value.split(":")]
        scale = parts.pop() if len(parts) == 3 else "linear"
        if len(parts) != 2 or scale not in ("log", "linear", "lin"):
            raise _bad("--sweep", spec, "expected PARAM=START:END[:log], e.g. temperature=0.6:1.4")
        start, end = (_number("--sweep", spec, param, p) for p in parts)
        if scale == "log" and (start <= 0 or end <= 0):
            raise _bad("--sweep", spec, "a log sweep needs both ends above 0")
        out.append(Sweep(param.name, start, end, scale == "log", spec))
    return tuple(out)


def parse_grid(text: str) -> tuple[Grid, ...]:
    """`temperature=0.8,1.2 min_p=0.02,0.1`: one axis per assignment."""
    out = []
    for spec, name, value in _assignments("--grid", text, "PARAM=V1,V2,…"):
        param = _param("--grid", spec, name, numeric=False)
        if value.startswith("["):
            try:
                raw = json.loads(value)
            except json.JSONDecodeError:
                raise _bad("--grid", spec, "the value list is not valid JSON") from None
            items = raw if isinstance(raw, list) else [raw]
        else:
            items = [v.strip() for v in value.split(",")]
        if not items or any(v == "" for v in items):
            raise _bad("--grid", spec, "expected PARAM=V1,V2,… with no empty values")
        out.append(Grid(param.name, tuple(_value("--grid", spec, param, v) for v in items), spec))
    return tuple(out)


_PLUS_MINUS = re.compile(r"\s*(?:±|\+/-|\+-)\s*")


def parse_jitter(text: str) -> tuple[Jitter, ...]:
    """`temperature=1.0±0.2`, `temperature=1.0+-0.2`, or `temperature=±0.2` (relative)."""
    out = []
    for spec, name, value in _assignments("--jitter", text, "PARAM=CENTRE±SPREAD"):
        param = _param("--jitter", spec, name)
        parts = _PLUS_MINUS.split(value, maxsplit=1)
        if len(parts) != 2 or not parts[1]:
            raise _bad("--jitter", spec, "expected PARAM=CENTRE±SPREAD, e.g. temperature=1.0±0.2")
        center = _number("--jitter", spec, param, parts[0]) if parts[0] else None
        try:
            spread = float(parts[1])
        except ValueError:
            raise _bad("--jitter", spec, f"the spread {parts[1]!r} is not a number") from None
        if not math.isfinite(spread) or spread < 0:
            raise _bad("--jitter", spec, "the spread must be a number ≥ 0")
        out.append(Jitter(param.name, spread, center, spec))
    return tuple(out)


_MIX_ENTRY = re.compile(r"(?:(?P<count>\d+)\s*@\s*)?(?P<target>\S.*)")


def parse_mix(text: str) -> tuple[MixEntry, ...]:
    """`2@modelA:creative,3@modelB`, `creative,precise` (counts optional)."""
    out = []
    for part in text.split(","):
        spec = part.strip()
        match = _MIX_ENTRY.fullmatch(spec)
        if not match or "@" in match["target"]:
            raise _bad(
                "--mix", spec or text, "expected [COUNT@]MODEL[:PRESET], e.g. 2@claude:creative"
            )
        count = None if match["count"] is None else int(match["count"])
        if count == 0:
            raise _bad("--mix", spec, "a count must be at least 1")
        out.append(MixEntry(match["target"].strip(), count, spec))
    return tuple(out)


_SCHEDULE = re.compile(
    r"(?P<start>[^@]+?)\s*(?:->|→)\s*(?P<end>[^@]+?)\s*@\s*(?:(?P<d0>\d+)\s*:\s*)?(?P<d1>\d+)"
)


def parse_schedule(text: str) -> tuple[Schedule, ...]:
    """`temperature=1.2->0.7@8` (depths 0→8) or `temperature=1.2->0.7@4:12` (depths 4→12)."""
    out = []
    example = "PARAM=FROM->TO@DEPTH, e.g. temperature=1.2->0.7@8"
    for spec, name, value in _assignments("--schedule", text, example):
        param = _param("--schedule", spec, name)
        match = _SCHEDULE.fullmatch(value)
        if not match:
            raise _bad("--schedule", spec, f"expected {example}")
        start, end = (_number("--schedule", spec, param, match[k]) for k in ("start", "end"))
        d0, d1 = int(match["d0"] or 0), int(match["d1"])
        if d1 <= d0:
            raise _bad("--schedule", spec, "the end depth must be after the start depth")
        out.append(Schedule(param.name, start, end, d1, d0, spec))
    return tuple(out)


def _texts(values: str | Iterable[str]) -> tuple[str, ...]:
    # One string is one flag value, not a sequence of characters.
    return (values,) if isinstance(values, str) else tuple(values)


@dataclass(frozen=True)
class ModulationSpecs:
    """Every modulation of one generation, parsed. Empty: N identical children per model."""

    sweeps: tuple[Sweep, ...] = ()
    grid: tuple[Grid, ...] = ()
    per_cell: int | None = None
    jitters: tuple[Jitter, ...] = ()
    mix: tuple[MixEntry, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    random_preset: bool = False

    @classmethod
    def parse(
        cls,
        *,
        sweep: str | Iterable[str] = (),
        grid: str | Iterable[str] = (),
        per_cell: int | None = None,
        jitter: str | Iterable[str] = (),
        mix: str | Iterable[str] = (),
        schedule: str | Iterable[str] = (),
        random_preset: bool = False,
    ) -> ModulationSpecs:
        """From the flag values as typed (each flag may be repeated)."""
        specs = cls(
            sweeps=tuple(s for text in _texts(sweep) for s in parse_sweep(text)),
            grid=tuple(g for text in _texts(grid) for g in parse_grid(text)),
            per_cell=per_cell,
            jitters=tuple(j for text in _texts(jitter) for j in parse_jitter(text)),
            mix=tuple(m for text in _texts(mix) for m in parse_mix(text)),
            schedules=tuple(s for text in _texts(schedule) for s in parse_schedule(text)),
            random_preset=random_preset,
        )
        specs.check()
        return specs

    @property
    def empty(self) -> bool:
        return not (
            self.sweeps
            or self.grid
            or self.jitters
            or self.mix
            or self.schedules
            or self.random_preset
        )

    def check(self) -> None:
        """Refuse specs that contradict each other (one parameter set twice)."""
        if self.per_cell is not None and self.per_cell < 1:
            raise UsageError(f"--per-cell must be at least 1, got {self.per_cell}")
        if self.per_cell is not None and not self.grid:
            raise UsageError("--per-cell needs a --grid to divide into cells")
        owner: dict[str, str] = {}
        setters: list[tuple[str, str, str]] = [
            *(("--schedule", s.param, s.spec) for s in self.schedules),
            *(("--grid", g.param, g.spec) for g in self.grid),
            *(("--sweep", s.param, s.spec) for s in self.sweeps),
            *(("--jitter", j.param, j.spec) for j in self.jitters if j.center is not None),
        ]
        for flag, param, spec in setters:
            if param in owner:
                raise UsageError(
                    f"{param} is set by both {owner[param]} and {flag} {spec!r}: choose one"
                )
            owner[param] = f"{flag} {spec!r}"
        jittered = [j.param for j in self.jitters]
        for param in jittered:
            if jittered.count(param) > 1:
                raise UsageError(f"{param} is jittered twice: give one --jitter per parameter")

    def describe(self) -> list[str]:
        """The specs as flags, for the record."""
        out = [f"--schedule {s.spec}" for s in self.schedules]
        out += [f"--grid {g.spec}" for g in self.grid]
        out += [f"--per-cell {self.per_cell}"] if self.per_cell is not None else []
        out += [f"--sweep {s.spec}" for s in self.sweeps]
        out += [f"--jitter {j.spec}" for j in self.jitters]
        out += [f"--mix {','.join(m.spec for m in self.mix)}"] if self.mix else []
        out += ["--random-preset"] if self.random_preset else []
        return out


# ---------------------------------------------------------------------------
# Prompt-side variety
# ---------------------------------------------------------------------------


def needs_prompt_side_variety(caps: ModelCaps | None) -> bool:
    """Whether siblings must differ through the prompt: the model fixes its sampling
    (accepts no temperature, or only one value), so sampler modulation cannot reach it.
    The phrase itself is `seed_phrase(rng_seed, child_index)` (from emulation)."""
    return caps is not None and caps.fixed_sampling


# ---------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------


@dataclass
class _Group:
    """Children that share a model and presets: a model without --mix, or one mix entry."""

    model: ModelConfig
    presets: tuple[str, ...] = ()
    requested: int | None = None  # None: not given (one per cell)
    mix: str | None = None
    sizes: list[int] = field(default_factory=list)  # children per grid cell


class _Seed:
    """The plan's seed, drawn only if randomness is needed and none was given."""

    def __init__(self, given: int | None) -> None:
        self.given = given
        self.value = given

    def get(self) -> int:
        if self.value is None:
            self.value = random.SystemRandom().randrange(2**32)
        return self.value


def _rng(*parts: object) -> random.Random:
    # Seeded by a string: stable across runs and platforms, independent per purpose.
    return random.Random("loom-modulate/" + "/".join(str(p) for p in parts))


def _find_model(
    name: str, models: Sequence[ModelConfig], lookup: Callable[[str], ModelConfig] | None
) -> ModelConfig | None:
    for model in models:
        if model.name == name:
            return model
    if lookup is None:
        return None
    try:
        return lookup(name)
    except LoomError:
        return None


def _mix_target(
    entry: MixEntry,
    models: Sequence[ModelConfig],
    book: PresetBook,
    lookup: Callable[[str], ModelConfig] | None,
) -> tuple[ModelConfig, tuple[str, ...]]:
    """MODEL, MODEL:PRESET[+PRESET…] or PRESET[+PRESET…]; model names may hold ':'."""
    head, sep, tail = entry.target.rpartition(":")
    names = tuple(tail.split("+")) if sep else ()
    if names and all(name in book for name in names):
        model = _find_model(head, models, lookup) if head else (models[0] if models else None)
        if model is not None:
            return model, names
    model = _find_model(entry.target, models, lookup)
    if model is not None:
        return model, ()
    names = tuple(entry.target.split("+"))
    if all(name in book for name in names):
        if not models:
            raise _bad("--mix", entry.spec, "a preset-only entry needs a model (-m)")
        return models[0], names
    raise _bad("--mix", entry.spec, f"{entry.target!r} names no known model or preset")


def _groups(
    n: int | None,
    models: Sequence[ModelConfig],
    specs: ModulationSpecs,
    book: PresetBook,
    lookup: Callable[[str], ModelConfig] | None,
) -> list[_Group]:
    if not specs.mix:
        if not models:
            raise InvalidOperation("no model to generate with")
        return [_Group(m, requested=n) for m in models]
    groups = [
        _Group(*_mix_target(e, models, book, lookup), requested=e.count, mix=e.spec)
        for e in specs.mix
    ]
    free = [g for g in groups if g.requested is None]
    if free and n is not None:
        left = n - sum(g.requested or 0 for g in groups)
        if left < len(free):
            raise UsageError(
                f"n={n} leaves {max(left, 0)} children for {len(free)} --mix entries "
                "without a count: raise n or give every entry a count"
            )
        for i, group in enumerate(free):
            group.requested = left // len(free) + (1 if i < left % len(free) else 0)
    return groups


def _cells(grid: Sequence[Grid]) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = [{}]
    for axis in grid:
        cells = [{**cell, axis.param: value} for cell in cells for value in axis.values]
    return cells


def _sizes(group: _Group, cells: int, per_cell: int | None) -> list[int]:
    if per_cell is not None:
        return [per_cell] * cells
    if group.requested is None:
        return [1] * cells
    if group.requested < cells:
        raise UsageError(
            f"{group.requested} children cannot fill the grid's {cells} cells: "
            f"ask for at least {cells} (ideally a multiple), or use --per-cell"
        )
    base, extra = divmod(group.requested, cells)
    return [base + (1 if c < extra else 0) for c in range(cells)]


def _default_n(
    n: int | None, inputs: LayerInputs, model: ModelConfig | None, book: PresetBook
) -> int | None:
    """-n, else an `n` set in the layers (document, user config, preset), else None."""
    if n is not None:
        if n < 1:
            raise UsageError(f"n must be at least 1, got {n}")
        return n
    value = resolve(inputs.layers(model, preset_params=book.params)).values.get("n")
    return None if value is None else int(value)


def plan(
    n: int | None,
    models: Sequence[ModelConfig],
    inputs: LayerInputs | None = None,
    specs: ModulationSpecs | None = None,
    *,
    rng_seed: int | None = None,
    presets: PresetBook | None = None,
    model_lookup: Callable[[str], ModelConfig] | None = None,
    caps_lookup: Callable[[ModelConfig], ModelCaps | None] | None = None,
) -> list[Branch]:
    """One Branch per child: model, canonical params, pass-through extra, provenance.

    n: children per group (None: the layers' `n`, else one per group or grid cell).
    models: the -m models, in order (the first is the default for preset-only --mix).
    inputs: the layers' inputs (`LayerInputs.from_doc`), including the node's depth.
    presets: the preset book (default: `load_presets()`, read only when needed).
    model_lookup: resolves --mix model names not in `models` (e.g. `loom.config.get_model`).
    caps_lookup: the capability table's facts per model: `recommended` values join the
        model layer, and fixed-sampling models get a `seed_phrase` per child.
    """
    inputs = inputs or LayerInputs()
    specs = specs or ModulationSpecs()
    specs.check()
    needs_book = inputs.presets or specs.mix or specs.random_preset
    if presets is None:
        presets = load_presets() if needs_book else PresetBook({}, {})
    book = presets
    seed = _Seed(rng_seed)
    groups = _groups(
        _default_n(n, inputs, models[0] if models else None, book),
        models,
        specs,
        book,
        model_lookup,
    )
    cells = _cells(specs.grid)
    for group in groups:
        group.sizes = _sizes(group, len(cells), specs.per_cell)
    children: dict[str, int] = {}
    for group in groups:
        children[group.model.name] = children.get(group.model.name, 0) + sum(group.sizes)
    caps: dict[str, ModelCaps | None] = {}
    for group in groups:
        if group.model.name not in caps:
            caps[group.model.name] = caps_lookup(group.model) if caps_lookup else None
    planner = _Planner(
        inputs,
        specs,
        book,
        seed,
        caps,
        # One child needs no variety; several from a fixed-sampling model get it from the prompt.
        phrased={m for m, c in caps.items() if needs_prompt_side_variety(c) and children[m] > 1},
        pool=_random_pool(book, inputs, groups) if specs.random_preset else [],
    )
    slots = (
        (group, cell_index, cell, position, size)
        for group in groups
        for cell_index, (cell, size) in enumerate(zip(cells, group.sizes, strict=True))
        for position in range(size)
    )
    return [planner.branch(index, *slot) for index, slot in enumerate(slots)]


def _random_pool(book: PresetBook, inputs: LayerInputs, groups: Sequence[_Group]) -> list[str]:
    """Drawable presets, minus those already in effect (drawing them would change nothing)."""
    active = set(inputs.presets) | {p for g in groups for p in g.presets}
    pool = [name for name in book.random_pool() if name not in active]
    if not pool:
        raise InvalidOperation("--random-preset: no presets left to draw from")
    return pool


@dataclass
class _Planner:
    """What every child of one plan shares; `branch()` makes one child."""

    inputs: LayerInputs
    specs: ModulationSpecs
    book: PresetBook
    seed: _Seed
    caps: Mapping[str, ModelCaps | None]
    phrased: set[str]  # models whose children get a seed phrase
    pool: list[str]  # presets --random-preset deals from

    def deal(self, index: int) -> str | None:
        """Child `index`'s random preset: a shuffled deck dealt in order and reshuffled
        when spent, so the children see every preset before any repeats."""
        if not self.pool:
            return None
        round_, slot = divmod(index, len(self.pool))
        deck = list(self.pool)
        _rng("preset", self.seed.get(), round_).shuffle(deck)
        return deck[slot]

    def branch(
        self,
        index: int,
        group: _Group,
        cell_index: int,
        cell: Mapping[str, Any],
        position: int,
        size: int,
    ) -> Branch:
        inputs, specs, model = self.inputs, self.specs, group.model
        drawn = self.deal(index)
        presets = (*group.presets, *((drawn,) if drawn else ()))
        caps = self.caps[model.name]
        resolved = resolve(
            inputs.layers(
                model,
                extra_presets=presets,
                preset_params=self.book.params,
                recommended=caps.recommended if caps else None,
            )
        )
        values, sources = dict(resolved.values), dict(resolved.source)
        modulated: dict[str, Any] = {}
        used: list[str] = ["mix"] if group.mix else []

        def put(param: str, value: Any, modulator: str) -> None:
            if value is None:
                values.pop(param, None)
            else:
                values[param] = value
            modulated[param], sources[param] = value, modulator
            if modulator not in used:
                used.append(modulator)

        for schedule in specs.schedules:
            put(schedule.param, schedule.value(inputs.depth), "schedule")
        for param, value in cell.items():
            put(param, value, "grid")
        for sweep in specs.sweeps:
            put(sweep.param, sweep.value(position, size), "sweep")
        for jitter in specs.jitters:
            center = values.get(jitter.param) if jitter.center is None else jitter.center
            if center is None:
                center = PARAMS[jitter.param].neutral
            if center is None:
                why = f"{jitter.param} has no value to jitter around: give one"
                raise _bad("--jitter", jitter.spec, why)
            rng = _rng("jitter", self.seed.get(), index, jitter.param)
            put(jitter.param, jitter.draw(float(center), rng), "jitter")
        if drawn:
            used.append("random-preset")

        families = backend_families(model)
        canonical, extra = split_passthrough(values, families)
        params = {k: v for k, v in canonical.items() if not PARAMS[k].request}
        sent = [k for k in values if k in params or k.partition(".")[0] in families]

        record: dict[str, Any] = {}
        if not specs.empty:
            record.update(modulators=used, index=index, specs=specs.describe())
        if group.mix:
            record["mix"] = group.mix
        if specs.grid:
            record["cell"] = cell_index
        if modulated:
            record["values"] = modulated
        if specs.schedules:
            record["depth"] = inputs.depth
        if inputs.presets or presets:
            record["presets"] = [*inputs.presets, *presets]
        if drawn:
            record["random_preset"] = drawn
        if model.name in self.phrased:
            record.update(index=index, seed_phrase=seed_phrase(self.seed.get(), index))
        randomised = bool(drawn or specs.jitters or model.name in self.phrased)
        if randomised or (not specs.empty and self.seed.given is not None):
            record["rng_seed"] = self.seed.get()
        record["sources"] = {k: sources[k] for k in sent}
        return Branch(model=model, params=params, extra=extra, provenance=record)
