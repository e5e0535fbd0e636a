"""The document model and its operations, through the library API."""

from __future__ import annotations

import pytest

import loom
from loom import journal, ops
from loom.document import Document
from loom.errors import AmbiguousId, InvalidOperation, NotFound, UsageError


def chain(doc: Document, *texts: str) -> list[str]:
    ids: list[str] = []
    parent = doc.cursor_id
    for text in texts:
        parent = ops.add_child(doc, parent, text).id
        ids.append(parent)
    return ids


def test_full_text_joins_ancestor_segments() -> None:
    doc = Document.new()
    a, b, c = chain(doc, "The sea", " went", " out.")
    assert doc.full_text(c) == "The sea went out."
    assert doc.node(b).full_text == "The sea went"
    assert doc.cursor_id == c
    assert doc.node(c).path() == [doc.node(a), doc.node(b), doc.node(c)]


def test_deep_chain_has_no_recursion_limit() -> None:
    doc = Document.new()
    ids = chain(doc, *(f"{i} " for i in range(5000)))
    assert doc.full_text(ids[-1]).startswith("0 1 2 ")
    assert doc.node(ids[-1]).depth == 4999


def test_forest_of_roots_and_siblings() -> None:
    doc = Document.new()
    r1 = ops.add_child(doc, None, "one").id
    r2 = ops.add_child(doc, None, "two").id
    mid = ops.add_sibling(doc, r1, "one and a half").id
    assert doc.root_ids == [r1, mid, r2]
    assert [r.text for r in doc.roots] == ["one", "one and a half", "two"]


def test_resolve_by_prefix_cursor_and_errors() -> None:
    doc = Document.new()
    (a,) = chain(doc, "x")
    assert doc.resolve(a[:5]).id == a
    assert doc.resolve("@").id == a
    assert doc.resolve(a.upper()).id == a
    with pytest.raises(NotFound):
        doc.resolve("zzzzzzzz")
    # Force two ids that share a prefix.
    ops.add_child(doc, a, "y", node_id=a[:4] + "000000000")
    ops.add_child(doc, a, "z", node_id=a[:4] + "111111111")
    with pytest.raises(AmbiguousId):
        doc.resolve(a[:4])


def test_edit_leaf_in_place_keeps_history_and_restores() -> None:
    doc = Document.new()
    (a,) = chain(doc, "first")
    node = ops.edit(doc, a, "second")
    assert node.id == a and node.text == "second"
    assert [h["text"] for h in node.history] == ["first"]
    ops.restore_version(doc, a, 0)
    assert doc.node(a).text == "first"
    assert [h["text"] for h in doc.node(a).history] == ["first", "second"]


def test_edit_with_children_makes_a_sibling_version() -> None:
    doc = Document.new()
    a, b = chain(doc, "The cat", " sat.")
    version = ops.edit(doc, a, "The dog")
    assert version.id != a
    assert doc.node(a).text == "The cat"
    assert doc.full_text(b) == "The cat sat."  # descendants untouched
    assert version.meta["version_of"] == a
    assert doc.sibling_ids(a) == [a, version.id]
    # Explicit in-place rewrite is allowed and does change descendants.
    ops.edit(doc, a, "The owl", in_place=True)
    assert doc.full_text(b) == "The owl sat."


def test_versions_number_every_text_then_list_sibling_versions() -> None:
    doc = Document.new()
    a, b = chain(doc, "The cat", " sat.")
    ops.add_child(doc, None, "an unrelated root")  # a sibling of `a`, but no version of it
    version = ops.edit(doc, a, "The dog").id
    assert [(e.get("index"), e["kind"], e["text"]) for e in ops.versions(doc, a)] == [
        (0, "current", "The cat"),
        (None, "version", "The dog"),
    ]
    assert [e.get("id") for e in ops.versions(doc, version)] == [None, a]
    ops.edit(doc, b, " ran.")  # a leaf: edited in place
    assert [(e["index"], e["kind"]) for e in ops.versions(doc, b)] == [
        (0, "earlier"),
        (1, "current"),
    ]


def test_restoring_the_current_text_changes_nothing_and_other_numbers_fail() -> None:
    doc = Document.new()
    (a,) = chain(doc, "first")
    ops.edit(doc, a, "second")
    steps = len(journal.undo_entries(doc))
    assert ops.restore_version(doc, a, 1).text == "second"
    assert len(journal.undo_entries(doc)) == steps and len(doc.node(a).history) == 1
    for bad in (2, -1):
        with pytest.raises(NotFound, match=r"numbered 0\.\.1"):
            ops.restore_version(doc, a, bad)


def test_split_keeps_every_full_text() -> None:
    doc = Document.new()
    a, b = chain(doc, "Hello world", "!")
    ops.goto(doc, a)
    tail = ops.split(doc, a, 5)
    assert doc.node(a).text == "Hello"
    assert tail.text == " world"
    assert doc.node(b).parent_id == tail.id
    assert doc.full_text(b) == "Hello world!"
    assert doc.cursor_id == tail.id
    with pytest.raises(InvalidOperation):
        ops.split(doc, a, 0)
    marker_tail = ops.split_at_marker(doc, tail.id, "orl")
    assert marker_tail.text == "orld"


def test_split_partitions_logprobs_by_offset() -> None:
    doc = Document.new()
    meta = {
        "logprobs": {"source": "post", "tokens": [" Hel", "lo", " there"], "lp": [-1.0, -0.5, -0.1]}
    }
    node = ops.add_child(doc, None, " Hello there", kind="model", meta=meta)
    tail = ops.split(doc, node.id, 6)
    assert doc.node(node.id).meta["logprobs"]["tokens"] == [" Hel", "lo"]
    assert tail.meta["logprobs"] == {"source": "post", "tokens": [" there"], "lp": [-0.1]}


def test_merge_only_child_joins_text() -> None:
    doc = Document.new()
    a, b, c = chain(doc, "A", "B", "C")
    merged = ops.merge(doc, b)
    assert merged.id == a and merged.text == "AB"
    assert doc.node(c).parent_id == a
    assert doc.full_text(c) == "ABC"
    assert b not in doc


def test_merge_with_other_siblings_creates_parent_version() -> None:
    doc = Document.new()
    a, b, c = chain(doc, "A", "B", "C")
    other = ops.add_child(doc, a, "X").id
    result = ops.merge(doc, b)
    assert result.id != a and result.text == "AB"
    assert doc.full_text(other) == "AX"  # the sibling branch is untouched
    assert doc.full_text(c) == "ABC"
    assert doc.node(a).child_ids == [other]
    with pytest.raises(InvalidOperation):
        ops.merge(doc, doc.root_ids[0])


def test_move_refuses_cycles_and_negative_positions() -> None:
    doc = Document.new()
    a, b, c = chain(doc, "A", "B", "C")
    with pytest.raises(InvalidOperation, match="negative"):
        ops.move(doc, c, a, index=-1)
    with pytest.raises(InvalidOperation):
        ops.move(doc, a, c)
    ops.move(doc, c, None)
    assert c in doc.root_ids and doc.full_text(c) == "C"
    ops.move(doc, c, a, index=0)
    assert doc.node(a).child_ids == [c, b]


def test_archive_restore_purge_and_cursor() -> None:
    doc = Document.new()
    a, b, c = chain(doc, "A", "B", "C")
    ops.archive(doc, b)
    assert doc.cursor_id == a  # moved out of the deleted subtree
    assert doc.live_child_ids(a) == []
    assert doc.node(c).archived
    with pytest.raises(InvalidOperation):
        ops.goto(doc, c)
    ops.restore(doc, b)
    assert doc.live_child_ids(a) == [b]
    gone = ops.purge(doc, b)
    assert set(gone) == {b, c} and b not in doc and c not in doc


def test_navigation_remembers_last_visited_child() -> None:
    doc = Document.new()
    (a,) = chain(doc, "A")
    b1 = ops.add_child(doc, a, "1").id
    b2 = ops.add_child(doc, a, "2").id
    deep = ops.add_child(doc, b2, "deep").id
    ops.goto(doc, a)
    assert ops.child_of(doc, a) == b2  # the branch we came from
    assert ops.child_of(doc, a, 0) == b1
    assert ops.sibling_of(doc, b1, 1) == b2
    with pytest.raises(NotFound):
        ops.sibling_of(doc, b2, 1)
    assert ops.parent_of(doc, deep, 2) == a
    assert ops.root_of(doc, deep) == a


def test_generated_nodes_start_unread() -> None:
    doc = Document.new()
    (a,) = chain(doc, "A")
    gen = ops.add_child(doc, a, " more", kind="model", move_cursor=False)
    assert not gen.visited
    ops.goto(doc, gen.id)
    assert doc.node(gen.id).visited


def test_bookmarks_tags_notes_and_bookmark_navigation() -> None:
    doc = Document.new()
    a, b, c = chain(doc, "A", "B", "C")
    ops.set_bookmark(doc, a, title="start")
    ops.set_bookmark(doc, c)
    assert doc.node(a).bookmark_title == "start"
    assert ops.bookmark_from(doc, b, 1) == c
    assert ops.bookmark_from(doc, c, 1) == a  # wraps
    assert ops.bookmark_from(doc, b, -1) == a
    ops.tag(doc, b, add=["draft", "keep", "draft"])
    assert doc.node(b).tags == ["draft", "keep"]
    ops.tag(doc, b, remove=["draft"])
    assert doc.node(b).tags == ["keep"]
    with pytest.raises(InvalidOperation):
        ops.tag(doc, b, add=["two words"])
    ops.set_note(doc, b, "colder here")
    assert doc.node(b).note == "colder here"


def test_search_segments_and_branches() -> None:
    doc = Document.new()
    a, b = chain(doc, "The sea went", " out. The tide")
    assert [m.node_id for m in loom.search.search(doc, "tide")] == [b]
    assert loom.search.search(doc, "went out") == []
    hits = loom.search.search(doc, "went out", branch=True)
    assert [h.node_id for h in hits] == [b]
    assert [m.node_id for m in loom.search.search(doc, r"t\w+e", regex=True)] == [b]
    assert [m.node_id for m in loom.search.search(doc, "THE SEA", ignore_case=True)] == [a]
    with pytest.raises(UsageError):
        loom.search.search(doc, "(", regex=True)


def test_undo_redo_every_kind_of_change() -> None:
    doc = Document.new()
    a, b = chain(doc, "A", "B")
    before = doc.data["nodes"].copy(), list(doc.root_ids)
    ops.move(doc, b, None)
    journal.undo(doc)
    assert doc.node(b).parent_id == a and doc.root_ids == before[1]
    journal.redo(doc)
    assert doc.node(b).parent_id is None
    journal.undo(doc)
    ops.purge(doc, a)
    assert a not in doc
    journal.undo(doc)
    assert doc.full_text(b) == "AB"
    journal.redo(doc)
    assert a not in doc and b not in doc
    journal.undo(doc)
    ops.tag(doc, a, add=["new"])
    with pytest.raises(InvalidOperation):
        journal.redo(doc)  # a new change clears the redo stack


def test_failed_operation_rolls_back() -> None:
    doc = Document.new()
    chain(doc, "A")
    snapshot = doc.data.copy(), {k: dict(v) for k, v in doc.nodes.items()}
    with pytest.raises(RuntimeError), journal.transaction(doc, "broken"):
        ops.add_child(doc, doc.cursor_id, "half")
        raise RuntimeError("boom")
    assert {k: dict(v) for k, v in doc.nodes.items()} == snapshot[1]
    assert len(journal.undo_entries(doc)) == 1


def test_a_bulk_edit_records_each_record_once_and_children_as_one_splice() -> None:
    """Nested operations join the outer transaction: 1,000 adds under one parent are one
    entry whose parent change is a single splice, not 1,000 snapshots of a growing list."""
    doc = Document.new()
    parent, first = chain(doc, "P", " first")
    with journal.transaction(doc, "import", "bulk"):
        kids = [ops.add_child(doc, parent, f" {i}", move_cursor=False).id for i in range(1000)]
    (entry,) = journal.undo_entries(doc)[-1:]
    (change,) = [c for c in entry["changes"] if c["id"] == parent]
    assert change["splice"] == [[1, [], kids]]
    assert change["old"] == change["new"] == {}
    assert sum(1 for c in entry["changes"] if c.get("created")) == 1000
    journal.undo(doc)
    assert doc.nodes[parent]["children"] == [first] and len(doc) == 2
    journal.redo(doc)
    assert doc.nodes[parent]["children"] == [first, *kids]


def test_each_add_under_a_wide_parent_records_its_own_position() -> None:
    doc = Document.new()
    (parent,) = chain(doc, "P")
    kids = [ops.add_child(doc, parent, f" {i}", move_cursor=False).id for i in range(50)]
    (change,) = [c for c in journal.undo_entries(doc)[-1]["changes"] if c["id"] == parent]
    assert change["splice"] == [[49, [], [kids[-1]]]] and change["new"] == {}
    middle = ops.add_child(doc, parent, " middle", index=20, move_cursor=False).id
    (change,) = [c for c in journal.undo_entries(doc)[-1]["changes"] if c["id"] == parent]
    assert change["splice"] == [[20, [], [middle]]]
    ops.purge(doc, kids[3])
    (change,) = [c for c in journal.undo_entries(doc)[-1]["changes"] if c["id"] == parent]
    assert change["splice"] == [[3, [kids[3]], []]]
    journal.undo(doc)
    journal.undo(doc)
    assert doc.nodes[parent]["children"] == kids


def test_branch_search_finds_matches_hidden_by_an_earlier_one() -> None:
    """'aa' over 'aa|a': the match ending in the child overlaps one inside the parent."""
    doc = Document.new()
    a, b = chain(doc, "aa", "a")
    hits = loom.search.search(doc, "aa", branch=True)
    assert [h.node_id for h in hits] == [a, b]
    assert (hits[1].start, hits[1].end) == (1, 3)


def test_branch_search_agrees_with_a_full_text_scan() -> None:
    import random

    rng = random.Random(3)
    doc = Document.new()
    ids: list[str] = []
    for _ in range(300):
        parent = rng.choice(ids) if ids and rng.random() < 0.8 else None
        ids.append(
            ops.add_child(
                doc, parent, "".join(rng.choice("ab ") for _ in range(rng.randint(0, 6)))
            ).id
        )
    for pattern, regex in (("ab a", False), ("b b", False), (r"a\s+b", True), ("ba+b", True)):
        compiled = loom.search.compile_pattern(pattern, regex=regex)
        expected = []
        for node_id in doc.walk():
            full, own = doc.full_text(node_id), doc.nodes[node_id].get("text", "")
            start = len(full) - len(own)
            if own and any(
                compiled.search(full, p) and compiled.search(full, p).end() > start
                for p in range(start + 1)
            ):
                expected.append(node_id)
        got = [m.node_id for m in loom.search.search(doc, pattern, regex=regex, branch=True)]
        assert got == expected, pattern


def test_moving_under_a_deleted_node_is_refused() -> None:
    """It would vanish inside the deleted subtree, and `purge` would take it."""
    doc = Document.new()
    (root,) = chain(doc, "R")
    keep = ops.add_child(doc, root, " keep", move_cursor=False).id
    trash = ops.add_child(doc, root, " trash", move_cursor=False).id
    ops.archive(doc, trash)
    with pytest.raises(InvalidOperation):
        ops.move(doc, keep, trash)
    assert not doc.is_archived(keep)


def test_undo_several_steps_is_all_or_nothing() -> None:
    doc = Document.new()
    chain(doc, "A", "B")
    with pytest.raises(InvalidOperation) as info:
        journal.undo_steps(doc, 5)
    assert "only 2 change(s) can be undone" in str(info.value)
    assert len(doc) == 2
    journal.undo_steps(doc, 2)
    assert len(doc) == 0
    journal.redo_steps(doc, 2)
    assert len(doc) == 2
