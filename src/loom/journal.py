"""Undo and redo for every mutating operation, from one mechanism.

A transaction records what its operation touches (loom.changes: shallow copies of
records as they were, splices of children lists). On commit that becomes one
journal entry of change records (see docs/schema.md, "Journal"). Undo applies the
old values and reverses the splices, redo applies the new ones: no operation needs
its own inverse. Nested transactions join the outer one, so recording costs what
the change costs, however many operations a bulk edit makes.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from loom.changes import HEADER, ChangeSet
from loom.document import NOT_HEADER, Document, now
from loom.errors import InvalidOperation

JOURNAL_LIMIT = 500

__all__ = ["HEADER", "JOURNAL_LIMIT", "Transaction", "redo", "transaction", "undo"]


class Transaction(ChangeSet):
    def __init__(self, doc: Document, op: str, summary: str) -> None:
        super().__init__(doc)
        self.op = op
        self.summary = summary

    def changes(self) -> list[dict[str, Any]]:
        return self.diff()

    def stamped(self, at: str) -> list[dict[str, Any]]:
        """The changes, with the document's modified time set to `at` if there are any."""
        changes = self.diff()
        if changes:
            self.doc._set_header("modified", at)
            before = self.before[HEADER] or {}
            header = next((c for c in changes if c["id"] == HEADER), None)
            if header is None:
                header = {"id": HEADER, "old": {}, "new": {}}
                changes.append(header)
            header["old"]["modified"] = before.get("modified")
            header["new"]["modified"] = at
        return changes


@contextmanager
def transaction(doc: Document, op: str, summary: str = "") -> Iterator[Transaction]:
    """Group the changes made inside into one undoable journal entry.

    Nested transactions join the outer one. If the body raises, every change made
    so far is rolled back, so a failed operation leaves the document as it was.
    """
    if doc._tx is not None:
        yield doc._tx
        return
    tx = Transaction(doc, op, summary)
    doc._tx = tx
    try:
        yield tx
        at = now()
        changes = tx.stamped(at)  # a no-op leaves no journal entry and no new modified time
    except BaseException:
        doc._tx = None
        apply(doc, tx.changes(), "old")
        raise
    doc._tx = None
    if not changes:
        return
    push(doc, "undo", {"op": op, "at": at, "summary": summary, "changes": changes})
    if _journal(doc).get("redo"):
        clear(doc, "redo")


def _journal(doc: Document) -> dict[str, Any]:
    journal = doc.data.get("journal")
    if not isinstance(journal, dict):
        journal = {"undo": [], "redo": []}
        doc.data["journal"] = journal
    return journal


# The three ways the undo log changes. Each is reported to the document, so a large
# document's change log can replay it (loom.store) without rewriting the whole log.


def push(doc: Document, stack: str, entry: dict[str, Any]) -> None:
    """Add `entry` on top of `stack` ("undo" or "redo"), keeping at most JOURNAL_LIMIT."""
    items = _journal(doc).setdefault(stack, [])
    items.append(entry)
    if len(items) > JOURNAL_LIMIT:
        del items[: len(items) - JOURNAL_LIMIT]
    doc._journaled("push", stack, entry)


def pop(doc: Document, stack: str) -> dict[str, Any]:
    entry: dict[str, Any] = _journal(doc)[stack].pop()
    doc._journaled("pop", stack)
    return entry


def clear(doc: Document, stack: str) -> None:
    _journal(doc)[stack] = []
    doc._journaled("clear", stack)


def replay(doc: Document, step: list[Any]) -> None:
    """Apply one recorded undo-log step (from `push`, `pop` or `clear`)."""
    verb, stack = step[0], step[1]
    if verb == "push":
        push(doc, stack, step[2])
    elif verb == "pop":
        pop(doc, stack)
    elif verb == "clear":
        clear(doc, stack)
    else:
        raise ValueError(f"unknown journal step {verb!r}")


def undo_entries(doc: Document) -> list[dict[str, Any]]:
    return list(_journal(doc).get("undo", ()))


def redo_entries(doc: Document) -> list[dict[str, Any]]:
    return list(_journal(doc).get("redo", ()))


def undo(doc: Document) -> dict[str, Any]:
    """Reverse the last operation; returns its journal entry."""
    return _step(doc, "undo", "redo", "old")


def redo(doc: Document) -> dict[str, Any]:
    """Re-apply the last undone operation; returns its journal entry."""
    return _step(doc, "redo", "undo", "new")


def undo_steps(doc: Document, steps: int) -> list[dict[str, Any]]:
    """Undo `steps` operations, or none if fewer than that can be undone."""
    return _steps(doc, "undo", steps)


def redo_steps(doc: Document, steps: int) -> list[dict[str, Any]]:
    """Redo `steps` operations, or none if fewer than that can be redone."""
    return _steps(doc, "redo", steps)


def _steps(doc: Document, verb: str, steps: int) -> list[dict[str, Any]]:
    available = len(_journal(doc).get(verb, []))
    if steps > available:
        raise InvalidOperation(
            f"only {available} change(s) can be {verb}ne" if available else f"nothing to {verb}"
        )
    one = undo if verb == "undo" else redo
    return [one(doc) for _ in range(steps)]


def _step(doc: Document, source: str, target: str, side: str) -> dict[str, Any]:
    """Move the newest entry of one stack to the other, applying its `side` of each change."""
    if not _journal(doc).get(source):
        raise InvalidOperation(f"nothing to {source}")
    entry = pop(doc, source)
    if side == "old":
        _hold_created(doc, entry["changes"])
    apply(doc, entry["changes"], side)
    if side == "new":
        _release_created(entry["changes"])
    push(doc, target, entry)
    _repair_cursor(doc, entry["changes"], side)
    doc.dirty = True
    return dict(entry)


def _hold_created(doc: Document, changes: list[dict[str, Any]]) -> None:
    """Before undoing: keep the records this entry created (redo will need them)."""
    for change in changes:
        if change.pop("created", False):
            change["new"] = doc.nodes[change["id"]]


def _release_created(changes: list[dict[str, Any]]) -> None:
    """After redoing: the records are back in the document; the entry keeps only their ids."""
    for change in changes:
        if change["old"] is None and change["id"] != HEADER:
            change["new"] = None
            change["created"] = True


def apply(doc: Document, changes: list[dict[str, Any]], side: str) -> None:
    """Make each changed record look like its `side` ("old" or "new") of the change.

    A change record (docs/schema.md) holds changed fields, or a whole record where
    the other side is null (in the change log, which keeps only the new side, `"whole"`
    marks one), and splices of the children list (the roots, for the header): redone
    for "new", undone for "old".
    Every write goes through the document's primitives, so an enclosing change set
    (the store's) sees it.
    """
    other = "new" if side == "old" else "old"
    ordered = reversed(changes) if side == "old" else changes
    for change in ordered:
        owner = change["id"]
        target = change[side]
        splices = change.get("splice")
        if owner != HEADER and target is None:
            if owner in doc.nodes:
                doc._remove(owner)
            continue
        if owner != HEADER and (
            change.get("whole") or change.get(other, {}) is None or owner not in doc.nodes
        ):
            doc._put(owner, copy.deepcopy(target))
            continue
        doc._touch(owner)
        if splices and side == "old":
            _splice_all(doc, owner, splices, undo=True)
        fields = doc.data if owner == HEADER else doc.nodes[owner]
        for key, value in (target or {}).items():
            if owner == HEADER and key in NOT_HEADER:
                continue  # a damaged entry must not replace the nodes or the log itself
            if value is None:
                fields.pop(key, None)
            else:
                fields[key] = copy.deepcopy(value)
        if splices and side == "new":
            _splice_all(doc, owner, splices, undo=False)


def _splice_all(doc: Document, owner: str, splices: list[Any], *, undo: bool) -> None:
    """Redo (or undo) recorded splices through the document, so they are recorded in turn."""
    steps = reversed(splices) if undo else splices
    for at, removed, inserted in steps:
        before, after = (inserted, removed) if undo else (removed, inserted)
        doc._splice(owner, at, len(before), list(after))


def _repair_cursor(doc: Document, changes: list[dict[str, Any]], side: str) -> None:
    """After undo/redo the cursor must point at a live node; prefer where the lost one was."""
    cursor = doc.data.get("cursor")
    if cursor is not None and cursor not in doc.nodes:
        for change in changes:
            gone = change["old"] if side == "new" else change["new"]
            if (
                change["id"] == cursor
                and isinstance(gone, dict)
                and gone.get("parent") in doc.nodes
            ):
                doc._set_header("cursor", gone["parent"])
                break
        else:
            doc._set_header("cursor", None)
    doc.settle_cursor()
