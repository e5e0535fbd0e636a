"""Property tests: any sequence of operations keeps the tree valid, and undo/redo are exact."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loom import journal, ops, store
from loom.document import Document
from loom.errors import LoomError

OPS = [
    "add",
    "add_root",
    "sibling",
    "edit",
    "edit_in_place",
    "split",
    "merge",
    "move",
    "move_root",
    "archive",
    "restore",
    "purge",
    "bookmark",
    "tag",
    "note",
    "goto",
    "undo",
    "redo",
]

texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


def state_of(doc: Document) -> dict[str, Any]:
    """Everything but the journal: what undo must restore exactly."""
    return copy.deepcopy({k: v for k, v in doc.data.items() if k != "journal"})


def check_invariants(doc: Document) -> None:
    store.validate(doc.data)
    assert doc.cursor_id is None or not doc.is_archived(doc.cursor_id) or doc.cursor_id in doc.nodes
    for node_id in doc.nodes:
        assert doc.full_text(node_id).endswith(doc.nodes[node_id].get("text", ""))


def apply(doc: Document, op: str, data: st.DataObject) -> None:
    ids = list(doc.walk(include_archived=True))  # structural order: ids are random
    pick = (lambda: data.draw(st.sampled_from(ids))) if ids else (lambda: None)
    node = pick()
    if op == "add_root" or (node is None and op in ("add", "sibling")):
        ops.add_child(doc, None, data.draw(texts))
    elif node is None:
        return
    elif op == "add":
        ops.add_child(
            doc, node, data.draw(texts), kind=data.draw(st.sampled_from(["human", "model"]))
        )
    elif op == "sibling":
        ops.add_sibling(doc, node, data.draw(texts))
    elif op in ("edit", "edit_in_place"):
        ops.edit(doc, node, data.draw(texts), in_place=op == "edit_in_place")
    elif op == "split":
        ops.split(doc, node, data.draw(st.integers(-5, 15)))
    elif op == "merge":
        ops.merge(doc, node)
    elif op == "move":
        ops.move(doc, node, pick())
    elif op == "move_root":
        ops.move(doc, node, None, index=data.draw(st.integers(0, 3)))
    elif op == "archive":
        ops.archive(doc, node)
    elif op == "restore":
        ops.restore(doc, node)
    elif op == "purge":
        ops.purge(doc, node)
    elif op == "bookmark":
        ops.set_bookmark(doc, node, data.draw(st.booleans()), title=data.draw(st.none() | texts))
    elif op == "tag":
        ops.tag(doc, node, add=data.draw(st.lists(st.sampled_from(["a", "b", "c"]), max_size=2)))
    elif op == "note":
        ops.set_note(doc, node, data.draw(st.none() | texts))
    elif op == "goto":
        ops.goto(doc, node)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_operations_keep_the_tree_valid_and_undo_exact(data: st.DataObject) -> None:
    doc = Document.new()
    for _ in range(data.draw(st.integers(1, 25))):
        op = data.draw(st.sampled_from(OPS))
        if op in ("undo", "redo"):
            stack = journal.undo_entries(doc) if op == "undo" else journal.redo_entries(doc)
            if stack:
                (journal.undo if op == "undo" else journal.redo)(doc)
                check_invariants(doc)
            continue
        before = state_of(doc)
        depth = len(journal.undo_entries(doc))
        try:
            apply(doc, op, data)
        except LoomError:
            # A refused operation changes nothing at all.
            assert state_of(doc) == before
            continue
        check_invariants(doc)
        if len(journal.undo_entries(doc)) == depth:
            continue  # a no-op or a cursor move: nothing journaled
        after = state_of(doc)
        journal.undo(doc)
        check_invariants(doc)
        undone = state_of(doc)
        # Undo may only differ from the exact prior state by repairing a cursor that pointed
        # into something the change created.
        undone_cursor, before_cursor = undone.pop("cursor", None), before.pop("cursor", None)
        assert undone == before
        assert (
            undone_cursor == before_cursor
            or before_cursor not in doc.nodes
            or undone_cursor in doc.nodes
        )
        journal.redo(doc)
        assert state_of(doc) == after
    # What we built survives a save/load round trip exactly.
    reloaded = store.parse(store.encode(doc))
    assert reloaded == doc.data


def _undo_is_exact(doc: Document, before: dict[str, Any], after: dict[str, Any]) -> None:
    journal.undo(doc)
    check_invariants(doc)
    undone = state_of(doc)
    undone_cursor, before_cursor = undone.pop("cursor", None), dict(before).pop("cursor", None)
    assert undone == {k: v for k, v in before.items() if k != "cursor"}
    assert undone_cursor == before_cursor or undone_cursor in doc.nodes
    journal.redo(doc)
    check_invariants(doc)
    assert state_of(doc) == after


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_many_operations_in_one_transaction_undo_as_one(data: st.DataObject) -> None:
    """Nested operations share the outer transaction's records and splices; one undo reverts all."""
    doc = Document.new()
    for _ in range(data.draw(st.integers(0, 6))):
        apply(doc, data.draw(st.sampled_from(["add", "add_root", "sibling"])), data)
    before = state_of(doc)
    depth = len(journal.undo_entries(doc))
    with journal.transaction(doc, "bulk"):
        for _ in range(data.draw(st.integers(1, 30))):
            op = data.draw(st.sampled_from([o for o in OPS if o not in ("undo", "redo")]))
            with contextlib.suppress(LoomError):  # a refused operation changes nothing
                apply(doc, op, data)
    check_invariants(doc)
    if len(journal.undo_entries(doc)) == depth:
        return
    assert len(journal.undo_entries(doc)) == depth + 1
    after = state_of(doc)
    # The entry survives a save and a load (the change log and old files hold such entries).
    doc = Document(store.parse(store.encode(doc)))
    _undo_is_exact(doc, before, after)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_children_changes_are_recorded_as_splices(data: st.DataObject) -> None:
    """Adding to, moving within and removing from a long children list never copies the list."""
    doc = Document.new()
    parent = ops.add_child(doc, None, "p").id
    kids = [ops.add_child(doc, parent, f"{i}", move_cursor=False).id for i in range(40)]
    for _ in range(data.draw(st.integers(1, 12))):
        before = state_of(doc)
        kid = data.draw(st.sampled_from(kids))
        choice = data.draw(st.sampled_from(["add", "sibling", "move", "archive", "purge"]))
        if choice == "add":
            ops.add_child(doc, parent, "x", index=data.draw(st.integers(0, 50)))
        elif choice == "sibling" and kid in doc.nodes:
            ops.add_sibling(doc, kid, "y")
        elif choice == "move" and kid in doc.nodes:
            ops.move(doc, kid, parent, index=data.draw(st.integers(0, 50)))
        elif choice == "archive" and kid in doc.nodes:
            ops.archive(doc, kid)
        elif choice == "purge" and kid in doc.nodes and len(doc.nodes[parent]["children"]) > 1:
            ops.purge(doc, kid)
        else:
            continue
        entry = journal.undo_entries(doc)[-1] if journal.undo_entries(doc) else None
        if entry is None or state_of(doc) == before:
            continue
        for change in entry["changes"]:
            if change["id"] == parent:
                assert "children" not in (change["old"] or {})
                assert "children" not in (change["new"] or {})
        _undo_is_exact(doc, before, state_of(doc))


def test_version_1_journal_entries_still_undo() -> None:
    """Before splices (schema 1), a children change was the whole list on both sides."""
    data = {
        "format": "loom",
        "version": 1,
        "roots": ["a"],
        "cursor": "b",
        "nodes": {
            "a": {"text": "A", "children": ["b"], "last_child": "b"},
            "b": {"text": "B", "parent": "a", "visited": True},
        },
        "journal": {
            "undo": [
                {
                    "op": "add",
                    "at": "2026-01-01T00:00:00.000Z",
                    "summary": "add child of a",
                    "changes": [
                        {"id": "b", "old": None, "new": None, "created": True},
                        {"id": "a", "old": {"children": None}, "new": {"children": ["b"]}},
                        {"id": "", "old": {"cursor": "a"}, "new": {"cursor": "b"}},
                    ],
                }
            ],
            "redo": [],
        },
    }
    doc = Document(store.parse(store.encode(Document(data))))
    assert doc.data["version"] == 2
    journal.undo(doc)
    assert doc.root_ids == ["a"] and "b" not in doc.nodes and "children" not in doc.nodes["a"]
    journal.redo(doc)
    assert doc.nodes["a"]["children"] == ["b"] and doc.cursor_id == "b"
