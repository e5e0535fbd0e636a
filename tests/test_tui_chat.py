"""Conversations in the TUI: a branch with chat roles shown as turns under their roles (as
`loom show` prints it), `i` (say) and `y` (reply) against the real local test server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("textual", reason="the [tui] extra is not installed")

import loom
from loom import chat, ops, store
from loom.generation.context import TURN_KEY
from loom.tui.layout import MARK, UNREAD
from loom.tui.widgets.branch import BranchView
from loom.tui.widgets.children import ChildrenList

from conftest import KEY, Loom
from fakeprovider import Fail, FakeProvider, Reply
from tui_support import STORY, drive, screen_text, story, until


def conversation(path: Path, *, read: bool = True) -> dict[str, str]:
    """The story (root → walk), then a user turn, two assistant replies to it, and a
    reply continued as text; the cursor on the first reply. `read=False`: the user's
    turn was never visited (the cursor jumped past it)."""
    ids = story(path)
    with loom.edit(path) as doc:
        doc.data["system"] = "You are a terse narrator."
        if read:
            ask = chat.add_turn(doc, ids["walk"], "What does the keeper hear?").id
        else:
            ask = ops.add_child(
                doc,
                ids["walk"],
                "What does the keeper hear?",
                kind="user",
                meta={TURN_KEY: True},
                move_cursor=False,
                visited=False,
            ).id
        hear = ops.add_child(doc, ask, " A low sound, far off.", kind="assistant").id
        quiet = ops.add_child(doc, ask, " Nothing.", kind="assistant", move_cursor=False).id
        more = ops.add_child(doc, hear, " Then the tide.", kind="model", move_cursor=False).id
        ops.goto(doc, hear)
    return {**ids, "ask": ask, "hear": hear, "quiet": quiet, "more": more}


def rows_of(branch: BranchView) -> list[str]:
    """The branch view's rows as text: a role row as its role, marks as the layout has them."""
    layout = branch.layout_
    nodes = branch.doc.nodes if branch.doc is not None else {}
    out = []
    for row in layout.rows:
        out.append(
            "".join(
                f"<{layout.role(nodes, s.seg)}>" if s.is_label else layout.text_of(s) for s in row
            )
        )
    return out


def test_a_conversation_shows_its_turns_under_their_roles(tmp_path: Path) -> None:
    """Each turn under its role with a blank row between turns; the story before the first
    turn is the start of the user's message (as a chat model gets it), the user's words a
    paragraph of it; node boundaries, the current node and the system message shown."""
    path = tmp_path / "chat.loom.json"
    ids = conversation(path)
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        branch = app.query_one(BranchView)
        seen["rows"] = rows_of(branch)
        seen["screen"] = screen_text(app)
        seen["current"] = branch.layout_.path[branch.layout_.current]
        seen["hints"] = app.hints().plain
        await pilot.press("1")  # the reply continued as text: it flows on in the same turn
        seen["continued"] = rows_of(branch)

    drive(tmp_path / "chat.loom.json", script, size=(100, 30))
    rows = seen["rows"]
    assert rows[0] == "<user>"
    blank = rows.index("")
    assert "".join(rows[1:blank]) == STORY[0] + MARK + STORY[1]
    assert rows[blank + 1] == MARK + "What does the keeper hear?"  # same role: a paragraph
    assert rows[blank + 2 :] == ["", "<assistant>", "A low sound, far off."]
    assert seen["current"] == ids["hear"]
    screen = seen["screen"]
    assert "System: You are a terse narrator." in screen
    assert "User" in screen and "Assistant" in screen
    assert "i say" in seen["hints"] and "y reply" in seen["hints"]
    assert seen["continued"][-1] == "A low sound, far off." + MARK + " Then the tide."


def test_turn_marks_show_unread_nodes_and_the_current_turn(tmp_path: Path) -> None:
    """A node never visited has its boundary mark (or its role row) marked as unread; the
    current turn's role row is painted as the current node."""
    path = tmp_path / "chat.loom.json"
    ids = conversation(path, read=False)
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        branch = app.query_one(BranchView)
        layout = branch.layout_
        ask = layout.path.index(ids["ask"])
        marks = [s for row in layout.rows for s in row if s.seg == ask and s.is_mark]
        seen["ask_mark"] = "".join(seg.text for seg in branch._paint(marks[0], branch.base_style))
        label = next(
            s for row in layout.rows for s in row if s.is_label and s.seg == layout.current
        )
        seen["label"] = branch._paint(label, branch.base_style)
        other = next(s for row in layout.rows for s in row if s.is_label and s.seg == 0)
        seen["other"] = branch._paint(other, branch.base_style)

    drive(path, script)
    assert seen["ask_mark"] == UNREAD
    assert seen["label"][0].text == "Assistant" and seen["other"][0].text == "User"
    assert seen["label"][0].style != seen["other"][0].style  # the current turn stands out


def test_moving_between_replies_and_back_out_of_the_conversation(tmp_path: Path) -> None:
    """j/k between the replies re-lays out only the reply; going up to the story turns the
    branch back into plain text (no role rows)."""
    path = tmp_path / "chat.loom.json"
    ids = conversation(path)
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        branch = app.query_one(BranchView)
        await pilot.press("j")
        seen["sibling"] = rows_of(branch)[-1]
        await pilot.press("h", "h")
        seen["story"] = rows_of(branch)
        seen["conversation"] = branch.layout_.conversation

    drive(path, script)
    assert seen["sibling"] == "Nothing."
    assert seen["story"][0].startswith(STORY[0]) and all("<" not in r for r in seen["story"])
    assert seen["conversation"] is False
    assert store.load(path).cursor_id == ids["walk"]


@pytest.fixture
def doc(woven: Loom, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The woven document (models on the fake server), its key in this process's environment."""
    monkeypatch.setenv("FAKE_KEY", KEY)
    monkeypatch.chdir(woven.cwd)
    return woven.cwd / "s.loom.json"


def test_say_saves_the_turn_streams_replies_and_goes_to_the_first(
    doc: Path, fake_provider: FakeProvider
) -> None:
    """`i`: the turn is typed, saved before any model is asked, the replies stream in as its
    children (messages sent to the chat model), and the cursor goes to the first reply."""
    fake_provider.script(Reply([" The sea came back.", " Gulls."], chunk_delay=0.05))
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        app.settings = type(app.settings)(model="chat", n=2)
        start = app.doc.cursor_id
        await pilot.press("i", *"What happened next?", "ctrl+s")
        seen["turn_saved"] = await until(
            pilot, lambda: app.doc.cursor_id != start and app.session.pending == 0, 5
        )
        turn = app.doc.cursor_id
        seen["turn"] = turn
        seen["streaming"] = await until(
            pilot, lambda: any(s.text for s in app.query_one(ChildrenList).streams), 10
        )
        seen["mid"] = screen_text(app)
        seen["done"] = await until(
            pilot,
            lambda: not app.generating and app.doc.field(app.doc.cursor_id, "parent") == turn,
            20,
        )
        seen["screen"] = screen_text(app)

    app = drive(doc, script)
    assert seen["turn_saved"] and seen["streaming"] and seen["done"], seen
    on_disk = store.load(doc)
    turn = on_disk.nodes[seen["turn"]]
    assert turn["text"] == "What happened next?" and turn["kind"] == "user"
    replies = on_disk.live_child_ids(seen["turn"])
    assert sorted(on_disk.nodes[r]["text"] for r in replies) == [" Gulls.", " The sea came back."]
    assert all(on_disk.nodes[r]["kind"] == "assistant" for r in replies)
    assert all(on_disk.nodes[r]["meta"]["gen"]["mode"] == "chat" for r in replies)
    assert on_disk.cursor_id == replies[0] == app.doc.cursor_id
    messages = fake_provider.requests[0].body["messages"]
    assert messages[-1] == {"role": "user", "content": "Once upon a time\n\nWhat happened next?"}
    assert "Assistant" in seen["screen"] and "User" in seen["screen"]
    assert app.last_error is None


def test_reply_asks_for_more_replies_to_the_turn_here(
    doc: Path, fake_provider: FakeProvider
) -> None:
    fake_provider.script(Reply([" One."]), Reply([" Two."]))
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        app.settings = type(app.settings)(model="chat", n=1)
        await pilot.press("i", *"Why?", "ctrl+s")
        await until(
            pilot,
            lambda: (
                not app.generating and app.doc.nodes[app.doc.cursor_id].get("kind") == "assistant"
            ),
            15,
        )
        await pilot.press("h")  # back to the turn
        seen["turn"] = app.doc.cursor_id
        await pilot.press("y")
        seen["two"] = await until(
            pilot, lambda: not app.generating and len(app.query_one(ChildrenList).ids) == 2, 15
        )

    app = drive(doc, script)
    assert seen["two"]
    on_disk = store.load(doc)
    texts = sorted(on_disk.nodes[c]["text"] for c in on_disk.live_child_ids(seen["turn"]))
    assert texts == [" One.", " Two."]
    assert on_disk.cursor_id == seen["turn"]  # reply leaves the cursor where it is
    assert fake_provider.requests[1].body["messages"][-1]["content"].endswith("Why?")
    assert app.last_error is None


def test_say_keeps_the_turn_when_the_model_fails(doc: Path, fake_provider: FakeProvider) -> None:
    fake_provider.script(Fail(401))

    async def script(app: Any, pilot: Any) -> None:
        app.settings = type(app.settings)(model="chat", n=1)
        await pilot.press("i", *"Are you there?", "ctrl+s")
        await until(pilot, lambda: app.last_error is not None, 15)

    app = drive(doc, script)
    assert app.last_error is not None and "generation failed" in app.last_error
    on_disk = store.load(doc)
    turn = on_disk.cursor_id
    assert turn is not None and on_disk.nodes[turn]["text"] == "Are you there?"
    assert on_disk.live_child_ids(turn) == []


def test_replies_stream_under_their_turn_only(doc: Path, fake_provider: FakeProvider) -> None:
    """Moving away while replies stream: the streams stay with the turn they answer, and
    the cursor is not taken back to the first reply."""
    fake_provider.script(Reply([" slow" * 30], chunk_delay=0.05))
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        app.settings = type(app.settings)(model="chat", n=1)
        await pilot.press("i", *"Tell me.", "ctrl+s")
        children = app.query_one(ChildrenList)
        seen["streaming"] = await until(pilot, lambda: any(s.text for s in children.streams), 10)
        turn = app.doc.cursor_id
        await pilot.press("h")
        seen["elsewhere"] = list(children.streams)
        seen["hint"] = screen_text(app)
        await until(pilot, lambda: not app.generating, 20)
        await until(pilot, lambda: not app.streams, 5)
        seen["turn"] = turn

    app = drive(doc, script)
    assert seen["streaming"]
    assert seen["elsewhere"] == []
    on_disk = store.load(doc)
    assert on_disk.cursor_id != seen["turn"] and app.doc.cursor_id == on_disk.cursor_id
    assert len(on_disk.live_child_ids(seen["turn"])) == 1
