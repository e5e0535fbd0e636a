"""loom.session: changes applied in memory at once, saved in the background, outside saves kept."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

import loom
from loom import ids, journal, ops, store
from loom.errors import DocumentError, NotFound
from loom.session import Session, journal_step


def make(path: Path, *texts: str) -> list[str]:
    loom.new(path)
    out: list[str] = []
    with loom.edit(path) as doc:
        parent = None
        for text in texts:
            parent = ops.add_child(doc, parent, text).id
            out.append(parent)
    return out


def test_ids_are_drawn_again_in_the_same_order() -> None:
    with ids.recording() as drawn:
        first = [ids.new_id() for _ in range(3)]
    assert drawn == first
    with ids.replaying(drawn):
        assert [ids.new_id() for _ in range(3)] == first
        assert ids.new_id() not in first  # then fresh ones
    with ids.replaying(["abc"]):
        assert ids.new_id({"abc"}) != "abc"  # a clash draws a fresh id


def test_a_change_is_in_memory_at_once_and_in_the_file_after_sync(tmp_path: Path) -> None:
    path = tmp_path / "s.loom.json"
    (root,) = make(path, "root")
    session = Session.open(path)
    node = session.apply(lambda d: ops.add_child(d, root, " more"), "add")
    assert session.doc.cursor_id == node.id
    assert session.pending == 1
    assert node.id not in store.load(path).nodes  # not saved yet
    result = session.sync()
    assert result.fresh is None and result.applied == 1  # nobody else wrote: ours was saved
    assert session.pending == 0
    on_disk = store.load(path)
    assert on_disk.nodes[node.id]["text"] == " more"
    assert on_disk.cursor_id == node.id
    assert not session.changed_outside()


def test_a_call_that_changes_nothing_queues_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.loom.json"
    (root,) = make(path, "root")
    session = Session.open(path)
    session.apply(lambda d: ops.goto(d, root), "goto")  # already there
    assert session.pending == 0
    with pytest.raises(NotFound):
        session.apply(lambda d: ops.goto(d, "nope"), "goto")
    assert session.pending == 0


def test_another_process_change_is_kept_and_ours_replayed_with_the_same_ids(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.loom.json"
    root, leaf = make(path, "The sea went out. ", "It came back at noon.")
    session = Session.open(path)
    tail = session.apply(lambda d: ops.split(d, leaf, 3), "split")
    added = session.apply(lambda d: ops.add_child(d, tail.id, " Gulls."), "add")
    # Another process (a real one, as an agent would be) adds under the root meanwhile.
    proc = subprocess.run(
        [sys.executable, "-m", "loom", "add", " Elsewhere.", "-p", root, "--stay", "-f", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    theirs = proc.stdout.strip()
    assert session.changed_outside()
    result = session.sync()
    assert result.fresh is not None and not result.dropped
    dropped = session.adopt(result)
    assert dropped == [] and session.pending == 0
    for doc in (session.doc, store.load(path)):
        assert theirs in doc.nodes  # their change survived ours
        assert doc.nodes[tail.id]["text"] == "It came back at noon."[3:]  # same ids as in memory
        assert doc.nodes[added.id]["parent"] == tail.id
        assert doc.cursor_id == added.id
    assert not session.changed_outside()


def test_changes_made_during_a_sync_are_replayed_when_adopting(tmp_path: Path) -> None:
    path = tmp_path / "s.loom.json"
    (root,) = make(path, "root")
    session = Session.open(path)
    with loom.edit(path) as doc:
        ops.add_child(doc, root, " theirs", move_cursor=False)
    first = session.apply(lambda d: ops.add_child(d, root, " first"), "add")
    result = session.sync()
    second = session.apply(lambda d: ops.add_child(d, first.id, " second"), "add")  # mid-sync
    session.adopt(result)
    assert session.pending == 1
    assert session.doc.nodes[second.id]["parent"] == first.id
    assert session.sync().fresh is None  # nobody else wrote since: a plain save
    assert store.load(path).nodes[second.id]["parent"] == first.id


def test_a_change_that_no_longer_applies_is_dropped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "s.loom.json"
    root, leaf = make(path, "root", " leaf")
    session = Session.open(path)
    session.apply(lambda d: ops.edit(d, leaf, " rewritten"), f"edit {leaf}")
    session.apply(lambda d: ops.goto(d, root), "goto root")
    with loom.edit(path) as doc:
        ops.purge(doc, leaf)  # gone for good in the other process
    result = session.sync()
    dropped = session.adopt(result)
    assert [label for label, _ in dropped] == [f"edit {leaf}"]
    assert isinstance(dropped[0][1], NotFound)
    assert leaf not in session.doc.nodes
    assert session.doc.cursor_id == root  # the change after it still applied
    assert store.load(path).cursor_id == root


def test_undo_in_a_session_undoes_our_change_on_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.loom.json"
    (root,) = make(path, "root")
    session = Session.open(path)
    node = session.apply(lambda d: ops.add_child(d, root, " x"), "add")
    session.adopt(session.sync())
    session.apply(journal.undo, "undo")
    assert node.id not in session.doc.nodes
    session.adopt(session.sync())
    assert node.id not in store.load(path).nodes
    session.apply(journal.redo, "redo")
    session.adopt(session.sync())
    assert store.load(path).nodes[node.id]["text"] == " x"


def test_a_reload_with_nothing_queued_adopts_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.loom.json"
    (root,) = make(path, "root")
    session = Session.open(path)
    with loom.edit(path) as doc:
        theirs = ops.add_child(doc, root, " theirs").id
    result = session.sync()
    assert result.applied == 0 and result.fresh is not None
    session.adopt(result)
    assert session.doc.cursor_id == theirs
    assert not session.changed_outside()


def test_syncing_in_a_thread_beside_another_writer_loses_nothing(tmp_path: Path) -> None:
    """A worker thread syncs continually while another process adds nodes: every node of
    both ends up in the file, and the session's copy equals the file."""
    path = tmp_path / "s.loom.json"
    (root,) = make(path, "root")
    session = Session.open(path)
    outside = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, loom\n"
            "for i in range(30):\n"
            "    with loom.edit(sys.argv[1]) as d:\n"
            "        loom.ops.add_child(d, sys.argv[2], f' theirs {i}', move_cursor=False)\n",
            str(path),
            root,
        ]
    )
    ours: list[str] = []
    for i in range(30):
        # One sync at a time in a worker, adopted on this ("UI") thread, as the TUI does;
        # a change is applied while the sync runs.
        box: list = []
        thread = threading.Thread(target=lambda box=box: box.append(session.sync()))
        thread.start()
        ours.append(session.apply(lambda d, i=i: ops.add_child(d, root, f" ours {i}"), "add").id)
        thread.join()
        assert box, "the sync raised"
        assert session.adopt(box[0]) == []
    assert outside.wait(timeout=60) == 0
    session.adopt(session.sync())
    if session.changed_outside():
        session.adopt(session.sync())
    final = store.load(path)
    texts = {final.nodes[c]["text"] for c in final.nodes[root].get("children", [])}
    assert texts == {f" ours {i}" for i in range(30)} | {f" theirs {i}" for i in range(30)}
    assert set(ours) <= set(final.nodes)
    assert set(session.doc.nodes) == set(final.nodes)


def test_a_deleted_file_is_an_error_and_the_changes_stay_queued(tmp_path: Path) -> None:
    path = tmp_path / "s.loom.json"
    (root,) = make(path, "root")
    session = Session.open(path)
    session.apply(lambda d: ops.add_child(d, root, " x"), "add")
    path.unlink()
    lock = store.lock_path(store.real(tmp_path) / path.name)
    lock.unlink(missing_ok=True)
    with pytest.raises(DocumentError, match="no such file"):
        session.sync()
    assert session.pending == 1
    assert not lock.exists()  # no lock file left behind


def test_an_undo_replayed_after_another_process_wrote_never_undoes_their_change(
    tmp_path: Path,
) -> None:
    """The person undoes the change they see on top; meanwhile a CLI command added a node.
    Replayed on the file's version, a plain `journal.undo` undid the CLI's change instead
    (and kept the person's). It is dropped and reported; both changes stay."""
    path = tmp_path / "s.loom.json"
    (root,) = make(path, "root")
    session = Session.open(path)
    mine = session.apply(lambda d: ops.add_child(d, root, " mine"), "add")
    session.adopt(session.sync())
    with loom.edit(path) as doc:  # another process, before this session has looked
        theirs = ops.add_child(doc, root, " theirs", move_cursor=False)
    undone = session.apply(journal_step("undo"), "undo")
    assert undone["op"] == "add" and mine.id not in session.doc.nodes  # what the person saw
    dropped = session.adopt(session.sync())
    assert [label for label, _ in dropped] == ["undo"]
    assert "no longer the last one" in dropped[0][1].message
    on_disk = store.load(path)
    assert theirs.id in on_disk.nodes and mine.id in on_disk.nodes
    assert session.doc.nodes.keys() == on_disk.nodes.keys()


def test_an_undo_replayed_on_a_version_with_the_same_step_on_top_applies(tmp_path: Path) -> None:
    path = tmp_path / "s.loom.json"
    (root,) = make(path, "root")
    session = Session.open(path)
    mine = session.apply(lambda d: ops.add_child(d, root, " mine"), "add")
    session.adopt(session.sync())
    with loom.edit(path) as doc:  # another process touches only the cursor (not journaled)
        ops.goto(doc, root)
    session.apply(journal_step("undo"), "undo")
    session.apply(journal_step("redo"), "redo")
    session.apply(journal_step("undo"), "undo")
    assert session.adopt(session.sync()) == []
    assert mine.id not in store.load(path).nodes
    assert [e["op"] for e in journal.redo_entries(store.load(path))] == ["add"]
