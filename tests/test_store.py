"""Storage: validation of bad files, atomic saves, backups, a full disk, crashes and concurrent writers."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import loom
from loom import ops, store
from loom.document import Document
from loom.errors import DocumentError, StorageError
from loom.indexed import IndexedNodes

from conftest import Loom

CRASH_ROUNDS = int(os.environ.get("LOOM_CRASH_ROUNDS", "25"))


@pytest.fixture
def loom_cli(tmp_path: Path) -> Loom:
    return Loom(tmp_path)


def make_doc(path: Path, n: int = 3) -> Document:
    loom.new(path, title="t")
    with loom.edit(path) as doc:
        parent = None
        for i in range(n):
            parent = ops.add_child(doc, parent, f"segment {i} ").id
    return doc


def test_round_trip_keeps_unknown_fields(tmp_path: Path) -> None:
    path = tmp_path / "a.loom.json"
    make_doc(path)
    data = json.loads(path.read_text())
    data["from_the_future"] = {"x": 1}
    first = next(iter(data["nodes"]))
    data["nodes"][first]["mystery"] = [1, 2]
    path.write_text(json.dumps(data))
    with loom.edit(path) as doc:
        ops.add_child(doc, doc.cursor_id, "more")
    again = json.loads(path.read_text())
    assert again["from_the_future"] == {"x": 1}
    assert again["nodes"][first]["mystery"] == [1, 2]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "empty"),
        (b'{"format": "loom", "version": 1, "nodes": {', "not valid JSON"),
        (b"[1, 2, 3]", "not a loom document"),
        (b'{"nodes": {}, "roots": []}', "not a loom document"),
        (b'{"format": "loom", "version": 99, "nodes": {}, "roots": []}', "newer than this loom"),
        (b'{"format": "loom", "version": "1", "nodes": {}, "roots": []}', "schema version"),
        (b'{"format": "loom", "version": 1, "nodes": [], "roots": []}', '"nodes" is not an object'),
        (
            b'{"format": "loom", "version": 1, "nodes": {"a": {"parent": "b"}}, "roots": []}',
            "missing parent",
        ),
        (
            b'{"format": "loom", "version": 1, "roots": [], "nodes": {"a": {"parent": "b", "children": ["b"]},'
            b' "b": {"parent": "a", "children": ["a"]}}}',
            "parent cycle",
        ),
        (
            b'{"format": "loom", "version": 1, "nodes": {"a": {"text": 5}}, "roots": ["a"]}',
            "non-text",
        ),
        (
            b'{"format": "loom", "version": 1, "nodes": {"a": {}}, "roots": ["a"], "cursor": "zz"}',
            "cursor",
        ),
        (b'{"format": "loom", "version": 1, "nodes": {"a": {}}, "roots": [["a"]]}', "node ids"),
        (
            b'{"format": "loom", "version": 1, "nodes": {"a": {}}, "roots": ["a"], "cursor": ["a"]}',
            "cursor",
        ),
        (
            b'{"format": "loom", "version": 1, "nodes": {"a": {"parent": ["x"]}}, "roots": []}',
            "non-id",
        ),
        (
            b'{"format": "loom", "version": 1, "nodes": {"a": {"tags": "abc"}}, "roots": ["a"]}',
            "'tags'",
        ),
        (
            b'{"format": "loom", "version": 1, "nodes": {"a": {"meta": [1]}}, "roots": ["a"]}',
            "'meta'",
        ),
        (
            b'{"format": "loom", "version": 1, "nodes": {"a": {}}, "roots": ["a"], "journal": {"undo": [{"bad": 1}]}}',
            "journal",
        ),
        (
            b'{"format": "loom", "version": 1, "nodes": {"a": {}}, "roots": ["a"], "system": 5}',
            "'system' must be a string, not a number",
        ),
        (
            b'{"format": "loom", "version": 1, "nodes": {"a": {}}, "roots": ["a"], "title": ["x"]}',
            "'title'",
        ),
        (
            b'{"format": "loom", "version": 1, "nodes": {"a": {}}, "roots": ["a"], "defaults": 3}',
            "'defaults'",
        ),
    ],
)
def test_bad_files_are_refused_with_one_line(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "bad.loom.json"
    path.write_bytes(content)
    with pytest.raises(DocumentError) as info:
        store.load(path)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_a_symlinked_document_is_saved_through_the_link(tmp_path: Path) -> None:
    """Saving must update the real file (not replace the link), and both paths share one lock."""
    real = tmp_path / "real" / "s.loom.json"
    real.parent.mkdir()
    make_doc(real, 1)
    link = tmp_path / "link.loom.json"
    link.symlink_to(real)
    with loom.edit(link) as doc:
        ops.add_child(doc, doc.cursor_id, " more")
    assert link.is_symlink()
    assert len(store.load(real)) == 2
    assert store.lock_path(store.real(link)) == store.lock_path(real)


def test_text_that_cannot_be_saved_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "u.loom.json"
    make_doc(path, 1)
    before = path.read_bytes()
    with pytest.raises(DocumentError) as info, loom.edit(path) as doc:
        ops.add_child(doc, doc.cursor_id, "bad \udcff byte")  # what undecodable argv bytes become
    assert "cannot be saved" in str(info.value)
    assert path.read_bytes() == before


def test_migration_steps_apply_in_order() -> None:
    steps = {
        0: lambda d: {"renamed": d.pop("old", None), **d},
        1: lambda d: {**d, "added": True},
    }
    data = store.migrate({"version": 0, "old": "x"}, steps, target=2)
    assert data == {"version": 2, "renamed": "x", "added": True}
    with pytest.raises(DocumentError):
        store.migrate({"version": 0}, {}, target=1)


def test_backups_rotate_and_hold_earlier_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "BACKUP_INTERVAL", 0.0)
    path = tmp_path / "b.loom.json"
    make_doc(path, 1)
    for i in range(5):
        with loom.edit(path) as doc:
            ops.add_child(doc, doc.cursor_id, f"v{i}")
    backups = store.backup_paths(path)
    assert all(b.exists() for b in backups)
    sizes = [len(store.load(b)) for b in backups]
    assert sizes == sorted(sizes, reverse=True)  # bak1 is the newest
    assert len(store.load(path)) == sizes[0] + 1


def test_no_backup_churn_within_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "c.loom.json"
    make_doc(path, 1)
    for i in range(3):
        with loom.edit(path) as doc:
            ops.add_child(doc, doc.cursor_id, f"v{i}")
    backups = store.backup_paths(path)
    assert backups[0].exists() and not backups[1].exists()


def test_full_disk_leaves_the_document_unchanged(tmp_path: Path) -> None:
    """RLIMIT_FSIZE makes writes fail like a full disk, without needing root or a tiny filesystem."""
    path = tmp_path / "d.loom.json"
    make_doc(path, 2)
    before = path.read_bytes()
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        import loom
        from loom import ops
        from loom.errors import StorageError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({len(before) + 100}, {len(before) + 100}))
        try:
            with loom.edit({str(path)!r}) as doc:
                ops.add_child(doc, doc.cursor_id, "x" * 100000)
        except StorageError as exc:
            print("refused:", exc)
            sys.exit(3)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3, proc.stderr
    assert "cannot save" in proc.stdout
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_save_error_names_the_file(tmp_path: Path) -> None:
    doc = Document.new()
    with pytest.raises(StorageError) as info:
        store.save(doc, tmp_path / "missing-dir" / "x.loom.json")
    assert "x.loom.json" in str(info.value)


# Both layouts: the classic one (every save rewrites the file) and the indexed one (saves
# append to the file's change log, folded in by a whole save every few kilobytes here).
LAYOUTS = {"classic": {"LOOM_INDEXED_FROM": str(1 << 40)}, "indexed": {"LOOM_INDEXED_FROM": "0"}}


@pytest.fixture(params=list(LAYOUTS))
def layout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = LAYOUTS[request.param]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(store, "INDEXED_FROM", int(env["LOOM_INDEXED_FROM"]))
    monkeypatch.setattr(store, "LOG_MIN", 4096)
    return env


WRITER = textwrap.dedent(
    """
    import sys
    import loom
    from loom import ops, store
    store.LOG_MIN = 4096  # fold the log in often, so kills land in whole saves too
    path, tag = sys.argv[1], sys.argv[2]
    i = 0
    while True:
        with loom.edit(path) as doc:
            node = ops.add_child(doc, None, f"{tag}-{i}", move_cursor=False)
        # Acknowledged only once the save has returned.
        sys.stdout.write(node.id + "\\n")
        sys.stdout.flush()
        i += 1
    """
)


def kill_writer_rounds(path: Path, rounds: int, seed: int = 7) -> tuple[int, int]:
    """Start a writer, SIGKILL it at a random moment, check the file; repeat. Returns (rounds, acks)."""
    rng = random.Random(seed)
    acked: set[str] = set()
    for r in range(rounds):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), f"r{r}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(0.15 + rng.random() * 0.25)
        proc.kill()
        out, _ = proc.communicate()
        acked.update(out.decode().split())
        doc = store.load(path)  # must be valid
        missing = acked - set(doc.nodes)
        assert not missing, f"round {r}: acknowledged nodes lost: {sorted(missing)[:5]}"
    return rounds, len(acked)


@pytest.mark.slow
def test_sigkill_at_random_moments_never_corrupts_or_loses(
    tmp_path: Path, layout: dict[str, str]
) -> None:
    path = tmp_path / "crash.loom.json"
    make_doc(path, 1)
    rounds, acks = kill_writer_rounds(path, CRASH_ROUNDS)
    assert acks > rounds  # the writers really did work between kills
    indexed = layout["LOOM_INDEXED_FROM"] == "0"
    assert (b'"snapshot":' in path.read_bytes()) == indexed  # the layout the writers used
    # Whatever the last kill interrupted, the file reads whole as well (any JSON tool).
    full = store.load(path, full_check=True)
    assert set(full.nodes) == set(store.load(path).nodes)


CONCURRENT = textwrap.dedent(
    """
    import sys
    import loom
    from loom import ops, store
    store.LOG_MIN = 4096
    path, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for i in range(count):
        with loom.edit(path) as doc:
            ops.add_child(doc, None, f"{tag}-{i}", move_cursor=False)
    """
)


@pytest.mark.slow
def test_eight_concurrent_writers_lose_nothing(tmp_path: Path, layout: dict[str, str]) -> None:
    path = tmp_path / "many.loom.json"
    loom.new(path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(path), f"w{w}", "50"], stderr=subprocess.PIPE
        )
        for w in range(8)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    doc = store.load(path)
    assert isinstance(doc.nodes, IndexedNodes) == (layout["LOOM_INDEXED_FROM"] == "0")
    texts = {n["text"] for n in doc.nodes.values()}
    assert len(doc) == 400
    assert texts == {f"w{w}-{i}" for w in range(8) for i in range(50)}


def test_the_undo_log_does_not_duplicate_new_text(tmp_path: Path) -> None:
    """A created node lives in the document; its undo entry holds only its id until undone."""
    path = tmp_path / "big.loom.json"
    loom.new(path)
    with loom.edit(path) as doc:
        ops.add_child(doc, None, "x" * 200_000)
    assert path.stat().st_size < 230_000
    with loom.edit(path) as doc:
        loom.undo(doc)
        loom.redo(doc)
    assert len(store.load(path)) == 1 and path.stat().st_size < 230_000


def test_a_read_only_document_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "ro.loom.json"
    make_doc(path, 1)
    path.chmod(0o444)
    before = path.read_bytes()
    with pytest.raises(StorageError) as info, loom.edit(path) as doc:
        ops.add_child(doc, doc.cursor_id, " more")
    assert "read-only" in str(info.value)
    assert path.read_bytes() == before


def test_a_missing_folder_or_file_is_named_and_leaves_no_lock(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as info:
        loom.new(tmp_path / "nodir" / "x.loom.json")
    assert "folder" in str(info.value) and "does not exist" in str(info.value)
    with pytest.raises(DocumentError), loom.edit(tmp_path / "missing.loom.json"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_file_points_at_its_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "BACKUP_INTERVAL", 0.0)
    path = tmp_path / "d.loom.json"
    make_doc(path, 2)
    with loom.edit(path) as doc:
        ops.add_child(doc, doc.cursor_id, " three")
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DocumentError) as info:
        store.load(path)
    assert ".d.loom.json.bak1" in str(info.value)
    assert len(store.load(store.backup_paths(path)[0])) == 2


def test_small_documents_are_written_one_node_per_line(tmp_path: Path) -> None:
    """Compact, yet a change to one node shows as a one-line diff."""
    path = tmp_path / "lines.loom.json"
    make_doc(path, 3)
    lines = path.read_text().splitlines()
    node_lines = [line for line in lines if line.startswith('"') and '"text"' in line]
    assert len(node_lines) == 3
    before = set(lines)
    with loom.edit(path) as doc:
        ops.tag(doc, doc.cursor_id, add=["x"])
    changed = set(path.read_text().splitlines()) - before
    assert len([c for c in changed if '"text"' in c]) == 1


def test_a_file_changed_behind_looms_back_is_checked_in_full(tmp_path: Path) -> None:
    """The structural walk is skipped only for the exact file loom itself last saved."""
    path = tmp_path / "t.loom.json"
    make_doc(path, 2)
    assert store._saved_identity(path) is not None
    data = json.loads(path.read_text())
    first = data["roots"][0]
    data["nodes"][first]["children"] = []  # breaks the tree, still valid JSON
    path.write_text(json.dumps(data))  # a new file: inode/size/mtime no longer match
    with pytest.raises(DocumentError):
        store.load(path)


def test_check_always_walks_the_whole_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.loom.json"
    make_doc(path, 2)
    walked: list[str] = []
    real_validate = store.validate
    monkeypatch.setattr(
        store, "validate", lambda data, name="": walked.append(name) or real_validate(data, name)
    )
    store.load(path)
    assert walked == []  # trusted: loom saved it
    store.load(path, full_check=True)
    assert len(walked) == 1


def test_damage_that_keeps_size_and_time_is_a_clean_error(tmp_path: Path, loom_cli: Any) -> None:
    """A same-size change with the modification time put back: the identity loom recorded
    still matches, the checksum beside it does not, so the file is checked in full."""
    path = tmp_path / "s.loom.json"
    make_doc(path, 3)
    with loom.edit(path) as doc:  # a second save keeps the first as a backup
        ops.tag(doc, doc.cursor_id, add=["x"])
    data = json.loads(path.read_text())
    child = data["nodes"][data["roots"][0]]["children"][0]
    raw = path.read_bytes()
    at = raw.index(f'"children":["{child}"]'.encode()) + len('"children":["')
    info = path.stat()
    path.write_bytes(raw[:at] + (b"z" if raw[at : at + 1] != b"z" else b"y") + raw[at + 1 :])
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert path.stat().st_size == info.st_size
    for args in (["show"], ["add", "x"], ["tree"]):
        result = loom_cli("-f", str(path), *args)
        assert result.code == 1, (args, result.stderr)
        assert "damaged document" in result.stderr and ".s.loom.json.bak1" in result.stderr


def test_failed_commands_leave_no_lock_file(tmp_path: Path, loom_cli: Any) -> None:
    bad = tmp_path / "bad.loom.json"
    bad.write_text('{"format": "loom", "version": 1, "nodes": {"a": {"parent": "b"}}, "roots": []}')
    folder = tmp_path / "folder.loom.json"
    folder.mkdir()
    for target in (bad, folder):
        result = loom_cli("-f", str(target), "add", "x")
        assert result.code == 1, result.stderr
    result = loom_cli("new", str(bad))
    assert result.code == 1 and "already exists" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.loom.json", "folder.loom.json"]


def test_a_lock_file_removed_while_waited_for_is_taken_again(tmp_path: Path) -> None:
    """The one who created a lock file removes it when its command fails; a process that
    was waiting on it must then lock the new file, not the removed one."""
    path = tmp_path / "s.loom.json"
    make_doc(path, 1)
    lock = store.lock_path(path)
    lock.unlink()
    import threading

    order: list[str] = []
    first_holds = threading.Event()

    def first() -> None:
        with contextlib.suppress(RuntimeError), store.locked(path):
            first_holds.set()
            time.sleep(0.3)
            order.append("first fails")
            raise RuntimeError("refused")

    thread = threading.Thread(target=first)
    thread.start()
    first_holds.wait(5)
    with store.locked(path):
        order.append("second holds")
        assert lock.exists()  # the file it holds is the one at the lock's path
        assert os.stat(lock).st_ino == os.fstat(os.open(lock, os.O_RDONLY)).st_ino
    thread.join()
    assert order == ["first fails", "second holds"]


def test_a_read_only_file_system_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    path = tmp_path / "s.loom.json"
    make_doc(path, 1)
    store.lock_path(path).unlink()
    real_open = os.open

    def read_only(file: Any, flags: int, *args: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(file, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(StorageError) as info, loom.edit(path):
        pass
    assert "read-only file system" in str(info.value) and "lock file" not in str(info.value)
