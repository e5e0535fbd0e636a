"""What changed in a document since a point in time, recorded at the cost of the change.

A `ChangeSet` keeps a shallow copy of each record the first time it is touched:
field values are replaced, never mutated in place, so that copy is the old state.
Children lists (and the roots) are the exception: they are edited in place, so
adding a node under a parent with 100k children costs O(1), and the set records
those edits as splices (`[at, removed ids, inserted ids]`) instead of a second
copy of the list. `diff()` turns all this into change records (docs/schema.md,
"Journal"): a transaction uses it for its undo entry, the store to append a save
to a large document's change log.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loom.document import Document, Record

HEADER = ""  # the change id that stands for the document header
Splice = list[Any]  # [at, [removed ids], [inserted ids]]


def list_key(owner: str) -> str:
    """The field holding the list a splice edits: a node's children, or the header's roots."""
    return "roots" if owner == HEADER else "children"


def redo_splices(items: list[str], splices: list[Splice]) -> None:
    for at, removed, inserted in splices:
        items[at : at + len(removed)] = inserted


def undo_splices(items: list[str], splices: list[Splice]) -> None:
    for at, removed, inserted in reversed(splices):
        items[at : at + len(inserted)] = removed


def _copy(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float) else copy.deepcopy(value)


class ChangeSet:
    """The records touched since this set began, as they were, and the splices made since."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.before: dict[str, Record | None] = {}
        self.splices: dict[str, list[Splice]] = {}
        self.journal: list[list[Any]] = []  # undo-log steps, for the change log (loom.journal)

    def touch(self, owner: str) -> None:
        """Remember `owner` (a node id, or HEADER) as it is now, unless already remembered."""
        if owner in self.before:
            return
        if owner == HEADER:
            self.before[HEADER] = self.doc.header()
        else:
            rec = self.doc.nodes.get(owner)
            self.before[owner] = None if rec is None else dict(rec)

    def spliced(
        self, owner: str, items: list[str], at: int, removed: list[str], inserted: list[str]
    ) -> None:
        """`items` (owner's list, already touched) had `removed` at `at` replaced by `inserted`."""
        old = self.before[owner]
        if old is None or old.get(list_key(owner)) is not items:
            return  # created here, or the list was replaced: diffed as a whole value
        recorded = self.splices.setdefault(owner, [])
        if recorded:
            last_at, last_removed, last_inserted = recorded[-1]
            if at == last_at and removed == last_inserted and inserted == last_removed:
                recorded.pop()  # undoes the previous splice (a move back to where it was)
                return
            if not removed and not last_removed and at == last_at + len(last_inserted):
                last_inserted.extend(inserted)  # a run of appends stays one splice
                return
        recorded.append([at, removed, inserted])

    def diff(
        self, *, whole_created: bool = False, copies: bool = True, only: str | None = None
    ) -> list[dict[str, Any]]:
        """The change records from the start of the set to now, in the order first touched.

        A created record is named only (`"created": true`: its content is in the document)
        unless `whole_created`. `copies` decouples the records from the live document.
        `only`: the change of that one record (an empty list if it did not change).
        """
        doc = self.doc
        keep = _copy if copies else _same
        out: list[dict[str, Any]] = []
        if only is None:
            touched = self.before.items()
        else:
            touched = [(only, self.before[only])] if only in self.before else []  # type: ignore[assignment]
        for owner, old in touched:
            new = doc.header() if owner == HEADER else doc.nodes.get(owner)
            if old is None and new is None:
                continue
            key = list_key(owner)
            splices = self.splices.get(owner) or None
            if old is not None and splices and (new is None or new.get(key) is not old.get(key)):
                # The spliced list was later replaced or removed: report its original whole.
                original = list(old[key])
                undo_splices(original, splices)
                old = {**old, key: original}
                splices = None
            if old is None:
                if whole_created:
                    out.append({"id": owner, "old": None, "new": keep(new), "whole": True})
                else:
                    out.append({"id": owner, "old": None, "new": None, "created": True})
                continue
            if new is None:
                out.append({"id": owner, "old": keep(old), "new": None})
                continue
            old_fields: Record = {}
            new_fields: Record = {}
            for field, was in old.items():
                now = new.get(field)
                if was is not now and was != now:
                    old_fields[field] = keep(was)
                    new_fields[field] = keep(now)
            for field, now in new.items():
                if field not in old and now is not None:
                    old_fields[field] = None
                    new_fields[field] = keep(now)
            if old_fields or splices:
                change: dict[str, Any] = {"id": owner, "old": old_fields, "new": new_fields}
                if splices:
                    change["splice"] = [[at, list(r), list(i)] for at, r, i in splices]
                out.append(change)
        return out


def _same(value: Any) -> Any:
    return value
