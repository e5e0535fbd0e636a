"""Reading and writing document files: validation, migration, atomic saves, locks, backups.

This is the only module that touches `*.loom.json` files. A save writes a temp
file in the same folder, fsyncs it, keeps the previous file as a backup (a hard
link, so it costs no copy), renames the temp file over the document and fsyncs
the folder: a crash at any point leaves either the old or the new document,
never a mix. Writers serialize on an advisory lock file beside the document and
re-read under it, so concurrent commands never lose each other's updates.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from loom import files, jsonio
from loom.document import FORMAT, SCHEMA_VERSION, Document
from loom.errors import DocumentError, LockTimeout, StorageError

BACKUPS = 3
BACKUP_INTERVAL = 300.0  # seconds: rotate backups at most this often, so they span real time
LOCK_TIMEOUT = 30.0
SUFFIX = ".loom.json"

# One function per schema step: _MIGRATIONS[n] turns version n into version n + 1.
Migration = Callable[[dict[str, Any]], dict[str, Any]]


def _migrate_1_to_2(data: dict[str, Any]) -> dict[str, Any]:
    # Version 2 added splices to journal changes; every version 1 entry is a valid one.
    return data


_MIGRATIONS: dict[int, Migration] = {1: _migrate_1_to_2}


def real(path: str | os.PathLike[str]) -> Path:
    """The file a path names, through symlinks: saves replace the target, never the link,
    and every writer takes the same lock whichever path it was given."""
    return Path(os.path.realpath(path))


def _sidecar(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}")


def lock_path(path: Path) -> Path:
    return _sidecar(path, "lock")


def backup_paths(path: Path) -> list[Path]:
    return [_sidecar(path, f"bak{i}") for i in range(1, BACKUPS + 1)]


# ---- reading --------------------------------------------------------------------------


def load(path: str | os.PathLike[str], *, full_check: bool = False) -> Document:
    """Read and validate a document. Raises DocumentError with one clear line.

    The structural walk is skipped when the file is exactly the one loom last saved
    there (same inode, size and modification time, recorded in the lock sidecar), as
    git trusts its index by stat: anything else that touched the file is checked in
    full. `full_check` always walks it (`loom check`).
    """
    path = Path(path)
    shown = path
    path = real(path)
    try:
        with open(path, "rb") as handle:
            identity = _identity(os.fstat(handle.fileno()))
            raw = handle.read()
    except FileNotFoundError:
        raise DocumentError(f"{shown}: no such file (create it with `loom new {shown}`)") from None
    except IsADirectoryError:
        raise DocumentError(f"{shown}: is a directory, not a loom document") from None
    except OSError as exc:
        raise StorageError(f"{shown}: cannot read: {exc.strerror or exc}") from None
    trusted = not full_check and _saved_identity(path) == identity
    try:
        return Document(parse(raw, str(shown), trusted=trusted))
    except DocumentError as exc:
        backup = next((b for b in backup_paths(path) if b.exists()), None)
        if backup is None:
            raise
        hint = f"; an earlier version is kept in {backup.name} beside it (`loom check -f {backup}`)"
        raise DocumentError(exc.message + hint) from None


def _identity(st: os.stat_result) -> str:
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _saved_identity(path: Path) -> str | None:
    try:
        text = lock_path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    return text[6:].strip() if text.startswith("saved ") else None


def _record_saved(path: Path) -> None:
    """Remember the identity of the file just saved (a hint: losing it only costs a check)."""
    try:
        identity = _identity(os.stat(path))
        fd = os.open(lock_path(path), os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError:
        return
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"saved {identity}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def parse(raw: bytes, name: str = "<document>", *, trusted: bool = False) -> dict[str, Any]:
    """Decode, migrate and validate the bytes of a document file (`trusted`: skip the walk)."""
    if not raw.strip():
        raise DocumentError(f"{name}: the file is empty, not a loom document")
    try:
        data = jsonio.loads(raw)
    except jsonio.DecodeError as exc:
        where = f" at byte {exc.pos}" if exc.pos is not None else ""
        truncated = exc.pos is not None and exc.pos >= len(raw.rstrip()) - 1
        hint = " (the file looks truncated)" if truncated else ""
        raise DocumentError(f"{name}: not valid JSON{where}{hint}: {exc.msg}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DocumentError(
            f'{name}: not a loom document (no "format": "loom" marker); '
            "to bring in another tool's tree use `loom import`"
        )
    try:
        data = migrate(data)
    except DocumentError as exc:
        raise DocumentError(f"{name}: {exc.message}") from None
    if not trusted:
        validate(data, name)
    return data


def migrate(
    data: dict[str, Any],
    migrations: dict[int, Migration] | None = None,
    target: int = SCHEMA_VERSION,
) -> dict[str, Any]:
    """Bring `data` up to schema version `target`, one step at a time."""
    steps = _MIGRATIONS if migrations is None else migrations
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise DocumentError(f"the document's schema version is not a number: {version!r}")
    if version > target:
        raise DocumentError(
            f"the document has schema version {version}, newer than this loom understands ({target}); upgrade loom"
        )
    while version < target:
        step = steps.get(version)
        if step is None:
            raise DocumentError(f"no migration from schema version {version} to {version + 1}")
        data = step(data)
        version += 1
        data["version"] = version
    return data


def validate(data: dict[str, Any], name: str = "<document>") -> None:
    """Check the structural invariants; one clear line names the first problem found."""

    def bad(msg: str) -> DocumentError:
        return DocumentError(f"{name}: damaged document: {msg}")

    nodes = data.get("nodes")
    roots = data.get("roots")
    if not isinstance(nodes, dict):
        raise bad('"nodes" is not an object')
    if not isinstance(roots, list):
        raise bad('"roots" is not a list')
    if not all(type(r) is str for r in roots):
        raise bad('"roots" must list node ids (strings)')
    cursor = data.get("cursor")
    if cursor is not None and type(cursor) is not str:
        raise bad('"cursor" must be a node id (a string)')
    parents_seen = 0
    for node_id, rec in nodes.items():
        if type(rec) is not dict:
            raise bad(f"node {node_id!r} is not an object")
        text = rec.get("text", "")
        if type(text) is not str:
            raise bad(f'node {node_id!r} has non-text "text"')
        for key, kind in _FIELD_TYPES:
            value = rec.get(key)
            if value is not None and type(value) is not kind:
                raise bad(
                    f"node {node_id!r} has a {type(value).__name__} for {key!r} (expected {kind.__name__})"
                )
        parent = rec.get("parent")
        if parent is not None:
            if type(parent) is not str:
                raise bad(f'node {node_id!r} has a non-id "parent"')
            parents_seen += 1
            if parent not in nodes:
                raise bad(f"node {node_id!r} has a missing parent {parent!r}")
            # That the parent lists this node follows from the checks below: only a node's
            # parent may list it, and every node must be reached from the roots.
        children = rec.get("children")
        if children is not None:
            if type(children) is not list:
                raise bad(f'node {node_id!r} has non-list "children"')
            for child in children:
                if type(child) is not str:
                    raise bad(f"node {node_id!r} lists a child that is not an id")
                crec = nodes.get(child)
                if crec is None or crec.get("parent") != node_id:
                    raise bad(
                        f"node {node_id!r} lists child {child!r} that does not point back to it"
                    )
    for root in roots:
        rec = nodes.get(root)
        if rec is None or rec.get("parent") is not None:
            raise bad(f"root {root!r} is missing or has a parent")
    if len(roots) != len(set(roots)) or len(roots) + parents_seen != len(nodes):
        raise bad("the roots list does not match the parentless nodes")
    # Each node has one parent and is listed once, so a cycle would have no root: walk from the roots.
    reachable = 0
    stack = list(roots)
    while stack:
        current = stack.pop()
        reachable += 1
        if reachable > len(nodes):
            raise bad("a child is listed twice")
        stack.extend(nodes[current].get("children", ()))
    if reachable != len(nodes):
        raise bad(
            f"{len(nodes) - reachable} node(s) are unreachable from the roots (a parent cycle)"
        )
    if cursor is not None and cursor not in nodes:
        raise bad(f"the cursor points at a missing node {cursor!r}")
    _validate_journal(data.get("journal"), bad)


# Fields whose type the code relies on (iterated or indexed); strings are read through str().
_FIELD_TYPES: tuple[tuple[str, type], ...] = (
    ("tags", list),
    ("history", list),
    ("meta", dict),
    ("bookmark", dict),
)


def _validate_journal(journal: Any, bad: Callable[[str], DocumentError]) -> None:
    if journal is None:
        return
    if type(journal) is not dict:
        raise bad('"journal" is not an object')
    for stack in ("undo", "redo"):
        entries = journal.get(stack, [])
        if type(entries) is not list:
            raise bad(f'"journal.{stack}" is not a list')
        for entry in entries:
            changes = entry.get("changes") if type(entry) is dict else None
            if type(changes) is not list or not all(map(_good_change, changes)):
                raise bad(f'a "journal.{stack}" entry is malformed')


def _good_change(change: Any) -> bool:
    """A journal change record as loom.journal applies it (docs/schema.md, "Journal")."""
    if type(change) is not dict or type(change.get("id")) is not str:
        return False
    if not all(k in change and type(change[k]) in (dict, type(None)) for k in ("old", "new")):
        return False
    splices = change.get("splice")
    return splices is None or (
        type(splices) is list
        and all(
            type(s) is list
            and len(s) == 3
            and type(s[0]) is int
            and s[0] >= 0
            and all(type(ids) is list and all(type(i) is str for i in ids) for ids in s[1:])
            for s in splices
        )
    )


# ---- writing --------------------------------------------------------------------------


def encode(doc: Document) -> bytes:
    try:
        return jsonio.dump_document(doc.data)
    except TypeError as exc:  # orjson: a lone surrogate (undecodable input), a non-JSON value
        raise DocumentError(
            f"the document holds a value that cannot be saved ({exc}); nothing was written"
        ) from None


def save(doc: Document, path: str | os.PathLike[str]) -> None:
    """Write the document atomically, keeping rolling backups of earlier versions."""
    path = real(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not mode & 0o222:
        # A rename would replace it regardless (and root ignores permissions): honour the intent.
        raise StorageError(
            f"{path}: the document is read-only (chmod u+w {path.name} to allow changes)"
        )
    payload = encode(doc)
    files.remove_stale_temps(path)  # leftovers of loom processes killed mid-save
    files.write_atomic(
        path,
        payload,
        before_replace=lambda: _rotate_backups(path) if path.exists() else None,
        failure="cannot save",
        note="; the document on disk is unchanged",
    )
    _record_saved(path)
    doc.dirty = False


def _rotate_backups(path: Path) -> None:
    """Keep the file being replaced as backup 1 (shifting older ones), at most every BACKUP_INTERVAL."""
    backups = backup_paths(path)
    try:
        newest_age = time.time() - backups[0].stat().st_mtime
    except FileNotFoundError:
        newest_age = float("inf")
    if newest_age < BACKUP_INTERVAL:
        return
    for older, newer in zip(reversed(backups), list(reversed(backups))[1:], strict=False):
        if newer.exists():
            os.replace(newer, older)
    with contextlib.suppress(FileNotFoundError):
        backups[0].unlink()
    try:
        os.link(path, backups[0])
        # A hard link shares the mtime of the content it names; date the backup itself.
        os.utime(backups[0])
    except OSError:
        import shutil  # filesystems without hard links: fall back to a copy

        shutil.copyfile(path, backups[0])


# ---- locking --------------------------------------------------------------------------


@contextlib.contextmanager
def locked(path: str | os.PathLike[str], timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the document's writer lock (an advisory lock on a sidecar file)."""
    path = real(path)
    lock_file = lock_path(path)
    if not path.parent.is_dir():
        raise StorageError(f"{path}: the folder {path.parent} does not exist")
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(
            f"{path}: cannot create lock file {lock_file.name}: {exc.strerror or exc}"
        ) from None
    try:
        _acquire(fd, path, timeout)
        try:
            yield
        finally:
            _release(fd)
    finally:
        os.close(fd)


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _release(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _release(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _acquire(fd: int, path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not _try_lock(fd):
        if time.monotonic() >= deadline:
            raise LockTimeout(
                f"{path}: another loom process has held the lock for over {timeout:.0f}s"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


# ---- the read-modify-write cycle ------------------------------------------------------------


@contextlib.contextmanager
def editing(path: str | os.PathLike[str], timeout: float = LOCK_TIMEOUT) -> Iterator[Document]:
    """Lock, load, yield the document, and save it if it changed. Nothing is saved on error."""
    if not real(path).exists():
        load(path)  # the one-line "no such file" error, without leaving a lock file behind
    with locked(path, timeout):
        doc = load(path)
        yield doc
        if doc.dirty:
            save(doc, path)


def create(path: str | os.PathLike[str], doc: Document, *, overwrite: bool = False) -> None:
    """Write a new document file; refuses to replace an existing file unless `overwrite`."""
    path = real(path)
    with locked(path):
        if path.exists() and not overwrite:
            raise StorageError(f"{path}: already exists (pass --force to replace it)")
        save(doc, path)
