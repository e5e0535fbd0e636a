"""Reading the tree: a branch, a node's children, the tree around the cursor, search."""

from __future__ import annotations

import sys

import click

from loom import jsonio, payloads
from loom.cli import render
from loom.cli.common import (
    NODE,
    color_enabled,
    command,
    emit,
    fields,
    json_mode,
    out,
    read_doc,
    stdout_is_terminal,
    style,
)
from loom.cli.main import cli
from loom.document import Node


@command(cli, "show")
@NODE
@click.option(
    "--raw", is_flag=True, help="Exactly the text, nothing else (the default when piped)."
)
@click.option("--segment", is_flag=True, help="Only the node's own segment, not the whole branch.")
@click.option("--probs", is_flag=True, help=render.PROBABILITY_HELP)
@click.option(
    "--messages",
    is_flag=True,
    help="The messages a chat reply from NODE would send, exactly (JSON).",
)
def show_cmd(node: str | None, raw: bool, segment: bool, probs: bool, messages: bool) -> None:
    """Print the full text of the branch ending at NODE (default: the cursor).

    On a terminal, node boundaries alternate in colour and the node itself is in
    bold, and control characters in the text are shown as symbols (␛, ␇).
    Piped or with --raw, it prints exactly the text: no colour, no newline
    added. --probs shows each token's probability, in colour on a terminal,
    else (piped, NO_COLOR) as [token 87%]; --raw always means the bare text.
    A conversation (a branch with user/assistant turns) is shown as turns under
    their roles; piped or with --raw, as a transcript (`User: …`) that
    `loom import -` reads back into the same turns.

    \b
    Examples:
      loom show
      loom show --raw | wc -w
      loom show --segment --probs     # the node's own tokens and their probabilities
      loom show a1b2 --json
      loom show --messages      # what `loom reply` would send
    """
    from loom.generation.context import context_for, is_conversation

    doc = read_doc()
    target = doc.resolve(node)
    if messages:
        sent = context_for(doc, target.id, "chat").message_dicts()
        if json_mode():
            emit("show", node=payloads.node(target, fields()), messages=sent, cursor=doc.cursor_id)
        else:
            out(jsonio.dump_line(sent).decode().rstrip("\n"))
        return
    conversation = not segment and is_conversation(doc, target.id)
    text = target.text if segment else doc.full_text(target.id)
    if conversation and not json_mode() and not probs:
        transcript = context_for(doc, target.id, "chat").transcript()
        if raw or not stdout_is_terminal():
            sys.stdout.write(transcript + "\n")
            sys.stdout.flush()
            return
        out(render.turns(transcript))
        return
    if json_mode():
        emit(
            "show",
            node=payloads.node(target, fields()),
            path=doc.path_ids(target.id),
            text=text,
            cursor=doc.cursor_id,
        )
        return
    if raw or not (probs or stdout_is_terminal()):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    if probs:
        plain = not color_enabled()
        shown = render.probabilities(doc, target.id, segment=segment, plain=plain)
        if not stdout_is_terminal():
            sys.stdout.write(shown)
            sys.stdout.flush()
            return
        out(shown)
        out(render.probability_legend(plain=plain))
    else:
        out(render.safe(target.text) if segment else render.branch_text(doc, target.id))
    kids = len(doc.live_child_ids(target.id))
    siblings = doc.live_sibling_ids(target.id)
    where = (
        f"{siblings.index(target.id) + 1}/{len(siblings)}" if target.id in siblings else "(deleted)"
    )
    status = f"── {doc.short_ids([target.id])[target.id]} · sibling {where} · depth {target.depth} · {kids} children"
    out(style(status, dim=True) + (" " + render.badges(target) if render.badges(target) else ""))


LS_PAGE = 100


@command(cli, "ls", epilog=render.LEGEND)
@NODE
@click.option(
    "-a", "--archived", "show_archived", is_flag=True, help="Include deleted (archived) children."
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=LS_PAGE,
    show_default=True,
    help="List at most this many children.",
)
@click.option(
    "--offset", type=click.IntRange(min=0), default=0, help="Skip this many children first."
)
@click.option("--all", "every", is_flag=True, help="List every child, however many.")
def ls_cmd(node: str | None, show_archived: bool, limit: int, offset: int, every: bool) -> None:
    """List NODE's children (default: the cursor's), numbered for `loom down N`.

    A page at a time: the first 100 unless --limit, --offset or --all say
    otherwise; the total is shown below the list (`total` and `next_offset` in
    --json).

    \b
    Examples:
      loom ls
      loom ls --offset 100 --limit 50
      loom ls a1b2 --json | jq '.nodes[].text'
    """
    doc = read_doc()
    target = doc.resolve(node)
    kids = target.child_ids if show_archived else doc.live_child_ids(target.id)
    page = kids[offset:] if every else kids[offset : offset + limit]
    after = offset + len(page)
    if json_mode():
        emit("ls", **payloads.children_page(target, kids, offset, page, fields(listing=True)))
        return
    shorts = doc.short_ids(page)
    for i, kid in enumerate(page, offset + 1):
        line = render.node_line(Node(doc, kid), shorts[kid], number=i, current=kid == doc.cursor_id)
        if doc.nodes[kid].get("archived"):
            line += style(" (deleted)", fg="red")
        out(line)
    if after < len(kids) or offset:
        shown = f"{offset + 1:,}–{after:,}" if page else "none"
        rest = f"; more with `loom ls --offset {after}` or --all" if after < len(kids) else ""
        out(style(f"({shown} of {len(kids):,} children{rest})", dim=True))


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
    default=5,
    show_default=True,
    help="Siblings shown per level (and children per node); the others are counted (+N more).",
)
@click.option(
    "--above",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Ancestors shown above NODE; the ones further up are counted.",
)
@click.option(
    "--lines",
    type=click.IntRange(min=0),
    help="Draw at most this many lines, shrinking the window to fit (default: the terminal's height; 0: no limit).",
)
@click.option(
    "--all", "everything", is_flag=True, help="Draw every tree of the forest in full, streamed."
)
@click.option(
    "--no-collapse", is_flag=True, help="Do not fold chains of single children into one row."
)
def tree_cmd(
    node: str | None,
    depth: int,
    width: int,
    above: int,
    lines: int | None,
    everything: bool,
    no_collapse: bool,
) -> None:
    """Draw the tree around NODE (default: the cursor), in a window that fits the terminal.

    Shows NODE's nearest ancestors (the rest counted: "… 120 levels above"), a
    few siblings around the path at each level ("+N more" for the others), and
    NODE's subtree to --depth; the window shrinks until it fits the terminal's
    height. The symbols are explained below. --all draws the whole forest
    instead. With --json, the nodes of the same window (--depth, --width,
    --above; no height limit) as a flat list, in drawing order: a node's
    `children` lists all its live children, so the ids missing from `nodes` are
    the ones not shown. --all --json lists the whole forest, deleted nodes
    included (a deleted subtree starts at a node with `archived` true).

    \b
    Examples:
      loom tree
      loom tree --depth 6 --width 20 --lines 0
      loom tree --all | less -S
      loom tree --all --json | jq '.nodes | length'
    """
    doc = read_doc()
    from loom.view import iter_forest, tree_window, window_ids

    focus = doc.resolve(node).id if (node or doc.cursor_id) else None
    if json_mode():
        ids = (
            doc.walk(include_archived=True)
            if everything
            else window_ids(doc, focus, depth=depth, width=width, above=above)
        )
        emit(
            "tree",
            roots=doc.root_ids,
            nodes=payloads.nodes(doc, ids, fields(listing=True)),
            cursor=doc.cursor_id,
        )
        return
    if everything:
        rows = iter_forest(doc, collapse=not no_collapse)
    else:
        height = render.terminal_size(sys.stdout)[1] - 1 if lines is None else lines or None
        rows = iter(
            tree_window(
                doc,
                focus,
                depth=depth,
                width=width,
                above=above,
                height=max(1, height) if height is not None else None,
                collapse=not no_collapse,
            )
        )
    empty = True
    for line in render.tree_lines(doc, rows, doc.cursor_id):
        empty = False
        out(line)
    if empty:
        out(style("(empty document: add a node with `loom add TEXT`)", dim=True))


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
        listed = fields(listing=True)
        emit(
            "search",
            matches=[payloads.match(doc, m, listed) for m in matches],
            cursor=doc.cursor_id,
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
