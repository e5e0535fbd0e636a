"""basemode-loom: the JSON export, and the SQLite store read directly and read-only."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from interop_support import (
    build_basemode_db,
    by_source_id,
    fixture,
    imported,
    signature,
    write_json,
)
from loom import formats
from loom.errors import DocumentError

EXPORT = fixture("basemode_export.json")


def test_json_export_imports_both_trees() -> None:
    doc = imported(EXPORT)
    ids = by_source_id(doc)
    assert len(doc) == 6 and len(doc.root_ids) == 2
    robot = ids["a0000000000000000000000000000001"]
    # branch_index orders children, whatever the file order.
    assert doc.nodes[robot]["children"] == [
        ids["a0000000000000000000000000000002"],
        ids["a0000000000000000000000000000003"],
    ]
    first = doc.nodes[ids["a0000000000000000000000000000002"]]
    assert first["kind"] == "model" and "bookmark" in first
    assert first["meta"]["gen"] == {
        "model": "zai/glm-5.2",
        "strategy": "continue",
        "params": {"max_tokens": 40, "temperature": 0.9},
        "request": {"id": "gen-1"},
    }
    assert first["meta"]["import"]["fields"]["metadata"] == {"rating": 1}
    assert doc.nodes[ids["a0000000000000000000000000000003"]]["archived"] is True  # hidden
    assert doc.full_text(ids["a0000000000000000000000000000004"]) == (
        "The robot opened its eyes for the first time. The lab was quiet."
    )
    assert first["created"] == "2025-03-01T10:00:05.000Z"


def test_json_round_trip(tmp_path: Path) -> None:
    doc = imported(EXPORT)
    data = json.loads(formats.export(doc, "basemode"))
    assert data["version"] == 1
    original = {n["id"]: n for n in json.loads(EXPORT.read_text(encoding="utf-8"))["nodes"]}
    for node in data["nodes"]:
        source = original[node["id"]]
        for key in (
            "parent_id",
            "root_id",
            "text",
            "model",
            "strategy",
            "max_tokens",
            "temperature",
        ):
            assert node[key] == source[key], key
        assert node["metadata"]["bookmarked"] == source["metadata"]["bookmarked"]
        assert node["metadata"]["hidden"] == source["metadata"]["hidden"]
    again = imported(write_json(tmp_path / "again.json", data))
    assert signature(again) == signature(doc)


def test_sqlite_store(tmp_path: Path) -> None:
    db = build_basemode_db(tmp_path / "generations.sqlite")
    before = db.read_bytes()
    doc = imported(db)
    ids = by_source_id(doc)
    assert len(doc) == 7  # the context row is not a node
    harbour = doc.nodes[ids["t1root"]]
    fields = harbour["meta"]["import"]["fields"]
    assert fields["context"] == "A story set in a fishing harbour."
    assert fields["tree"]["name"] == "Harbour story"
    assert harbour["last_child"] == ids["t1b"]  # checked_out
    assert doc.nodes[ids["t1b"]]["last_child"] == ids["t1c"]
    assert doc.cursor_id == ids["t1c"]  # the current node of the tree used last
    assert (
        doc.full_text(ids["t1c"])
        == "The boats came in at dawn heavy with silver fish. The gulls followed them home."
    )
    assert doc.nodes[ids["t1d"]]["archived"] is True
    assert doc.nodes[ids["t2root"]]["archived"] is True  # an archived tree
    assert (
        doc.nodes[ids["t2root"]]["kind"] == "user" and doc.nodes[ids["t2a"]]["kind"] == "assistant"
    )
    # Read-only: the database file is untouched and no journal or WAL appears.
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generations.sqlite"]


def test_sqlite_legacy_columns(tmp_path: Path) -> None:
    """An older store: root_id and branch_index columns, no trees table."""
    db = tmp_path / "old.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        CREATE TABLE nodes (id TEXT PRIMARY KEY, parent_id TEXT, root_id TEXT, text TEXT NOT NULL,
            model TEXT, strategy TEXT, max_tokens INTEGER, temperature REAL, branch_index INTEGER,
            created_at TEXT NOT NULL, metadata_json TEXT NOT NULL DEFAULT '{}');
        INSERT INTO nodes VALUES ('r', NULL, 'r', 'Root', NULL, NULL, NULL, NULL, NULL, '2024-01-01T00:00:00Z', '{}');
        INSERT INTO nodes VALUES ('b', 'r', 'r', ' second', 'm', 's', 10, 0.5, 1, '2024-01-01T00:00:01Z', '{}');
        INSERT INTO nodes VALUES ('a', 'r', 'r', ' first', 'm', 's', 10, 0.5, 0, '2024-01-01T00:00:02Z', '{"bookmarked": true}');
        """
    )
    conn.commit()
    conn.close()
    doc = imported(db)
    ids = by_source_id(doc)
    assert doc.nodes[ids["r"]]["children"] == [ids["a"], ids["b"]]
    assert "bookmark" in doc.nodes[ids["a"]]


def test_sqlite_that_is_not_basemode(tmp_path: Path) -> None:
    db = tmp_path / "other.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE things (x)")
    conn.commit()
    conn.close()
    with pytest.raises(DocumentError, match="not a basemode store"):
        formats.read(db)


def test_damaged_sqlite(tmp_path: Path) -> None:
    db = build_basemode_db(tmp_path / "g.sqlite")
    data = db.read_bytes()
    db.write_bytes(data[:1024] + b"\x00" * 512)
    with pytest.raises(DocumentError) as caught:
        formats.read(db)
    assert "\n" not in caught.value.message


def test_bad_metadata_json(tmp_path: Path) -> None:
    db = build_basemode_db(tmp_path / "g.sqlite")
    conn = sqlite3.connect(db)
    conn.execute("UPDATE nodes SET metadata_json = '{nope' WHERE id = 't1a'")
    conn.commit()
    conn.close()
    with pytest.raises(DocumentError, match='node "t1a" has metadata that is not valid JSON'):
        formats.read(db)


@pytest.mark.parametrize(
    ("edit", "phrase"),
    [
        (
            lambda nodes: nodes[1].__setitem__("parent_id", "zzz"),
            'has parent_id "zzz", which does not exist',
        ),
        (lambda nodes: nodes[0].__setitem__("metadata", [1]), "is a list, not an object"),
        (
            lambda nodes: nodes[2].__setitem__("temperature", "hot"),
            'has a "temperature" that is text, not a number',
        ),
        (
            lambda nodes: nodes[0].__setitem__("parent_id", "a0000000000000000000000000000004"),
            "form a cycle",
        ),
    ],
)
def test_damaged_json(tmp_path: Path, edit: object, phrase: str) -> None:
    data = json.loads(EXPORT.read_text(encoding="utf-8"))
    edit(data["nodes"])  # type: ignore[operator]
    with pytest.raises(DocumentError) as caught:
        formats.read(write_json(tmp_path / "bad.json", data), format="basemode")
    assert phrase in caught.value.message, caught.value.message
