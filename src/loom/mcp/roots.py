"""The folders an MCP client may touch: every path it names is resolved and checked here.

A path is taken relative to the first root (or as given, if absolute), resolved through
`..` and symlinks, and refused unless the result lies inside one of the roots. A file
that does not exist yet is checked through its folder, so a symlinked folder pointing
out of the roots is refused as well.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from loom.errors import LoomError, UsageError


class OutsideRoots(LoomError):
    """A path outside the directories the server was allowed to touch."""

    code = "outside_roots"


class Roots:
    def __init__(self, folders: Iterable[str | os.PathLike[str]]) -> None:
        resolved = []
        for folder in folders:
            real = Path(os.path.realpath(folder))
            if not real.is_dir():
                raise UsageError(f"--root {folder}: not a directory")
            resolved.append(real)
        if not resolved:
            raise UsageError("at least one root directory is needed")
        self.folders = tuple(dict.fromkeys(resolved))

    def resolve(self, path: str | os.PathLike[str]) -> Path:
        """The real path `path` names, if it lies inside a root; OutsideRoots otherwise."""
        raw = os.fspath(path)
        if not raw or "\0" in raw:
            raise UsageError("a path must be non-empty text without NUL characters")
        given = Path(raw).expanduser()
        full = given if given.is_absolute() else self.folders[0] / given
        real = Path(os.path.realpath(full))
        if not any(real == root or real.is_relative_to(root) for root in self.folders):
            allowed = ", ".join(str(r) for r in self.folders)
            raise OutsideRoots(f"{raw}: outside the directories this server may use ({allowed})")
        return real

    def relative(self, path: Path) -> str:
        """`path` as a client names it: relative to the root that holds it."""
        for root in self.folders:
            if path.is_relative_to(root):
                return path.relative_to(root).as_posix()
        return str(path)

    def documents(self, limit: int = 500) -> Iterator[Path]:
        """Loom documents under the roots (`*.loom.json`), hidden folders skipped."""
        seen = 0
        for root in self.folders:
            for folder, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.endswith(".loom.json"):
                        yield Path(folder) / name
                        seen += 1
                        if seen >= limit:
                            return
