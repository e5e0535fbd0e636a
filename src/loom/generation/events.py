"""What a generation reports while it runs, for front ends to paint or forward.

Events are plain values handed to one callable (`Sink`) on the event loop's thread,
in order: one `Planned` with the children to come, a `BranchStarted` per child,
`TextDelta`s as tokens stream in, a `BranchFinished` when a branch's stream ends,
`Retrying` when a provider is asked again, `Note`s for warnings, and one `Written`
with the new node ids at the end (also when the generation was cancelled: finished
branches are kept). A child whose output cleanup rejected is asked again: a `Retrying`,
then a second `BranchStarted` for the same index, whose stream replaces the first. The engine
knows nothing of terminals, Textual, HTTP or JSON; `to_dict()` gives each event as
JSON for a server or an MCP progress notification.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Event:
    kind = "event"

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-ready values (tuples become lists)."""
        fields = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        return {"event": self.kind, **fields}


@dataclass(frozen=True)
class Planned(Event):
    kind = "planned"
    models: tuple[str, ...]  # each child's model, in order: index i is child i


@dataclass(frozen=True)
class BranchStarted(Event):
    kind = "started"
    index: int  # the child's position in this generation, 0-based
    model: str
    request_n: int = 1  # children sharing this request


@dataclass(frozen=True)
class TextDelta(Event):
    kind = "text"
    index: int
    text: str  # new text since the last delta of this branch (raw, before cleanup)


@dataclass(frozen=True)
class BranchFinished(Event):
    kind = "finished"
    index: int
    text: str  # everything the branch streamed (raw, before cleanup)
    finish_reason: str | None = None
    error: str | None = None
    incomplete: bool = False


@dataclass(frozen=True)
class Retrying(Event):
    kind = "retrying"
    indexes: tuple[int, ...]  # the children waiting on the request being retried
    reason: str
    delay: float
    attempt: int  # the retry about to be made, 1-based


@dataclass(frozen=True)
class Note(Event):
    kind = "note"
    message: str


@dataclass(frozen=True)
class Written(Event):
    kind = "written"
    node_ids: tuple[str, ...] = field(default_factory=tuple)
    interrupted: bool = False


Sink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    pass


def reindexed(sink: Sink, indexes: list[int]) -> Sink:
    """A sink for a run of some children only: its child k is the generation's `indexes[k]`."""

    def forward(event: Event) -> None:
        if isinstance(event, (BranchStarted, TextDelta, BranchFinished)):
            event = replace(event, index=indexes[event.index])
        elif isinstance(event, Retrying):
            event = replace(event, indexes=tuple(indexes[k] for k in event.indexes))
        elif isinstance(event, Planned):
            return  # the generation's own plan stands
        sink(event)

    return forward


# The sink and children a backend's request serves: lets the HTTP retry loop report a
# retry without every backend passing the sink along. Set per request by the engine.
current_request: contextvars.ContextVar[tuple[Sink, tuple[int, ...]] | None] = (
    contextvars.ContextVar("loom_generation_request", default=None)
)


def report_retry(reason: str, delay: float, attempt: int) -> None:
    """Tell whoever watches the current request that it is being retried."""
    watching = current_request.get()
    if watching is not None:
        sink, indexes = watching
        sink(Retrying(indexes, reason, round(delay, 3), attempt))
