"""Annotating nodes: bookmarks, tags and notes."""

from __future__ import annotations

import click

from loom import ops, payloads
from loom.cli import render
from loom.cli.common import (
    NODE,
    command,
    emit,
    fields,
    json_mode,
    out,
    read_doc,
    read_text_input,
    report,
    stdout_is_terminal,
    write_doc,
)
from loom.cli.main import cli
from loom.document import Node


@command(cli, "bookmark")
@NODE
@click.option("--title", help="A title for the bookmark.")
@click.option("--remove", is_flag=True, help="Remove the bookmark.")
@click.option("--list", "list_", is_flag=True, help="List all bookmarks.")
def bookmark_cmd(node: str | None, title: str | None, remove: bool, list_: bool) -> None:
    """Bookmark a node (default: the cursor), remove a bookmark, or list them.

    \b
    Examples:
      loom bookmark --title "the good ending"
      loom bookmark --list
      loom next --bookmark
    """
    if list_:
        doc = read_doc()
        marks = [Node(doc, i) for i in doc.walk() if "bookmark" in doc.nodes[i]]
        if json_mode():
            emit(
                "bookmark",
                nodes=[payloads.node(m, fields(listing=True)) for m in marks],
                cursor=doc.cursor_id,
            )
            return
        shorts = doc.short_ids([m.id for m in marks])
        for m in marks:
            out(render.node_line(m, shorts[m.id], current=m.id == doc.cursor_id))
        return
    with write_doc() as doc:
        result = ops.set_bookmark(doc, doc.resolve(node).id, not remove, title=title)
    report(doc, result, "bookmark")


@command(cli, "tag")
@click.argument("names", nargs=-1, metavar="TAG...")
@click.option("-n", "--node", "node", metavar="NODE", help="The node (default: the cursor).")
@click.option("--remove", is_flag=True, help="Remove the tags instead of adding them.")
@click.option("--list", "list_", is_flag=True, help="List tags with the nodes that carry them.")
def tag_cmd(names: tuple[str, ...], node: str | None, remove: bool, list_: bool) -> None:
    """Add (or --remove) tags on a node, or --list every tag in use.

    \b
    Examples:
      loom tag draft keep
      loom tag -n a1b2 --remove draft
      loom tag --list --json
    """
    if list_:
        doc = read_doc()
        index: dict[str, list[str]] = {}
        for i in doc.walk():
            for t in doc.nodes[i].get("tags", ()):
                index.setdefault(t, []).append(i)
        if json_mode():
            emit("tag", tags=index, cursor=doc.cursor_id)
        else:
            for name, ids in sorted(index.items()):
                tag = render.flat(name) if stdout_is_terminal() else name
                out(f"#{tag}: {len(ids)} node(s) " + " ".join(doc.short_ids(ids).values()))
        return
    if not names:
        raise click.UsageError("name at least one TAG (or use --list)")
    with write_doc() as doc:
        target = doc.resolve(node).id
        result = (
            ops.tag(doc, target, remove=list(names))
            if remove
            else ops.tag(doc, target, add=list(names))
        )
    report(doc, result, "tag")


@command(cli, "note")
@click.argument("text", required=False)
@click.option("-n", "--node", "node", metavar="NODE", help="The node (default: the cursor).")
@click.option("--from-file", metavar="PATH", help="Read the note from a file.")
@click.option("--clear", is_flag=True, help="Remove the note.")
def note_cmd(text: str | None, node: str | None, from_file: str | None, clear: bool) -> None:
    """Attach a note to a node (kept out of its text), print it, or --clear it.

    \b
    Examples:
      loom note "try a colder temperature here"
      loom note            # print the cursor's note
    """
    if text is None and from_file is None and not clear:
        doc = read_doc()
        target = doc.resolve(node)
        if json_mode():
            emit("note", node=payloads.node(target, fields()), cursor=doc.cursor_id)
        elif target.note:
            out(render.safe(target.note) if stdout_is_terminal() else target.note)
        return
    body = None if clear else read_text_input(text, from_file, what="note")
    with write_doc() as doc:
        result = ops.set_note(doc, doc.resolve(node).id, body)
    report(doc, result, "note")
