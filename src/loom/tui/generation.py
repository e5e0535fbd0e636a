"""Generation from the TUI: what the panel picks, what it resolves to, and a runner that
streams `loom.agenerate`'s events into the app without ever blocking its event loop.

Generations run on an event loop of their own, in a thread that lives as long as the app:
reading the document, calling the models and writing the children (under the writer
lock, on a fresh read) all happen there, and the backends stay open between generations
(one `BackendPool`: the embedded model loads once, HTTP connections are reused). Events
come back to the UI loop with `call_soon_threadsafe`; cancelling the task (Escape) keeps
the branches that finished, as `loom.agenerate` promises.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loom.document import Document
from loom.errors import LoomError, UsageError

if TYPE_CHECKING:
    from loom.generation.backends import BackendPool
    from loom.generation.core import Generation
    from loom.generation.request import GenerationRequest


@dataclass(frozen=True)
class Settings:
    """The next generation, as the panel sets it (and the status line shows it)."""

    model: str | None = None  # None: the default model
    presets: tuple[str, ...] = ()
    n: int | None = None  # None: the document's defaults.n, else loom's default
    modulation: tuple[tuple[str, str], ...] = ()  # (flag, value): ("sweep", "temperature=0.6:1.4")

    def request(
        self, *, node: str | None = None, regenerate: str | None = None
    ) -> GenerationRequest:
        """The library request these settings make (checked: a bad modulation is a UsageError)."""
        from loom.generation.request import GenerationRequest

        return GenerationRequest(
            node=node,
            n=self.n,
            models=(self.model,) if self.model else (),
            presets=self.presets,
            modulation=dict(self.modulation) or None,
            regenerate=regenerate,
        ).checked()

    def summary(self) -> str:
        parts = [self.model or "default model", f"n={self.n}" if self.n else "n=doc"]
        parts += list(self.presets)
        parts += [f"{flag} {value}" for flag, value in self.modulation]
        return " · ".join(parts)


def parse_modulation(text: str) -> tuple[tuple[str, str], ...]:
    """`sweep temperature=0.6:1.4; jitter top_p=0.05` → (flag, value) pairs, as `loom gen`'s
    --sweep/--jitter/… flags take them (`random_preset` alone: on). Raises UsageError
    naming an unknown modulator."""
    from loom.generation.request import MODULATION_KEYS

    out: list[tuple[str, str]] = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        try:
            words = shlex.split(part)
        except ValueError as exc:
            raise UsageError(f"cannot read the modulation {part!r}: {exc}") from None
        flag = words[0].lstrip("-").replace("-", "_")
        if flag == "random_preset" and len(words) == 1:
            words.append("true")  # a flag on the command line: named, it is on
        if flag not in MODULATION_KEYS or len(words) != 2:
            raise UsageError(
                f"a modulation is one of {', '.join(MODULATION_KEYS)} and its value, e.g. "
                f"'sweep temperature=0.6:1.4' (got {part!r})"
            )
        out.append((flag, words[1]))
    return tuple(out)


def model_names() -> list[str]:
    from loom import config

    return list(config.all_models())


def preset_names() -> list[str]:
    from loom.sampling.presets import load_presets

    return list(load_presets().names())


def explain(doc: Document, node_id: str, settings: Settings) -> str:
    """What `loom params --explain` says a generation from `node_id` would use: every
    parameter with the layer it comes from."""
    from loom import config
    from loom.sampling.params import LayerInputs, format_explain, resolve

    model = config.get_model(settings.model)
    inputs = LayerInputs.from_doc(doc, node_id, presets=settings.presets)
    rows = resolve(inputs.layers(model)).explain()
    lines = [f"model {model.name}"]
    if rows:
        lines.append(format_explain(rows))
    lines.append(f"Parameters not listed are left to {model.name}'s own defaults.")
    if settings.modulation:
        lines.append(
            "Modulation varies them across the children: "
            + "; ".join(f"{flag} {value}" for flag, value in settings.modulation)
        )
    return "\n".join(lines)


@dataclass
class Finished:
    """The end of a run: the result, or the error that stopped it before any branch ran."""

    result: Generation | None = None
    error: LoomError | None = None
    cancelled: bool = False


@dataclass
class Runner:
    """One generation at a time, on the runner's own loop (see the module docstring)."""

    deliver: Callable[[Any], None]  # called on the UI loop with each event, then a Finished
    ui_loop: asyncio.AbstractEventLoop
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _pool: BackendPool | None = None
    _task: asyncio.Task[Any] | None = None
    _done: threading.Event | None = None  # set once the running generation has ended
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cancel_asked: bool = False
    _closing: bool = False  # the app is going: nothing more is delivered to it

    @property
    def running(self) -> bool:
        return self._done is not None and not self._done.is_set()

    def start(self, path: Path, request: GenerationRequest) -> None:
        if self.running:
            raise UsageError("a generation is already running (esc cancels it)")
        if self._loop is None:
            from loom.generation.backends import BackendPool

            self._loop = asyncio.new_event_loop()
            self._pool = BackendPool()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="loom-generation", daemon=True
            )
            self._thread.start()
        with self._lock:
            self._cancel_asked, self._task, self._done = False, None, threading.Event()
        asyncio.run_coroutine_threadsafe(self._run(path, request), self._loop)

    def cancel(self) -> bool:
        """Ask the running generation to stop (finished branches are kept)."""
        with self._lock:
            if not self.running:
                return False
            self._cancel_asked = True
            if self._loop is not None and self._task is not None:
                self._loop.call_soon_threadsafe(self._task.cancel)
            # else it has not got going yet: `_run` sees the request as it starts
            return True

    def join(self, timeout: float | None = None) -> None:
        """Wait for the running generation to end (its finished branches written)."""
        if self._done is not None:
            self._done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Stop a running generation (keeping what finished), close the backends, end the
        loop's thread. For the app's end."""
        if self._loop is None:
            return
        self._closing = True
        self.cancel()
        self.join(timeout)
        if self._pool is not None:
            closing = asyncio.run_coroutine_threadsafe(self._pool.aclose(), self._loop)
            with contextlib.suppress(Exception):  # closing must never hide the app's exit
                closing.result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)
        self._loop = self._thread = self._pool = None

    def _send(self, item: Any) -> None:
        if self._closing:
            return
        with contextlib.suppress(RuntimeError):  # the app has closed its loop
            self.ui_loop.call_soon_threadsafe(self.deliver, item)

    async def _run(self, path: Path, request: GenerationRequest) -> None:
        from loom import agenerate

        finished = Finished()
        try:
            with self._lock:
                self._task = asyncio.current_task()
                if self._cancel_asked and self._task is not None:
                    self._task.cancel()  # Escape came before this generation got going
            finished.result = await agenerate(path, request, events=self._send, backends=self._pool)
        except asyncio.CancelledError:
            finished.cancelled = True
        except LoomError as exc:
            finished.error = exc
        except Exception as exc:  # a bug: reported in the status line, the app lives on
            finished.error = LoomError(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._task = None
                finished.cancelled = finished.cancelled or self._cancel_asked
                done = self._done
            self._send(finished)
            if done is not None:
                done.set()
