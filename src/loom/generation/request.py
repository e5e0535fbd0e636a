"""`GenerationRequest`: everything one generation is asked to do, as one value.

Front ends (the CLI's flags, the TUI's panel, an MCP tool call, an HTTP request)
build one request and make one call (`loom.agenerate` / `loom.generate`); planning
the children (parameter layers, modulation, emulation) happens inside the library.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from loom.errors import UsageError
from loom.generation.context import MODES, Context

if TYPE_CHECKING:
    from loom.sampling.modulate import ModulationSpecs

CURSOR_CHOICES = ("stay", "first", "last")
EMULATION_CHOICES = (
    "auto", "completion", "template", "prefill", "system", "fewshot", "off", "chat", "transcript",
)  # fmt: skip
CONVERSATION_METHODS = ("chat", "transcript")  # how a conversation is sent (say, reply)
MAX_N = 256
DEFAULT_N = 4  # children per model when neither the caller nor the document says
DEFAULT_TIMEOUT = 120.0  # seconds for the whole call, when neither the request nor a model says
MODULATION_KEYS = ("sweep", "grid", "per_cell", "jitter", "mix", "schedule", "random_preset")


@dataclass(frozen=True)
class GenerationRequest:
    """One generation: which node, how many children, from which models, with what.

    node: the node to continue (an id, a unique prefix, "@"); None: the cursor.
    n: children per model (None: the document's `defaults.n`, else 4; with a grid or a
        mix, as `loom.sampling.modulate.plan` counts).
    models: model names (see `loom models`); empty: the default model.
    params: the top parameter layer: canonical names (or aliases) to values, typed or as
        text ("0.8"); `family.key` passes a field through to one backend family.
    presets: presets layered under the document's defaults, later ones winning.
    modulation: how parameters vary across the children: a `ModulationSpecs`, or a mapping
        of its flag names to flag values ({"sweep": "temperature=0.6:1.4"}).
    emulate: how a chat model is made to continue text ("auto": from its capabilities).
    mode: "text" continues the branch's text; "chat" replies to the branch's turns;
        "as-user" replies to the branch's whole text as one user message.
    cursor: where the document's cursor goes afterwards: stay, first or last new child.
    keep_partial: on cancel, keep unfinished branches too (marked incomplete).
    strict: refuse to run if a parameter would be dropped or changed for a model.
    concurrency: requests in flight per model (None: each provider's default).
    timeout: deadline in seconds for the whole call (None: the models' `timeout`
        option, else DEFAULT_TIMEOUT). Branches still running at the deadline end with
        an error; text they streamed is kept, marked incomplete.
    rng_seed: seed for jitter, random presets and seed phrases (drawn and recorded if None).
    regenerate: re-run the recorded generation that made this node: new siblings of it,
        with its recorded model, parameters and emulation method (`params`, `models`
        and `emulate` given here override them).
    context: send this instead of the node's branch (a prompt from outside a document).
    """

    node: str | None = None
    n: int | None = None
    models: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    presets: tuple[str, ...] = ()
    modulation: ModulationSpecs | Mapping[str, Any] | None = None
    emulate: str = "auto"
    mode: str = "text"
    cursor: str = "stay"
    keep_partial: bool = False
    strict: bool = False
    concurrency: int | None = None
    timeout: float | None = None
    rng_seed: int | None = None
    regenerate: str | None = None
    context: Context | None = None

    def __post_init__(self) -> None:
        # Lists are welcome from callers; the value stays hashable and immutable.
        for name in ("models", "presets"):
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, ())
            elif isinstance(value, str):
                object.__setattr__(self, name, (value,))
            elif not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))

    def checked(self) -> GenerationRequest:
        """The request with its modulation parsed, or a UsageError naming the bad field."""
        if self.n is not None and not (isinstance(self.n, int) and 1 <= self.n <= MAX_N):
            raise UsageError(f"n must be a whole number from 1 to {MAX_N}, got {self.n!r}")
        if self.cursor not in CURSOR_CHOICES:
            raise UsageError(f"cursor must be one of {', '.join(CURSOR_CHOICES)}")
        if self.emulate not in EMULATION_CHOICES:
            raise UsageError(f"emulate must be one of {', '.join(EMULATION_CHOICES)}")
        if self.mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}")
        if self.concurrency is not None and not (
            isinstance(self.concurrency, int) and self.concurrency >= 1
        ):
            raise UsageError(f"concurrency must be at least 1, got {self.concurrency!r}")
        if self.timeout is not None and not (
            isinstance(self.timeout, int | float)
            and math.isfinite(self.timeout)
            and self.timeout > 0
        ):
            raise UsageError(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        if not isinstance(self.params, Mapping):
            raise UsageError("params must map parameter names to values")
        if self.regenerate is not None and self.context is not None:
            raise UsageError("regenerate re-runs a node's own prompt: it takes no context")
        if self.context is not None and not isinstance(self.context, Context):
            raise UsageError(
                "context must be a loom.Context (Context.of_text(...) or Context.of_messages(...))"
            )
        modulation = self.modulation
        if isinstance(modulation, Mapping):
            from loom.sampling.modulate import ModulationSpecs

            unknown = sorted(set(modulation) - set(MODULATION_KEYS))
            if unknown:
                raise UsageError(
                    f"unknown modulation {', '.join(unknown)} (known: {', '.join(MODULATION_KEYS)})"
                )
            modulation = ModulationSpecs.parse(**_typed_flags(modulation))
        elif modulation is not None:
            from loom.sampling.modulate import ModulationSpecs

            if not isinstance(modulation, ModulationSpecs):
                raise UsageError(
                    "modulation must be a ModulationSpecs or a mapping of "
                    f"{', '.join(MODULATION_KEYS)} to their values"
                )
        return replace(self, modulation=modulation)


def _typed_flags(given: Mapping[str, Any]) -> dict[str, Any]:
    """Modulation flag values as text (a panel, an HTTP request) made what
    `ModulationSpecs.parse` takes: per_cell a whole number, random_preset true or false."""
    from loom.sampling.params import parse_flag

    flags = dict(given)
    per_cell = flags.get("per_cell")
    if per_cell is not None:
        if isinstance(per_cell, str) and per_cell.strip().isdecimal():
            per_cell = int(per_cell)
        if isinstance(per_cell, bool) or not isinstance(per_cell, int) or per_cell < 1:
            raise UsageError(f"per_cell must be a whole number from 1, got {flags['per_cell']!r}")
        flags["per_cell"] = per_cell
    if "random_preset" in flags:
        chosen = parse_flag(flags["random_preset"])
        if chosen is None:
            raise UsageError(f"random_preset is true or false, got {flags['random_preset']!r}")
        flags["random_preset"] = chosen
    return flags
