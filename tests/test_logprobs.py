"""Token probabilities (`meta.logprobs`): offsets, alternatives, branching from one, `loom alts`."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from loom import journal, logprobs, ops, store
from loom.document import Document
from loom.errors import InvalidOperation, NotFound

from conftest import Loom

PROBS = {
    "source": "post",
    "tokens": [" The", " sea", " rose"],
    "lp": [-0.1, -0.7, -1.2],
    "top": [
        [[" The", -0.1], [" A", -2.5]],
        [[" sea", -0.7], [" tide", -1.0], [" moon", -3.0]],
        [],
    ],
}


def generated(text: str = " The sea rose", probs: dict[str, object] | None = None) -> Document:
    doc = Document.new()
    root = ops.add_child(doc, None, "Once,").id
    meta = {"logprobs": dict(probs or PROBS)}
    ops.add_child(doc, root, text, kind="model", meta=meta)
    return doc


def test_starts_and_token_at() -> None:
    assert logprobs.starts(PROBS) == [0, 4, 8]
    assert [logprobs.token_at(PROBS, i) for i in (0, 3, 4, 7, 8, 12)] == [0, 0, 1, 1, 2, 2]
    for outside in (-1, 13):
        with pytest.raises(InvalidOperation, match=r"0\.\.12"):
            logprobs.token_at(PROBS, outside)


def test_alternatives_at_an_offset() -> None:
    doc = generated()
    node = doc.cursor_id
    assert node is not None
    choice = logprobs.alternatives_at(doc, node, 6)
    index, start, token, alternatives = choice[:4]
    assert (index, start, token) == (1, 4, " sea")
    assert alternatives == [(" sea", -0.7), (" tide", -1.0), (" moon", -3.0)]
    assert choice.logprob == -0.7
    assert logprobs.alternatives_at(doc, node, 9).alternatives == []


def test_no_or_stale_probabilities_are_refused() -> None:
    doc = Document.new()
    plain = ops.add_child(doc, None, "typed by hand").id
    with pytest.raises(InvalidOperation, match="no token probabilities"):
        logprobs.alternatives_at(doc, plain, 0)
    doc = generated()
    node = doc.cursor_id
    assert node is not None
    ops.edit(doc, node, " The sea fell")  # in place: the tokens no longer spell the text
    with pytest.raises(InvalidOperation, match="edited by hand"):
        logprobs.alternatives_at(doc, node, 0)
    # A file edited by another tool can still leave stale probabilities behind.
    doc.nodes[node]["meta"] = {"logprobs": dict(PROBS)}
    with pytest.raises(InvalidOperation, match="no longer match"):
        logprobs.alternatives_at(doc, node, 0)


def test_editing_model_text_marks_it_and_moves_its_probabilities_to_history() -> None:
    doc = generated()
    node = doc.cursor_id
    assert node is not None and not doc.node(node).edited
    ops.edit(doc, node, " The sea fell")
    edited = doc.node(node)
    assert edited.edited and edited.to_dict()["edited"] is True
    assert "logprobs" not in edited.meta
    assert edited.history[-1] == {
        "text": " The sea rose",
        "at": edited.history[-1]["at"],
        "logprobs": PROBS,
    }
    ops.restore_version(doc, node, 0)  # the generated text comes back with its probabilities
    assert doc.node(node).meta["logprobs"] == PROBS
    assert logprobs.alternatives_at(doc, node, 5).token == " sea"
    journal.undo(doc)
    journal.undo(doc)
    assert doc.node(node).meta["logprobs"] == PROBS and not doc.node(node).edited


def test_a_new_version_of_model_text_is_marked_edited() -> None:
    doc = generated()
    node = doc.cursor_id
    assert node is not None
    ops.add_child(doc, node, " and fell.")
    version = ops.edit(doc, node, " The sea sank")  # it has children: a sibling version
    assert version.id != node and version.edited and not doc.node(node).edited
    human = ops.add_child(doc, None, "by hand")
    assert not ops.edit(doc, human.id, "by hand, again").edited  # a person's text stays a person's


def test_ls_and_tree_show_edited_model_text_with_a_pencil(loom: Loom, tmp_path: Path) -> None:
    path = tmp_path / "p.loom.json"
    doc = generated()
    store.create(path, doc)
    node = doc.cursor_id
    assert node is not None
    root = doc.root_ids[0]
    loom.ok("edit", node, "--text", " The sea fell", "-f", str(path))
    for args in (["tree"], ["ls", root]):
        out = loom.ok(*args, "-f", str(path)).stdout
        line = next(ln for ln in out.splitlines() if "The sea fell" in ln)
        assert "✎" in line, out


def test_alts_lists_every_token_and_takes_negative_offsets(loom: Loom, tmp_path: Path) -> None:
    path = tmp_path / "p.loom.json"
    doc = generated()
    store.create(path, doc)
    node = doc.cursor_id
    assert node is not None
    table = loom.ok("alts", node, "-f", str(path), "--json").json()["tokens"]
    assert [(t["offset"], t["token"], t["alternatives"]) for t in table] == [
        (0, " The", 2),
        (4, " sea", 3),
        (8, " rose", 0),
    ]
    assert table[1]["prob"] == pytest.approx(math.exp(-0.7))
    lines = loom.ok("alts", node, "-f", str(path)).stdout.splitlines()
    assert lines[1].split()[0] == "4" and "' sea'" in lines[1] and "+3 alt" in lines[1]
    last = loom.ok("alts", node, "-1", "-f", str(path), "--json").json()
    assert last["token"] == " rose" and last["offset"] == 8
    result = loom("alts", node, "--pick", "1", "-f", str(path))
    assert result.code == 2 and "--pick needs an OFFSET" in result.stderr


def test_branch_from_an_alternative_is_one_undoable_sibling() -> None:
    doc = generated()
    node = doc.cursor_id
    assert node is not None
    steps = len(journal.undo_entries(doc))
    made = logprobs.branch_from_alternative(doc, node, 5, 1)
    assert made.text == " The tide"
    assert doc.full_text(made.id) == "Once, The tide"
    assert doc.sibling_ids(node) == [node, made.id]
    assert made.meta == {"alt_of": node, "alt": {"offset": 4, "token": " tide"}}
    assert made.kind == "model" and doc.cursor_id == made.id
    assert len(journal.undo_entries(doc)) == steps + 1
    journal.undo(doc)
    assert made.id not in doc and doc.sibling_ids(node) == [node]
    with pytest.raises(NotFound, match="3 recorded alternative"):
        logprobs.branch_from_alternative(doc, node, 5, 3)


def test_split_logprobs_lives_with_the_shape() -> None:
    head, tail = logprobs.split_logprobs(PROBS, 6)
    assert head["tokens"] == [" The", " s"] and tail["tokens"] == ["ea", " rose"]
    assert head["top"][1] == [] and tail["top"][0] == []


def test_alts_command_lists_and_picks(loom: Loom, tmp_path: Path) -> None:
    path = tmp_path / "p.loom.json"
    doc = generated()
    store.create(path, doc)
    node = doc.cursor_id
    assert node is not None
    listed = loom.ok("alts", node, "6", "-f", str(path), "--json").json()
    assert listed["node"]["id"] == node and listed["offset"] == 4 and listed["token"] == " sea"
    assert listed["alternatives"][1] == {
        "token": " tide",
        "logprob": -1.0,
        "prob": math.exp(-1.0),
        "chosen": False,
    }
    text = loom.ok("alts", node, "6", "-f", str(path)).stdout
    assert text.startswith("token 1 at 4: ' sea' (p=0.497)")
    picked = loom.ok("alts", node, "6", "--pick", "2", "-f", str(path), "--json").json()
    made = picked["node"]
    assert made["text"] == " The tide" and made["meta"]["alt_of"] == node
    assert picked["cursor"] == made["id"] and picked["parent"] == made["parent"]
    assert loom.ok("show", "-f", str(path)).stdout == "Once, The tide"
    for args, fragment in (
        (["13"], "0..12"),
        (["6", "--pick", "4"], "3 recorded alternative"),
    ):
        result = loom("alts", node, *args, "-f", str(path))
        assert result.code == 1 and fragment in result.stderr
        assert result.stderr.count("\n") == 1


def test_show_probs_colours_only_tokens_that_match_the_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import click

    from loom.cli import render

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")
    doc = generated()
    node = doc.cursor_id
    assert node is not None
    shown = render.probabilities(doc, node)
    assert click.unstyle(shown) == "Once, The sea rose" and shown.count("\x1b[0m") == 3
    ops.edit(doc, node, " The sea fell")
    assert render.probabilities(doc, node) == "Once, The sea fell"
