"""Property tests: random trees survive OpenLoom and loom-native export/import round trips."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from interop_support import cursor_position, signature
from loom import formats, ops
from loom.document import Document
from loom.formats.forest import graft

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(max_size=40)
WORD = st.sampled_from(["draft", "keep", "todo", "seen", "odd-one", "ünï"])


def reimport(payload: bytes, name: str) -> Document:
    doc = Document.new()
    graft(doc, formats.read_bytes(payload, name))
    return doc


@st.composite
def openloom_files(draw: st.DrawFn) -> dict[str, Any]:
    size = draw(st.integers(min_value=1, max_value=25))
    ids = [f"{i:08X}-0000-4000-8000-{i:012X}" for i in range(size)]
    parents: list[int | None] = [None]
    parents += [draw(st.integers(min_value=0, max_value=i - 1)) for i in range(1, size)]
    nodes: dict[str, dict[str, Any]] = {}
    for i, node_id in enumerate(ids):
        role = draw(st.sampled_from(["user", "assistant", "system"]))
        node: dict[str, Any] = {
            "id": node_id,
            "text": draw(TEXT),
            "author": role,
            "modelId": "User"
            if role == "user"
            else draw(st.sampled_from(["claude-3", "gpt-4o", "m"])),
            "createdTime": draw(st.floats(min_value=0, max_value=9e8)),
            "childrenIds": [ids[j] for j in range(size) if parents[j] == i],
            "isBookmarked": draw(st.booleans()),
        }
        parent = parents[i]
        if parent is not None:
            node["parentId"] = ids[parent]
        if node["isBookmarked"] and draw(st.booleans()):
            node["bookmarkTitle"] = draw(st.text(min_size=1, max_size=15))
        if node["childrenIds"] and draw(st.booleans()):
            node["rememberedChildId"] = draw(st.sampled_from(node["childrenIds"]))
        nodes[node_id] = node
    return {
        "id": "D0C00000-0000-4000-8000-000000000000",
        "title": draw(TEXT),
        "description": draw(TEXT),
        "systemMessage": draw(TEXT),
        "rootNodeId": ids[0],
        "currentNodeId": draw(st.sampled_from(ids)),
        "nodes": nodes,
        "bookmarkedNodes": {k: v for k, v in nodes.items() if v["isBookmarked"]},
    }


@SETTINGS
@given(openloom_files())
def test_openloom_round_trip(data: dict[str, Any]) -> None:
    first = reimport(json.dumps(data).encode(), "a.openloom.json")
    exported = formats.export(first, "openloom")
    second = reimport(exported, "b.openloom.json")
    assert signature(second) == signature(first)
    assert cursor_position(second) == cursor_position(first)
    assert (second.title, second.description, second.system) == (
        first.title,
        first.description,
        first.system,
    )
    out = json.loads(exported)
    again = json.loads(formats.export(second, "openloom"))
    assert again["nodes"] == out["nodes"]  # stable ids: a second trip changes nothing
    # Along the path to the current node, a missing rememberedChildId is filled in
    # (as OpenLoom does when you walk there), so `down` leads back to it.
    on_path: dict[str, str] = {}
    current = data["currentNodeId"]
    while "parentId" in data["nodes"][current]:
        parent = data["nodes"][current]["parentId"]
        on_path[parent] = current
        current = parent
    for node_id, node in data["nodes"].items():
        mine = out["nodes"][node_id]
        for key in ("text", "author", "modelId", "childrenIds", "parentId", "isBookmarked"):
            assert mine.get(key) == node.get(key), key
        assert mine.get("rememberedChildId") == node.get("rememberedChildId", on_path.get(node_id))
        assert mine.get("bookmarkTitle") == (
            node.get("bookmarkTitle") if node["isBookmarked"] else None
        )
    assert out["currentNodeId"] == data["currentNodeId"]


@st.composite
def loom_documents(draw: st.DrawFn) -> Document:
    doc = Document.new(title=draw(TEXT), description=draw(TEXT), system=draw(TEXT) or None)
    size = draw(st.integers(min_value=1, max_value=25))
    made: list[str] = []
    for _ in range(size):
        parent = draw(st.sampled_from([None, *made])) if made else None
        kind = draw(st.sampled_from(["human", "model", "import", "user", "assistant", "system"]))
        text = draw(TEXT)
        meta: dict[str, Any] = {}
        if kind == "model" and draw(st.booleans()):
            meta["gen"] = {
                "model": draw(st.sampled_from(["m1", "gpt-4o"])),
                "params": {"temperature": 0.7},
            }
            tokens = [text[i : i + 3] for i in range(0, len(text), 3)]
            if tokens:
                meta["logprobs"] = {
                    "source": "unknown",
                    "tokens": tokens,
                    "lp": [-0.5] * len(tokens),
                }
        node = ops.add_child(doc, parent, text, kind=kind, meta=meta or None)
        made.append(node.id)
        if draw(st.booleans()):
            ops.tag(doc, node.id, add=draw(st.lists(WORD, max_size=2, unique=True)))
        if draw(st.integers(0, 3)) == 0:
            ops.set_bookmark(doc, node.id, title=draw(st.text(max_size=10)) or None)
        if draw(st.integers(0, 4)) == 0:
            ops.set_note(doc, node.id, draw(st.text(min_size=1, max_size=20)))
    for node_id in draw(st.lists(st.sampled_from(made), max_size=2, unique=True)):
        if not doc.nodes[node_id].get("archived") and draw(st.booleans()):
            ops.archive(doc, node_id)
    live = [n for n in made if not doc.is_archived(n)]
    if live:
        ops.goto(doc, draw(st.sampled_from(live)))
    return doc


def notes(doc: Document) -> list[str]:
    return [doc.nodes[i].get("note", "") for i in doc.walk(include_archived=True)]


@SETTINGS
@given(loom_documents(), st.sampled_from(["jsonl", "loom", "pyloom", "basemode"]))
def test_loom_documents_round_trip(doc: Document, fmt: str) -> None:
    again = reimport(formats.export(doc, fmt), f"out.{fmt}")
    assert signature(again) == signature(doc)
    assert notes(again) == notes(doc)
    texts = [doc.full_text(i) for i in doc.walk(include_archived=True)]
    assert [again.full_text(i) for i in again.walk(include_archived=True)] == texts
    if fmt in ("jsonl", "loom"):
        metas = [
            {k: v for k, v in doc.nodes[i].get("meta", {}).items()}
            for i in doc.walk(include_archived=True)
        ]
        assert [again.nodes[i].get("meta", {}) for i in again.walk(include_archived=True)] == metas
    if fmt in ("loom", "pyloom"):
        assert cursor_position(again) == cursor_position(doc)
    if fmt in ("pyloom",):
        probs = [
            doc.nodes[i].get("meta", {}).get("logprobs") for i in doc.walk(include_archived=True)
        ]
        assert [
            again.nodes[i].get("meta", {}).get("logprobs")
            for i in again.walk(include_archived=True)
        ] == probs


@SETTINGS
@given(loom_documents())
def test_html_payload_is_the_live_tree(doc: Document) -> None:
    from loom.formats import html

    data = html.payload(doc)
    live = list(doc.walk())
    assert [n["i"] for n in data["nodes"]] == live
    for entry in data["nodes"]:
        full = [entry["t"]]
        parent = entry["p"]
        while parent >= 0:
            full.append(data["nodes"][parent]["t"])
            parent = data["nodes"][parent]["p"]
        assert "".join(reversed(full)) == doc.full_text(entry["i"])


@SETTINGS
@given(loom_documents(), st.sampled_from(["openloom", "loomsidian"]))
def test_one_tree_formats_carry_what_they_have_no_field_for(doc: Document, fmt: str) -> None:
    """Tags, notes, token probabilities, generation records, bookmark titles and kinds come
    back from OpenLoom and Loomsidian (in their "loom" free field); deleted nodes are left
    out and a note counts them."""
    roots = [r for r in doc.root_ids if not doc.is_archived(r)]
    assume(roots)
    again = reimport(formats.export(doc, fmt, roots[0]), f"out.{fmt}")

    def rows(d: Document, root: str, gens: list[Any] | None = None) -> list[tuple[Any, ...]]:
        out = []
        stack = [root]
        while stack:
            node_id = stack.pop()
            rec = d.nodes[node_id]
            meta = rec.get("meta", {})
            mark = rec.get("bookmark")
            out.append(
                (
                    rec.get("text", ""),
                    rec.get("tags", []),
                    rec.get("note", ""),
                    meta.get("logprobs"),
                    # A node without a record gets OpenLoom's modelId ("unknown") back.
                    meta.get("gen") if gens is None or gens[len(out)] else None,
                    mark.get("title") if isinstance(mark, dict) else None,
                    rec.get("kind", "human") if fmt == "loomsidian" else None,
                )
            )
            stack.extend(reversed(d.live_child_ids(node_id)))
        return out

    before = rows(doc, roots[0])
    assert rows(again, again.root_ids[0], [row[4] for row in before]) == before
    deleted = sum(
        1
        for i in doc.walk(include_archived=True)
        if doc.is_archived(i) and doc.path_ids(i)[0] == roots[0]
    )
    left_out = [n for n in formats.export_notes(doc, fmt, roots[0]) if "deleted node" in n]
    assert [n.split(" deleted")[0] for n in left_out] == ([str(deleted)] if deleted else [])
