"""The branch layout (pure Python): laid out a step at a time as the cursor moves, it is the
layout made from scratch; a conversation's turns are the messages a chat model gets; and
the library calls that keep a move O(1) (ops.step, tree_window's path) agree with the
whole-path ones."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

pytest.importorskip("rich", reason="the [tui] extra is not installed")

from loom import chat, ops
from loom.document import Document
from loom.generation.context import context_for
from loom.tui.layout import FLOW, MARK, PARAGRAPH, TURN, BranchLayout
from loom.view import tree_window

WORDS = ["the", "sea", "went", "out", "and", "a", "lighthouse", "keeper", "woke", "\n"]
KINDS = ["human", "model", "user", "assistant", "system", "import"]


def random_tree(seed: int, count: int = 60, *, chat_kinds: bool = True) -> Document:
    rng = random.Random(seed)
    doc = Document.new()
    ids: list[str] = []
    for _ in range(count):
        parent = rng.choice(ids) if ids and rng.random() < 0.9 else None
        text = " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 14)))
        kind = rng.choice(KINDS if chat_kinds else KINDS[:2])
        meta = {"turn": True} if kind in ("user", "system") and rng.random() < 0.7 else None
        ids.append(ops.add_child(doc, parent, text, kind=kind, meta=meta, move_cursor=False).id)
    return doc


def shape(layout: BranchLayout) -> list[list[tuple[int, int, int]]]:
    return [[(s.seg, s.start, s.end) for s in row] for row in layout.rows]


def fresh(doc: Document, path: list[str], width: int) -> BranchLayout:
    out = BranchLayout()
    out.update(doc, path, width)
    return out


@pytest.mark.parametrize("seed", range(12))
def test_a_layout_kept_up_to_date_move_by_move_is_the_layout_made_afresh(seed: int) -> None:
    """Random moves (to the parent, a child, a sibling, a jump) and edits: after each,
    the rows, the roles and the segment rows are those of a layout made from scratch."""
    rng = random.Random(seed)
    doc = random_tree(seed)
    width = rng.choice([12, 30, 61])
    node = next(iter(doc.nodes))
    kept = BranchLayout()
    for _ in range(120):
        move = rng.random()
        parent = doc.nodes[node].get("parent")
        kids = doc.nodes[node].get("children", [])
        changed = False
        if move < 0.3 and parent:
            node = parent
        elif move < 0.6 and kids:
            node = rng.choice(kids)
        elif move < 0.75 and parent:
            node = rng.choice(doc.nodes[parent]["children"])
        elif move < 0.85:
            target = rng.choice(list(doc.nodes))
            ops.edit(doc, target, doc.nodes[target]["text"] + " more", in_place=True)
            changed = True
        else:
            node = rng.choice(list(doc.nodes))
        path = doc.path_ids(node)
        kept.update(doc, path, width, changed=changed)
        made = fresh(doc, path, width)
        assert shape(kept) == shape(made)
        assert kept.conversation == made.conversation
        for seg in range(made.first, len(path)):
            assert kept.segment_rows(seg) == made.segment_rows(seg)
            assert kept.lead(doc.nodes, seg) == made.lead(doc.nodes, seg)


def test_rows_hold_every_character_once_and_fit_the_width() -> None:
    doc = random_tree(7, 80, chat_kinds=False)
    for node in list(doc.nodes)[::7]:
        path = doc.path_ids(node)
        layout = fresh(doc, path, 24)
        text = "".join(layout.text_of(s) for row in layout.rows for s in row)
        marks = "".join(layout.text_of(s) for row in layout.rows for s in row if s.is_mark)
        assert marks == MARK * (len(path) - 1)
        assert text.replace(MARK, "") == doc.full_text(node).replace("\n", "")
        shown = ["".join(layout.text_of(s) for s in row) for row in layout.rows]
        assert all(len(row.rstrip(" ")) <= 24 for row in shown)  # spaces may hang past the edge


@pytest.mark.parametrize("seed", range(8))
def test_turns_are_the_messages_a_chat_model_gets(seed: int) -> None:
    """Each user or assistant message of `context_for(mode="chat")` starts at a turn of its
    role; the other nodes of a message flow on or start paragraphs, never new turns."""
    doc = random_tree(100 + seed)
    for node in doc.nodes:
        path = doc.path_ids(node)
        layout = fresh(doc, path, 40)
        if not layout.conversation:
            continue
        context = context_for(doc, node, "chat")
        for message, ids in zip(context.messages, context.turn_ids, strict=True):
            first = path.index(ids[0])
            if layout.role(doc.nodes, first - 1) == "system" or first == 0:
                assert layout.lead(doc.nodes, first) == TURN
            assert layout.role(doc.nodes, first) == message.role
            for other in ids[1:]:
                assert layout.lead(doc.nodes, path.index(other)) in (FLOW, PARAGRAPH)


def test_a_turn_has_its_role_row_and_a_blank_row_above() -> None:
    doc = Document.new()
    story = ops.add_child(doc, None, "Once upon a time.").id
    ask = chat.add_turn(doc, story, "  What next?").id
    reply = ops.add_child(doc, ask, " The sea.", kind="assistant").id
    layout = fresh(doc, doc.path_ids(reply), 40)
    rows = [
        "".join("<label>" if s.is_label else layout.text_of(s) for s in row) for row in layout.rows
    ]
    assert rows == [
        "<label>",
        "Once upon a time.",
        "",
        MARK + "What next?",
        "",
        "<label>",
        "The sea.",
    ]
    assert [layout.lead(doc.nodes, i) for i in range(3)] == [TURN, PARAGRAPH, TURN]
    assert layout.segment_rows(2) == (5, 6)
    assert layout.hit(5, 3) == (2, 0)  # a click on a role row is a click on its node
    assert layout.locate(1, 0) == (3, 1)  # offsets in the blanks a turn leaves out: its start


@pytest.mark.parametrize("seed", range(6))
def test_step_leaves_the_document_as_goto_does(seed: int) -> None:
    """After a goto, moves of one step written by ops.step are those goto writes."""
    rng = random.Random(seed)
    doc = random_tree(200 + seed, chat_kinds=False)
    start = rng.choice(list(doc.nodes))
    ops.goto(doc, start)
    other = Document(copy.deepcopy(doc.data))
    node = start
    for _ in range(80):
        parent = doc.nodes[node].get("parent")
        choices = list(doc.nodes[node].get("children", []))
        if parent:
            choices += [parent, *doc.nodes[parent]["children"]]
        if not choices:
            break
        node = rng.choice(choices)
        ops.step(doc, node)
        ops.goto(other, node)
        assert doc.data == other.data
    far = rng.choice(list(doc.nodes))  # not a step: a whole goto
    ops.step(doc, far)
    ops.goto(other, far)
    assert doc.data == other.data


def test_tree_window_with_the_path_given_is_the_window() -> None:
    doc = random_tree(300, 200, chat_kinds=False)
    for node in list(doc.nodes)[::13]:
        path: Any = doc.path_ids(node)
        assert tree_window(doc, node, height=12, path=path) == tree_window(doc, node, height=12)
