"""Large documents: the indexed layout, read on demand and saved by appending (loom.indexed).

Every test here puts small documents in that layout (INDEXED_FROM = 0), so what is
checked is the path a 1M-node document takes, at a size a test can afford.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import loom
from loom import indexed, journal, ops, store
from loom.document import Document
from loom.errors import LoomError, StorageError
from loom.indexed import IndexedNodes
from test_properties import OPS, apply

from conftest import Loom


@pytest.fixture(autouse=True)
def indexed_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "INDEXED_FROM", 0)
    monkeypatch.setenv("LOOM_INDEXED_FROM", "0")
    monkeypatch.setattr(store, "BACKUP_INTERVAL", 0.0)


def build(path: Path, n: int = 40) -> list[str]:
    """A document of `n` nodes (a trunk with side branches), written whole in the indexed layout."""
    doc = Document.new(title="big")
    ids: list[str] = []
    parent = None
    for i in range(n):
        node = ops.add_child(doc, parent, f" node {i}", move_cursor=False)
        ids.append(node.id)
        parent = node.id if i % 3 else parent or node.id
    ops.goto(doc, ids[-1])
    store.create(path, doc)
    return ids


def whole(doc: Document) -> dict[str, Any]:
    """Everything in a document, its nodes as a plain dict."""
    data = {k: v for k, v in doc.data.items() if k != "nodes"}
    data["nodes"] = dict(doc.nodes.items())
    return data


def test_a_large_document_is_plain_json_with_an_index(tmp_path: Path) -> None:
    path = tmp_path / "big.loom.json"
    ids = build(path)
    data = json.loads(path.read_text())  # any JSON tool reads it
    assert data["format"] == "loom" and data["log"] == [] and len(data["nodes"]) == 40
    assert isinstance(data["snapshot"], str)
    assert indexed.index_path(path).exists()
    doc = store.load(path)
    assert isinstance(doc.nodes, IndexedNodes)
    read: list[int] = []
    record_at = doc.nodes.snapshot.record_at
    doc.nodes.snapshot.record_at = lambda pos, node_id: read.append(pos) or record_at(pos, node_id)
    assert doc.full_text(ids[-1]).endswith(" node 39")
    # Only what was asked for was read: the texts on the path to the cursor.
    assert len(read) == len(doc.path_ids(ids[-1])) < 40
    assert not doc.nodes.cache  # and nothing is kept that was only read
    assert whole(doc) == store.load(path, full_check=True).data


def test_saves_append_one_line_and_the_file_stays_json(tmp_path: Path) -> None:
    path = tmp_path / "big.loom.json"
    build(path)
    size = path.stat().st_size
    snapshot = json.loads(path.read_text())["snapshot"]
    with loom.edit(path) as doc:
        node = ops.add_child(doc, doc.cursor_id, " appended")
    data = json.loads(path.read_text())
    assert data["snapshot"] == snapshot and len(data["log"]) == 1
    assert path.stat().st_size - size < 2000  # the change, not the document
    with loom.edit(path) as doc:
        ops.goto(doc, doc.root_ids[0])  # a cursor move is a small entry too
    assert len(json.loads(path.read_text())["log"]) == 2
    lazy, full = store.load(path), store.load(path, full_check=True)
    assert whole(lazy) == full.data
    assert node.id in lazy.nodes and lazy.cursor_id == lazy.root_ids[0]


def test_the_log_is_folded_in_by_a_whole_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "LOG_MIN", 2000)
    path = tmp_path / "big.loom.json"
    build(path)
    tokens = set()
    for i in range(12):
        with loom.edit(path) as doc:
            ops.add_child(doc, doc.cursor_id, f" step {i}")
        tokens.add(json.loads(path.read_text())["snapshot"])
    assert len(tokens) > 1  # rewritten whole at least once, with a new token and index
    data = json.loads(path.read_text())
    assert len(data["log"]) < 12 and len(data["nodes"]) > 40
    assert whole(store.load(path)) == store.load(path, full_check=True).data
    assert len(store.load(path)) == 52
    assert len(store.load(store.backup_paths(path)[0], full_check=True)) < 52


def test_undo_and_redo_survive_appended_saves(tmp_path: Path) -> None:
    path = tmp_path / "big.loom.json"
    build(path)
    with loom.edit(path) as doc:
        added = ops.add_child(doc, doc.cursor_id, " one").id
    with loom.edit(path) as doc:
        loom.undo(doc)
    assert added not in store.load(path).nodes
    with loom.edit(path) as doc:
        loom.redo(doc)
    doc = store.load(path)
    assert added in doc.nodes and doc.full_text(added).endswith(" one")
    assert whole(doc) == store.load(path, full_check=True).data


@pytest.mark.parametrize("log_min", [1 << 20, 0], ids=["appended", "rewritten"])
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_operations_saved_read_back_exactly(
    data: st.DataObject, log_min: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each operation is saved (appended to the log, or the file rewritten with its index
    carried over) and the file read back, lazily and whole: both must be exactly the
    document in memory, and the index must answer what the records say."""
    import tempfile

    monkeypatch.setattr(store, "LOG_MIN", log_min)
    if not log_min:  # every save a whole one
        monkeypatch.setattr(store, "LOG_SHARE", 1 << 40)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.loom.json"
        loom.new(path)
        with loom.edit(path) as doc:
            ops.add_child(doc, None, "root")
        for _ in range(data.draw(st.integers(1, 12))):
            op = data.draw(st.sampled_from(OPS))
            with loom.edit(path) as doc:
                try:
                    if op in ("undo", "redo"):
                        stack = journal.undo_entries if op == "undo" else journal.redo_entries
                        if stack(doc):
                            (journal.undo if op == "undo" else journal.redo)(doc)
                    else:
                        apply(doc, op, data)
                except LoomError:
                    pass  # refused: nothing changed
                expected = json.loads(json.dumps(whole(doc)))
            lazy, full = store.load(path), store.load(path, full_check=True)
            for reread in (lazy, full):
                assert json.loads(json.dumps(whole(reread))) == expected
            assert_same_answers(lazy, full)
            assert_same_answers(doc, full)  # the document that was saved, its cache warm


def assert_same_answers(lazy: Document, full: Document) -> None:
    """What the index answers without reading records is what the records say."""
    assert sorted(lazy.nodes) == sorted(full.nodes) and len(lazy) == len(full)
    for node_id in full.nodes:
        assert lazy.path_ids(node_id) == full.path_ids(node_id)
        assert lazy.live_child_ids(node_id) == full.live_child_ids(node_id)
        assert lazy.is_archived(node_id) == full.is_archived(node_id)
        for name in ("parent", "last_child", "archived", "visited"):
            assert lazy.field(node_id, name) == full.field(node_id, name), (node_id, name)
    assert lazy.cursor_id == full.cursor_id
    for prefix in {i[:1] for i in full.nodes} | {i[:3] for i in full.nodes}:
        assert lazy.id_order().prefixed(prefix) == full.id_order().prefixed(prefix)
    ids = list(full.nodes)
    assert lazy.short_ids(ids) == full.short_ids(ids)


def test_a_torn_append_reads_as_the_document_before_it(tmp_path: Path) -> None:
    """A save killed mid-append leaves a torn last line: it was never acknowledged."""
    path = tmp_path / "big.loom.json"
    build(path)
    with loom.edit(path) as doc:
        kept = ops.add_child(doc, doc.cursor_id, " kept").id
    before = whole(store.load(path))
    with path.open("r+b") as handle:
        handle.seek(-len(indexed.TAIL), os.SEEK_END)
        handle.write(b',\n{"crc":123,"changes":[{"id":"torn"')  # and no closing
    with pytest.raises(json.JSONDecodeError):
        json.loads(path.read_text())
    assert whole(store.load(path)) == before
    assert whole(store.load(path, full_check=True)) == before
    with loom.edit(path) as doc:  # the next save mends the file
        ops.add_child(doc, kept, " next")
    data = json.loads(path.read_text())
    assert "torn" not in path.read_text() and len(data["nodes"]) + len(data["log"]) >= 42


def test_a_damaged_record_is_a_clean_error_naming_the_backup(
    tmp_path: Path, loom: Loom, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same size, same modification time, one byte changed inside a record's text."""
    path = tmp_path / "big.loom.json"
    build(path)
    monkeypatch.setattr(store, "LOG_MIN", 0)
    with loom_edit(path) as doc:  # a whole save, so the first version is kept as a backup
        ops.add_child(doc, doc.cursor_id, " more " * 2000)
    assert json.loads(path.read_text())["log"] == []
    raw = path.read_bytes()
    at = raw.index(b" node 39")
    stat = path.stat()
    path.write_bytes(raw[:at] + b" NODE 39" + raw[at + 8 :])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    for args in (["show"], ["tree"], ["check"], ["add", "-p", "@", "x"]):
        result = loom("-f", str(path), *args)
        if args[0] == "add":  # reads no text: the record it did not need is not checked
            assert result.code == 0, result.stderr
            continue
        assert result.code == 1, (args, result.stderr)
        message = result.stderr.strip()
        assert "damaged document" in message and "checksum" in message, message
        assert ".big.loom.json.bak1" in message and "\n" not in message
    assert path.read_bytes()[at : at + 8] == b" NODE 39"  # never rewritten


def loom_edit(path: Path) -> Any:
    return loom.edit(path)


def test_a_missing_or_stale_index_means_reading_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.loom.json"
    build(path)
    with loom.edit(path) as doc:
        ops.add_child(doc, doc.cursor_id, " appended")
    expected = whole(store.load(path))
    index = indexed.index_path(path)
    stale = index.read_bytes()
    index.unlink()
    doc = store.load(path)
    assert isinstance(doc.nodes, dict) and doc.data == expected
    index.write_bytes(stale[:100])  # truncated
    assert store.load(path).data == expected
    # Another tool rewrote the file (valid, other bytes): the index no longer matches it.
    data = json.loads(path.read_text())
    path.write_text(json.dumps(data, indent=2))
    index.write_bytes(stale)
    assert store.load(path).data == expected


def test_a_file_edited_by_another_tool_is_read_whole(tmp_path: Path) -> None:
    """A typo fixed in an editor (same length, so the index's offsets still fit): the file
    is no longer the one loom wrote, so it is read whole, not taken for damage."""
    path = tmp_path / "big.loom.json"
    build(path)
    raw = path.read_bytes()
    at = raw.index(b" node 39")
    path.write_bytes(raw[:at] + b" NODE 39" + raw[at + 8 :])
    doc = store.load(path)
    assert isinstance(doc.nodes, dict)
    assert doc.full_text(doc.cursor_id).endswith(" NODE 39")
    with loom.edit(path) as doc:  # the next save indexes it again
        ops.add_child(doc, doc.cursor_id, " next")
    doc = store.load(path)
    assert isinstance(doc.nodes, IndexedNodes) and " NODE 39 next" in doc.full_text(doc.cursor_id)


def test_a_full_disk_during_an_append_leaves_the_document_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "big.loom.json"
    build(path)
    before = path.read_bytes()
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        import loom
        from loom import ops, store
        from loom.errors import StorageError
        store.INDEXED_FROM = 0
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({len(before) + 100}, {len(before) + 100}))
        try:
            with loom.edit({str(path)!r}) as doc:
                assert type(doc.nodes).__name__ == "IndexedNodes"
                ops.add_child(doc, doc.cursor_id, "x" * 5000)
        except StorageError as exc:
            print("refused:", exc)
            sys.exit(3)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3, proc.stderr
    assert "cannot save" in proc.stdout and "unchanged" in proc.stdout
    assert path.read_bytes() == before


def test_a_read_only_large_document_is_not_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "big.loom.json"
    build(path)
    path.chmod(0o444)
    before = path.read_bytes()
    with pytest.raises(StorageError, match="read-only"), loom.edit(path) as doc:
        ops.add_child(doc, doc.cursor_id, " more")
    assert path.read_bytes() == before


def test_the_cli_on_an_indexed_document(tmp_path: Path, loom: Loom) -> None:
    path = tmp_path / "big.loom.json"
    ids = build(path, 60)
    show = loom.ok("-f", str(path), "show", "--json").json()
    assert show["node"]["id"] == ids[-1]
    added = loom.ok("-f", str(path), "add", " from the cli").stdout.strip()
    loom.ok("-f", str(path), "goto", ids[0][:6])
    tree = loom.ok("-f", str(path), "tree", "--all", "--json").json()
    assert len(tree["nodes"]) == 61 and added in {n["id"] for n in tree["nodes"]}
    assert loom.ok("-f", str(path), "check").code == 0
    loom.ok("-f", str(path), "undo", "2")  # the goto is not a change: undoes the add
    assert added not in {
        n["id"] for n in loom.ok("-f", str(path), "tree", "--all", "--json").json()["nodes"]
    }
    assert len(json.loads(path.read_text())["log"]) == 3


def _mutations(raw: bytes, rng: random.Random) -> bytes:
    how = rng.randrange(4)
    if how == 0:
        return raw[: rng.randrange(len(raw))]
    out = bytearray(raw)
    if how == 1:
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(out))
            out[at] = rng.randrange(256)
        return bytes(out)
    if how == 2:
        at = rng.randrange(len(out))
        return bytes(out[:at] + rng.choice([b'"', b"}", b",", b"\n", b"{}", b"0"]) + out[at:])
    at = rng.randrange(len(out))
    size = rng.randint(1, 40)
    return bytes(out[:at] + out[at + size :])


def _use(path: Path) -> None:
    """What the commands do with a document: read every branch, then change and save it."""
    doc = store.load(path)
    for node_id in list(doc.walk(include_archived=True)):
        doc.full_text(node_id)
        doc.live_child_ids(node_id)
    doc.resolve(None)
    with loom.edit(path) as doc:
        ops.add_child(doc, doc.cursor_id, " after the damage")
    store.load(path, full_check=True)


@pytest.mark.parametrize("target", ["document", "index"])
def test_damaged_indexed_files_give_clean_errors(tmp_path: Path, target: str) -> None:
    """Truncated, flipped, inserted and deleted bytes, in the file or in its index: a
    clean one-line LoomError, or a document that reads and saves; nothing else."""
    rng = random.Random(20261201)
    original = tmp_path / "orig.loom.json"
    build(original, 30)
    with loom.edit(original) as doc:
        ops.add_child(doc, doc.cursor_id, " logged")  # a log entry to damage as well
    files = {"document": original.read_bytes(), "index": indexed.index_path(original).read_bytes()}
    outcomes = {"error": 0, "ok": 0}
    for round_ in range(150):
        path = tmp_path / f"f{round_}.loom.json"
        path.write_bytes(files["document"])
        indexed.index_path(path).write_bytes(files["index"])
        damaged = path if target == "document" else indexed.index_path(path)
        damaged.write_bytes(_mutations(damaged.read_bytes(), rng))
        try:
            _use(path)
        except LoomError as exc:
            assert "\n" not in str(exc)
            outcomes["error"] += 1
        else:
            outcomes["ok"] += 1
    if target == "index":
        assert outcomes["ok"] == 150  # a damaged index is never used: the file is read whole
    else:
        assert outcomes["error"] > 100


def test_whole_saves_patch_the_index_and_keep_its_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every save here folds the log in. The index is patched (entries keep their numbers,
    removed nodes leave holes, new ones come last) until holes pass a quarter of it, then
    built afresh; either way it must answer what the records say."""
    monkeypatch.setattr(store, "LOG_MIN", 0)
    monkeypatch.setattr(store, "LOG_SHARE", 1 << 40)
    path = tmp_path / "big.loom.json"
    ids = build(path, 200)
    rng = random.Random(3)
    counts = []
    for round_ in range(12):
        with loom.edit(path) as doc:
            live = [i for i in ids if i in doc.nodes]
            for _ in range(3):
                node = rng.choice(live)
                choice = rng.randrange(5)
                if choice == 0:
                    ids.append(ops.add_child(doc, node, f" new {round_}", move_cursor=False).id)
                elif choice == 1 and doc.nodes[node].get("parent"):
                    ops.purge(doc, node)
                    live = [i for i in ids if i in doc.nodes]
                elif choice == 2:
                    ops.archive(doc, node)
                elif choice == 3 and not doc.is_archived(node):
                    ops.goto(doc, node)
                elif choice == 4:
                    ops.edit(doc, node, f" edited {round_}", in_place=True)
        index = indexed.Index(indexed.index_path(path).read_bytes())
        counts.append((index.count, index.live))
        lazy, full = store.load(path), store.load(path, full_check=True)
        assert isinstance(lazy.nodes, IndexedNodes)
        assert whole(lazy) == full.data
        assert_same_answers(lazy, full)
    assert any(count > live for count, live in counts)  # holes were kept, not rebuilt away
    assert json.loads(path.read_text())["log"] == []
