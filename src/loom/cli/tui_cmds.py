"""`loom tui`: open the terminal UI on a document."""

from __future__ import annotations

import click

from loom import workspace
from loom.cli.common import command, json_mode, state
from loom.cli.main import cli
from loom.errors import UsageError


@command(cli, "tui")
@click.argument("document", required=False, metavar="[FILE]")
@click.option(
    "--theme",
    type=click.Choice(["dark", "light"]),
    help="Colour theme (default: $LOOM_THEME, else dark). NO_COLOR turns colour off.",
)
def tui_cmd(document: str | None, theme: str | None) -> None:
    """Open the terminal UI on FILE (default: -f, $LOOM_FILE, or this directory's document).

    Read the branch, pick among children, generate, edit, split, merge, search and
    undo with single keys (press ? inside for all of them, : for the command
    palette). Every change is saved at once, as the CLI saves; changes other
    processes make to the file (another shell's `loom add`, an agent's `loom gen`)
    appear within a second. Needs the `tui` extra: pip install 'loom-weave[tui]'.

    \b
    Examples:
      loom tui
      loom tui story.loom.json --theme light
      NO_COLOR=1 loom tui      # no colour: node boundaries still show as ▏ marks
    """
    import sys

    path = workspace.resolve_path(document or state().file)
    if json_mode():
        raise UsageError("loom tui is interactive: --json has no meaning here")
    from loom.tui import make_app

    # The document first: a missing or damaged file is the error that matters.
    app = make_app(path, theme={"dark": "textual-dark", "light": "textual-light"}.get(theme or ""))
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("loom tui needs a terminal (standard input and output are not one)")
    workspace.remember(path)
    app.run()
    if app.return_code:
        raise click.exceptions.Exit(app.return_code)
