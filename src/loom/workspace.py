"""Which document a command works on, and where loom keeps its per-user state.

Order: an explicit path (-f/--file), then $LOOM_FILE, then the document last
used in the current directory (remembered per directory in the user state dir).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from loom import jsonio
from loom.errors import LoomError


class NoDocument(LoomError):
    code = "no_document"


def loom_home() -> Path:
    """The per-user folder for config and state: $LOOM_HOME, else the platform's config dir."""
    home = os.environ.get("LOOM_HOME")
    if home:
        return Path(home).expanduser()
    import platformdirs  # only when LOOM_HOME is not set

    return Path(platformdirs.user_config_dir("loom", appauthor=False))


def data_home() -> Path:
    """The per-user folder for data loom keeps for you (recovered texts): $LOOM_HOME, else
    the platform's data dir."""
    home = os.environ.get("LOOM_HOME")
    if home:
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("loom", appauthor=False))


def _state_file() -> Path:
    return loom_home() / "recent.json"


def _recent() -> dict[str, str]:
    try:
        data = jsonio.loads(_state_file().read_bytes())
    except (OSError, jsonio.DecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def remember(path: str | os.PathLike[str], cwd: str | os.PathLike[str] | None = None) -> None:
    """Make `path` the current directory's document for later commands."""
    folder = str(Path(cwd or os.getcwd()).resolve())
    recent = _recent()
    target = str(Path(path).resolve())
    if recent.get(folder) == target:
        return
    recent[folder] = target
    state = _state_file()
    from loom import files

    # Remembering is a convenience: never fail a command over it.
    with contextlib.suppress(OSError, LoomError):
        state.parent.mkdir(parents=True, exist_ok=True)
        files.write_atomic(state, jsonio.dump_document(recent))


def remembered(cwd: str | os.PathLike[str] | None = None) -> Path | None:
    """The document last used in `cwd` (default: the current directory), if any."""
    found = _recent().get(str(Path(cwd or os.getcwd()).resolve()))
    return Path(found) if isinstance(found, str) else None


def resolve_path(explicit: str | None = None, cwd: str | os.PathLike[str] | None = None) -> Path:
    """The document to use, or NoDocument with a hint on how to choose one."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("LOOM_FILE")
    if env:
        return Path(env)
    last = remembered(cwd)
    if last is not None:
        return last
    raise NoDocument(
        "no document selected: pass -f FILE, set LOOM_FILE, or create one with `loom new FILE.loom.json`"
    )
