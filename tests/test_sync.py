"""`loom sync`: a branch as a plain file, through real files and real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import loom as loomlib
from loom import ops
from loom.sync import Branch, apply_edit, branch, opcodes

from conftest import Loom
from fakeprovider import Fail, FakeProvider

SEGMENTS = [
    "The lighthouse keeper",
    " woke to find the sea gone.",
    " He walked out",
    " onto the sand.",
]


@pytest.fixture
def story(loom: Loom) -> Loom:
    """A four-node branch, synced once to draft.md."""
    loom.ok("new", "s.loom.json", "--text", SEGMENTS[0])
    for segment in SEGMENTS[1:]:
        loom.ok("add", segment)
    result = loom.ok("sync", "draft.md", "--json").json()
    assert result["action"] == "write" and result["first_sync"]
    return loom


def doc(loom: Loom) -> loomlib.Document:
    return loomlib.open(loom.cwd / "s.loom.json")


def texts(d: loomlib.Document, tip: str | None = None) -> list[str]:
    return [d.nodes[i].get("text", "") for i in d.path_ids(tip or d.cursor_id)]


def draft(loom: Loom) -> Path:
    return loom.cwd / "draft.md"


def sync(loom: Loom, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = loom.ok("sync", "draft.md", "--json", *args).json()
    return result


# ---- through the CLI -------------------------------------------------------------------


def test_first_sync_writes_the_branch_and_the_next_finds_nothing_to_do(story: Loom) -> None:
    assert draft(story).read_text() == "".join(SEGMENTS)
    again = sync(story)
    assert again["action"] == "none" and not again["written"] and not again["first_sync"]
    shown = story.ok("sync", "draft.md").stdout
    assert "up to date" in shown
    # The record is in the document, keyed by the file's path relative to it.
    record = json.loads((story.cwd / "s.loom.json").read_text())["sync"]["draft.md"]
    assert record["v"] == 1 and record["node"] == doc(story).cursor_id


def test_text_added_at_the_end_becomes_a_human_child(story: Loom) -> None:
    before = doc(story)
    tip = before.cursor_id
    with draft(story).open("a") as handle:
        handle.write(" It was cold.\n")  # the newline an editor adds is not part of the text
    result = sync(story)
    after = doc(story)
    assert result["action"] == "append" and result["created"] == [after.cursor_id]
    new = after.node(after.cursor_id)
    assert new.parent_id == tip and new.text == " It was cold." and new.kind == "human"
    assert sync(story)["action"] == "none"  # the file's newline is not seen as a new edit


def test_an_edit_further_up_is_a_new_branch_and_the_old_one_stays(story: Loom) -> None:
    old = doc(story)
    old_path = old.path_ids(old.cursor_id)
    draft(story).write_text("".join(SEGMENTS).replace("woke", "awoke"))
    result = sync(story)
    new = doc(story)
    assert result["action"] == "branch" and len(result["created"]) == 3
    path = new.path_ids(new.cursor_id)
    # Shares the unchanged root, then a version of the edited node, the rest carried along.
    assert path[0] == old_path[0] and texts(new) == [
        SEGMENTS[0],
        " awoke to find the sea gone.",
        *SEGMENTS[2:],
    ]
    assert new.nodes[path[1]]["meta"]["version_of"] == old_path[1]
    assert [new.nodes[i]["meta"]["copy_of"] for i in path[2:]] == old_path[2:]
    assert new.node(path[1]).parent_id == old_path[0]
    assert texts(new, old_path[-1]) == SEGMENTS  # the old branch is intact
    assert new.full_text(new.cursor_id) == draft(story).read_text()


def test_text_cut_from_the_end_ends_the_branch_at_a_new_version(story: Loom) -> None:
    old = doc(story)
    old_path = old.path_ids(old.cursor_id)
    draft(story).write_text("".join(SEGMENTS)[: -len(" the sand.")])
    result = sync(story)
    new = doc(story)
    assert result["action"] == "trim"
    assert texts(new) == [*SEGMENTS[:3], " onto"]
    assert new.nodes[new.cursor_id]["meta"]["version_of"] == old_path[3]
    assert texts(new, old_path[-1]) == SEGMENTS


def test_a_cut_on_a_boundary_ends_the_branch_at_the_kept_node(story: Loom) -> None:
    old = doc(story)
    old_path = old.path_ids(old.cursor_id)
    draft(story).write_text("".join(SEGMENTS[:2]))
    result = sync(story)
    new = doc(story)
    assert result["action"] == "trim" and result["created"] == []
    assert new.cursor_id == old_path[1] and len(new) == len(old)


def test_each_sync_is_one_undo_step_and_the_next_sync_rewrites_the_file(story: Loom) -> None:
    draft(story).write_text("".join(SEGMENTS).replace("sea", "ocean") + " Gulls.")
    sync(story)
    assert len(doc(story)) == 4 + 3 + 1
    story.ok("undo")
    back = doc(story)
    assert len(back) == 4 and texts(back) == SEGMENTS
    result = sync(story)
    assert result["action"] == "write" and result["tree_changed"] and result["written"]
    assert draft(story).read_text() == "".join(SEGMENTS)


def test_a_tree_change_elsewhere_rewrites_the_file(story: Loom) -> None:
    story.ok("up", "2")
    result = sync(story)
    assert result["action"] == "write" and not result["file_changed"]
    assert draft(story).read_text() == "".join(SEGMENTS[:2])


def test_both_changed_keeps_the_file_edits_as_a_branch_and_says_so(story: Loom) -> None:
    with draft(story).open("a") as handle:
        handle.write(" Gulls cried.")
    story.ok("up")  # another process moved the cursor meanwhile
    d = doc(story)
    cursor = d.cursor_id
    result = sync(story)
    assert result["both_changed"] and result["action"] == "append" and result["written"]
    after = doc(story)
    assert after.cursor_id == cursor  # the tree's change wins the file...
    assert draft(story).read_text() == "".join(SEGMENTS[:3])
    assert after.full_text(result["edits"]) == "".join(SEGMENTS) + " Gulls cried."  # ...edits kept
    # The plain output names where the edits went.
    with draft(story).open("a") as handle:
        handle.write(" More.")
    story.ok("down")
    shown = story.ok("sync", "draft.md").stdout
    assert "both changed" in shown and "loom goto" in shown


def test_file_edited_while_its_node_was_edited_in_place_elsewhere_loses_neither(
    story: Loom,
) -> None:
    with draft(story).open("a") as handle:
        handle.write(" The file's words.")
    story.ok("edit", "--text", " onto the wet sand.")  # the tip is a leaf: rewritten in place
    result = sync(story)
    after = doc(story)
    assert result["both_changed"]
    assert any("changed since" in note for note in result["notes"])
    assert after.full_text(after.cursor_id) == draft(story).read_text()
    assert draft(story).read_text().endswith(" onto the wet sand.")
    assert after.full_text(result["edits"]).endswith(" onto the sand. The file's words.")


def test_a_file_that_is_not_utf8_is_refused_and_nothing_changes(story: Loom) -> None:
    document = (story.cwd / "s.loom.json").read_bytes()
    draft(story).write_bytes("".join(SEGMENTS).encode() + b" caf\xe9")
    result = story("sync", "draft.md")
    assert result.code == 1 and "not UTF-8" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    error = story("sync", "draft.md", "--json").error()
    assert error["error"]["code"] == "bad_input"
    assert (story.cwd / "s.loom.json").read_bytes() == document
    assert draft(story).read_bytes().endswith(b"\xe9")


def test_a_deleted_file_is_written_again(story: Loom) -> None:
    draft(story).unlink()
    result = sync(story)
    assert result["action"] == "write" and result["written"]
    assert draft(story).read_text() == "".join(SEGMENTS)


def test_a_read_only_file_is_read_but_never_replaced(story: Loom) -> None:
    draft(story).chmod(0o444)
    with draft(story).open("r") as handle:
        assert handle.read() == "".join(SEGMENTS)
    assert sync(story)["action"] == "none"
    story.ok("up")
    document = (story.cwd / "s.loom.json").read_bytes()
    refused = story("sync", "draft.md")
    assert refused.code == 1 and "read-only" in refused.stderr
    assert draft(story).read_text() == "".join(SEGMENTS)
    assert (story.cwd / "s.loom.json").read_bytes() == document


@pytest.mark.parametrize("file_edited", [False, True])
def test_a_rewrite_that_fails_leaves_the_record_saying_what_the_file_holds(
    loom: Loom, file_edited: bool
) -> None:
    """The file cannot be replaced (here: its temp file's name is too long for the file
    system) after the document was saved with a record saying it now shows the new branch.
    The next sync then read the person's typing as an edit of that branch instead of the
    one in the file: a copy of the old text beside it, not a child under it."""
    name = "d" * 240 + ".md"  # fine itself; `.NAME.tmp-PID-NS` beside it is not
    loom.ok("new", "s.loom.json", "--text", "Root.")
    alpha = loom.ok("add", " Alpha.").stdout.strip()
    loom.ok("add", " Beta.", "--sibling", "--stay")
    (loom.cwd / name).write_text("Root. Alpha.")  # as loom would have written it
    assert loom.ok("sync", name, "--json").json()["action"] == "none"
    if file_edited:
        (loom.cwd / name).write_text("Root. Alpha. Typed.")
    loom.ok("next")  # the tree changed: the sync must rewrite the file, and cannot
    failed = loom("sync", name)
    assert failed.code == 1 and "File name too long" in failed.stderr
    assert failed.stderr.count("\n") == 1
    text = "Root. Alpha. Typed." if file_edited else "Root. Alpha."
    assert (loom.cwd / name).read_text() == text
    (loom.cwd / name).write_text(text + " More.")
    loom("sync", name)  # fails to rewrite the file again, after taking its edits in
    d = doc(loom)
    [tip] = [n for n in d.nodes if d.full_text(n) == text + " More."]
    assert alpha in d.path_ids(tip)  # under Alpha, not a copy of it


def test_an_emptied_file_changes_nothing(story: Loom) -> None:
    draft(story).write_text("")
    result = sync(story)
    assert result["action"] == "empty" and len(doc(story)) == 4
    assert "empty" in result["notes"][0]


def test_refuses_the_document_itself_and_files_it_did_not_write(story: Loom) -> None:
    for target in ("s.loom.json", "./s.loom.json"):
        result = story("sync", target)
        assert result.code == 1 and "the document itself" in result.stderr
    other = story.cwd / "notes.txt"
    other.write_text("my own notes")
    refused = story("sync", "notes.txt")
    assert refused.code == 1 and "--adopt" in refused.stderr
    assert other.read_text() == "my own notes"
    os.mkfifo(story.cwd / "pipe")
    for target, words in (("pipe", "not a regular file"), ("nowhere/x.md", "does not exist")):
        result = story("sync", target)
        assert result.code == 1 and words in result.stderr, result.stderr
    assert set(json.loads((story.cwd / "s.loom.json").read_text())["sync"]) == {"draft.md"}
    adopted = story.ok("sync", "notes.txt", "--adopt", "--json").json()
    assert adopted["action"] == "branch" and adopted["file_changed"]
    assert doc(story).full_text(doc(story).cursor_id) == "my own notes"


def test_an_empty_document_grows_a_root_from_the_file(loom: Loom) -> None:
    loom.ok("new", "s.loom.json")
    loom.ok("sync", "draft.md")
    assert draft(loom).read_text() == ""
    draft(loom).write_text("Once upon a time\n")
    result = sync(loom)
    d = doc(loom)
    assert result["action"] == "append" and d.root_ids == [d.cursor_id]
    assert d.node(d.cursor_id).text == "Once upon a time"


def test_a_file_in_another_folder_is_keyed_relative_to_the_document(story: Loom) -> None:
    (story.cwd / "drafts").mkdir()
    story.ok("sync", "drafts/one.md")
    records = json.loads((story.cwd / "s.loom.json").read_text())["sync"]
    assert set(records) == {"draft.md", "drafts/one.md"}


def test_forget_and_a_record_from_a_newer_loom(story: Loom) -> None:
    path = story.cwd / "s.loom.json"
    data = json.loads(path.read_text())
    data["sync"]["draft.md"]["v"] = 2
    path.write_text(json.dumps(data))
    newer = story("sync", "draft.md")
    assert newer.code == 1 and "newer loom" in newer.stderr
    assert story.ok("sync", "draft.md", "--forget", "--json").json()["forgotten"] is True
    assert "sync" not in json.loads(path.read_text())
    assert draft(story).read_text() == "".join(SEGMENTS)  # left as it is
    assert sync(story)["first_sync"]  # same text as the branch: taken up again
    assert "was not synced" in story.ok("sync", "other.md", "--forget").stdout


def test_sync_has_help_and_stays_off_the_heavy_imports(story: Loom) -> None:
    assert "Example" in story.ok("sync", "--help").stdout
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['loom', 'sync', 'draft.md']\n"
        "try:\n    runpy.run_module('loom', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('httpx2', 'asyncio', 'textual', 'xllamacpp') or m.startswith('loom.generation')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=story.cwd, capture_output=True, text=True, timeout=60
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_a_ten_thousand_node_document(loom: Loom, tmp_path: Path) -> None:
    """A 10k-node branch: append, an edit near its end, and undo, all through the CLI."""
    path = tmp_path / "s.loom.json"
    loomlib.new(path)
    with loomlib.edit(path) as d:
        ops.add_chain(d, None, [(f" s{i}", "human", None) for i in range(10_000)])
    loom.ok("use", "s.loom.json")
    loom.ok("sync", "draft.md")
    text = draft(loom).read_text()
    assert text.endswith(" s9999") and text.count(" s") == 10_000
    draft(loom).write_text(text + " the end")
    assert sync(loom)["action"] == "append"
    draft(loom).write_text(text.replace(" s9990", " S9990") + " the end")
    result = sync(loom)
    assert result["action"] == "branch" and len(result["created"]) == 11
    assert doc(loom).full_text(doc(loom).cursor_id) == draft(loom).read_text()
    loom.ok("undo")
    assert sync(loom)["action"] == "write"
    assert draft(loom).read_text() == text + " the end"


# ---- generating from the file's end (loom gen --sync) -------------------------------------

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def woven(story: Loom, fake_provider: FakeProvider) -> Loom:
    """The synced story plus a default base model on the local fake provider."""
    fake_provider.api_key = KEY
    story.ok(
        "models", "add", "base", "--provider", "openai", "--base-url", fake_provider.openai_url,
        "--model", "base-1", "--key-env", "FAKE_KEY", "--kind", "base",
    )  # fmt: skip
    story.ok("models", "default", "base")
    return story


def gen_synced(loom: Loom, *args: str) -> dict[str, Any]:
    result = loom("gen", "--sync", "draft.md", "--json", *args, env={"FAKE_KEY": KEY})
    assert result.code == 0, result.stderr
    payload: dict[str, Any] = result.json()
    return payload


def test_gen_sync_takes_the_file_in_generates_from_its_end_and_writes_the_pick(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    with draft(woven).open("a") as handle:
        handle.write(" Gulls cried.\n")
    result = gen_synced(woven, "-n", "2", "--cursor", "first")
    before, after = result["sync"]["before"], result["sync"]["after"]
    assert before["action"] == "append" and len(result["nodes"]) == 2
    typed = before["created"][0]
    assert result["parent"] == typed  # generated from the file's end
    assert fake_provider.requests[0].body["prompt"] == "".join(SEGMENTS) + " Gulls cried."
    first = result["nodes"][0]
    assert after["action"] == "write" and after["written"] and after["cursor"] == first["id"]
    assert draft(woven).read_text() == "".join(SEGMENTS) + " Gulls cried." + first["text"]
    assert sync(woven)["action"] == "none"


def test_gen_sync_with_the_cursor_staying_leaves_the_file(woven: Loom) -> None:
    result = gen_synced(woven, "-n", "3")
    assert len(result["nodes"]) == 3 and not result["sync"]["after"]["written"]
    assert draft(woven).read_text() == "".join(SEGMENTS)
    assert doc(woven).cursor_id == result["parent"]


def test_gen_sync_refuses_a_node_and_reports_a_failing_provider_in_one_line(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    usage = woven("gen", "--sync", "draft.md", "@", env={"FAKE_KEY": KEY})
    assert usage.code == 2 and "give no NODE" in usage.stderr
    fake_provider.script(*[Fail(500)] * 10)
    with draft(woven).open("a") as handle:
        handle.write(" Kept.")
    failed = woven("gen", "--sync", "draft.md", "-n", "1", env={"FAKE_KEY": KEY})
    assert failed.code == 1 and failed.stderr.count("\n") == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    assert doc(woven).node(doc(woven).cursor_id).text == " Kept."  # the edit was taken in
    assert draft(woven).read_text().endswith(" Kept.")


def test_gen_sync_from_the_library(
    woven: Loom, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same call for a program (`loom.sync.generate`), and its async twin."""
    import asyncio

    from loom import sync as syncing
    from loom.generation.request import GenerationRequest

    monkeypatch.setenv("FAKE_KEY", KEY)
    path, file = woven.cwd / "s.loom.json", woven.cwd / "draft.md"
    first = syncing.generate(path, file, GenerationRequest(n=1, cursor="last"))
    first.generation.check()
    assert file.read_text() == doc(woven).full_text(first.generation.nodes[0].id)
    second = asyncio.run(syncing.agenerate(path, file, GenerationRequest(n=1, cursor="last")))
    assert second.generation.parent == first.generation.nodes[0].id
    with pytest.raises(loomlib.InvalidOperation, match="give no node"):
        syncing.generate(path, file, GenerationRequest(node="@"))


# ---- watching ----------------------------------------------------------------------------


def _wait(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def watcher(story: Loom) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loom", "sync", "draft.md", "--watch", *args],
            cwd=story.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_watch_picks_up_saves_and_tree_changes_and_stops_cleanly(
    story: Loom, watcher: Callable[..., subprocess.Popen[bytes]]
) -> None:
    proc = watcher("--json")
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())  # the sync it starts with
    assert first["command"] == "sync" and first["action"] == "none"
    with draft(story).open("a") as handle:
        handle.write(" Gulls cried.\n")
    _wait(lambda: doc(story).node(doc(story).cursor_id).text == " Gulls cried.", "the save")
    assert json.loads(proc.stdout.readline())["action"] == "append"
    story.ok("up", "4")
    _wait(lambda: draft(story).read_text() == SEGMENTS[0], "the file to follow the cursor")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert b"Traceback" not in proc.stderr.read()  # type: ignore[union-attr]


def test_ctrl_c_ends_a_watch_with_success(
    story: Loom, watcher: Callable[..., subprocess.Popen[bytes]]
) -> None:
    proc = watcher()
    _wait(lambda: proc.stderr is not None and proc.poll() is None and _ready(proc), "the watch")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    assert b"stopped watching" in proc.stderr.read()  # type: ignore[union-attr]


def _ready(proc: subprocess.Popen[bytes]) -> bool:
    assert proc.stdout is not None
    return bool(proc.stdout.readline())  # the first sync's line: signals are handled from here


def test_a_second_watcher_of_the_same_file_is_refused(
    story: Loom, watcher: Callable[..., subprocess.Popen[bytes]]
) -> None:
    first = watcher("--json")
    assert first.stdout is not None and first.stdout.readline()
    second = watcher("--json")
    assert second.wait(timeout=60) == 1
    error = json.loads(second.stdout.read())  # type: ignore[union-attr]
    assert "already watched" in error["error"]["message"]
    assert first.poll() is None


def test_two_watchers_that_cannot_see_each_other_apply_a_save_once(
    story: Loom, watcher: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """Different LOOM_HOMEs defeat the claim; the document's lock still makes them safe."""
    procs = [
        watcher("--json", "-f", "s.loom.json", env={"LOOM_HOME": str(tmp_path / f"home{i}")})
        for i in range(2)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline()
    with draft(story).open("a") as handle:
        handle.write(" Once.")
    _wait(lambda: doc(story).node(doc(story).cursor_id).text == " Once.", "the save")
    time.sleep(1.0)  # room for a second, wrong application of the same save (none may come)
    d = doc(story)
    assert len(d) == 5 and d.full_text(d.cursor_id) == draft(story).read_text()
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_file_saves_racing_tree_changes_lose_neither(
    story: Loom, watcher: Callable[..., subprocess.Popen[bytes]]
) -> None:
    """An editor saving the file while other loom processes change the tree, under a watcher."""
    proc = watcher("--json")
    assert proc.stdout is not None and proc.stdout.readline()
    tree_side = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys\n"
            "for i in range(6):\n"
            "    loom = [sys.executable, '-m', 'loom']\n"
            "    subprocess.run([*loom, 'add', '--stay', f' tree{i}.'], check=True)\n"
            "    subprocess.run([*loom, 'down'], capture_output=True)  # may have no child\n",
        ],
        cwd=story.cwd,
    )
    for i in range(6):  # as editors save: a whole new file renamed into place
        current = draft(story).read_text()
        staged = story.cwd / ".draft.md.swp"
        staged.write_text(current + f" file{i}.")
        os.replace(staged, draft(story))
        time.sleep(0.3)
    assert tree_side.wait(timeout=120) == 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    sync(story)
    d = doc(story)
    branches = [d.full_text(n) for n in d.nodes if not d.live_child_ids(n)]
    for i in range(6):
        assert any(f" file{i}." in b for b in branches), f"file{i} lost: {branches}"
        assert any(f" tree{i}." in b for b in branches), f"tree{i} lost: {branches}"
    assert d.full_text(d.cursor_id) == draft(story).read_text()


# ---- the diff, as a library --------------------------------------------------------------


def _document(segments: list[str]) -> tuple[loomlib.Document, Branch]:
    d = loomlib.Document.new()
    parent = None
    for text in segments:
        parent = ops.add_child(d, parent, text).id
    return d, branch(d, parent)


def test_insertion_on_a_boundary_goes_to_the_node_after_it() -> None:
    d, base = _document(["ab", "cd", "ef"])
    edit = apply_edit(d, base, "abXcdef")
    assert edit.kind == "branch" and texts(d) == ["ab", "Xcd", "ef"]


def test_a_replacement_across_nodes_joins_the_node_where_it_began() -> None:
    d, base = _document(["one two", " three", " four"])
    edit = apply_edit(d, base, "one X four")
    assert edit.kind == "branch" and texts(d) == ["one X", " four"]  # the emptied node drops
    assert d.node(d.cursor_id).record["meta"]["copy_of"] == base.ids[2]


def test_edits_under_a_deleted_node_are_copied_out_to_a_live_branch() -> None:
    d, base = _document(["a", "b", "c"])
    ops.archive(d, base.ids[1])
    edit = apply_edit(d, base, "abcd")
    assert not d.is_archived(edit.tip or "") and d.full_text(edit.tip or "") == "abcd"
    assert d.cursor_id == edit.tip


def test_without_make_current_the_cursor_stays() -> None:
    d, base = _document(["a", "b"])
    ops.goto(d, base.ids[0])
    edit = apply_edit(d, base, "abc", make_current=False)
    assert d.cursor_id == base.ids[0] and d.full_text(edit.tip or "") == "abc"


def test_opcodes_match_words_and_cover_both_texts() -> None:
    codes = opcodes("the cat sat", "the dog sat")
    assert [c[0] for c in codes] == ["equal", "replace", "equal"]
    assert codes[1][1:] == (4, 7, 4, 7)


@settings(max_examples=200, deadline=None)
@given(
    old=st.text("ab .!\n", max_size=40),
    new=st.text("ab .!\nc", max_size=40),
)
def test_opcodes_cover_both_texts_in_order(old: str, new: str) -> None:
    at_old = at_new = 0
    for tag, i1, i2, j1, j2 in opcodes(old, new):
        assert (i1, j1) == (at_old, at_new) and tag in ("equal", "replace", "insert", "delete")
        if tag == "equal":
            assert old[i1:i2] == new[j1:j2]
        at_old, at_new = i2, j2
    assert (at_old, at_new) == (len(old), len(new))


def test_a_long_text_with_scattered_edits_keeps_its_segments() -> None:
    """200 sentences in 20 nodes, three words changed far apart: only what changed is new."""
    segments = [
        "".join(f"Sentence {n} of part {p} goes on. " for n in range(10)) for p in range(20)
    ]
    d, base = _document(segments)
    edited = base.text.replace("Sentence 3 of part 5", "Line 3 of part 5")
    edited = edited.replace("of part 17 goes", "of part 17 went")
    edit = apply_edit(d, base, edited)
    assert d.full_text(edit.tip or "") == edited
    copies = [d.nodes[n].get("meta", {}) for n in edit.created]
    assert len(edit.created) == 15 and sum("version_of" in m for m in copies) == 2


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    segments=st.lists(st.text("ab c\n", max_size=6), min_size=1, max_size=6),
    new_text=st.text("ab c\nd", min_size=1, max_size=30),
)
def test_any_edit_yields_a_branch_with_exactly_the_new_text(
    segments: list[str], new_text: str
) -> None:
    d, base = _document(segments)
    before = {k: dict(v) for k, v in d.nodes.items()}
    edit = apply_edit(d, base, new_text)
    assert edit.tip is not None and d.full_text(edit.tip) == new_text
    assert d.cursor_id == edit.tip
    for node_id, record in before.items():  # nothing that existed lost or rewrote its text
        assert d.nodes[node_id]["text"] == record["text"]
        assert d.nodes[node_id].get("parent") == record.get("parent")
    assert not any(r.get("archived") for r in d.nodes.values())
    if edit.kind != "none":  # one undo step takes the edit back out
        loomlib.undo(d)
        assert set(d.nodes) == set(before) and d.cursor_id == base.tip


def test_a_file_name_with_a_newline_cannot_print_a_line_of_its_own(story: Loom) -> None:
    odd = "x\nloom: note: all saved.md"
    first = story.ok("sync", odd)
    assert first.stdout.count("\n") == 1 and "x\\nloom: note: all saved.md" in first.stdout
    (story.cwd / odd).write_text("edited by hand", encoding="utf-8")
    again = story.ok("sync", odd)
    assert all(line.startswith("loom: note: ") for line in again.stderr.splitlines())
    assert again.stdout.count("\n") == 1, again.stdout


def test_killed_between_saving_the_record_and_rewriting_the_file_makes_no_branch(
    story: Loom,
) -> None:
    """The document is saved before the file is rewritten; a kill in between used to leave
    the old file looking like an edit, so the next sync cut the branch back to it."""
    story.ok("add", " Later.")  # the tree changed: the next sync rewrites the file
    before = draft(story).read_bytes()
    dies = (
        "import os, sys, loom.sync as s\n"
        "s._replace_unless_changed = lambda *a: os._exit(9)  # killed: no finally runs\n"
        "s.sync(sys.argv[1], sys.argv[2])\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", dies, str(story.cwd / "s.loom.json"), str(draft(story))],
        cwd=story.cwd,
        check=False,
    )
    assert killed.returncode == 9 and draft(story).read_bytes() == before
    tip, nodes = doc(story).cursor_id, len(doc(story).nodes)

    again = sync(story)
    assert again["action"] == "write" and again["written"] and again["created"] == []
    assert doc(story).cursor_id == tip and len(doc(story).nodes) == nodes
    assert draft(story).read_text() == "".join(SEGMENTS) + " Later."
    assert sync(story)["action"] == "none"
    assert "was" not in json.loads((story.cwd / "s.loom.json").read_text())["sync"]["draft.md"]
