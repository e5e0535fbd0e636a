"""Detection, grafting, loom's own document/JSONL forms, and the text and Markdown exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from interop_support import (
    build_basemode_db,
    by_source_id,
    cursor_position,
    fixture,
    imported,
    signature,
)
from loom import formats, journal, ops, store
from loom.document import Document
from loom.errors import BadInput, DocumentError, NotFound
from loom.formats.forest import ImportedForest, ImportedNode, graft
from loom.formats.readers import to_iso


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("openloom_existence_of_claude.json", "openloom"),
        ("pyloom_loom_demo.json", "pyloom"),
        ("pyloom_teleology.json", "pyloom"),
        ("loomsidian_data.json", "loomsidian"),
        ("loomsidian_note.json", "loomsidian"),
        ("basemode_export.json", "basemode"),
        ("miniloom_fox.json", "miniloom"),
        ("exoloom_tree.json", "exoloom"),
        ("bonsai_tree.json", "bonsai"),
        ("nanoloom_tapestry.json", "nanoloom"),
    ],
)
def test_detection_by_structure(tmp_path: Path, name: str, fmt: str) -> None:
    # A misleading file name must not matter.
    path = tmp_path / "whatever.txt"
    path.write_bytes(fixture(name).read_bytes())
    assert formats.read(path).format == fmt


def test_detection_of_sqlite_loom_and_jsonl(tmp_path: Path) -> None:
    assert formats.read(build_basemode_db(tmp_path / "x.db")).format == "basemode"
    doc = imported(fixture("nanoloom_tapestry.json"))
    (tmp_path / "d.loom.json").write_bytes(store.encode(doc))
    assert formats.read(tmp_path / "d.loom.json").format == "loom"
    (tmp_path / "n.jsonl").write_bytes(formats.export(doc, "jsonl"))
    assert formats.read(tmp_path / "n.jsonl").format == "jsonl"


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (
            b'{"hello": "world"}',
            "valid JSON, not a tree format loom knows (loom, jsonl, openloom, pyloom",
        ),
        (b"just some text\nand more\n", "not JSON, not a tree format loom knows"),
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "binary data, not a tree format loom knows"),
        (b'{"nodes": {"a": ', "not valid JSON at byte 16 (the file looks truncated)"),
    ],
)
def test_unknown_content_names_the_known_formats(
    tmp_path: Path, content: bytes, phrase: str
) -> None:
    path = tmp_path / "mystery"
    path.write_bytes(content)
    with pytest.raises(DocumentError, match="mystery") as caught:
        formats.read(path)
    assert phrase in caught.value.message


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        formats.read(tmp_path / "nope.json")
    with pytest.raises(BadInput, match="is a folder, not a file to import"):
        formats.read(tmp_path)


def test_graft_is_one_undoable_step_and_maps_references() -> None:
    forest = ImportedForest("test", source="t")
    forest.nodes = {
        "a": ImportedNode("a", text="Root", children=["b", "c"], last_child="c"),
        "b": ImportedNode("b", text=" one", kind="model", tags=["x"], bookmark={"title": "B"}),
        "c": ImportedNode(
            "c", text=" two", version_of="b", note="n", archived=True, fields={"k": 1}
        ),
    }
    forest.roots = ["a"]
    forest.cursor = "b"
    forest.title = "T"
    forest.fields = {"doc": 1}
    doc = Document.new()
    roots = graft(doc, forest)
    ids = by_source_id(doc)
    assert roots == [ids["a"]] and doc.title == "T"
    assert doc.nodes[ids["c"]]["meta"]["version_of"] == ids["b"]
    assert doc.nodes[ids["c"]]["meta"]["import"] == {
        "format": "test",
        "id": "c",
        "fields": {"k": 1},
    }
    assert doc.nodes[ids["a"]]["last_child"] == ids["c"]
    assert doc.cursor_id == ids["b"] and doc.nodes[ids["b"]]["visited"] is True
    assert doc.data["import"]["test"][0]["fields"] == {"doc": 1}
    store.validate(doc.data)
    entries = journal.undo_entries(doc)
    assert len(entries) == 1 and entries[0]["op"] == "import"
    journal.undo(doc)
    assert len(doc) == 0 and "import" not in doc.data and doc.title == ""
    journal.redo(doc)
    assert len(doc) == 3


def test_graft_refuses_a_broken_forest_without_changes() -> None:
    doc = Document.new()
    ops.add_child(doc, None, "keep me")
    before = json.dumps(doc.data, sort_keys=True)
    forest = ImportedForest("test", nodes={"a": ImportedNode("a", children=["zz"])}, roots=["a"])
    with pytest.raises(DocumentError, match='refers to a node "zz"'):
        graft(doc, forest)
    assert json.dumps(doc.data, sort_keys=True) == before
    with pytest.raises(NotFound):
        graft(doc, formats.read(fixture("nanoloom_tapestry.json")), "nope")
    assert json.dumps(doc.data, sort_keys=True) == before


def test_graft_without_moving_the_cursor_still_gives_a_document_a_cursor() -> None:
    def forest() -> ImportedForest:
        out = ImportedForest("test", source="t")
        out.nodes = {
            "gone": ImportedNode("gone", text="deleted", archived=True),
            "a": ImportedNode("a", text="Root", children=["b"]),
            "b": ImportedNode("b", text=" leaf"),
        }
        out.roots = ["gone", "a"]
        out.cursor = "b"
        return out

    doc = Document.new()
    graft(doc, forest(), move_cursor=False)
    ids = by_source_id(doc)
    assert doc.cursor_id == ids["a"]  # the first live root: the import's cursor was not wanted
    store.validate(doc.data)
    journal.undo(doc)
    assert len(doc) == 0 and doc.cursor_id is None
    journal.redo(doc)
    assert doc.cursor_id is not None and not doc.is_archived(doc.cursor_id)
    # A document that already has a cursor keeps it.
    other = Document.new()
    keep = ops.add_child(other, None, "mine").id
    graft(other, forest(), move_cursor=False)
    assert other.cursor_id == keep
    # A document whose nodes are all deleted gets one too.
    gone = Document.new()
    ops.add_child(gone, None, "x")
    ops.archive(gone, gone.cursor_id or "")
    graft(gone, forest(), move_cursor=False)
    assert gone.cursor_id is not None and not gone.is_archived(gone.cursor_id)


def test_loom_document_grafts_into_another(tmp_path: Path) -> None:
    source = imported(fixture("pyloom_teleology.json"))
    version = ops.edit(
        source, source.root_ids[0], "edited root"
    ).id  # root has a child: a new version
    path = tmp_path / "other.loom.json"
    store.create(path, source)
    target = Document.new(title="target")
    ops.add_child(target, None, "existing")
    roots = graft(target, formats.read(path))
    assert len(roots) == 2  # the original root and its sibling version
    assert not set(roots) & set(source.nodes)  # fresh ids
    new_version = next(r for r in roots if target.nodes[r]["text"] == "edited root")
    assert target.nodes[new_version]["meta"]["version_of"] in roots
    assert (
        target.nodes[new_version]["meta"]["version_of"]
        != source.nodes[version]["meta"]["version_of"]
    )
    assert target.title == "target"
    imported_sig = [row for row in signature(target) if row[0][0] > 0]
    assert [r[1:] for r in imported_sig] == [r[1:] for r in signature(source)]


@pytest.mark.parametrize("fmt", ["jsonl", "loom"])
def test_native_round_trips(tmp_path: Path, fmt: str) -> None:
    doc = imported(fixture("pyloom_loom_demo.json"))
    path = tmp_path / ("out.jsonl" if fmt == "jsonl" else "out.loom.json")
    path.write_bytes(formats.export(doc, fmt))
    again = imported(path)
    assert signature(again) == signature(doc)
    if fmt == "loom":
        assert cursor_position(again) == cursor_position(doc)
        store.parse(path.read_bytes())  # a valid document on its own


def test_jsonl_is_one_node_per_line() -> None:
    doc = imported(fixture("exoloom_tree.json"))
    lines = formats.export(doc, "jsonl").decode().splitlines()
    assert len(lines) == len(doc)
    first = json.loads(lines[0])
    assert first["id"] == doc.root_ids[0] and first["text"] == "In the tidepool,"
    assert "parent" not in first and len(first["children"]) == 2


def test_unknown_record_keys_survive_a_jsonl_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "n.jsonl"
    path.write_text(
        '{"id": "a", "text": "x", "future": [1]}\n{"id": "b", "parent": "a", "text": "y"}\n'
    )
    doc = imported(path)
    assert doc.nodes[doc.root_ids[0]]["future"] == [1]


def test_text_and_markdown_exports() -> None:
    doc = imported(fixture("openloom_existence_of_claude.json"))
    cursor = doc.cursor_id or ""
    assert formats.export(doc, "text").decode() == doc.full_text(cursor)
    node = doc.path_ids(cursor)[2]
    assert formats.export(doc, "text", node).decode() == doc.full_text(node)
    md = formats.export(doc, "markdown", node).decode()
    assert md.startswith("# The Existence of Claude\n\n> Discussion of the loom")
    assert md.count("### User") == 2 and md.count("### Assistant") == 1
    story = imported(fixture("loomsidian_note.json"))
    assert formats.export(story, "markdown").decode() == "Dear diary, today I learned to weave.\n"
    with pytest.raises(NotFound):
        formats.export(Document.new(), "text")


def test_timestamps() -> None:
    assert to_iso(0) == "1970-01-01T00:00:00.000Z"
    assert to_iso(1_700_000_000_000) == to_iso(1_700_000_000) == "2023-11-14T22:13:20.000Z"
    assert to_iso(0, epoch="apple") == "2001-01-01T00:00:00.000Z"
    assert to_iso("2021-09-16-21.55.18") == "2021-09-16T21:55:18.000Z"
    assert to_iso("2025-03-01T10:00:05.123456+02:00") == "2025-03-01T08:00:05.123Z"
    assert to_iso("yesterday") is None and to_iso(float("nan")) is None and to_iso(1e300) is None


def test_cli_lists_match_the_library() -> None:
    """interop_cmds keeps its own format lists (so other commands start fast); they must not
    drift. The ingest limits have one home, loom.ingest, which the CLI imports."""
    import ast
    import inspect

    from loom import ingest
    from loom.cli import interop_cmds
    from loom.formats import detect

    assert interop_cmds.IMPORT_FORMATS == formats.IMPORT_FORMATS
    assert set(detect.KNOWN) == set(formats.IMPORT_FORMATS)
    assert interop_cmds.EXPORT_FORMATS == formats.EXPORT_FORMATS
    assert interop_cmds.CHUNK_MODES is ingest.CHUNK_MODES
    assert interop_cmds.MAX_BYTES is ingest.MAX_BYTES
    assigned = {
        target.id
        for node in ast.walk(ast.parse(inspect.getsource(interop_cmds)))
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert not assigned & {"CHUNK_MODES", "MAX_BYTES"}
    params = {p.name: p for p in interop_cmds.ingest_cmd.params}  # type: ignore[attr-defined]
    assert params["max_bytes"].default == ingest.MAX_BYTES
    assert tuple(params["chunk"].type.choices) == ingest.CHUNK_MODES


def test_response_backups_only_go_with_pyloom() -> None:
    from loom.errors import UsageError

    with pytest.raises(UsageError, match="only go with pyloom trees"):
        formats.read(
            fixture("exoloom_tree.json"),
            responses=[fixture("pyloom_teleology_model_responses_1.json")],
        )
    with pytest.raises(
        DocumentError, match="pyloom model responses, not a tree: pass it with --responses"
    ):
        formats.read(fixture("pyloom_teleology_model_responses_1.json"))
