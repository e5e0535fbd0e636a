"""Documents: create, choose, describe and check them."""

from __future__ import annotations

from pathlib import Path

import click

from loom import files, ops, payloads, store, workspace
from loom.cli import render
from loom.cli.common import (
    NODE,
    command,
    doc_path,
    emit,
    fields,
    json_mode,
    out,
    read_doc,
    read_text_input,
    state,
    stdout_is_terminal,
    write_doc,
)
from loom.cli.main import cli
from loom.document import Document


@command(cli, "new")
@click.argument("path", metavar="FILE")
@click.option("--title", default="", help="The document's title.")
@click.option("--text", "text", default=None, help="Text of a first root node.")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
def new_cmd(path: str, title: str, text: str | None, force: bool) -> None:
    """Create a document and make it the current directory's document.

    \b
    Example:
      loom new story.loom.json --title "Tides" --text "The sea went out"
    """
    doc = Document.new(title=title)
    if text is not None:
        ops.add_child(doc, None, text)
    store.create(path, doc, overwrite=force)
    workspace.remember(path)
    if json_mode():
        emit("new", document=payloads.document(doc, path), cursor=doc.cursor_id)
    else:
        out(f"created {path}" if stdout_is_terminal() else str(Path(path)))


@command(cli, "use")
@click.argument("path", metavar="FILE")
def use_cmd(path: str) -> None:
    """Make FILE the document for commands run in this directory.

    \b
    Example:
      loom use ~/weaving/tides.loom.json
    """
    doc = store.load(path)
    workspace.remember(path)
    if json_mode():
        emit("use", document=payloads.document(doc, path), cursor=doc.cursor_id)
    else:
        out(f"using {path} ({len(doc)} nodes)")


@command(cli, "info")
@NODE
def info_cmd(node: str | None) -> None:
    """Describe the document, or one NODE in detail (its metadata and generation record).

    For a NODE, a terminal gets a summary of how it was generated (model,
    finish reason, usage, latency, parameters sent, emulation) and a count of
    its token probabilities; --json has the complete record.

    \b
    Examples:
      loom info            # the document: file, title, size, cursor
      loom info a1b2 --json
    """
    doc = read_doc()
    if node is not None:
        target = doc.resolve(node)
        if json_mode():
            emit(
                "info",
                node=payloads.node(target, fields()),
                depth=target.depth,
                path=doc.path_ids(target.id),
                history=target.history,
                cursor=doc.cursor_id,
            )
            return
        data = target.to_dict()
        for key in ("id", "kind", "parent", "created", "modified", "visited", "archived"):
            value = data[key]
            if value is None:  # an imported node may lack a date
                value = "none (a root)" if key == "parent" else "unknown"
            out(f"{key:>10}: {render.flat(str(value))}")
            if key == "parent":
                out(f"{'depth':>10}: {target.depth}")
        out(f"{'children':>10}: {len(data['children'])}")
        for key in ("tags", "bookmark", "note"):
            if data[key]:
                out(f"{key:>10}: {render.flat(str(data[key]))}")
        if target.history:
            out(
                f"{'history':>10}: {len(target.history)} earlier text(s) (see `loom history {target.id[:6]}`)"
            )
        # A summary: the full record (every token's probability) runs to hundreds of lines.
        room = render.width() - 13
        short = doc.short_ids([target.id])[target.id]
        for label, line in render.meta_summary(data["meta"], short):
            out(f"{label:>10}: {render.clip(line, room)}")
        return
    path = doc_path()
    described = payloads.document(doc, path)
    counts = payloads.stats(doc)
    if json_mode():
        emit("info", document=described, stats=counts, cursor=doc.cursor_id)
        return
    shown = {
        "file": described["file"],
        "id": described["id"],
        "title": described["title"],
        "description": described["description"],
        "system": described["system"],
        "version": described["version"],
        "nodes": described["node_count"],
        "live_nodes": counts["live_node_count"],
        "roots": described["root_count"],
        "bookmarks": counts["bookmark_count"],
        "cursor": doc.cursor_id,
        "bytes": described["bytes"],
        "undo": counts["undo_count"],
        "redo": counts["redo_count"],
    }
    for key, value in shown.items():
        if value not in (None, ""):
            out(f"{key:>11}: {render.flat(str(value))}")


@command(cli, "set")
@click.argument("field", type=click.Choice(["title", "description", "system"]))
@click.argument("value", required=False)
@click.option("--from-file", metavar="PATH", help="Read the value from a file.")
def set_cmd(field: str, value: str | None, from_file: str | None) -> None:
    """Set the document's title, description or system message ('' clears it).

    \b
    Examples:
      loom set title "Tides"
      loom set system - < system-prompt.txt
    """
    text = read_text_input(value, from_file, what="value")
    with write_doc() as doc:
        ops.set_document_field(doc, field, text)
    if json_mode():
        emit(
            "set",
            document=payloads.document(doc, doc_path()),
            field=field,
            value=text,
            cursor=doc.cursor_id,
        )


@command(cli, "check")
@click.argument("path", required=False, metavar="[FILE]")
def check_cmd(path: str | None) -> None:
    """Check a document file's structure and report its health.

    FILE is the same as -f FILE; without either, the current document.

    \b
    Examples:
      loom check story.loom.json
      loom check
    """
    given = state().file
    if path is not None and given is not None and Path(path) != Path(given):
        raise click.UsageError(f"two files given ({path} and -f {given}): check one at a time")
    file = Path(path) if path is not None else doc_path()
    doc = store.load(file, full_check=True)  # a damaged file raises a one-line error
    leftovers = files.stale_temps(store.real(file))
    if json_mode():
        emit(
            "check",
            document=payloads.document(doc, file),
            valid=True,
            stale_temp_files=[str(p) for p in leftovers],
            cursor=doc.cursor_id,
        )
        return
    out(f"{file}: ok ({len(doc)} nodes)")
    if leftovers:
        size = sum(p.stat().st_size for p in leftovers if p.exists())
        out(
            f"{len(leftovers)} temp file(s) ({size:,} bytes) left by loom processes killed while "
            "saving; the next change to the document removes them"
        )
