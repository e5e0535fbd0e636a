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
    with pytest.raises(InvalidOperation, match="no longer match"):
        logprobs.alternatives_at(doc, node, 0)


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
    assert listed["node_id"] == node and listed["offset"] == 4 and listed["token"] == " sea"
    assert listed["alternatives"][1] == {
        "token": " tide",
        "logprob": -1.0,
        "prob": math.exp(-1.0),
        "chosen": False,
    }
    text = loom.ok("alts", node, "6", "-f", str(path)).stdout
    assert text.startswith("token 1 at 4: ' sea' (p=0.497)")
    made = loom.ok("alts", node, "6", "--pick", "2", "-f", str(path), "--json").json()["node"]
    assert made["text"] == " The tide" and made["meta"]["alt_of"] == node
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
