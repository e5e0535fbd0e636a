"""Editing text in the user's editor ($VISUAL, $EDITOR, else vi), as `git commit` does.

Shared by `loom edit` and the TUI's `E` (which suspends itself around the call).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from loom.errors import BadInput, InvalidOperation, UsageError


def edit_text(initial: str, *, otherwise: str = "") -> str:
    """`initial` as the user left it after editing it in their editor.

    A trailing newline the editor added (editors end files with one) is removed when
    `initial` had none. Raises UsageError when no editor can run here, BadInput when the
    editor command is broken, InvalidOperation when the editor exits with an error.
    `otherwise` ends the no-editor messages with what else the user can do.
    """
    import shlex
    import shutil
    import subprocess
    import tempfile

    source = next((f"${v}" for v in ("VISUAL", "EDITOR") if os.environ.get(v)), "the default")
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor and sys.stdin.isatty() and shutil.which("vi"):
        editor = "vi"  # as git does: a terminal with no editor configured still gets one
    if not editor:
        raise UsageError(f"no $EDITOR set{otherwise}")
    if not sys.stdin.isatty():
        raise UsageError(f"standard input is not a terminal{otherwise}")
    try:
        command = shlex.split(editor)
    except ValueError as exc:
        raise BadInput(f"cannot parse the editor command {editor!r}: {exc}") from None
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as handle:
        handle.write(initial)
        name = handle.name
    try:
        try:
            result = subprocess.call([*command, name])
        except OSError as exc:
            raise BadInput(
                f"cannot run the editor {editor!r} ({source}): {exc.strerror or exc}"
            ) from None
        if result != 0:
            raise InvalidOperation(f"the editor exited with status {result}; nothing changed")
        try:
            text = Path(name).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(
                f"the edited text is not UTF-8 (byte {exc.start}); nothing changed"
            ) from None
    finally:
        os.unlink(name)
    if text.endswith("\n") and not initial.endswith("\n"):
        text = text[:-1]
    return text
