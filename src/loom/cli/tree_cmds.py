"""Weaving by hand: create, read, navigate, edit and annotate the tree."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from loom import journal, ops, store, workspace
from loom.cli import render
from loom.cli.common import (
    command,
    doc_path,
    emit,
    json_mode,
    out,
    read_doc,
    read_text_input,
    state,
    stdout_is_terminal,
    style,
    write_doc,
)
from loom.cli.main import cli
from loom.document import KINDS, Document, Node
from loom.errors import BadInput

NODE = click.argument("node", required=False, metavar="[NODE]")


def _report(
    doc: Document,
    node: Node,
    verb: str,
    *,
    extra: dict[str, Any] | None = None,
    quiet_id: bool = False,
) -> None:
    """The common success output of commands that produce or move to a node."""
    if json_mode():
        emit({"command": verb, "node": node.to_dict(), "cursor": doc.cursor_id, **(extra or {})})
    elif quiet_id or not stdout_is_terminal():
        out(node.id)
    else:
        short = doc.short_ids([node.id])[node.id]
        out(render.node_line(node, short, current=node.id == doc.cursor_id))


# ---- documents ------------------------------------------------------------------------


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
        emit(
            {
                "command": "new",
                "file": str(Path(path).resolve()),
                "document": doc.id,
                "cursor": doc.cursor_id,
            }
        )
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
        emit({"command": "use", "file": str(Path(path).resolve()), "nodes": len(doc)})
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
        data = target.to_dict(full_text=False)
        data["depth"] = target.depth
        data["history"] = target.history
        data["path"] = doc.path_ids(target.id)
        if json_mode():
            emit({"command": "info", "node": data})
            return
        for key in ("id", "kind", "parent", "depth", "created", "modified", "visited", "archived"):
            out(f"{key:>10}: {data[key]}")
        out(f"{'children':>10}: {len(data['children'])}")
        for key in ("tags", "bookmark", "note"):
            if data[key]:
                out(f"{key:>10}: {render.flat(str(data[key]))}")
        if data["history"]:
            out(
                f"{'history':>10}: {len(data['history'])} earlier text(s) (see `loom history {target.id[:6]}`)"
            )
        # A summary: the full record (every token's probability) runs to hundreds of lines.
        room = render.width() - 13
        short = doc.short_ids([target.id])[target.id]
        for label, line in render.meta_summary(data["meta"], short):
            out(f"{label:>10}: {render.clip(line, room)}")
        return
    path = doc_path()
    live = sum(1 for _ in doc.walk())
    info = {
        "file": str(path.resolve()),
        "id": doc.id,
        "title": doc.title,
        "description": doc.description,
        "system": doc.system,
        "version": doc.data.get("version"),
        "nodes": len(doc),
        "live_nodes": live,
        "roots": len(doc.roots),
        "bookmarks": sum(1 for i in doc.walk() if "bookmark" in doc.nodes[i]),
        "cursor": doc.cursor_id,
        "bytes": path.stat().st_size,
        "undo": len(journal.undo_entries(doc)),
        "redo": len(journal.redo_entries(doc)),
    }
    if json_mode():
        emit({"command": "info", "document": info})
        return
    for key, value in info.items():
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
        emit({"command": "set", "field": field, "value": text})


# ---- adding and reading --------------------------------------------------------------------


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
    _report(doc, node, "add", quiet_id=True)


@command(cli, "show")
@NODE
@click.option(
    "--raw", is_flag=True, help="Exactly the text, nothing else (the default when piped)."
)
@click.option("--segment", is_flag=True, help="Only the node's own segment, not the whole branch.")
@click.option("--probs", is_flag=True, help=render.PROBABILITY_HELP)
def show_cmd(node: str | None, raw: bool, segment: bool, probs: bool) -> None:
    """Print the full text of the branch ending at NODE (default: the cursor).

    On a terminal, node boundaries alternate in colour and the node itself is in
    bold, and control characters in the text are shown as symbols (␛, ␇).
    Piped or with --raw, it prints exactly the text: no colour, no newline
    added.

    \b
    Examples:
      loom show
      loom show --raw | wc -w
      loom show a1b2 --json
    """
    doc = read_doc()
    target = doc.resolve(node)
    text = target.text if segment else doc.full_text(target.id)
    if json_mode():
        emit(
            {
                "command": "show",
                "node": target.to_dict(),
                "path": doc.path_ids(target.id),
                "text": text,
            }
        )
        return
    if raw or not stdout_is_terminal():
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    if probs:
        out(render.probabilities(doc, target.id))
        out(render.probability_legend())
    else:
        out(render.safe(target.text) if segment else render.branch_text(doc, target.id))
    kids = len(doc.live_child_ids(target.id))
    siblings = [s for s in doc.sibling_ids(target.id) if not doc.nodes[s].get("archived")]
    where = (
        f"{siblings.index(target.id) + 1}/{len(siblings)}" if target.id in siblings else "(deleted)"
    )
    status = f"── {doc.short_ids([target.id])[target.id]} · sibling {where} · depth {target.depth} · {kids} children"
    out(style(status, dim=True) + (" " + render.badges(target) if render.badges(target) else ""))


@command(cli, "ls", epilog=render.LEGEND)
@NODE
@click.option("-a", "--all", "show_all", is_flag=True, help="Include deleted (archived) children.")
def ls_cmd(node: str | None, show_all: bool) -> None:
    """List NODE's children (default: the cursor's), numbered for `loom down N`.

    \b
    Examples:
      loom ls
      loom ls a1b2 --json
    """
    doc = read_doc()
    target = doc.resolve(node)
    kids = target.child_ids if show_all else doc.live_child_ids(target.id)
    if json_mode():
        emit(
            {
                "command": "ls",
                "node_id": target.id,
                "children": [Node(doc, k).to_dict() for k in kids],
            }
        )
        return
    shorts = doc.short_ids(kids)
    for i, kid in enumerate(kids, 1):
        line = render.node_line(Node(doc, kid), shorts[kid], number=i, current=kid == doc.cursor_id)
        if doc.nodes[kid].get("archived"):
            line += style(" (deleted)", fg="red")
        out(line)


@command(cli, "tree", epilog=render.LEGEND)
@NODE
@click.option(
    "-d",
    "--depth",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Levels shown below NODE.",
)
@click.option(
    "-w",
    "--width",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Children shown per node.",
)
@click.option("--all", "everything", is_flag=True, help="Draw every tree of the forest in full.")
@click.option(
    "--no-collapse", is_flag=True, help="Do not fold chains of single children into one row."
)
def tree_cmd(node: str | None, depth: int, width: int, everything: bool, no_collapse: bool) -> None:
    """Draw the tree around NODE (default: the cursor).

    Shows the path from the root, siblings along it, and NODE's subtree to
    --depth (the symbols are explained below). With --json, prints the whole
    forest as a flat list of nodes with ids and texts.

    \b
    Examples:
      loom tree
      loom tree --depth 6 --width 20
      loom tree --json | jq '.nodes | length'
    """
    doc = read_doc()
    if json_mode():
        nodes = [Node(doc, i).to_dict() for i in doc.walk()]
        emit(
            {
                "command": "tree",
                "roots": [r.id for r in doc.roots],
                "cursor": doc.cursor_id,
                "nodes": nodes,
            }
        )
        return
    from loom.view import tree_window

    focus = doc.resolve(node).id if (node or doc.cursor_id) else None
    rows = tree_window(
        doc, focus, depth=depth, width=width, collapse=not no_collapse, everything=everything
    )
    if not rows:
        out(style("(empty document: add a node with `loom add TEXT`)", dim=True))
    for line in render.tree_lines(doc, rows, doc.cursor_id):
        out(line)


# ---- navigation -----------------------------------------------------------------------------


def _navigate(verb: str, pick: Any) -> None:
    with write_doc() as doc:
        target = pick(doc)
        ops.goto(doc, target)
        node = Node(doc, target)
    _report(doc, node, verb)


@command(cli, "goto")
@click.argument("node", metavar="NODE")
def goto_cmd(node: str) -> None:
    """Move the cursor to NODE (an id, a unique prefix of one).

    \b
    Example:
      loom goto a1b2
    """
    _navigate("goto", lambda doc: doc.resolve(node).id)


@command(cli, "up")
@click.argument("steps", required=False, type=click.IntRange(min=1), default=1)
def up_cmd(steps: int) -> None:
    """Move the cursor to its parent (or STEPS ancestors up).

    \b
    Example:
      loom up 3
    """
    _navigate("up", lambda doc: ops.parent_of(doc, doc.resolve(None).id, steps))


@command(cli, "down")
@click.argument("index", required=False, type=click.IntRange(min=1))
def down_cmd(index: int | None) -> None:
    """Move to child INDEX (1-based, as `loom ls` numbers them), or to the last-visited child.

    Without INDEX, `down` re-traces the branch you were on last (else the first child).

    \b
    Examples:
      loom down      # back along the branch you came from
      loom down 2
    """
    _navigate(
        "down",
        lambda doc: ops.child_of(doc, doc.resolve(None).id, None if index is None else index - 1),
    )


@command(cli, "next")
@click.option("--bookmark", is_flag=True, help="The next bookmark in document order (wraps).")
def next_cmd(bookmark: bool) -> None:
    """Move to the next sibling (or, with --bookmark, the next bookmark).

    \b
    Examples:
      loom next
      loom next --bookmark
    """
    if bookmark:
        _navigate("next", lambda doc: ops.bookmark_from(doc, doc.cursor_id, 1))
    else:
        _navigate("next", lambda doc: ops.sibling_of(doc, doc.resolve(None).id, 1))


@command(cli, "prev")
@click.option("--bookmark", is_flag=True, help="The previous bookmark in document order (wraps).")
def prev_cmd(bookmark: bool) -> None:
    """Move to the previous sibling (or, with --bookmark, the previous bookmark).

    \b
    Example:
      loom prev
    """
    if bookmark:
        _navigate("prev", lambda doc: ops.bookmark_from(doc, doc.cursor_id, -1))
    else:
        _navigate("prev", lambda doc: ops.sibling_of(doc, doc.resolve(None).id, -1))


@command(cli, "root")
def root_cmd() -> None:
    """Move the cursor to the root of its tree.

    \b
    Example:
      loom root
    """
    _navigate("root", lambda doc: ops.root_of(doc, doc.resolve(None).id))


# ---- changing ---------------------------------------------------------------------------


def _editor_text(initial: str) -> str:
    # Only `edit` needs these: kept off the import path of every other command.
    import shlex
    import shutil
    import subprocess
    import tempfile

    source = next((f"${v}" for v in ("VISUAL", "EDITOR") if os.environ.get(v)), "the default")
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor and sys.stdin.isatty() and shutil.which("vi"):
        editor = "vi"  # as git does: a terminal with no editor configured still gets one
    if not editor:
        raise click.UsageError(
            "no $EDITOR set: pass the new text with --text, '-' (stdin) or --from-file"
        )
    if not sys.stdin.isatty():
        raise click.UsageError(
            "standard input is not a terminal: pass the new text with --text, '-' or --from-file"
        )
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
            raise click.ClickException(f"the editor exited with status {result}; nothing changed")
        return Path(name).read_text(encoding="utf-8")
    finally:
        os.unlink(name)


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
        current = read_doc().resolve(node)
        new_text = _editor_text(current.text)
        if new_text.endswith("\n") and not current.text.endswith("\n"):
            new_text = new_text[:-1]  # editors end files with a newline; it was not typed
    else:
        new_text = read_text_input(text, from_file)
    with write_doc() as doc:
        target = doc.resolve(node).id
        result = ops.edit(doc, target, new_text, in_place=in_place)
    extra = {"new_version": result.id != target, "edited": target}
    if json_mode() or not stdout_is_terminal():
        _report(doc, result, "edit", extra=extra)
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
    _report(doc, tail, "split", extra={"head": target})


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
    _report(doc, result, "merge")


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
    _report(doc, moved, "mv")


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
        target = doc.resolve(node).id
        if purge:
            gone = ops.purge(doc, target)
        else:
            ops.archive(doc, target)
            gone = doc.subtree_ids(target)
    if json_mode():
        emit(
            {
                "command": "rm",
                "node_id": target,
                "purged": purge,
                "count": len(gone),
                "cursor": doc.cursor_id,
            }
        )
    else:
        out(
            f"{'purged' if purge else 'deleted'} {len(gone)} node(s)"
            + ("" if purge else f" (undo with `loom restore {target[:8]}`)")
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
    _report(doc, restored, "restore")


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
        emit({"command": "purge", "count": len(gone)})
    else:
        out(f"purged {len(gone)} node(s)")


# ---- annotating -------------------------------------------------------------------------


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
            emit({"command": "bookmark", "bookmarks": [m.to_dict() for m in marks]})
            return
        shorts = doc.short_ids([m.id for m in marks])
        for m in marks:
            out(render.node_line(m, shorts[m.id], current=m.id == doc.cursor_id))
        return
    with write_doc() as doc:
        result = ops.set_bookmark(doc, doc.resolve(node).id, not remove, title=title)
    _report(doc, result, "bookmark")


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
            emit({"command": "tag", "tags": index})
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
    _report(doc, result, "tag")


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
            emit({"command": "note", "node_id": target.id, "note": target.note or None})
        elif target.note:
            out(render.safe(target.note) if stdout_is_terminal() else target.note)
        return
    body = None if clear else read_text_input(text, from_file, what="note")
    with write_doc() as doc:
        result = ops.set_note(doc, doc.resolve(node).id, body)
    _report(doc, result, "note")


@command(cli, "search")
@click.argument("pattern")
@click.option("-e", "--regex", is_flag=True, help="PATTERN is a regular expression.")
@click.option("-i", "--ignore-case", is_flag=True)
@click.option(
    "-b",
    "--branch",
    is_flag=True,
    help="Match against each branch's full text, not single segments.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many matches.")
@click.option("-a", "--all", "include_archived", is_flag=True, help="Search deleted nodes too.")
def search_cmd(
    pattern: str,
    regex: bool,
    ignore_case: bool,
    branch: bool,
    limit: int | None,
    include_archived: bool,
) -> None:
    """List nodes whose text matches PATTERN (a substring, or a regex with -e).

    Exit status 1 when nothing matches, as grep does.

    \b
    Examples:
      loom search lighthouse
      loom search -e -i '\\bsea(s)?\\b' --json
      loom search --branch "went out. The" # across node boundaries
    """
    from loom.search import search as search_nodes

    doc = read_doc()
    matches = search_nodes(
        doc,
        pattern,
        regex=regex,
        ignore_case=ignore_case,
        branch=branch,
        limit=limit,
        include_archived=include_archived,
    )
    if json_mode():
        emit(
            {
                "command": "search",
                "matches": [
                    {
                        "node_id": m.node_id,
                        "start": m.start,
                        "end": m.end,
                        "match": m.text,
                        "text": doc.nodes[m.node_id].get("text", ""),
                    }
                    for m in matches
                ],
            }
        )
    else:
        shorts = doc.short_ids([m.node_id for m in matches])
        for m in matches:
            source = doc.full_text(m.node_id) if branch else doc.nodes[m.node_id].get("text", "")
            # The match, then some context each side, in the columns the terminal has.
            room = max(20, render.width() - len(shorts[m.node_id]) - 3)
            hit = render.preview(m.text, min(60, room // 2))
            left = min(30, (room - render.text_width(hit)) // 3)
            before = render.clip_left(render.flat(source[max(0, m.start - 30) : m.start]), left)
            right = room - render.text_width(hit) - render.text_width(before)
            after = render.preview(source[m.end : m.end + 40], min(40, right))
            hit = style(hit, fg="red", bold=True)
            out(f"{style(shorts[m.node_id], fg='cyan')}  {before}{hit}{after}")
    if not matches:
        raise click.exceptions.Exit(1)


# ---- history ----------------------------------------------------------------------------


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
        _report(doc, result, "history")
        return
    doc = read_doc()
    target = doc.resolve(node)
    entries = ops.versions(doc, target.id)
    if show_which is not None:
        entry = _chosen(entries, show_which)
        if json_mode():
            emit({"command": "history", "node_id": target.id, "entry": entry})
        elif stdout_is_terminal():
            out(render.safe(entry["text"]))
        else:
            sys.stdout.write(entry["text"])
        return
    if json_mode():
        emit({"command": "history", "node_id": target.id, "entries": entries})
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
    if which.isdigit() and int(which) < len(numbered):
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
        emit(
            {
                "command": verb,
                "operations": [
                    {"op": e["op"], "summary": e["summary"], "at": e["at"]} for e in done
                ],
                "cursor": doc.cursor_id,
            }
        )
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
            {
                "command": "log",
                "undo": [{"op": e["op"], "summary": e["summary"], "at": e["at"]} for e in entries],
                "redo": len(redo),
            }
        )
        return
    for e in entries:
        # A document file's journal is data like its text: no control characters to the terminal.
        summary = render.flat(f"{e['op']:<9} {e['summary']}")
        out(f"{style(str(e['at']), dim=True)}  {summary}")
    if redo:
        out(style(f"({len(redo)} undone change(s) can be redone)", dim=True))


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
    if json_mode():
        emit({"command": "check", "file": str(file), "nodes": len(doc), "valid": True})
    else:
        out(f"{file}: ok ({len(doc)} nodes)")
