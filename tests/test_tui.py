"""The TUI driven with Textual's Pilot: every binding, checked on the document (in memory and
in the file) and on what the widgets show."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("textual", reason="the [tui] extra is not installed")

from loom import store
from loom.tui.layout import MARK
from loom.tui.widgets.branch import BranchView
from loom.tui.widgets.children import ChildrenList
from loom.tui.widgets.tree import TreePane

from tui_support import (
    CHILDREN,
    STORY,
    chain_file,
    drive,
    forest_file,
    screen_text,
    story,
    until,
    with_logprobs,
)


@pytest.fixture
def doc_path(tmp_path: Path) -> Path:
    return tmp_path / "story.loom.json"


def cursor_on_disk(path: Path) -> str | None:
    return store.load(path).cursor_id


# ---- what a person sees ------------------------------------------------------------------


def test_the_branch_its_boundaries_the_children_and_the_status_line_show(doc_path: Path) -> None:
    """The branch's full text with a ▏ mark at the node boundary, the children numbered
    as `loom ls` numbers them with unread marks, the tree pane, the status line."""
    ids = story(doc_path)
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        seen["screen"] = screen_text(app)
        branch = app.query_one(BranchView)
        seen["rows"] = [
            "".join(branch.layout_.text_of(s) for s in row) for row in branch.layout_.rows
        ]
        seen["styles"] = {
            branch.layout_.path[s.seg]: branch._paint(s, branch.base_style)[0].style
            for row in branch.layout_.rows
            for s in row
            if not s.is_mark
        }

    drive(doc_path, script)
    text = "".join(seen["rows"])
    assert text == STORY[0] + MARK + STORY[1]
    screen = seen["screen"]
    for i, child in enumerate(CHILDREN, 1):
        assert f"{i} •" in screen and child.strip() in screen  # numbered, unread
    assert f"story.loom.json · 5 nodes · {ids['walk'][:8]} · depth 1" in screen
    # The current node is painted differently from its ancestor.
    assert seen["styles"][ids["walk"]] != seen["styles"][ids["root"]]
    assert seen["styles"][ids["walk"]].bold


def test_arrows_and_vim_keys_move_and_every_move_is_saved(doc_path: Path) -> None:
    ids = story(doc_path)
    visits: list[str] = []

    async def script(app: Any, pilot: Any) -> None:
        keys = ("l", "j", "j", "k", "h", "h", "right", "right", "down", "up", "left", "3", "r")
        for key in keys:
            await pilot.press(key)
            visits.append(app.doc.cursor_id)

    app = drive(doc_path, script)
    w, g, s, la, r = ids["walk"], ids["gulls"], ids["sound"], ids["laughed"], ids["root"]
    # `right` re-traces: from the root to walk, then to walk's last-visited child (sound).
    assert visits == [g, s, la, s, w, r, w, s, la, s, w, la, r]
    assert cursor_on_disk(doc_path) == r
    on_disk = store.load(doc_path)
    assert all(on_disk.nodes[n].get("visited") for n in (g, s, la))  # the visits were saved
    assert on_disk.nodes[w]["last_child"] == la
    assert app.last_error is None


def test_enter_goes_to_the_selected_child_and_the_list_moves_when_focused(doc_path: Path) -> None:
    ids = story(doc_path)

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("tab")  # focus the tree pane, then the children list
        await pilot.press("tab")
        assert isinstance(app.focused, ChildrenList)
        await pilot.press("j", "j")
        assert app.doc.cursor_id == ids["walk"]  # moving in the list is not moving the cursor
        await pilot.press("enter")

    drive(doc_path, script)
    assert cursor_on_disk(doc_path) == ids["laughed"]


def test_a_move_that_is_not_possible_is_one_line_in_the_status_line(doc_path: Path) -> None:
    ids = story(doc_path)
    seen: dict[str, str] = {}

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("k")  # walk has no previous sibling
        seen["screen"] = screen_text(app)
        seen["error"] = app.last_error

    drive(doc_path, script)
    assert seen["error"] == f"node {ids['walk']} has no previous sibling"
    assert "has no previous sibling" in seen["screen"]


def test_mouse_clicks_on_the_tree_the_children_and_the_text(doc_path: Path) -> None:
    ids = story(doc_path)
    visits: list[str] = []

    async def script(app: Any, pilot: Any) -> None:
        await pilot.click(ChildrenList, offset=(5, 2))  # the second child (row 0 is the border)
        visits.append(app.doc.cursor_id)
        tree = app.query_one(TreePane)
        root_row = next(i for i, r in enumerate(tree.rows) if r.node_id == ids["root"])
        await pilot.click(TreePane, offset=(6, root_row))
        visits.append(app.doc.cursor_id)
        await pilot.press("l", "l")
        # Click on the first characters of the text: the root's segment.
        await pilot.click(BranchView, offset=(2, 0))
        visits.append(app.doc.cursor_id)

    drive(doc_path, script)
    assert visits == [ids["sound"], ids["root"], ids["root"]]


def test_bookmarks_jump_to_id_and_search(doc_path: Path) -> None:
    ids = story(doc_path)
    visits: list[str] = []

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("b")  # bookmark walk
        await pilot.press("3", "b")  # and laughed
        await pilot.press("r")
        await pilot.press("right_square_bracket")
        visits.append(app.doc.cursor_id)
        await pilot.press("right_square_bracket")
        visits.append(app.doc.cursor_id)
        await pilot.press("left_square_bracket")
        visits.append(app.doc.cursor_id)
        await pilot.press("apostrophe", *ids["gulls"][:6], "enter")
        visits.append(app.doc.cursor_id)
        await pilot.press("slash", *"the", "enter")  # lower case: ignores case
        visits.append(app.doc.cursor_id)
        await pilot.press("n")
        visits.append(app.doc.cursor_id)
        await pilot.press("N", "N")
        visits.append(app.doc.cursor_id)

    drive(doc_path, script)
    on_disk = store.load(doc_path)
    assert "bookmark" in on_disk.nodes[ids["walk"]] and "bookmark" in on_disk.nodes[ids["laughed"]]
    # Matches of "the" in document order: root, walk, gulls, sound ("the bay").
    assert visits == [
        ids["walk"],
        ids["laughed"],
        ids["walk"],
        ids["gulls"],
        ids["sound"],
        ids["root"],
        ids["gulls"],
    ]


# ---- changing the document -------------------------------------------------------------------


def test_edit_inline_a_leaf_in_place_and_a_node_with_children_as_a_new_version(
    doc_path: Path,
) -> None:
    ids = story(doc_path)

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("1", "e", "end", *" Loud", "ctrl+s")  # a leaf: edited in place
        await pilot.press("h", "e", *" Again", "ctrl+s")  # walk has children: a new version

    app = drive(doc_path, script)
    on_disk = store.load(doc_path)
    assert on_disk.nodes[ids["gulls"]]["text"].endswith("silent. Loud")
    assert on_disk.nodes[ids["walk"]]["text"] == STORY[1]  # untouched: its children keep it
    version = on_disk.cursor_id
    assert version != ids["walk"]
    assert on_disk.nodes[version]["text"] == STORY[1] + " Again"
    assert on_disk.nodes[version]["meta"]["version_of"] == ids["walk"]
    assert app.doc.cursor_id == version


def test_escape_cancels_an_edit(doc_path: Path) -> None:
    ids = story(doc_path)

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("e", *"xyz", "escape")

    drive(doc_path, script)
    assert store.load(doc_path).nodes[ids["walk"]]["text"] == STORY[1]


def test_editing_in_editor_without_a_terminal_is_an_error_not_a_crash(doc_path: Path) -> None:
    story(doc_path)

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("E")

    app = drive(doc_path, script)
    assert app.last_error is not None and "editor" in app.last_error


def test_add_child_and_sibling_by_typing(doc_path: Path) -> None:
    ids = story(doc_path)

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("a", *" A new line.", "ctrl+s")
        await pilot.press("A", *" Its sibling.", "ctrl+s")

    app = drive(doc_path, script)
    on_disk = store.load(doc_path)
    kids = on_disk.live_child_ids(ids["walk"])
    assert [on_disk.nodes[k]["text"] for k in kids[-2:]] == [" A new line.", " Its sibling."]
    assert on_disk.cursor_id == kids[-1] == app.doc.cursor_id


def test_split_at_the_text_cursor_then_merge_back(doc_path: Path) -> None:
    ids = story(doc_path)
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("s")
        assert app.caret_mode == "split"
        await pilot.press("home", "w", "w", "l")  # " He walked" -> after "w" of walked
        seen["caret"] = app.query_one(BranchView).caret
        await pilot.press("enter")
        seen["after_split"] = app.doc.cursor_id
        await pilot.press("m")

    drive(doc_path, script)
    assert seen["caret"] == len(" He w")
    on_disk = store.load(doc_path)
    assert on_disk.nodes[ids["walk"]]["text"] == STORY[1]  # merged back whole
    assert seen["after_split"] not in on_disk.nodes
    assert on_disk.cursor_id == ids["walk"]
    assert on_disk.live_child_ids(ids["walk"]) == [ids["gulls"], ids["sound"], ids["laughed"]]


def test_split_with_a_click_in_the_text(doc_path: Path) -> None:
    ids = story(doc_path)

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("h", "s")  # the root: its text is the first row
        await pilot.click(BranchView, offset=(1 + len("The lighthouse "), 0))
        await pilot.press("enter")

    drive(doc_path, script)
    on_disk = store.load(doc_path)
    assert on_disk.nodes[ids["root"]]["text"] == "The lighthouse "
    tail = on_disk.cursor_id
    assert on_disk.nodes[tail]["text"] == "keeper woke to find the sea gone."
    assert on_disk.nodes[ids["walk"]]["parent"] == tail


def test_archive_restore_undo_redo(doc_path: Path) -> None:
    ids = story(doc_path)
    seen: list[Any] = []

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("2", "x")
        seen.append((app.doc.cursor_id, app.query_one(ChildrenList).ids))
        await pilot.press("X")  # the only deleted child: restored at once
        seen.append(app.query_one(ChildrenList).ids)
        await pilot.press("u")  # undo the restore
        seen.append(app.query_one(ChildrenList).ids)
        await pilot.press("ctrl+r")  # and redo it
        seen.append(app.query_one(ChildrenList).ids)

    drive(doc_path, script)
    everyone = [ids["gulls"], ids["sound"], ids["laughed"]]
    without = [ids["gulls"], ids["laughed"]]
    assert seen == [(ids["walk"], without), everyone, without, everyone]
    assert store.load(doc_path).live_child_ids(ids["walk"]) == everyone


def test_restore_picks_among_several_deleted_children(doc_path: Path) -> None:
    ids = story(doc_path)

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("1", "x", "1", "x", "X", "2")

    drive(doc_path, script)
    assert store.load(doc_path).live_child_ids(ids["walk"]) == [ids["sound"], ids["laughed"]]


def test_tag_and_note(doc_path: Path) -> None:
    ids = story(doc_path)

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("t", *"draft good", "enter")
        await pilot.press("t", *"-draft", "enter")
        await pilot.press("c", *"check the tide tables", "ctrl+s")

    drive(doc_path, script)
    rec = store.load(doc_path).nodes[ids["walk"]]
    assert rec["tags"] == ["good"]
    assert rec["note"] == "check the tide tables"


# ---- probabilities ---------------------------------------------------------------------------


def test_probabilities_colour_tokens_with_a_legend_and_branch_from_an_alternative(
    doc_path: Path,
) -> None:
    ids = story(doc_path)
    generated = with_logprobs(doc_path, ids["walk"])
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("p")
        branch = app.query_one(BranchView)
        seen["bands"] = branch._token_bands(branch.layout_.current)
        seen["screen"] = screen_text(app)
        await pilot.press("o")  # the cursor starts on the least likely token with alternatives
        seen["caret"] = branch.caret
        await pilot.press("enter")
        seen["modal"] = screen_text(app)
        await pilot.press("1")  # " sea" instead of " tide"

    app = drive(doc_path, script)
    assert [b[2] for b in seen["bands"]] == [0, 3, 1, 2, 0]  # p≈.95 .08 .74 .41 .99
    assert "≥0.8" in seen["screen"] and "<0.05" in seen["screen"]  # the legend
    assert seen["caret"] == len(" The")
    assert "' sea'" in seen["modal"] and "' water'" in seen["modal"]
    on_disk = store.load(doc_path)
    new = on_disk.cursor_id
    assert new != generated and on_disk.nodes[new]["text"] == " The sea"
    assert on_disk.nodes[new]["meta"]["alt_of"] == generated
    assert app.caret_mode is None


def test_alternatives_on_a_node_without_probabilities_say_so(doc_path: Path) -> None:
    story(doc_path)

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("o")

    app = drive(doc_path, script)
    assert app.last_error == "this node has no token probabilities recorded"
    assert app.caret_mode is None


# ---- the rest of the keys ---------------------------------------------------------------------


def test_help_lists_every_binding(doc_path: Path) -> None:
    from rich.console import Console

    from loom.tui.keys import KEYS
    from loom.tui.screens.dialogs import HelpScreen, help_table

    story(doc_path)
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("question_mark")
        seen["shown"] = isinstance(app.screen, HelpScreen)
        seen["screen"] = screen_text(app)
        await pilot.press("escape")
        seen["after"] = isinstance(app.screen, HelpScreen)

    drive(doc_path, script, size=(100, 50))
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(help_table())
    table = console.export_text()
    for key in KEYS:
        assert key.description in table, key
    assert seen["shown"] and not seen["after"]
    assert "Go to the parent" in seen["screen"]


def test_command_palette_runs_an_action(doc_path: Path) -> None:
    ids = story(doc_path)

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("colon")
        await pilot.press(*"go to the root")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: app.doc.cursor_id == ids["root"], 5)

    drive(doc_path, script)
    assert cursor_on_disk(doc_path) == ids["root"]


def test_tree_pane_hides_theme_switches_log_opens(doc_path: Path) -> None:
    story(doc_path)
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("z")
        seen["tree"] = app.query_one(TreePane).display
        await pilot.press("z")
        seen["tree_again"] = app.query_one(TreePane).display
        dark = app.current_theme.dark
        before = app.query_one(BranchView).render_line(0)
        await pilot.press("ctrl+t")
        after = app.query_one(BranchView).render_line(0)
        seen["theme_flipped"] = app.current_theme.dark != dark
        seen["repainted"] = before.text and next(iter(before)).style != next(iter(after)).style
        await pilot.press("L")
        seen["log"] = screen_text(app)

    drive(doc_path, script)
    assert seen["tree"] is False and seen["tree_again"] is True
    assert seen["theme_flipped"] and seen["repainted"]
    assert "Recent changes" in seen["log"] and "add" in seen["log"]


def test_quit_saves_what_is_pending(doc_path: Path) -> None:
    ids = story(doc_path)

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("3", "q")

    app = drive(doc_path, script)
    assert cursor_on_disk(doc_path) == ids["laughed"]
    assert app.session.pending == 0


def test_a_read_only_file_keeps_changes_and_says_so(doc_path: Path) -> None:
    ids = story(doc_path)
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        doc_path.chmod(0o444)
        await pilot.press("1")
        await until(pilot, lambda: app.last_error is not None, 5)
        seen["error"] = app.last_error
        seen["status"] = screen_text(app)
        await pilot.press("q")
        seen["still_running"] = app.is_running
        doc_path.chmod(0o644)

    app = drive(doc_path, script)
    assert "read-only" in seen["error"]
    assert "NOT SAVED" in seen["status"]
    assert seen["still_running"]  # the first q refuses to drop the change
    assert app.doc.cursor_id == ids["gulls"]


# ---- other processes, huge documents ------------------------------------------------------------


def test_another_process_change_appears_without_losing_our_state(doc_path: Path) -> None:
    """An agent adds a child with `loom add` in another process: it shows in the children
    list within a second; the TUI's own moves, made meanwhile, are kept."""
    ids = story(doc_path)
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("p")  # view state that a reload must not reset
        proc = subprocess.run(
            [sys.executable, "-m", "loom", "add", " From an agent.", "--stay", "-f", str(doc_path)],
            capture_output=True,
            text=True,
            check=True,
        )
        seen["new"] = proc.stdout.strip()
        seen["appeared"] = await until(
            pilot, lambda: seen["new"] in app.query_one(ChildrenList).ids, 5
        )
        seen["screen"] = screen_text(app)
        seen["probs"] = app.query_one(BranchView).probs
        await pilot.press("4")

    app = drive(doc_path, script)
    assert seen["appeared"], "the other process's child never appeared"
    assert "From an agent." in seen["screen"]
    assert seen["probs"] is True
    assert app.doc.cursor_id == seen["new"] == cursor_on_disk(doc_path)
    assert ids["walk"] in store.load(doc_path).nodes


def test_a_2000_deep_chain(tmp_path: Path) -> None:
    path = tmp_path / "chain.loom.json"
    ids = chain_file(path, 2000)
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        seen["screen"] = screen_text(app)
        await pilot.press(*["h"] * 50)
        seen["after_up"] = app.doc.cursor_id
        await pilot.press(*["l"] * 20)
        seen["after_down"] = app.doc.cursor_id
        await pilot.press("r")
        seen["root_screen"] = screen_text(app)
        seen["tree_rows"] = len(app.query_one(TreePane).rows)

    drive(path, script)
    assert "step 1999." in seen["screen"]
    assert seen["after_up"] == ids[1949] and seen["after_down"] == ids[1969]
    assert cursor_on_disk(path) == ids[0]
    assert "step 0." in seen["root_screen"]
    assert seen["tree_rows"] <= 10  # a window, not 2,000 rows


def test_a_long_chain_elides_the_text_far_above_and_widens_on_scroll(tmp_path: Path) -> None:
    path = tmp_path / "chain.loom.json"
    chain_file(path, 3000, text="a fairly long sentence number {i} in the chain. ")
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        branch = app.query_one(BranchView)
        seen["first"] = branch.layout_.first
        seen["screen"] = screen_text(app)
        branch.scroll_to(y=0, animate=False, immediate=True)
        await pilot.pause()
        seen["widened"] = branch.layout_.first

    drive(path, script)
    assert seen["first"] > 0
    assert "earlier nodes above" not in seen["screen"]  # scrolled to the end at first
    assert seen["widened"] < seen["first"]


def test_a_100k_node_document(tmp_path: Path) -> None:
    path = tmp_path / "big.loom.json"
    ids = forest_file(path, 100_000)
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        seen["screen"] = screen_text(app)
        await pilot.press("h", "h", "1", "j", "r")
        seen["cursor"] = app.doc.cursor_id

    drive(path, script)
    assert "node 99999 says" in seen["screen"]
    assert "100,000 nodes" in seen["screen"]
    assert seen["cursor"] == ids[0] == cursor_on_disk(path)


def test_the_file_deleted_under_the_tui_is_an_error_not_a_crash(doc_path: Path) -> None:
    ids = story(doc_path)
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        data = doc_path.read_bytes()
        doc_path.unlink()
        await pilot.press("1")
        seen["error"] = await until(pilot, lambda: app.last_error is not None, 5)
        seen["message"] = app.last_error
        doc_path.write_bytes(data)  # put back: the queued move is saved on the next try
        seen["saved"] = await until(pilot, lambda: app.session.pending == 0, 10)

    drive(doc_path, script)
    assert seen["error"] and "no such file" in seen["message"]
    assert seen["saved"]
    assert cursor_on_disk(doc_path) == ids["gulls"]
