"""OpenLoom v1: the real chat fixture in, out, and back in; damaged files refused in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from interop_support import (
    by_source_id,
    cursor_position,
    fixture,
    imported,
    longest_path,
    signature,
    write_json,
)
from loom import formats, journal
from loom.document import Document
from loom.errors import DocumentError, InvalidOperation
from loom.formats.forest import graft
from loom.ids import ALPHABET

OPENLOOM = fixture("openloom_existence_of_claude.json")


def raw() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(OPENLOOM.read_text(encoding="utf-8"))
    return data


def test_real_file_imports_every_turn_with_roles_bookmarks_and_cursor() -> None:
    """81 chat turns, 44 deep, 8 titled bookmarks; turns keep their role and exact text."""
    doc = imported(OPENLOOM)
    source = raw()
    ids = by_source_id(doc)
    assert len(doc) == 81
    assert longest_path(doc) == 44
    assert doc.title == "The Existence of Claude"
    assert doc.description.startswith("Discussion of the loom")
    assert doc.system is None  # the file's systemMessage is empty
    marks = sorted(r["bookmark"]["title"] for r in doc.nodes.values() if "bookmark" in r)
    assert marks == sorted(
        n["bookmarkTitle"] for n in source["nodes"].values() if n.get("isBookmarked")
    )
    assert len(marks) == 8
    for uuid, node in source["nodes"].items():
        rec = doc.nodes[ids[uuid]]
        assert rec["text"] == node["text"]
        assert rec.get("kind") == node["author"]  # user / assistant kept as the kind
        assert rec.get("visited") is True  # OpenLoom has no read state
        kids = [ids[c] for c in node.get("childrenIds", [])]
        assert rec.get("children", []) == kids
        if "rememberedChildId" in node:
            assert rec["last_child"] == ids[node["rememberedChildId"]]
        if node["author"] == "assistant":
            assert rec["meta"]["gen"]["model"] == node["modelId"]
        else:
            assert rec["meta"]["import"]["fields"]["modelId"] == node["modelId"]
    assert doc.cursor_id == ids[source["currentNodeId"]]
    assert doc.root_ids == [ids[source["rootNodeId"]]]


def test_apple_epoch_dates_become_iso() -> None:
    doc = imported(OPENLOOM)
    root = doc.nodes[doc.root_ids[0]]
    # createdTime 755732640.360085 s after 2001-01-01T00:00:00Z
    assert root["created"] == "2024-12-12T21:44:00.360Z"
    header = doc.data["import"]["openloom"][0]["fields"]
    assert header["id"] == raw()["id"]
    assert header["lastModified"].endswith("Z")


def test_fresh_ids_source_ids_in_meta_and_one_undo() -> None:
    doc = Document.new(title="mine")
    before = len(journal.undo_entries(doc))
    roots = graft(doc, formats.read(OPENLOOM))
    assert all(len(i) == 12 and set(i) <= set(ALPHABET) for i in doc.nodes)
    assert all(r["meta"]["import"]["format"] == "openloom" for r in doc.nodes.values())
    assert doc.title == "mine"  # an existing document keeps its own header
    assert len(journal.undo_entries(doc)) == before + 1
    journal.undo(doc)
    assert len(doc) == 0 and doc.root_ids == [] and roots[0] not in doc.nodes


def test_graft_under_a_node_keeps_the_document() -> None:
    doc = Document.new()
    from loom import ops

    anchor = ops.add_child(doc, None, "Earlier chat: ").id
    roots = graft(doc, formats.read(OPENLOOM), anchor)
    assert doc.node(anchor).child_ids == roots
    assert doc.nodes[roots[0]]["parent"] == anchor
    assert doc.full_text(doc.cursor_id or "").startswith("Earlier chat: Hey what's going on")


def test_round_trip_of_the_real_file(tmp_path: Path) -> None:
    """import -> export -> import: same texts, structure, roles, bookmarks and current node."""
    first = imported(OPENLOOM)
    exported = formats.export(first, "openloom")
    data = json.loads(exported)
    original = raw()
    assert data["rootNodeId"] == original["rootNodeId"]
    assert data["currentNodeId"] == original["currentNodeId"]
    assert set(data["nodes"]) == set(original["nodes"])  # the original UUIDs survive
    assert set(data["bookmarkedNodes"]) == set(original["bookmarkedNodes"])
    for uuid, node in original["nodes"].items():
        out = data["nodes"][uuid]
        for key in ("text", "author", "modelId", "childrenIds", "isBookmarked"):
            assert out.get(key, []) == node.get(key, []), (uuid, key)
        assert out.get("parentId") == node.get("parentId")
        assert out.get("rememberedChildId") == node.get("rememberedChildId")
        assert out.get("bookmarkTitle") == node.get("bookmarkTitle")
        assert abs(out["createdTime"] - node["createdTime"]) < 0.001
    second = imported(write_json(tmp_path / "again.openloom.json", data))
    assert signature(second) == signature(first)
    assert cursor_position(second) == cursor_position(first)
    assert second.title == first.title and second.description == first.description


def test_export_of_several_trees_needs_a_node(tmp_path: Path) -> None:
    doc = imported(OPENLOOM)
    graft(doc, formats.read(OPENLOOM))
    with pytest.raises(InvalidOperation, match="one tree"):
        formats.export(doc, "openloom")
    root = doc.root_ids[1]
    data = json.loads(formats.export(doc, "openloom", root))
    assert len(data["nodes"]) == 81


def test_export_of_a_subtree_keeps_the_earlier_turns() -> None:
    doc = imported(OPENLOOM)
    cursor = doc.cursor_id or ""
    parent = doc.path_ids(cursor)[-3]
    data = json.loads(formats.export(doc, "openloom", parent))
    path = doc.path_ids(parent)
    subtree = doc.subtree_ids(parent)
    assert len(data["nodes"]) == len(path) - 1 + len(subtree)


def test_loom_kinds_map_to_roles() -> None:
    from loom import ops

    doc = Document.new(system="Be brief.")
    root = ops.add_child(doc, None, "Write a haiku.")
    reply = ops.add_child(doc, root.id, "Leaves fall.", kind="model", meta={"gen": {"model": "m1"}})
    data = json.loads(formats.export(doc, "openloom"))
    nodes = data["nodes"]
    assert data["systemMessage"] == "Be brief."
    assert [n["author"] for n in nodes.values()] == ["user", "assistant"]
    assert [n["modelId"] for n in nodes.values()] == ["User", "m1"]
    assert data["currentNodeId"] in nodes and nodes[data["currentNodeId"]]["text"] == reply.text
    assert all(k == k.upper() for k in nodes)  # OpenLoom writes uppercase UUIDs


def _damage(data: dict[str, Any], how: str) -> dict[str, Any]:
    nodes = data["nodes"]
    root = data["rootNodeId"]
    child = nodes[root]["childrenIds"][0]
    grandchild = nodes[child]["childrenIds"][0]
    if how == "missing child":
        nodes[root]["childrenIds"].append("DEADBEEF-0000-0000-0000-000000000000")
    elif how == "two parents":
        nodes[grandchild]["childrenIds"].append(child)
    elif how == "dangling parent":
        nodes[child]["parentId"] = "NOPE"
    elif how == "missing root":
        data["rootNodeId"] = "NOPE"
    elif how == "text not text":
        nodes[child]["text"] = 42
    elif how == "children not a list":
        nodes[child]["childrenIds"] = "abc"
    elif how == "nodes not an object":
        data["nodes"] = [1, 2]
    elif how == "node not an object":
        nodes[child] = "hello"
    elif how == "cycle":
        nodes[root]["parentId"] = grandchild
        nodes[grandchild]["childrenIds"].append(root)
    return data


@pytest.mark.parametrize(
    ("how", "phrase"),
    [
        ("missing child", 'lists child "DEADBEEF-0000-0000-0000-000000000000" that does not exist'),
        ("two parents", "is listed as a child of both"),
        ("dangling parent", 'has parentId "NOPE", which does not exist'),
        ("missing root", 'rootNodeId "NOPE" is not among the nodes'),
        ("text not text", 'has a "text" that is a number, not text'),
        ("children not a list", "is text, not a list"),
        ("nodes not an object", '"nodes" is a list, not an object'),
        ("node not an object", "is text, not an object"),
        ("cycle", "form a cycle"),
    ],
)
def test_damaged_files_give_one_line(tmp_path: Path, how: str, phrase: str) -> None:
    path = write_json(tmp_path / "bad.openloom.json", _damage(raw(), how))
    with pytest.raises(DocumentError) as caught:
        formats.read(path, format="openloom")
    message = caught.value.message
    assert "\n" not in message
    assert "openloom" in message and phrase in message, message


def test_truncated_file() -> None:
    data = OPENLOOM.read_bytes()[:5000]
    with pytest.raises(DocumentError, match="truncated"):
        formats.read_bytes(data, "cut.json")


def test_a_hostile_loom_field_is_checked_like_any_import(tmp_path: Path) -> None:
    """The "loom" free field of an OpenLoom file comes from outside: bad pieces stay out."""
    data = {
        "rootNodeId": "A",
        "nodes": {
            "A": {
                "id": "A",
                "text": "Hi there",
                "author": "assistant",
                "childrenIds": [],
                "loom": {
                    "tags": ["kept"],
                    "note": 7,
                    "kind": "wizard",
                    "logprobs": {"tokens": ["Hi", " there"], "lp": [-0.1]},
                    "gen": {"model": "m", "api_key": "sk-" + "x" * 30},
                },
            }
        },
    }
    doc = imported(write_json(tmp_path / "h.openloom.json", data))
    rec = next(iter(doc.nodes.values()))
    assert rec["tags"] == ["kept"] and "note" not in rec and rec["kind"] == "assistant"
    assert "logprobs" not in rec["meta"]  # two tokens, one logprob: refused
    assert rec["meta"]["gen"] == {"model": "m"}  # the key went with the other secrets
