"""A document kept open by a long-running front end: changes apply in memory at once and
reach the file in the background; other processes' saves are picked up.

A change is a function of the document. `apply` runs it on the in-memory document at
once (so a keypress repaints without waiting on the disk) and queues it. `sync`, run off
the UI thread and one at a time, brings file and memory together under the writer lock,
as `store.editing` does for a CLI command:

- if nobody else has written the file since this session last read or wrote it, the
  in-memory document is saved (encoded while no change is running);
- otherwise the file is loaded, the queued changes are replayed on it (drawing the same
  new ids, see `loom.ids`, so the nodes they create keep their ids), and that version is
  saved and handed back. `adopt`, on the UI thread, makes it the session's document,
  replaying the changes queued meanwhile once more.

A queued change that no longer applies to the file's version (another process deleted the
node it moves to) is dropped and reported, never half-applied.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from loom import ids, store
from loom.document import Document
from loom.errors import InvalidOperation, LoomError

T = TypeVar("T")


@dataclass(eq=False)
class Change:
    """One queued change: the function, the ids it drew, and a label for error messages."""

    fn: Callable[[Document], Any]
    ids: list[str]
    label: str


@dataclass
class SyncResult:
    """What a `sync` did: `fresh` is a newer document to `adopt` (None: ours was current)."""

    fresh: Document | None
    applied: int  # how many queued changes reached the file
    identity: str | None  # the file's identity after the sync
    dropped: list[tuple[str, LoomError]] = field(default_factory=list)


@contextmanager
def _quiet_gc() -> Iterator[None]:
    """Decoding a large document creates millions of objects: collecting cycles among
    them while they are being made only slows the decode down (they have none)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load(path: str | os.PathLike[str]) -> Document:
    """`store.load`, tuned for a process that keeps the document: the decoded records are
    moved out of the collector's sight (gc.freeze), so a 100k-node document costs no
    collection pauses later (they hold no cycles; reference counting still frees them)."""
    with _quiet_gc():
        doc = store.load(path)
    gc.freeze()
    return doc


class Session:
    """The open document at `path`; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str], doc: Document, identity: str | None):
        self.path = Path(path)
        self.doc = doc
        self._identity = identity
        self._pending: list[Change] = []
        self._lock = threading.Lock()  # between a change being applied and the encoder

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Session:
        identity = store.identity(path)
        return cls(path, load(path), identity)

    @property
    def pending(self) -> int:
        """Changes applied in memory that are not in the file yet."""
        return len(self._pending)

    def apply(self, fn: Callable[[Document], T], label: str = "change") -> T:
        """Run `fn` on the in-memory document now and queue it for the file.

        Raises what `fn` raises (a LoomError leaves the document as it was, since every
        operation is transactional); a call that changes nothing queues nothing.
        """
        with self._lock:
            doc = self.doc
            doc.dirty = False
            with ids.recording() as drawn:
                result = fn(doc)
            if doc.dirty:
                self._pending.append(Change(fn, drawn, label))
        return result

    def changed_outside(self) -> bool:
        """Whether the file is no longer the one this session last read or wrote."""
        return store.identity(self.path) != self._identity

    def sync(self) -> SyncResult:
        """Bring file and memory together (see the module docstring). Call it from a worker
        thread, one call at a time, and pass its result to `adopt` on the owning thread."""
        if not store.real(self.path).exists():
            store.load(self.path)  # its one-line "no such file" error, leaving no lock file
        with store.locked(self.path):
            current = store.identity(self.path)
            if current == self._identity:
                with self._lock:
                    count = len(self._pending)
                    if not count:
                        return SyncResult(None, 0, current)
                    payload = None
                    if store.appends(self.doc, self.path):
                        store.save(self.doc, self.path)  # O(change): brief enough to hold the lock
                    else:
                        payload = store.encode(self.doc)
                if payload is not None:
                    store.write(self.path, payload)
                identity = store.identity(self.path)
                with self._lock:
                    del self._pending[:count]
                    self._identity = identity
                return SyncResult(None, count, identity)
            fresh = load(self.path)
            with self._lock:
                batch = list(self._pending)
            failed = _replay(fresh, batch)
            if fresh.dirty:
                store.save(fresh, self.path)
            dropped = [(change.label, exc) for change, exc in failed.items()]
            return SyncResult(fresh, len(batch), store.identity(self.path), dropped)

    def adopt(self, result: SyncResult) -> list[tuple[str, LoomError]]:
        """Make a sync's newer document the session's own, with the changes queued since
        the sync began replayed on it. Returns every change dropped along the way."""
        dropped = list(result.dropped)
        if result.fresh is None:
            return dropped
        with self._lock:
            rest = self._pending[result.applied :]
            failed = _replay(result.fresh, rest)
            self._pending = [c for c in rest if c not in failed]
            dropped += [(change.label, exc) for change, exc in failed.items()]
            result.fresh.dirty = False
            self.doc = result.fresh
            self._identity = result.identity
        return dropped

    def close(self) -> list[tuple[str, LoomError]]:
        """Save what is queued, waiting for it (on quitting)."""
        if not self._pending:
            return []
        return self.adopt(self.sync())


def journal_step(verb: str) -> Callable[[Document], dict[str, Any]]:
    """An undo (`verb` "undo") or redo ("redo") to `apply`: the step on top of the journal now.

    Replayed on a version of the file another process has changed since, it applies only
    if that same step is still on top: otherwise it would undo (or redo) the other
    process's change instead of the one the person saw, so it is dropped and reported.
    """
    from loom import journal

    entries = journal.undo_entries if verb == "undo" else journal.redo_entries
    step = journal.undo if verb == "undo" else journal.redo
    meant: list[tuple[Any, ...] | None] = []

    def run(doc: Document) -> dict[str, Any]:
        stack = entries(doc)
        top = _entry_key(stack[-1]) if stack else None
        if not meant:
            meant.append(top)
        elif top != meant[0]:
            raise InvalidOperation(
                f"the change to {verb} is no longer the last one (another process changed "
                "the document meanwhile)"
            )
        return step(doc)

    return run


def _entry_key(entry: dict[str, Any]) -> tuple[Any, ...]:
    """What tells one journal entry from another (its changes' contents move on undo)."""
    changes = entry.get("changes") or ()
    return (entry.get("op"), entry.get("at"), entry.get("summary"), *(c.get("id") for c in changes))


def _replay(doc: Document, changes: list[Change]) -> dict[Change, LoomError]:
    """Run each change on `doc` with the ids it drew before; returns those that failed."""
    failed: dict[Change, LoomError] = {}
    for change in changes:
        try:
            with ids.replaying(change.ids):
                change.fn(doc)
        except LoomError as exc:
            failed[change] = exc
    return failed
