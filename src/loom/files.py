"""Files on disk: atomic replacement, and reads that fail with one clear line.

Every file loom writes (documents, models.toml, capability overrides, exports, the
per-directory state, recovery files) goes through `write_atomic`: a temp file in the
same folder, fsynced, renamed over the target, then the folder fsynced, so a crash
leaves the old file or the new one, never a mix. Temp files are named
`.NAME.tmp-PID-NS`: a later writer can tell leftovers of a killed loom process from
a write in progress and remove them (`remove_stale_temps`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from loom.errors import BadInput, StorageError

TEMP_MARK = ".tmp-"


def identity(info: os.stat_result) -> str:
    """What changes whenever a file is replaced or written: inode, size, modification time."""
    return f"{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"


def temp_path(path: Path) -> Path:
    """A fresh temp file name beside `path`, naming the writing process."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{time.monotonic_ns()}")


def reason(exc: OSError) -> str:
    """An OSError as a few words a person understands."""
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno == errno.EDQUOT:
        return "the disk quota is exceeded"
    if exc.errno == errno.EROFS:
        return "the file system is read-only"
    return exc.strerror or str(exc)


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes | Iterable[bytes] | Callable[[int], None],
    *,
    mode: int | None = None,
    before_replace: Callable[[], None] | None = None,
    failure: str = "cannot write",
    note: str = "",
) -> None:
    """Replace `path` with `data` in one rename, the data durable before the name moves.

    `data` may come in pieces, or be a function writing to the file descriptor it is
    given (a large document is streamed, not joined in memory).
    `mode`: the new file's permissions (default: the replaced file's, else 0o644).
    `before_replace` runs after the data is on disk and before the rename (backups).
    On failure nothing at `path` changes and StorageError says "PATH: {failure} (why){note}".
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    tmp = temp_path(path)
    if mode is None:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            mode = 0o644
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if callable(data):
                data(fd)
            else:
                for piece in [data] if isinstance(data, bytes | bytearray) else data:
                    view = memoryview(piece)
                    while view:
                        view = view[os.write(fd, view) :]
            os.fsync(fd)
            with contextlib.suppress(OSError):  # e.g. a file system without modes
                os.fchmod(fd, mode)
        finally:
            os.close(fd)
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StorageError(f"{path}: {failure} ({reason(exc)}){note}") from None
    except BaseException:  # e.g. a value that cannot be encoded, found while streaming
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (where the platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: no process has such an id
        return False
    except OSError:
        return True  # someone else's process: alive, just not ours to signal
    return True


def stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Temp files of `path` left by loom processes that are gone (killed mid-write)."""
    path = Path(path)
    prefix = f".{path.name}{TEMP_MARK}"
    folder = path.parent if str(path.parent) else Path(".")
    found: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        pid, _, stamp = entry.name[len(prefix) :].partition("-")
        if pid.isdecimal() and stamp.isdecimal() and not _alive(int(pid)):
            found.append(Path(entry.path))
    return found


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Delete `stale_temps(path)`; returns what was removed."""
    removed = []
    for tmp in stale_temps(path):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def size_text(n: int) -> str:
    """A byte count for people: "512 bytes", "1.5 KB", "20.0 MB"."""
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.1f} MB"


def read_bytes(
    path: str | os.PathLike[str],
    *,
    limit: int | None = None,
    what: str = "file",
    note: str = "",
) -> bytes:
    """The bytes of a regular file, at most `limit` of them, or one clear error.

    FIFOs, devices and folders are refused before anything is read, so a path such as
    /dev/zero or a pipe never hangs or fills memory. `note` ends the over-the-limit
    message (how to raise the limit).
    """
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a folder, not a {what}") from None
    except OSError as exc:
        raise StorageError(f"{path}: cannot read ({reason(exc)})") from None
    info = os.fstat(fd)
    problem = None
    if stat.S_ISDIR(info.st_mode):
        problem = f"{path}: is a folder, not a {what}"
    elif not stat.S_ISREG(info.st_mode):
        problem = f"{path}: not a regular file (a pipe or a device); pass - to read input"
    elif limit is not None and info.st_size > limit:
        problem = f"{path}: {size_text(info.st_size)}, over the {size_text(limit)} limit{note}"
    if problem:
        os.close(fd)
        raise BadInput(problem)
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read() if limit is None else handle.read(limit + 1)
        except OSError as exc:
            raise StorageError(f"{path}: cannot read ({reason(exc)})") from None
    if limit is not None and len(data) > limit:
        raise BadInput(f"{path}: more than the {size_text(limit)} limit{note}")
    return data
