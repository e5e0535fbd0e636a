"""A branch as a plain file: `loom sync FILE`, once or as a watcher."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from loom import jsonio, payloads, workspace
from loom.cli.common import (
    command,
    diagnostic,
    doc_path,
    emit,
    json_mode,
    one_line,
    out,
    read_doc,
    style,
)
from loom.cli.main import cli
from loom.errors import LoomError

if TYPE_CHECKING:
    from loom.sync import SyncedGeneration, SyncResult


@command(cli, "sync")
@click.argument("text_file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option(
    "--watch",
    is_flag=True,
    help="Keep FILE and the document in step until Ctrl-C (saves show up within a second).",
)
@click.option(
    "--adopt",
    is_flag=True,
    help="FILE exists but was never synced: take its text as an edit of the current branch.",
)
@click.option(
    "--forget", is_flag=True, help="Stop remembering FILE (it is left as it is) and exit."
)
def sync_cmd(text_file: str, watch: bool, adopt: bool, forget: bool) -> None:
    """Keep FILE, a plain text file, equal to the current branch, and its edits in the tree.

    The first sync writes the branch's full text to FILE. Edit FILE in any editor
    and sync again: text added at the end becomes a new child; an edit further up
    becomes a new branch from the first changed node (the old one is kept); text
    cut from the end makes the branch end at a new version of the last kept node.
    Each sync is one undoable step. When the tree changed instead (`loom down`,
    `loom gen --cursor first`, `loom undo`), FILE is rewritten to the current
    branch; when both changed, FILE's edits are kept as a branch first and the
    output says where. A newline your editor adds at the end is ignored.
    `loom gen --sync FILE` syncs, generates from the file's end and syncs again
    in one command, for an editor key.

    \b
    Examples:
      loom sync draft.md                 # write the branch; later, read your edits back
      loom sync draft.md --watch &       # for editors without a loom plugin
      loom sync draft.md --json | jq .action
      loom sync draft.md --forget        # stop syncing it
    """
    from loom import sync as syncing

    path = doc_path()
    if forget:
        if watch or adopt:
            raise click.UsageError("--forget cannot be combined with --watch or --adopt")
        known = syncing.forget(path, text_file)
        if json_mode():
            emit("sync", file=str(Path(text_file).resolve()), forgotten=known)
        elif known:
            out(f"{one_line(text_file)}: no longer synced (the file is left as it is)")
        else:
            out(f"{one_line(text_file)}: was not synced with {one_line(path.name)}")
        return
    if not watch:
        result = syncing.sync(path, text_file, adopt=adopt)
        workspace.remember(path)
        _report(result)
        return

    import signal
    import threading

    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()  # the sync under way finishes; the loop then ends

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if not json_mode():
            diagnostic("note", f"watching {text_file} and {path.name} (Ctrl-C stops)")
        syncing.watch(path, text_file, stop=stop, report=_report, fail=_warn, adopt=adopt)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not json_mode():
        diagnostic("note", f"stopped watching {text_file}")


def _warn(exc: LoomError) -> None:
    """An error while watching: one line, and with --json one error object in the stream of
    answers on stdout; the watch goes on."""
    diagnostic("error", exc.message)
    sys.stderr.flush()
    if json_mode():
        sys.stdout.buffer.write(
            jsonio.dump_line(payloads.error(exc.code, exc.message, exc.details))
        )
        sys.stdout.flush()


def _report(result: SyncResult) -> None:
    if json_mode():
        described = payloads.document(read_doc(), result.document)
        emit("sync", **payloads.sync(result), document=described)
        return
    for note in result.notes:
        diagnostic("note", note)
    if result.action == "empty" and not result.written:
        return
    ids = [i for i in (result.edits, result.cursor) if i]
    short = read_doc().short_ids(ids) if ids else {}
    name = one_line(str(result.file))
    edits = style(short.get(result.edits or "", ""), fg="cyan")
    if result.both_changed:
        out(
            f"{name}: the file and the document both changed: your edits are kept in the "
            f"branch ending at {edits} (`loom goto {short[result.edits or '']}`), and {name} "
            "now shows the current branch"
        )
    elif result.action == "append":
        out(f"{name}: your new text is node {edits}, now current")
    elif result.action == "branch":
        made = len(result.created)
        out(
            f"{name}: your edit is a new branch ending at {edits} ({made} new "
            f"node{'s' if made != 1 else ''}; the old branch is kept), now current"
        )
    elif result.action == "trim":
        out(f"{name}: the branch now ends at {edits}")
    elif result.action == "write" and result.first_sync:
        out(
            f"wrote the current branch to {name} ({result.chars:,} characters); edit it, "
            f"then `loom sync {name}` again"
        )
    elif result.action == "write":
        out(f"{name}: now shows the current branch ({result.chars:,} characters)")
    else:
        out(f"{name}: up to date")
    sys.stdout.flush()


def note_synced(synced: SyncedGeneration) -> None:
    """`loom gen --sync`: what the syncs around the generation did that the user must know."""
    if json_mode():
        return
    for result in (synced.before, synced.after):
        if result is None:
            continue
        for note in result.notes:
            diagnostic("note", note)
        if result.both_changed:
            sys.stderr.write(
                f"loom: note: {result.file} and the document both changed: your edits are kept "
                f"in the branch ending at {result.edits}; the file shows the current branch\n"
            )
