"""Changing the tree: add, edit, split, merge, move, archive, restore, purge."""

from __future__ import annotations

import click

from loom import ops, payloads
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
from loom.document import KINDS


@command(cli, "add")
@click.argument("text", required=False)
@click.option("--from-file", metavar="PATH", help="Read the text from a file.")
@click.option("-p", "--parent", metavar="NODE", help="Add under NODE instead of the cursor.")
@click.option("--root", "as_root", is_flag=True, help="Add a new root (a new tree in the forest).")
@click.option(
    "--sibling", is_flag=True, help="Add after the cursor (or --parent NODE), as its sibling."
)
@click.option(
    "--kind", type=click.Choice(KINDS), default="human", show_default=True, help="Who wrote it."
)
@click.option("--stay", is_flag=True, help="Keep the cursor where it is.")
def add_cmd(
    text: str | None,
    from_file: str | None,
    parent: str | None,
    as_root: bool,
    sibling: bool,
    kind: str,
    stay: bool,
) -> None:
    """Add a node with TEXT ('-' reads standard input) under the cursor; move there.

    Prints the new node's id (the whole id when piped, for scripts).

    \b
    Examples:
      loom add " The tide came back at noon."
      id=$(loom add --stay " an alternative")
      git log -1 --format=%B | loom add - --root
    """
    body = read_text_input(text, from_file)
    if as_root and (parent or sibling):
        raise click.UsageError("--root cannot be combined with --parent or --sibling")
    with write_doc() as doc:
        if as_root:
            node = ops.add_child(doc, None, body, kind=kind, move_cursor=not stay)
        elif sibling:
            anchor = doc.resolve(parent).id
            node = ops.add_sibling(doc, anchor, body, kind=kind, move_cursor=not stay)
        else:
            anchor_id = doc.resolve(parent).id if parent or doc.cursor_id else None
            node = ops.add_child(doc, anchor_id, body, kind=kind, move_cursor=not stay)
    report(doc, node, "add", extra={"parent": node.parent_id}, quiet_id=True)


@command(cli, "edit")
@NODE
@click.option("-t", "--text", "text", help="The new text ('-' reads standard input).")
@click.option("--from-file", metavar="PATH", help="Read the new text from a file.")
@click.option(
    "--in-place",
    is_flag=True,
    help="Rewrite the node even if it has children (their text changes).",
)
def edit_cmd(node: str | None, text: str | None, from_file: str | None, in_place: bool) -> None:
    """Change a node's text (opens $VISUAL or $EDITOR, else vi, unless --text or --from-file).

    A node with children is not rewritten: the new text becomes a new sibling
    version and the children stay with the old one. Earlier texts are kept
    (`loom history`).

    \b
    Examples:
      loom edit                       # the cursor, in $EDITOR
      loom edit a1b2 --text " A better line."
    """
    if text is None and from_file is None:
        from loom.editor import edit_text

        otherwise = ": pass the new text with --text, '-' (stdin) or --from-file"
        new_text = edit_text(read_doc().resolve(node).text, otherwise=otherwise)
    else:
        new_text = read_text_input(text, from_file)
    with write_doc() as doc:
        target = doc.resolve(node).id
        changed = doc.node(target).text != new_text  # the same text: nothing is written
        result = ops.edit(doc, target, new_text, in_place=in_place)
    extra = {"original": target, "new_version": result.id != target, "changed": changed}
    if json_mode() or not stdout_is_terminal():
        report(doc, result, "edit", extra=extra)
    elif not changed:
        out(f"nothing changed: {target[:8]} already has this text")
    else:
        what = (
            f"new version {result.id[:8]} (children stay with {target[:8]})"
            if result.id != target
            else f"edited {target[:8]}"
        )
        out(what)


@command(cli, "split")
@NODE
@click.option(
    "--at", "offset", type=int, help="Character offset in the node's text (negative: from the end)."
)
@click.option("--marker", help="Split where this text first occurs in the node.")
@click.option("--after", is_flag=True, help="With --marker: split after it instead of before.")
def split_cmd(node: str | None, offset: int | None, marker: str | None, after: bool) -> None:
    """Cut a node in two: the node keeps the head, a new child gets the tail (and the children).

    \b
    Examples:
      loom split --at 40
      loom split a1b2 --marker "Meanwhile"
    """
    if (offset is None) == (marker is None):
        raise click.UsageError("give exactly one of --at OFFSET or --marker TEXT")
    with write_doc() as doc:
        target = doc.resolve(node).id
        if marker is not None:
            tail = ops.split_at_marker(doc, target, marker, after=after)
        else:
            assert offset is not None
            tail = ops.split(doc, target, offset)
    report(doc, tail, "split", extra={"parent": target})


@command(cli, "merge")
@NODE
def merge_cmd(node: str | None) -> None:
    """Join a node onto its parent's text (the node's children move up with it).

    If the parent has other children, a new version of the parent holds the
    joined text, so the other branches keep their text.

    \b
    Example:
      loom merge a1b2
    """
    with write_doc() as doc:
        result = ops.merge(doc, doc.resolve(node).id)
    report(doc, result, "merge")


@command(cli, "mv")
@click.argument("node", metavar="NODE")
@click.argument("parent", metavar="[PARENT]", required=False)
@click.option("--root", "as_root", is_flag=True, help="Make NODE a root.")
@click.option(
    "--index", type=click.IntRange(min=1), help="Position among the new siblings (1-based)."
)
def mv_cmd(node: str, parent: str | None, as_root: bool, index: int | None) -> None:
    """Move NODE (and its subtree) under PARENT, or make it a root with --root.

    \b
    Examples:
      loom mv a1b2 c3d4
      loom mv a1b2 --root
    """
    if (parent is None) == (not as_root):
        raise click.UsageError("give a PARENT or --root (not both)")
    with write_doc() as doc:
        target = doc.resolve(node).id
        new_parent = None if as_root else doc.resolve(parent).id
        moved = ops.move(doc, target, new_parent, index=None if index is None else index - 1)
    report(doc, moved, "mv", extra={"parent": moved.parent_id})


@command(cli, "rm")
@click.argument("node", metavar="NODE")
@click.option(
    "--purge", is_flag=True, help="Remove for good instead of archiving (still undoable)."
)
def rm_cmd(node: str, purge: bool) -> None:
    """Delete NODE and its subtree. Recoverable with `loom restore` unless --purge.

    \b
    Examples:
      loom rm a1b2
      loom rm a1b2 --purge
    """
    with write_doc() as doc:
        target = doc.resolve(node)
        removed = payloads.node(target, fields())  # as it was: a purged node is gone after
        if purge:
            gone = ops.purge(doc, target.id)
        else:
            ops.archive(doc, target.id)
            gone = doc.subtree_ids(target.id)
            removed = payloads.node(target, fields())
    if json_mode():
        emit("rm", node=removed, purged=purge, node_count=len(gone), cursor=doc.cursor_id)
    else:
        out(
            f"{'purged' if purge else 'deleted'} {len(gone)} node(s)"
            + ("" if purge else f" (undo with `loom restore {target.id[:8]}`)")
        )


@command(cli, "restore")
@click.argument("node", metavar="NODE")
def restore_cmd(node: str) -> None:
    """Bring back a deleted node and its subtree.

    \b
    Example:
      loom restore a1b2
    """
    with write_doc() as doc:
        restored = ops.restore(doc, doc.resolve(node).id)
    report(doc, restored, "restore")


@command(cli, "purge")
@click.option("--archived", is_flag=True, required=True, help="Purge every deleted subtree.")
def purge_cmd(archived: bool) -> None:
    """Remove every deleted (archived) subtree for good.

    \b
    Example:
      loom purge --archived
    """
    with write_doc() as doc:
        gone = ops.purge_archived(doc)
    if json_mode():
        emit("purge", node_count=len(gone), cursor=doc.cursor_id)
    else:
        out(f"purged {len(gone)} node(s)")
