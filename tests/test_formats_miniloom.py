"""MiniLoom: diff-match-patch patches to full texts to segments, in both diff encodings.

The fixture's patches were made by diff-match-patch over UTF-16 code units, as
MiniLoom (JavaScript) makes them: node 5's diff splits an emoji's surrogate pair,
node 4 uses {"0": op, "1": text} diffs, node 6 the patch text format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from interop_support import by_source_id, fixture, imported, write_json
from loom import formats
from loom.errors import DocumentError

FOX = fixture("miniloom_fox.json")
FULL = {
    "1": "",
    "2": "Once upon a time, 🙂 a fox",
    "3": "Once upon a time, 🙂 a fox jumped over the moon.",
    "4": "Once upon a time, 🙂 a fox slept. 😴",
    "5": "Once upon a time, 🙂 a wolf jumped over the moon.",
    "6": "Once upon a time, 🙂 a fox, and then",
    "7": "Once upon a time, 🙂 a wolf jumped over the moon. The end.",
}


def test_full_texts_match_miniloom() -> None:
    doc = imported(FOX)
    ids = by_source_id(doc)
    for node_id, text in FULL.items():
        assert doc.full_text(ids[node_id]) == text, node_id


def test_segments_kinds_and_metadata() -> None:
    doc = imported(FOX)
    ids = by_source_id(doc)
    assert doc.nodes[ids["3"]]["text"] == " jumped over the moon."
    gen = doc.nodes[ids["3"]]
    assert gen["kind"] == "model"
    assert gen["meta"]["gen"] == {"model": "llama-3-8b", "finish_reason": "length"}
    assert gen["meta"]["import"]["fields"]["summary"] == "Fox jumps moon"
    assert gen["meta"]["import"]["fields"]["rating"] is True
    assert gen["created"] == "2024-11-30T20:53:21.000Z"
    assert not doc.nodes[ids["4"]].get("visited")  # read: false
    assert doc.cursor_id == ids["7"]  # the focus


def test_a_rewrite_of_earlier_text_moves_up() -> None:
    """Node 5 rewrites 'fox' as 'wolf': it cannot extend node 3, so it sits under the root."""
    doc = imported(FOX)
    ids = by_source_id(doc)
    wolf = doc.nodes[ids["5"]]
    assert wolf["parent"] == ids["1"]
    assert wolf["meta"]["version_of"] == ids["3"]
    assert wolf["text"] == FULL["5"]
    assert doc.nodes[ids["7"]]["parent"] == ids["5"]
    forest = formats.read(FOX)
    assert any("rewrite" in note for note in forest.notes)


def _fox() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FOX.read_text(encoding="utf-8"))
    return data


def test_shifted_context_still_applies(tmp_path: Path) -> None:
    data = _fox()
    for patch in data["loomTree"]["nodeStore"]["3"]["patch"]:
        patch["start2"] += 3  # stale offsets: the context is found nearby
    doc = imported(write_json(tmp_path / "shifted.json", data))
    assert doc.full_text(by_source_id(doc)["3"]) == FULL["3"]


@pytest.mark.parametrize(
    ("edit", "phrase"),
    [
        (
            lambda s: s["3"].__setitem__(
                "patch", [{"diffs": [[0, "zebra"], [1, "!"]], "start2": 0}]
            ),
            'patch of node "3" does not apply',
        ),
        (lambda s: s["3"]["patch"][0].__setitem__("diffs", [[7, "x"]]), "has op 7"),
        (
            lambda s: s["3"]["patch"][0].__setitem__("diffs", [["x"]]),
            'neither [op, text] nor {"0": op, "1": text}',
        ),
        (
            lambda s: s["3"]["patch"][0].__setitem__("start2", "0"),
            'has a "start2" that is not a position',
        ),
        (lambda s: s["6"].__setitem__("patch", "@@ nonsense @@\n+x\n"), "bad hunk header"),
        (lambda s: s["2"]["children"].append("99"), 'lists child "99" that does not exist'),
    ],
)
def test_damaged_patches(tmp_path: Path, edit: Any, phrase: str) -> None:
    data = _fox()
    edit(data["loomTree"]["nodeStore"])
    with pytest.raises(DocumentError) as caught:
        formats.read(write_json(tmp_path / "bad.json", data), format="miniloom")
    assert phrase in caught.value.message, caught.value.message
