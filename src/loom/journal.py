"""Undo and redo for every mutating operation, from one mechanism.

A transaction snapshots each record the first time an operation touches it. On
commit the snapshots are diffed against the records as they are now, and the
changed fields become one journal entry (see docs/schema.md, "Journal"). Undo
applies the old values, redo the new ones: no operation needs its own inverse.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from loom.document import Document, Record, now
from loom.errors import InvalidOperation

JOURNAL_LIMIT = 500
HEADER = ""  # the change id that stands for the document header


class Transaction:
    def __init__(self, doc: Document, op: str, summary: str) -> None:
        self.doc = doc
        self.op = op
        self.summary = summary
        self.before: dict[str, Record | None] = {}

    def touch(self, node_id: str) -> None:
        if node_id in self.before:
            return
        if node_id == HEADER:
            self.before[HEADER] = copy.deepcopy(self.doc.header())
        else:
            rec = self.doc.nodes.get(node_id)
            self.before[node_id] = None if rec is None else copy.deepcopy(rec)

    def changes(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for node_id, old in self.before.items():
            new = self.doc.header() if node_id == HEADER else self.doc.nodes.get(node_id)
            if old is None and new is None:
                continue
            if old is None and node_id != HEADER:
                # Created here: the record is in the document, so only its id is kept. Undo
                # moves the record into the entry for redo (see `_hold_created`).
                out.append({"id": node_id, "old": None, "new": None, "created": True})
                continue
            if old is None or new is None:
                out.append({"id": node_id, "old": old, "new": copy.deepcopy(new)})
                continue
            old_fields: Record = {}
            new_fields: Record = {}
            for key in old.keys() | new.keys():
                if old.get(key) != new.get(key):
                    old_fields[key] = old.get(key)
                    new_fields[key] = copy.deepcopy(new.get(key))
            if old_fields:
                out.append({"id": node_id, "old": old_fields, "new": new_fields})
        return out


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
        if tx.changes():  # stamp real changes only: a no-op must leave no journal entry
            doc._set_header("modified", now())
    except BaseException:
        doc._tx = None
        _apply(
            doc, [{"id": k, "old": v, "new": None} for k, v in tx.before.items()], "old", whole=True
        )
        raise
    doc._tx = None
    changes = tx.changes()
    if not changes:
        return
    journal = _journal(doc)
    entry = {"op": op, "at": now(), "summary": summary, "changes": changes}
    journal["undo"] = [*journal.get("undo", [])[-(JOURNAL_LIMIT - 1) :], entry]
    journal["redo"] = []
    doc.dirty = True


def _journal(doc: Document) -> dict[str, Any]:
    journal = doc.data.get("journal")
    if not isinstance(journal, dict):
        journal = {"undo": [], "redo": []}
        doc.data["journal"] = journal
    return journal


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
    journal = _journal(doc)
    stack = journal.get(source, [])
    if not stack:
        raise InvalidOperation(f"nothing to {source}")
    entry = stack[-1]
    if side == "old":
        _hold_created(doc, entry["changes"])
    _apply(doc, entry["changes"], side)
    if side == "new":
        _release_created(entry["changes"])
    journal[source] = stack[:-1]
    journal[target] = [*journal.get(target, []), entry]
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


def _apply(doc: Document, changes: list[dict[str, Any]], side: str, *, whole: bool = False) -> None:
    """Make each changed record look like its `side` ("old" or "new").

    `whole` means the values are complete records (a rollback), not field diffs.
    """
    other = "new" if side == "old" else "old"
    ordered = reversed(changes) if side == "old" else changes
    for change in ordered:
        node_id = change["id"]
        target = change[side]
        if node_id == HEADER:
            header = target or {}
            if whole:
                for key in [k for k in doc.data if k not in ("nodes", "journal")]:
                    if key not in header:
                        del doc.data[key]
            for key, value in header.items():
                if value is None:
                    doc.data.pop(key, None)
                else:
                    doc.data[key] = copy.deepcopy(value)
            continue
        if target is None:
            doc.nodes.pop(node_id, None)
        elif whole or change[other] is None or node_id not in doc.nodes:
            doc.nodes[node_id] = copy.deepcopy(target)
        else:
            rec = doc.nodes[node_id]
            for key, value in target.items():
                if value is None:
                    rec.pop(key, None)
                else:
                    rec[key] = copy.deepcopy(value)
    # Node dicts may have been swapped; keep the alias in sync.
    doc.nodes = doc.data["nodes"]


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
                doc.data["cursor"] = gone["parent"]
                break
        else:
            doc.data.pop("cursor", None)
    doc.settle_cursor()
