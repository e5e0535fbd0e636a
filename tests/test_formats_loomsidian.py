"""Loomsidian: one root per note from data.json, per-note files, and no API key ever copied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from interop_support import by_source_id, fixture, imported, signature, write_json
from loom import formats, store
from loom.errors import DocumentError, InvalidOperation

DATA = fixture("loomsidian_data.json")
NOTE = fixture("loomsidian_note.json")


def test_data_json_gives_one_root_per_note() -> None:
    doc = imported(DATA)
    ids = by_source_id(doc)
    assert len(doc) == 8 and len(doc.root_ids) == 2
    roots = [doc.nodes[r]["meta"]["import"]["fields"]["note_path"] for r in doc.root_ids]
    assert roots == ["stories/lighthouse.md", "scratch.md"]
    sea = ids["7f3a9c21-5e4b-4d6f-8a1b-2c3d4e5f6071"]
    assert "bookmark" in doc.nodes[sea]
    assert doc.full_text(ids["9b1f0a34-7d5e-4a1c-8e0e-5a2c1d3f4b01"]) == (
        "The lighthouse keeper woke to find the sea gone. Only sand, to the horizon."
    )
    assert not doc.nodes[ids["0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"]].get("visited")  # unread
    # The cursor is the current node of the most recently visited note.
    assert doc.cursor_id == ids["9b1f0a34-7d5e-4a1c-8e0e-5a2c1d3f4b01"]


def test_older_variants_value_author_color_and_node_lists() -> None:
    doc = imported(DATA)
    ids = by_source_id(doc)
    owl = doc.nodes[ids["b2"]]
    assert doc.full_text(ids["b2"]) == "An owl asked a question."
    assert owl["kind"] == "model" and owl["meta"]["gen"]["model"] == "gpt-4o"
    assert doc.nodes[ids["b3"]].get("kind", "human") == "human"
    assert doc.nodes[ids["b1"]]["meta"]["import"]["fields"]["color"] == "#ffaa00"


def test_settings_and_api_keys_are_never_copied(tmp_path: Path) -> None:
    doc = imported(DATA)
    saved = tmp_path / "doc.loom.json"
    store.create(saved, doc)
    text = saved.read_text(encoding="utf-8")
    assert "SECRET" not in text and "apiKey" not in text and "modelPresets" not in text
    forest = formats.read(DATA)
    assert any("API keys" in note for note in forest.notes)


def test_one_note_file() -> None:
    doc = imported(NOTE)
    ids = by_source_id(doc)
    assert doc.full_text(ids["c3"]) == "Dear diary, today I learned to weave."
    assert doc.cursor_id == ids["c3"]
    assert "bookmark" in doc.nodes[ids["c3"]]


def test_per_note_export_round_trip(tmp_path: Path) -> None:
    doc = imported(NOTE)
    out = json.loads(formats.export(doc, "loomsidian"))
    original = json.loads(NOTE.read_text(encoding="utf-8"))
    assert out["current"] == original["current"]
    assert list(out["nodes"]) == list(original["nodes"])  # insertion order is child order
    for key, node in original["nodes"].items():
        for field in ("text", "parentId", "unread", "bookmarked", "collapsed", "lastVisited"):
            assert out["nodes"][key][field] == node[field], (key, field)
    again = imported(write_json(tmp_path / "note.json", out))
    assert signature(again) == signature(doc)


def test_export_of_a_forest_needs_a_node() -> None:
    doc = imported(DATA)
    with pytest.raises(InvalidOperation, match="one tree"):
        formats.export(doc, "loomsidian")
    out = json.loads(formats.export(doc, "loomsidian", doc.root_ids[1]))
    assert out["hoisted"] == ["b1"] and out["searchTerm"] == "owl"
    assert [n["text"] for n in out["nodes"].values()] == [
        "An owl asked",
        " a question.",
        " nothing at all.",
    ]


def _damaged(how: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(NOTE.read_text(encoding="utf-8"))
    nodes = data["nodes"]
    if how == "dangling parent":
        nodes["c3"]["parentId"] = "zz"
    elif how == "cycle":
        nodes["c1"]["parentId"] = "c4"
    elif how == "unread not a flag":
        nodes["c2"]["unread"] = "yes"
    elif how == "nodes not an object":
        data["nodes"] = 7
    return data


@pytest.mark.parametrize(
    ("how", "phrase"),
    [
        ("dangling parent", 'node "c3" has parentId "zz", which does not exist'),
        ("cycle", "form a cycle"),
        ("unread not a flag", 'has a "unread" that is text, not true/false'),
        ("nodes not an object", "is a number, not an object"),
    ],
)
def test_damaged_notes(tmp_path: Path, how: str, phrase: str) -> None:
    path = write_json(tmp_path / "bad.json", _damaged(how))
    with pytest.raises(DocumentError) as caught:
        formats.read(path, format="loomsidian")
    assert phrase in caught.value.message and caught.value.message.count("\n") == 0
