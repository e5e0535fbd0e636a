"""`loom tui`: the terminal UI, a thin shell over the library (needs the `tui` extra).

    from loom.tui import make_app
    make_app("story.loom.json").run()

`make_app` is the one way to build the app: the CLI and the tests both use it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from loom.errors import LoomError

if TYPE_CHECKING:
    from loom.tui.app import LoomApp

INSTALL_HINT = "the TUI needs Textual: pip install 'loom-weave[tui]'"


class TuiUnavailable(LoomError):
    code = "tui_unavailable"


def make_app(path: str | os.PathLike[str], *, theme: str | None = None) -> LoomApp:
    """The TUI for the document at `path` (loaded here: a bad file fails before any screen).

    `theme` is a Textual theme name ("textual-dark", "textual-light"); by default
    $LOOM_THEME, else dark.
    """
    # Textual paints at most MAX_FPS times a second, so a keypress waits up to a frame
    # before it shows: 120 halves that wait against the default 60 (still overridable).
    os.environ.setdefault("TEXTUAL_FPS", "120")
    try:
        from loom.tui.app import LoomApp
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] in ("textual", "rich"):
            raise TuiUnavailable(INSTALL_HINT) from None
        raise
    from loom.session import Session

    return LoomApp(Session.open(path), theme=theme or os.environ.get("LOOM_THEME") or None)
