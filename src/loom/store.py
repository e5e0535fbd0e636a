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
import errno
import os
import stat
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from loom import files, indexed, jsonio
from loom.changes import ChangeSet
from loom.document import FORMAT, SCHEMA_VERSION, Document
from loom.errors import DocumentError, LockTimeout, StorageError

BACKUPS = 3
BACKUP_INTERVAL = 300.0  # seconds: rotate backups at most this often, so they span real time
LOCK_TIMEOUT = 30.0  # seconds a writer waits for another; $LOOM_LOCK_TIMEOUT overrides it
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
    """Read a document. Raises DocumentError with one clear line.

    A large document with its index (loom.indexed) is read on demand: the header,
    the change log and the records a command touches. Any other file is read whole
    and validated; the structural walk is skipped when the file is exactly the one
    loom last saved there (same inode, size, modification time and checksum,
    recorded in the lock sidecar). `full_check` always reads it whole and walks it
    (`loom check`).
    """
    path = Path(path)
    shown = path
    path = real(path)
    try:
        saved = _saved_identity(path)
        if not full_check and saved is not None and saved[1] == INDEXED:
            # Only the file as loom last wrote it: an edit by another tool is read whole.
            opened = indexed.open_snapshot(path, str(shown), saved[0])
            if opened is not None:
                return _load_indexed(*opened)
        identity, raw = _read(path, shown)
        trusted = (
            not full_check
            and saved is not None
            and saved[0] == identity
            and saved[1] == str(zlib.crc32(raw))
        )
        doc = Document(parse(raw, str(shown), trusted=trusted))
        if full_check:  # the records as the index recorded them, if it describes this file
            opened = indexed.open_snapshot(path, str(shown), identity)
            if opened is not None:
                opened[0].verify()
        return doc
    except DocumentError as exc:
        raise DocumentError(exc.message + backup_hint(path)) from None


def _read(path: Path, shown: Path) -> tuple[str, bytes]:
    """The identity and bytes of a document file; FIFOs and devices refused unopened."""
    try:
        # O_NONBLOCK: a FIFO with no writer would otherwise block the open forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise DocumentError(f"{shown}: no such file (create it with `loom new {shown}`)") from None
    except IsADirectoryError:
        raise DocumentError(f"{shown}: is a directory, not a loom document") from None
    except OSError as exc:
        raise StorageError(f"{shown}: cannot read: {files.reason(exc)}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise DocumentError(f"{shown}: is a directory, not a loom document")
        raise DocumentError(f"{shown}: not a regular file (a pipe or a device)")
    with os.fdopen(fd, "rb") as handle:
        try:
            return _identity(info), handle.read()
        except OSError as exc:
            raise StorageError(f"{shown}: cannot read: {files.reason(exc)}") from None


def backup_hint(path: Path) -> str:
    """Where an earlier version of a damaged document is, as the end of an error message."""
    backup = next((b for b in backup_paths(path) if b.exists()), None)
    if backup is None or not backup.is_file():
        return ""
    return f"; an earlier version is kept in {backup.name} beside it (`loom check -f {backup}`)"


def _load_indexed(
    snapshot: indexed.Snapshot, header: dict[str, Any], entries: list[bytes]
) -> Document:
    if header.get("version") != SCHEMA_VERSION:
        raise DocumentError(
            f"{snapshot.shown}: the document has schema version {header.get('version')!r}; "
            f"this loom reads version {SCHEMA_VERSION} (upgrade loom, or `loom check` it)"
        )
    header.pop("snapshot", None)
    snapshot.hint = lambda: backup_hint(snapshot.layout.path)
    header["nodes"] = indexed.IndexedNodes(snapshot)
    doc = Document(header)
    for number, line in enumerate(entries, 1):
        _replay(doc, indexed.decode_entry(line), f"{snapshot.shown}: change log entry {number}")
    doc.origin = snapshot.layout
    doc.unsaved = ChangeSet(doc)
    doc.dirty = False
    return doc


def _replay(doc: Document, entry: dict[str, Any], where: str) -> None:
    """Apply one change-log entry (see loom.indexed) to a document being loaded."""
    from loom import journal

    try:
        journal.apply(doc, entry.get("changes", []), "new")
        for step in entry.get("journal", []):
            journal.replay(doc, step)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise DocumentError(f"{where} cannot be applied: damaged document ({exc!r})") from None


def identity(path: str | os.PathLike[str]) -> str | None:
    """What changes whenever the file is replaced or rewritten (inode, size, modification
    time), or None if it is missing: a cheap way to notice another process's save."""
    try:
        return files.identity(os.stat(real(path)))
    except OSError:
        return None


_identity = files.identity


INDEXED = "indexed"  # in the lock file: the file was saved in the indexed layout


def _saved_identity(path: Path) -> tuple[str, str] | None:
    """The identity of the file loom last saved at `path`, and its checksum (classic layout)
    or INDEXED, as the lock file remembers them."""
    try:
        text = lock_path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    fields = text[6:].split() if text.startswith("saved ") else []
    return (fields[0], fields[1]) if len(fields) == 2 else None


def _record_saved(path: Path, payload: bytes | None) -> None:
    """Remember the file just saved (a hint: losing it only costs reading it whole): with the
    checksum of its `payload`, or, for the indexed layout (None), that its index is good."""
    try:
        identity = _identity(os.stat(path))
        fd = os.open(lock_path(path), os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError:
        return
    try:
        os.ftruncate(fd, 0)
        tag = INDEXED if payload is None else zlib.crc32(payload)
        os.write(fd, f"saved {identity} {tag}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def parse(raw: bytes, name: str = "<document>", *, trusted: bool = False) -> dict[str, Any]:
    """Decode, migrate and validate the bytes of a document file (`trusted`: skip the walk).

    A file in the indexed layout comes back with its change log applied.
    """
    if not raw.strip():
        raise DocumentError(f"{name}: the file is empty, not a loom document")
    try:
        data = jsonio.loads(raw)
    except jsonio.DecodeError as exc:
        mended = _without_torn_log(raw)
        if mended is None:
            where = f" at byte {exc.pos}" if exc.pos is not None else ""
            truncated = exc.pos is not None and exc.pos >= len(raw.rstrip()) - 1
            hint = " (the file looks truncated)" if truncated else ""
            raise DocumentError(f"{name}: not valid JSON{where}{hint}: {exc.msg}") from None
        data = mended
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DocumentError(
            f'{name}: not a loom document (no "format": "loom" marker); '
            "to bring in another tool's tree use `loom import`"
        )
    try:
        data = migrate(data)
    except DocumentError as exc:
        raise DocumentError(f"{name}: {exc.message}") from None
    if "log" in data or "snapshot" in data:
        data = _fold_log(data, name)
        trusted = False
    if not trusted:
        validate(data, name)
    return data


def _without_torn_log(raw: bytes) -> Any:
    """An indexed-layout file whose last log entry a killed save left torn, as it was before
    that save (the entry was never acknowledged); None if that is not what is wrong."""
    at = raw.rfind(indexed.NODES_CLOSE)
    if at < 0:
        return None
    _, end = indexed.read_log(raw, at + len(indexed.NODES_CLOSE))
    try:
        return jsonio.loads(raw[:end] + indexed.TAIL)
    except jsonio.DecodeError:
        return None


def _fold_log(data: dict[str, Any], name: str) -> dict[str, Any]:
    """Apply an indexed-layout file's change log to its snapshot, read whole."""
    entries = data.pop("log", [])
    data.pop("snapshot", None)
    bad = DocumentError(f'{name}: damaged document: "log" is not a list of changes')
    if type(entries) is not list or type(data.get("nodes")) is not dict:
        raise bad
    if type(data.get("roots")) is not list:
        raise bad
    doc = Document(data)
    for number, entry in enumerate(entries, 1):
        if type(entry) is not dict:
            raise bad
        _replay(doc, entry, f"{name}: change log entry {number}")
    return doc.data


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
    for key, kind in _HEADER_TYPES:
        value = data.get(key)
        if value is not None and type(value) is not kind:
            raise bad(f"{key!r} must be {_JSON_NAMES[kind]}, not {_JSON_NAMES.get(type(value))}")
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


_JSON_NAMES: dict[type, str] = {
    str: "a string",
    dict: "an object",
    list: "a list",
    int: "a number",
    float: "a number",
    bool: "true/false",
}

# Header fields whose type the code relies on (sent to models, iterated or indexed).
_HEADER_TYPES: tuple[tuple[str, type], ...] = (
    ("title", str),
    ("description", str),
    ("system", str),
    ("defaults", dict),
    ("sync", dict),
)

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


# Bytes from which a document is saved in the indexed layout ($LOOM_INDEXED_FROM sets it;
# 0 puts every document in it, as the tests of that path do).
INDEXED_FROM = int(os.environ.get("LOOM_INDEXED_FROM") or 2 << 20)
LOG_SHARE = 8  # the change log is folded in once it outgrows 1/LOG_SHARE of the snapshot
LOG_MIN = 1 << 20  # …or this many bytes, whichever is larger


def encode(doc: Document) -> bytes:
    """The whole document as the bytes of one file (the classic layout, any size)."""
    data = doc.data
    if type(doc.nodes) is not dict:  # an indexed document: every record read
        data = {**data, "nodes": dict(doc.nodes.items())}
    try:
        return jsonio.dump_document(data)
    except TypeError as exc:  # orjson: a lone surrogate (undecodable input), a non-JSON value
        raise DocumentError(
            f"the document holds a value that cannot be saved ({exc}); nothing was written"
        ) from None


def save(doc: Document, path: str | os.PathLike[str]) -> None:
    """Write the document durably, keeping rolling backups of earlier versions.

    A document loaded from the indexed layout is saved by appending its changes to the
    file's log (loom.indexed) until the log outgrows its share of the file; any other
    save writes the whole file atomically: the indexed layout (and its index) past
    INDEXED_FROM bytes, else the classic one.
    """
    path = real(path)
    _refuse_read_only(path)
    if _append(doc, path):
        return
    rotate = lambda: _rotate_backups(path) if path.exists() else None  # noqa: E731
    payload = None if isinstance(doc.nodes, indexed.IndexedNodes) else encode(doc)
    if payload is None or len(payload) >= INDEXED_FROM:
        files.remove_stale_temps(path)  # leftovers of loom processes killed mid-save
        try:
            indexed.write(path, doc.data, doc.nodes, before_replace=rotate)
        except TypeError as exc:
            raise DocumentError(
                f"the document holds a value that cannot be saved ({exc}); nothing was written"
            ) from None
        _record_saved(path, None)
    else:
        _write_classic(path, payload)
    doc.origin = None  # the file is no longer the one the document was read from
    doc.unsaved = None
    doc.dirty = False


def write(path: str | os.PathLike[str], payload: bytes) -> None:
    """Write an encoded document (`encode`) atomically, as one whole file in the classic
    layout: `save` for a caller that must encode at a moment of its choosing, e.g. while
    nothing changes the document. A large document read in the indexed layout is cheaper
    to `save`, which appends only its changes."""
    path = real(path)
    _refuse_read_only(path)
    _write_classic(path, payload)


def _write_classic(path: Path, payload: bytes) -> None:
    files.remove_stale_temps(path)  # leftovers of loom processes killed mid-save
    files.write_atomic(
        path,
        payload,
        before_replace=lambda: _rotate_backups(path) if path.exists() else None,
        failure="cannot save",
        note="; the document on disk is unchanged",
    )
    with contextlib.suppress(FileNotFoundError):
        indexed.index_path(path).unlink()  # no longer describes the file
    _record_saved(path, payload)


def _refuse_read_only(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if not mode & 0o222:
        # A rename would replace it regardless (and root ignores permissions): honour the intent.
        raise StorageError(
            f"{path}: the document is read-only (chmod u+w {path.name} to allow changes)"
        )


def appends(doc: Document, path: str | os.PathLike[str]) -> bool:
    """Whether `save` would append only the document's changes to `path` (a large document
    read in the indexed layout from that very file): a save that costs what changed."""
    layout = doc.origin
    return (
        isinstance(layout, indexed.Layout) and doc.unsaved is not None and layout.path == real(path)
    )


def _append(doc: Document, path: Path) -> bool:
    """Save by appending to the change log, if the file is still the one read; False if a
    whole save is due instead (another file, a changed one, or the log has grown full)."""
    layout = doc.origin
    if not isinstance(layout, indexed.Layout) or doc.unsaved is None or layout.path != path:
        return False
    try:
        info = os.stat(path)
    except OSError:
        return False
    if (info.st_ino, info.st_size) != (layout.inode, layout.size):
        return False
    entry: dict[str, Any] = {"changes": [], "journal": doc.unsaved.journal}
    for change in doc.unsaved.diff(whole_created=True, copies=False):
        change.pop("old", None)  # replay needs the new side only
        entry["changes"].append(change)
    if not entry["changes"] and not entry["journal"]:
        doc.dirty = False
        return True
    try:
        line = indexed.entry_line(entry)
    except TypeError as exc:
        raise DocumentError(
            f"the document holds a value that cannot be saved ({exc}); nothing was written"
        ) from None
    used = layout.log_end - layout.log_start + len(line)
    if used > max(LOG_MIN, layout.nodes_end // LOG_SHARE):
        return False  # fold the log in: a whole save
    doc.origin = indexed.append(layout, line)
    _record_saved(path, None)
    doc.unsaved = ChangeSet(doc)
    doc.dirty = False
    return True


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
def locked(path: str | os.PathLike[str], timeout: float | None = None) -> Iterator[None]:
    """Hold the document's writer lock (an advisory lock on a sidecar file).

    `timeout`: seconds to wait for another writer (default: `lock_timeout()`). A lock file
    this call created is removed again if the body fails, so a command refused on a
    damaged or missing document leaves nothing behind. Removing it is safe because every
    taker checks, once it holds the lock, that the file it locked is still the one at the
    lock's path (else it takes the lock again).
    """
    path = real(path)
    timeout = lock_timeout() if timeout is None else timeout
    lock_file = lock_path(path)
    if not path.parent.is_dir():
        raise StorageError(f"{path}: the folder {path.parent} does not exist")
    deadline = time.monotonic() + timeout
    while True:
        fd, created = _open_lock(path, lock_file)
        try:
            _acquire(fd, path, max(0.0, deadline - time.monotonic()))
        except BaseException:
            os.close(fd)
            raise
        if _still_there(fd, lock_file):
            break
        _release(fd)
        os.close(fd)
    try:
        try:
            yield
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    lock_file.unlink()
            raise
        finally:
            _release(fd)
    finally:
        os.close(fd)


def _open_lock(path: Path, lock_file: Path) -> tuple[int, bool]:
    """The lock file, opened for locking, and whether this call created it."""
    try:
        try:
            return os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            return os.open(lock_file, os.O_RDWR), False
    except FileNotFoundError:
        return _open_lock(path, lock_file)  # removed between the two opens: try again
    except OSError as exc:
        if exc.errno == errno.EROFS:
            why = "it is on a read-only file system"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            why = f"no permission to write its lock file {lock_file.name} in {path.parent}"
        else:
            why = f"its lock file {lock_file.name} cannot be opened ({files.reason(exc)})"
        raise StorageError(f"{path}: cannot change the document: {why}") from None


def _still_there(fd: int, lock_file: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(lock_file).st_ino
    except FileNotFoundError:
        return False


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


def lock_timeout() -> float:
    """How long a writer waits for the lock: $LOOM_LOCK_TIMEOUT seconds, else LOCK_TIMEOUT."""
    given = os.environ.get("LOOM_LOCK_TIMEOUT")
    try:
        return max(0.0, float(given)) if given else LOCK_TIMEOUT
    except ValueError:
        return LOCK_TIMEOUT


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
def editing(path: str | os.PathLike[str], timeout: float | None = None) -> Iterator[Document]:
    """Lock, load, yield the document, and save it if it changed. Nothing is saved on error."""
    if not real(path).is_file():
        load(path)  # the one-line error (no such file, a folder…), without taking the lock
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
