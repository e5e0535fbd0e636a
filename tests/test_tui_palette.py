"""The command palette offers every action, including those with no key of their own:
move, purge, purge the deleted, history with restore, export, the system message and the
title. Each is a library call; the document is checked in memory and in the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("textual", reason="the [tui] extra is not installed")

import loom
from loom import ops, store
from loom.tui.keys import KEYS

from tui_support import STORY, drive, screen_text, story, until


@pytest.fixture
def doc_path(tmp_path: Path) -> Path:
    return tmp_path / "story.loom.json"


def test_the_palette_offers_every_action_and_the_help_lists_them(doc_path: Path) -> None:
    story(doc_path)
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        seen["titles"] = [c.title for c in app.get_system_commands(app.screen)]
        await pilot.press("question_mark")
        seen["help"] = screen_text(app)

    drive(doc_path, script, size=(120, 80))
    for key in KEYS:
        if key.palette:
            assert key.description in seen["titles"], key
    for action in ("move", "purge", "purge_deleted", "history", "export", "set_system"):
        assert any(k.action == action and not k.keys for k in KEYS), action
    assert "Move the node (and its subtree) under another node" in seen["help"]


def test_move_by_name_in_the_palette(doc_path: Path) -> None:
    """`:` then "move": the node and its subtree go under the node named by an id prefix."""
    ids = story(doc_path)

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("3")  # laughed
        await pilot.press("colon", *"move the node")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: len(app.screen_stack) == 2 and "Move" in screen_text(app), 5)
        await pilot.press(*ids["gulls"][:8], "enter")

    app = drive(doc_path, script)
    on_disk = store.load(doc_path)
    assert on_disk.nodes[ids["laughed"]]["parent"] == ids["gulls"]
    assert ids["laughed"] not in on_disk.live_child_ids(ids["walk"])
    assert app.last_error is None


def test_move_to_the_roots_and_a_move_into_its_own_subtree_is_refused(doc_path: Path) -> None:
    ids = story(doc_path)
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("h")  # the root
        await app.run_action("move")
        await pilot.press(*ids["gulls"][:8], "enter")
        seen["error"] = app.last_error
        await pilot.press("1")  # walk
        await app.run_action("move")
        await pilot.press("slash", "enter")

    drive(doc_path, script)
    assert seen["error"] is not None and "inside its own subtree" in seen["error"]
    on_disk = store.load(doc_path)
    assert ids["walk"] in on_disk.data["roots"] and on_disk.nodes[ids["walk"]].get("parent") is None


def test_purge_asks_first_then_removes_for_good_and_undo_brings_it_back(doc_path: Path) -> None:
    ids = story(doc_path)
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("1")  # gulls
        await app.run_action("purge")
        await pilot.pause()
        seen["asked"] = screen_text(app)
        await pilot.press("n")  # no: nothing happens
        seen["kept"] = ids["gulls"] in app.doc.nodes
        await app.run_action("purge")
        await pilot.press("y")
        seen["gone"] = ids["gulls"] not in app.doc.nodes
        await app.wait_synced()
        seen["gone_on_disk"] = ids["gulls"] not in store.load(doc_path).nodes
        await pilot.press("u")

    drive(doc_path, script)
    assert "Purge" in seen["asked"] and "(1 node(s))" in seen["asked"]
    assert seen["kept"] and seen["gone"] and seen["gone_on_disk"]
    assert ids["gulls"] in store.load(doc_path).nodes  # u brought it back


def test_purge_every_deleted_subtree(doc_path: Path) -> None:
    ids = story(doc_path)
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        await app.run_action("purge_deleted")
        seen["nothing"] = app.last_error
        await pilot.press("1", "x", "1", "x")  # gulls and sound deleted (restorable)
        await app.run_action("purge_deleted")
        await pilot.press("enter")

    drive(doc_path, script)
    assert seen["nothing"] == "nothing is deleted: there is nothing to purge"
    on_disk = store.load(doc_path)
    assert ids["gulls"] not in on_disk.nodes and ids["sound"] not in on_disk.nodes
    assert on_disk.live_child_ids(ids["walk"]) == [ids["laughed"]]


def test_history_brings_back_an_earlier_text_and_goes_to_a_version(doc_path: Path) -> None:
    """An edited leaf gets its first text back in place; on a node with children the
    earlier text comes back as a new version beside it (copy-on-write), and picking a
    version in the list goes there."""
    ids = story(doc_path)
    with loom.edit(doc_path) as doc:
        ops.edit(doc, ids["gulls"], " The gulls screamed.")
        version = ops.edit(doc, ids["walk"], " He ran.").id  # walk has children: a version
        ops.goto(doc, ids["gulls"])
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        await app.run_action("history")
        await pilot.pause()
        seen["list"] = screen_text(app)
        await pilot.press("1")  # text 0, the first one
        seen["leaf"] = app.doc.nodes[ids["gulls"]]["text"]
        await pilot.press("h")  # walk: its sibling version is listed after its texts
        await app.run_action("history")
        await pilot.press("2")
        seen["at"] = app.doc.cursor_id

    drive(doc_path, script, size=(120, 30))
    assert "earlier" in seen["list"] and "current" in seen["list"]
    assert seen["leaf"] == " The gulls were silent."
    assert store.load(doc_path).nodes[ids["gulls"]]["text"] == " The gulls were silent."
    assert seen["at"] == version


def test_history_of_a_node_never_edited_says_so(doc_path: Path) -> None:
    story(doc_path)

    async def script(app: Any, pilot: Any) -> None:
        await app.run_action("history")

    app = drive(doc_path, script)
    assert app.last_error == "this node has no earlier texts or versions"


def test_export_writes_the_document_or_the_branch_and_never_over_itself(doc_path: Path) -> None:
    ids = story(doc_path)
    page = doc_path.with_name("story.html")
    branch = doc_path.with_name("branch.md")
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        await app.run_action("export")  # the default: an HTML page beside the document
        await pilot.press("enter")
        await until(pilot, lambda: page.exists(), 10)
        await app.run_action("export")
        await pilot.press("ctrl+a", "ctrl+k", *str(branch), "enter")
        await until(pilot, lambda: branch.exists(), 10)
        await app.run_action("export")
        await pilot.press("ctrl+a", "ctrl+k", *str(branch), "enter")
        await until(pilot, lambda: "exists" in screen_text(app), 5)
        seen["asked"] = screen_text(app)
        branch.write_text("mine", encoding="utf-8")
        await pilot.press("n")  # it exists: keep it
        await app.run_action("export")
        await pilot.press("ctrl+a", "ctrl+k", *f"loom {doc_path}", "enter")
        await until(pilot, lambda: "exists" in screen_text(app), 5)
        await pilot.press("y")
        await until(pilot, lambda: app.last_error is not None, 10)
        seen["refused"] = app.last_error

    drive(doc_path, script)
    html = page.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html") and "lighthouse keeper" in html
    assert "exists: replace it?" in seen["asked"]
    assert branch.read_text(encoding="utf-8") == "mine"
    assert seen["refused"] is not None and "the document being exported" in seen["refused"]
    assert store.load(doc_path).nodes[ids["walk"]]["text"] == STORY[1]  # untouched


def test_set_the_system_message_and_the_title(doc_path: Path) -> None:
    story(doc_path)

    async def script(app: Any, pilot: Any) -> None:
        await app.run_action("set_system")
        await pilot.press(*"Be terse.", "ctrl+s")
        await app.run_action("set_title")
        await pilot.press(*["backspace"] * 20, *"Tides", "ctrl+s")

    drive(doc_path, script)
    on_disk = store.load(doc_path)
    assert on_disk.system == "Be terse."
    assert on_disk.title == "Tides"
