"""Earlier versions and the undo log: history, undo, redo, log."""

from __future__ import annotations

import sys
from typing import Any

import click

from loom import journal, ops, payloads
from loom.cli import render
from loom.cli.common import (
    NODE,
    command,
    emit,
    fields,
    json_mode,
    out,
    read_doc,
    report,
    stdout_is_terminal,
    style,
    write_doc,
)
from loom.cli.main import cli


@command(cli, "history")
@NODE
@click.option(
    "--show",
    "show_which",
    metavar="K|ID",
    help="Print text K in full, or the sibling version ID.",
)
@click.option(
    "--restore",
    "restore_index",
    type=int,
    metavar="K",
    help="Bring back text K (as an edit: undoable).",
)
def history_cmd(node: str | None, show_which: str | None, restore_index: int | None) -> None:
    """List every earlier text of a node and its sibling versions; show or restore one.

    The node's texts are numbered from 0, oldest first; the last number is its
    current text. Sibling versions (made by editing a node that has children)
    are listed by their id.

    \b
    Examples:
      loom history
      loom history a1b2 --show 0
      loom history a1b2 --show c3d4     # a sibling version, by id
      loom history a1b2 --restore 0
    """
    if restore_index is not None:
        with write_doc() as doc:
            target = doc.resolve(node)
            _numbered(ops.versions(doc, target.id), restore_index, "--restore")
            result = ops.restore_version(doc, target.id, restore_index)
        report(doc, result, "history")
        return
    doc = read_doc()
    target = doc.resolve(node)
    entries = ops.versions(doc, target.id)
    if show_which is not None:
        entry = _chosen(entries, show_which)
        if json_mode():
            emit(
                "history",
                node=payloads.node(target, fields()),
                entry=entry,
                cursor=doc.cursor_id,
            )
        elif stdout_is_terminal():
            out(render.safe(entry["text"]))
        else:
            sys.stdout.write(entry["text"])
        return
    if json_mode():
        emit(
            "history",
            node=payloads.node(target, fields()),
            entries=entries,
            cursor=doc.cursor_id,
        )
        return
    shorts = doc.short_ids([e["id"] for e in entries if "id" in e])
    labels = [str(e["index"]) if "index" in e else shorts[e["id"]] for e in entries]
    wide = max(map(len, labels))
    ats = [str(e["at"] or "") for e in entries]
    at_wide = max(map(len, ats))
    kind_wide = max(len(e["kind"]) for e in entries)
    start = wide + at_wide + kind_wide + 6
    for e, label, at in zip(entries, labels, ats, strict=True):
        # Numbers right-aligned as a count, ids left-aligned like every id loom prints.
        shown = f"{label:>{wide}}" if "index" in e else style(f"{label:<{wide}}", fg="cyan")
        body = render.preview(e["text"], max(10, render.width() - start - 1))
        out(f"{shown}  {style(f'{at:<{at_wide}}', dim=True)}  {e['kind']:<{kind_wide}}  {body}")


def _texts(entries: list[dict[str, Any]]) -> str:
    """What a node has, for errors: `texts 0..2` and any sibling versions."""
    numbered = [e for e in entries if "index" in e]
    versions = [e["id"] for e in entries if "id" in e]
    what = f"this node has texts 0..{len(numbered) - 1}"
    if versions:
        what += " and sibling versions " + ", ".join(v[:8] for v in versions)
    return what


def _numbered(entries: list[dict[str, Any]], k: int, flag: str) -> dict[str, Any]:
    numbered = [e for e in entries if "index" in e]
    if not 0 <= k < len(numbered):
        raise click.BadParameter(f"no text {k}: {_texts(entries)}", param_hint=flag)
    return numbered[k]


def _chosen(entries: list[dict[str, Any]], which: str) -> dict[str, Any]:
    """The entry `--show` names: a text's number, or a sibling version's id (or unique prefix)."""
    numbered = [e for e in entries if "index" in e]
    if which.isdecimal() and int(which) < len(numbered):
        return numbered[int(which)]
    found = [e for e in entries if "id" in e and which and e["id"].startswith(which)]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise click.BadParameter(
            f"more than one sibling version starts with {which}: {_texts(entries)}",
            param_hint="--show",
        )
    raise click.BadParameter(f"no text {which}: {_texts(entries)}", param_hint="--show")


def _undo_redo(verb: str, steps: int) -> None:
    with write_doc() as doc:
        done = (journal.undo_steps if verb == "undo" else journal.redo_steps)(doc, steps)
    if json_mode():
        emit(verb, changes=[payloads.change(e) for e in done], cursor=doc.cursor_id)
    else:
        for e in done:
            out(f"{verb}: {render.flat(str(e['summary'] or e['op']))}")


@command(cli, "undo")
@click.argument("steps", required=False, type=click.IntRange(min=1), default=1)
def undo_cmd(steps: int) -> None:
    """Undo the last STEPS changes (any mutating command; cursor moves are not changes).

    \b
    Examples:
      loom undo
      loom undo 3
    """
    _undo_redo("undo", steps)


@command(cli, "redo")
@click.argument("steps", required=False, type=click.IntRange(min=1), default=1)
def redo_cmd(steps: int) -> None:
    """Redo the last STEPS undone changes.

    \b
    Example:
      loom redo
    """
    _undo_redo("redo", steps)


@command(cli, "log")
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="How many entries.",
)
def log_cmd(limit: int) -> None:
    """List recent changes (what `loom undo` would undo, newest first).

    \b
    Example:
      loom log -n 5
    """
    doc = read_doc()
    entries = list(reversed(journal.undo_entries(doc)))[:limit]
    redo = journal.redo_entries(doc)
    if json_mode():
        emit(
            "log",
            undo=[payloads.change(e) for e in entries],
            redo=[payloads.change(e) for e in reversed(redo)][:limit],
            cursor=doc.cursor_id,
        )
        return
    for e in entries:
        # A document file's journal is data like its text: no control characters to the terminal.
        summary = render.flat(f"{e['op']:<9} {e['summary']}")
        out(f"{style(str(e['at']), dim=True)}  {summary}")
    if redo:
        out(style(f"({len(redo)} undone change(s) can be redone)", dim=True))
